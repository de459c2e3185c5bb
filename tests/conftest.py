"""Shared fixtures. Real data comes from ../shared/data through one helper; absent -> clean skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from trajmoe.devtools.realdata import REPO_ROOT, shared_data_dir


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
def app_sandbox():
    """``with app_sandbox(root, n_layers=1) as ckpt:`` for app tests: a tiny random checkpoint in
    ``root``, the app pointed at it and at a work folder ``root/work`` of its own (environment,
    ``app/`` on sys.path, ``state.WORK_DIR``), the environment restored on exit."""
    import contextlib
    import os
    import sys

    import torch

    from trajmoe.train.checkpoint import save_checkpoint
    from trajmoe.train.models import new_trajmoe

    @contextlib.contextmanager
    def sandbox(root: Path, *, n_layers: int = 1):
        torch.set_num_threads(1)
        model, config = new_trajmoe(d_model=32, n_layers=n_layers, n_heads=2, seed=0)
        ckpt = save_checkpoint(root / "tiny.safetensors", model, arch="trajmoe", config=config,
                               info={"cities": ["nowhere"], "domain_experts": []})
        saved = {key: os.environ.get(key) for key in ("TRAJMOE_CHECKPOINT", "TRAJMOE_APP_DIR")}
        os.environ["TRAJMOE_CHECKPOINT"] = str(ckpt)
        os.environ["TRAJMOE_APP_DIR"] = str(root / "work")
        app_dir = str(REPO_ROOT / "app")
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)
        import state  # the app's shared module (AppTest imports it from app/): its own work folder

        state.WORK_DIR = root / "work"
        try:
            yield ckpt
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return sandbox
