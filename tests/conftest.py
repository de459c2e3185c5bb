"""Shared fixtures. Real data comes from ../shared/data through one helper; absent -> clean skip."""

from __future__ import annotations

from pathlib import Path

import pytest
from osm_server import (
    PLACE,
    RecordedOSMServer,
    nominatim_area,
    nominatim_point,
    overpass_json_from_osm_xml,
)

from tools.realdata import REPO_ROOT, shared_data_dir


def pytest_configure(config):
    """One torch thread for the whole test process, set once here (not per test file): on a shared
    2-core machine OpenMP threads spin-wait on each other and a training step gets several times
    slower (bench/results/moe_dispatch.txt); one count also keeps float sums in one order."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data folder ../shared/data not found next to the repository")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_trajectories() -> Path:
    return REPO_ROOT / "sample_data" / "helsinki_synthetic_trajectories.csv.gz"


@pytest.fixture(scope="session")
def sample_pois() -> Path:
    return REPO_ROOT / "sample_data" / "helsinki_pois.parquet"


@pytest.fixture(scope="session")
def helsinki_folder(tmp_path_factory, sample_trajectories, sample_pois) -> Path:
    """The embedded default prepared once per test session (default resolution); read it, never write."""
    from trajmoe.city.prepare import prepare

    out = tmp_path_factory.mktemp("prep") / "helsinki"
    prepare(sample_trajectories, city="Helsinki", out=out, pois=sample_pois)
    return out


@pytest.fixture(scope="session")
def helsinki(helsinki_folder):
    """CityData of :func:`helsinki_folder` (shared: do not modify it)."""
    from trajmoe.city.data import CityData

    return CityData(helsinki_folder)


@pytest.fixture(scope="session")
def small_helsinki(tmp_path_factory, sample_trajectories, sample_pois):
    """60 synthetic Helsinki people over the real POIs at H3 resolution 9 (a few dozen cells)."""
    import pandas as pd

    from trajmoe.city.data import CityData
    from trajmoe.city.prepare import prepare

    frame = pd.read_csv(sample_trajectories)
    path = tmp_path_factory.mktemp("small") / "small.csv"
    frame[frame["user_id"].isin(frame["user_id"].unique()[:60])].to_csv(path, index=False)
    out = path.parent / "city"
    prepare(path, city="Helsinki", out=out, pois=sample_pois, resolution=9)
    return CityData(out)


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny untrained TrajMoE (d=32, 2 layers, 2 heads, seed 0) in eval mode, one per test module."""
    from trajmoe.train.models import new_trajmoe

    model, _ = new_trajmoe(d_model=32, n_layers=2, n_heads=2, seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def small_upload(sample_trajectories) -> bytes:
    """The sample's first 60 people as CSV bytes: an upload the app prepares in seconds."""
    import pandas as pd

    frame = pd.read_csv(sample_trajectories)
    return frame[frame["user_id"].isin(frame["user_id"].unique()[:60])].to_csv(index=False).encode()


@pytest.fixture(scope="session")
def app_sandbox():
    """``with app_sandbox(root, n_layers=1) as ckpt:`` for app tests: a tiny random checkpoint in
    ``root``, the app pointed at it and at a work folder ``root/work`` of its own (environment,
    ``app/`` on sys.path, ``state.inputs.WORK_DIR``), the environment restored on exit."""
    import contextlib
    import os
    import sys

    from trajmoe.train.checkpoint import save_checkpoint
    from trajmoe.train.models import new_trajmoe

    @contextlib.contextmanager
    def sandbox(root: Path, *, n_layers: int = 1):
        model, config = new_trajmoe(d_model=32, n_layers=n_layers, n_heads=2, seed=0)
        ckpt = save_checkpoint(root / "tiny.safetensors", model, arch="trajmoe", config=config,
                               info={"cities": ["nowhere"], "domain_experts": []})
        saved = {key: os.environ.get(key) for key in ("TRAJMOE_CHECKPOINT", "TRAJMOE_APP_DIR")}
        os.environ["TRAJMOE_CHECKPOINT"] = str(ckpt)
        os.environ["TRAJMOE_APP_DIR"] = str(root / "work")
        app_dir = str(REPO_ROOT / "app")
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)
        from state import inputs  # the app's inputs, as AppTest imports them: own work folder

        inputs.WORK_DIR = root / "work"
        try:
            yield ckpt
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return sandbox


# --------------------------------------------------------------------------- recorded OpenStreetMap


@pytest.fixture(scope="session")
def west_oakland(shared_data):
    """(file, its Overpass JSON, its bounds west/south/east/north): the real OSM XML of West Oakland."""
    path = shared_data / "pois" / "west_oakland.osm.bz2"
    overpass = overpass_json_from_osm_xml(path)
    nodes = [e for e in overpass["elements"] if e["type"] == "node"]
    lats, lons = [n["lat"] for n in nodes], [n["lon"] for n in nodes]
    bounds = (min(lons) - 0.001, min(lats) - 0.001, max(lons) + 0.001, max(lats) + 0.001)
    return path, overpass, bounds


@pytest.fixture
def osmnx_settings(tmp_path):
    """OSMnx settings for one test (no DNS-over-HTTPS, a private cache); restored afterwards."""
    import osmnx as ox

    names = ("overpass_url", "nominatim_url", "doh_url_template", "cache_folder", "use_cache",
             "requests_timeout", "overpass_rate_limit", "requests_kwargs")  # fmt: skip
    saved = {name: getattr(ox.settings, name) for name in names}
    ox.settings.doh_url_template = None
    ox.settings.cache_folder = str(tmp_path / "osmnx-cache")
    yield ox.settings
    for name, value in saved.items():
        setattr(ox.settings, name, value)


@pytest.fixture
def server(west_oakland, osmnx_settings):
    """The recorded OSM service (tests/osm_server.py) answering with West Oakland; OSMnx pointed at it."""
    _, overpass, bounds = west_oakland
    places = {
        PLACE: nominatim_area(PLACE, bounds),
        "Mandela Cafe, Oakland": nominatim_point("Mandela Cafe", 37.81, -122.29),
    }
    with RecordedOSMServer(overpass=overpass, places=places) as srv:
        osmnx_settings.overpass_url = srv.url + "/api"
        osmnx_settings.nominatim_url = srv.url + "/nominatim/"
        yield srv


# --------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="session")
def new_tiny():
    """``new_tiny(n_layers=2, seed=0, **overrides) -> (model, config)``: a FRESH tiny TrajMoE (d=32,
    2 heads), for tests that train or change a model (:func:`tiny_model` is shared, read-only)."""
    from trajmoe.train.models import new_trajmoe

    def make(*, n_layers: int = 2, seed: int = 0, **overrides):
        return new_trajmoe(**{"d_model": 32, "n_heads": 2, **overrides}, n_layers=n_layers, seed=seed)

    return make
