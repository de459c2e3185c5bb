"""What the app is showing and the caches behind it (shared by every page).

* Inputs are files: the bundled Helsinki sample, or uploads written once under ``WORK_DIR``
  (keyed by content digest), so every step reads a path and caches on a short key.
* A prepared city folder per (trajectories, POIs, city name, map detail), reused across
  sessions and restarts (``st.cache_data`` + the folder on disk).
* The pretrained model lives in ``st.cache_resource`` and is never modified: a session fine-tunes
  its own deep copy, kept in ``st.session_state`` with its predictions.
* torch is imported only inside the functions that need a model (``import torch`` costs ~2 s).

Streamlit's rules from its own examples: no widgets in cached functions (progress bars are
elements, created and emptied inside, so a cache hit replays nothing visible).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from trajmoe.errors import TrajMoEError

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRAJECTORIES = REPO / "sample_data" / "helsinki_synthetic_trajectories.csv.gz"
SAMPLE_POIS = REPO / "sample_data" / "helsinki_pois.parquet"
SHIPPED_CHECKPOINT = REPO / "assets" / "trajmoe_pretrained.safetensors"
CHECKPOINT_ENV = "TRAJMOE_CHECKPOINT"  # another checkpoint to start from (tests, other deployments)
WORK_DIR = Path(os.environ.get("TRAJMOE_APP_DIR", Path(tempfile.gettempdir()) / "trajmoe_app"))
TOP_K = 10  # next cells kept per visit (the flows page uses up to this many)
# Model passes read the last STRIDE positions of each sequence (trajmoe.analysis.flows.iter_next_scores):
# every visit keeps at least 64 - 32 + 1 = 33 earlier visits as context (the benchmark protocol:
# up to 64) at ~32x less compute; on the Helsinki sample the metrics match stride 16 to 0.1 pt.
STRIDE = 32
FRACTION = 0.05  # the paper's few-shot share; the pretrained model's views use the same features
SEED = 0  # the app's run subset seed (fine-tuning and the pretrained model's views share it)
SAMPLE_LABEL = "Helsinki sample: SYNTHETIC people (no real person) moving between real OpenStreetMap POIs"


@dataclass(frozen=True)
class Source:
    """An input file: bundled or uploaded (written to disk once, named by its content digest)."""

    label: str  # plain words for planners
    path: str
    key: str  # content digest: the cache key


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def scratch_dir() -> Path:
    """A new empty folder under WORK_DIR."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=WORK_DIR))


@st.cache_data(show_spinner=False)
def _file_digest(path: str, mtime: float) -> str:
    return digest(Path(path).read_bytes())


def bundled(path: Path, label: str) -> Source:
    return Source(label=label, path=str(path), key=_file_digest(str(path), path.stat().st_mtime))


def save_upload(upload, label: str) -> Source:
    """Write an uploaded file under WORK_DIR once (same content -> same path) and describe it."""
    memo = st.session_state.setdefault("_uploads", {})
    if upload.file_id in memo:
        return memo[upload.file_id]
    data = upload.getvalue()
    key = digest(data)
    folder = WORK_DIR / "uploads" / key
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(upload.name).name
    if not path.is_file():
        path.write_bytes(data)
    memo[upload.file_id] = Source(label=label, path=str(path), key=key)
    return memo[upload.file_id]


def new_upload(what: str, upload) -> bool:
    """True once per uploaded file: an uploader keeps its file across reruns, and choosing another
    source afterwards must not bring the old upload back."""
    seen = st.session_state.setdefault("_applied_uploads", {})
    if seen.get(what) == upload.file_id:
        return False
    seen[what] = upload.file_id
    return True


def max_upload_mb() -> int:
    return int(st.get_option("server.maxUploadSize"))


# A compressed upload under the size limit can still hold tens of millions of rows: bound the rows
# too (5M rows prepare in ~2 GB, bench/results/large_upload.md); bigger files go through the CLI.
MAX_ROWS = 5_000_000


# --------------------------------------------------------------------------- inputs of the session
def trajectories() -> Source:
    return st.session_state.get("trajectories") or bundled(SAMPLE_TRAJECTORIES, SAMPLE_LABEL)


def pois_source() -> Source:
    return st.session_state.get("pois") or bundled(SAMPLE_POIS, "Helsinki city centre POIs (real, OpenStreetMap)")


def is_sample() -> bool:
    return st.session_state.get("trajectories") is None


def city_name() -> str:
    return st.session_state.get("city") or "Helsinki"


@st.cache_data(show_spinner=False, max_entries=16)
def read_poi_file(key: str, path: str) -> pd.DataFrame:
    from trajmoe.pois.offline import read_pois

    return read_pois(path)


def pois() -> pd.DataFrame:
    src = pois_source()
    return read_poi_file(src.key, src.path)


# --------------------------------------------------------------------------- prepared city
@dataclass
class Prepared:
    """A prepared city folder, or why it could not be made."""

    folder: str | None
    meta: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # ValidationReport.to_dict()
    error: str | None = None


@st.cache_data(show_spinner=False, max_entries=8)
def prepare_city(traj_key: str, pois_key: str, city: str, resolution: int | None, weekday_reliable: bool,
                 _traj: Source, _pois: Source) -> Prepared:
    """Prepare (or reuse from disk) the city folder; ``resolution`` None = prepare's automatic choice
    (8 for a city, finer for a small area)."""
    from trajmoe import __version__
    from trajmoe.city.features import SCHEMA_ID
    from trajmoe.city.prepare import prepare

    tag = digest(json.dumps([traj_key, pois_key, city, resolution, weekday_reliable, SCHEMA_ID, __version__]).encode())
    folder = WORK_DIR / "cities" / tag
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        return Prepared(str(folder), meta, meta["report"])
    bar = st.progress(0.1, text="Reading and checking the trajectories, placing visits on the map grid...")
    scratch = scratch_dir()
    try:
        meta, report = prepare(_traj.path, out=scratch / "city", city=city, pois=read_poi_file(pois_key, _pois.path),
                               resolution=resolution, weekday_reliable=weekday_reliable, name=Path(_traj.path).name,
                               max_rows=MAX_ROWS)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not folder.exists():
            (scratch / "city").rename(folder)  # atomic: another session never sees a half-written folder
        return Prepared(str(folder), meta, report.to_dict())
    except TrajMoEError as exc:
        report = exc.report.to_dict() if getattr(exc, "report", None) is not None else {}
        return Prepared(None, report=report, error=str(exc).split("\n")[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        bar.empty()


def prepared() -> Prepared:
    traj, poi = trajectories(), pois_source()
    res = st.session_state.get("resolution")  # None = automatic
    weekday = not st.session_state.get("weekday_unreliable", False)
    return prepare_city(traj.key, poi.key, city_name(), res, weekday, traj, poi)


@st.cache_resource(show_spinner=False, max_entries=8)
def city_data(folder: str):
    """The prepared city (shared, read-only)."""
    from trajmoe.city.data import CityData

    return CityData(folder)


def require_city() -> tuple[Prepared, object]:
    """The prepared city and its CityData, or stop the page with the reason in plain words."""
    prep = prepared()
    if prep.folder is None:
        st.error(f"The trajectories could not be used: {prep.error}")
        st.page_link("app_pages/trajectories.py", label="See what was wrong on the Trajectories page")
        st.stop()
    return prep, city_data(prep.folder)


# --------------------------------------------------------------------------- models
def base_checkpoint() -> Path | None:
    """The checkpoint this session starts from: uploaded, $TRAJMOE_CHECKPOINT, or the shipped one."""
    uploaded = st.session_state.get("base_checkpoint")
    if uploaded:
        return Path(uploaded)
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Path(env)
    return SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.is_file() else None


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def load_model(path: str, mtime: float):
    """(model, sidecar) of a checkpoint, shared by all sessions and never modified."""
    import torch

    from trajmoe.train.checkpoint import load_checkpoint

    # The app's batches are small: one thread is faster than several that wait on each other,
    # and much faster on a busy machine (measured 1.6 s vs 27 s for the sample's predictions).
    torch.set_num_threads(1)
    return load_checkpoint(path)


def base_model():
    """(model, sidecar, path) of the starting checkpoint, or None when there is none."""
    path = base_checkpoint()
    if path is None or not path.is_file():
        return None
    model, meta = load_model(str(path), path.stat().st_mtime)
    return model, meta, path


def run_subset(data, fraction: float):
    """The app's run subset of a city: ``fraction`` of its training windows with the app's seed."""
    from trajmoe.city.subset import run_subset as subset_of

    return subset_of(data, fraction=fraction, seed=SEED)


def compute_outputs(model, data, fraction: float):
    """One pass over every visit: next-cell predictions, ranks of the true next cells and routing.

    Cell features come from the training visits of the few-shot share ``fraction`` (what a model
    fine-tuned on that share saw), so zero-shot and fine-tuned views are compared like for like.
    """
    from trajmoe.analysis.flows import predict

    bar = st.progress(0.0, text="Predicting where each person goes next...")
    out = predict(model, data, top_k=TOP_K, split="all", city=run_subset(data, fraction).city,
                  stride=STRIDE, progress=lambda d, t: bar.progress(
                      d / max(t, 1), text=f"Predicting where each person goes next: {d:,} of {t:,} moves"))
    bar.empty()
    return out


@st.cache_data(show_spinner=False, max_entries=8)
def base_outputs(path: str, mtime: float, folder: str, fraction: float = FRACTION):
    model, _ = load_model(path, mtime)
    return compute_outputs(model, city_data(folder), fraction)


@dataclass
class Shown:
    """The model whose predictions the pages show."""

    label: str
    model: object
    outputs: object  # trajmoe.analysis.flows.Predictions over every visit
    fraction: float  # few-shot share whose training visits give the cell features
    key: str  # identifies model + city for caches
    finetuned: bool


def finetuned_for(folder: str) -> dict | None:
    ft = st.session_state.get("finetuned")
    return ft if ft and ft["folder"] == folder else None


def shown_model(prep: Prepared) -> Shown | None:
    ft = finetuned_for(prep.folder)
    if ft:
        return Shown(ft["label"], ft["model"], ft["outputs"], ft["fraction"], ft["key"], True)
    base = base_model()
    if base is None:
        return None
    model, _, path = base
    outputs = base_outputs(str(path), path.stat().st_mtime, prep.folder)
    what = "the shipped pretrained model" if path == SHIPPED_CHECKPOINT else f"the pretrained model {path.name}"
    label = f"{what}, zero-shot (not fine-tuned on {prep.meta.get('city', 'this city')})"
    return Shown(label, model, outputs, FRACTION, f"{path}:{path.stat().st_mtime}:{prep.folder}", False)


def require_model(prep: Prepared) -> Shown:
    try:
        shown = shown_model(prep)
    except TrajMoEError as exc:  # a broken or foreign checkpoint: say so, keep the app running
        st.error(f"The pretrained model cannot be used: {exc} Upload a checkpoint on the **Fine-tune** page.")
        st.stop()
    if shown is None:
        st.warning(
            "No model to show: the shipped checkpoint `assets/trajmoe_pretrained.safetensors` (with its "
            ".json) is not in this copy of the app. Upload a checkpoint on the **Fine-tune** page, "
            "or put the shipped one back. The City & POIs and Trajectories pages work without it."
        )
        st.stop()
    st.info(f"Showing **{shown.label}**.")
    return shown


# --------------------------------------------------------------------------- privacy
def privacy_k() -> int:
    return int(st.session_state.get("privacy_k", 5))


def unit(kind: str) -> str:
    from trajmoe.analysis.flows import counted_unit

    return counted_unit(kind)


def unit_one(kind: str) -> str:
    return {"people": "person", "trips": "trip", "bikes": "bike"}[unit(kind)]


def hidden_note(what: str, n_places: int, n_flows: int | None, kind: str) -> str:
    k = privacy_k()
    flows = f" and {n_flows:,} flows" if n_flows is not None else ""
    return (f"Privacy: {n_places:,} cells{flows} with fewer than {k} {unit(kind)} are hidden "
            f"from {what} and its downloads.")


@st.cache_data(show_spinner=False, max_entries=32)
def context_cells(folder: str, k: int) -> list[str]:
    """The grey background cells of the maps: cells with POIs (public places) or visited by at
    least k persons. A candidate cell only a few people went to is not drawn at all, so the
    background never shows where they went."""
    from trajmoe.city.features import POI_COLUMNS

    data = city_data(folder)
    people = data.visits.groupby("cell")["user_id"].nunique()
    has_poi = data.cells[POI_COLUMNS].sum(axis=1).to_numpy() > 0
    busy = data.cells["cell"].map(people).fillna(0).to_numpy() >= k
    return data.cells.loc[has_poi | busy, "cell"].tolist()


# --------------------------------------------------------------------------- cell names
@st.cache_data(show_spinner=False, max_entries=8)
def cell_names(folder: str, pois_key: str, _pois: pd.DataFrame) -> pd.Series:
    """A readable name per H3 cell of the city: 'near <the named POI closest to its centre>'."""
    from trajmoe.geo import latlon_to_cells

    data = city_data(folder)
    res = int(data.meta["resolution"])
    cells = pd.Index(np.unique(np.r_[data.visits["cell"].to_numpy(str), data.cells["cell"].to_numpy(str)]))
    names = pd.Series([f"cell {c[-6:]}" for c in cells], index=cells)
    named = _pois[_pois["name"].astype(str).str.len() > 0]
    if len(named):
        cell = latlon_to_cells(named["lat"].to_numpy(), named["lon"].to_numpy(), res)
        frame = pd.DataFrame({"cell": cell, "name": named["name"].astype(str).to_numpy(),
                              "lat": named["lat"].to_numpy(), "lon": named["lon"].to_numpy()})
        frame = frame[frame["cell"].isin(cells)]
        import h3

        centre = np.array([h3.cell_to_latlng(c) for c in frame["cell"]]).reshape(-1, 2)
        frame["d"] = np.hypot(frame["lat"] - centre[:, 0], frame["lon"] - centre[:, 1])
        best = frame.sort_values("d").drop_duplicates("cell").set_index("cell")["name"]
        names.loc[best.index] = "near " + best
    return names


# --------------------------------------------------------------------------- fine-tuning
@st.cache_data(show_spinner=False, max_entries=32)
def baseline_metrics(folder: str, name: str, fraction: float) -> dict:
    """Test metrics of a baseline trained on the same few-shot share (DESIGN.md §Protocol)."""
    from trajmoe.train.baselines import run_baseline

    return run_baseline(name, city_data(folder), fraction=fraction, seed=SEED)


def checkpoint_from_upload(files) -> Path:
    """Write an uploaded .safetensors + .json pair under WORK_DIR and return the weights path."""
    from trajmoe.errors import CheckpointError

    by_ext = {Path(f.name).suffix.lower(): f for f in files}
    if set(by_ext) != {".safetensors", ".json"}:
        raise CheckpointError("Upload both files of the checkpoint: NAME.safetensors and NAME.json.")
    weights, sidecar = by_ext[".safetensors"].getvalue(), by_ext[".json"].getvalue()
    folder = WORK_DIR / "checkpoints" / digest(weights + sidecar)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(by_ext[".safetensors"].name).name  # the planner's own file name, in messages
    path.write_bytes(weights)
    path.with_suffix(".json").write_bytes(sidecar)  # the sidecar must sit next to it, same stem
    return path


def finetune(prep: Prepared, data, *, fraction: float, epochs: int, max_steps: int | None, mode: str) -> dict:
    """Fine-tune a deep copy of the session's starting model; predictions, metrics, files.

    The shared model in st.cache_resource is never touched: fit() trains the copy.
    """
    import copy

    from trajmoe.train.finetune import finetune as finetune_city
    from trajmoe.train.fit import TrainConfig

    base, base_meta, path = base_model()
    model = copy.deepcopy(base)
    cfg = TrainConfig(epochs=epochs, max_steps=max_steps, fraction=fraction, mode=mode, seed=SEED)
    bar = st.progress(0.0, text="Fine-tuning...")

    def step(s: int, total: int, loss: float) -> None:
        bar.progress(s / max(total, 1), text=f"Fine-tuning: step {s} of {total}, loss {loss:.3f}")

    run = finetune_city(model, data, cfg, base_info=base_meta, source=path.name, progress=step, evaluate_test=False)
    bar.empty()
    outputs = compute_outputs(model, data, fraction)
    run.record_metrics(outputs.metrics(data, "test"))
    metrics = {"fine-tuned": outputs.metrics(data, "test"),
               "zero-shot": base_outputs(str(path), path.stat().st_mtime, prep.folder, fraction).metrics(data, "test")}
    bar = st.progress(0.5, text="Scoring on the held-out visits: Markov baseline...")
    metrics["markov"] = baseline_metrics(prep.folder, "markov", fraction)
    bar.progress(0.7, text="Scoring on the held-out visits: return + gravity baseline...")
    metrics["epr"] = baseline_metrics(prep.folder, "epr", fraction)
    bar.empty()

    city = prep.meta["city"]
    out = run.save(scratch_dir() / "trajmoe_finetuned.safetensors", arch=base_meta["arch"])
    files = {"safetensors": out.read_bytes(), "json": out.with_suffix(".json").read_bytes()}
    shutil.rmtree(out.parent, ignore_errors=True)
    label = f"your model fine-tuned on {fraction:.0%} of {city} ({epochs} epoch{'s' if epochs > 1 else ''})"
    return {"folder": prep.folder, "model": model, "outputs": outputs, "fraction": fraction, "metrics": metrics,
            "files": files,
            "label": label, "steps": run.train.steps, "seconds": run.train.seconds,
            "key": f"finetuned:{digest(files['safetensors'])}:{prep.folder}"}


# --------------------------------------------------------------------------- flows, scenario
@st.cache_data(show_spinner=False, max_entries=8)
def zones(key: str, path: str, folder: str):
    """Districts from an uploaded GeoJSON, with each of the city's cells placed in one."""
    from trajmoe.analysis.flows import read_zones

    data = city_data(folder)
    cells = set(data.visits["cell"].astype(str)) | set(data.cells["cell"].astype(str))
    return read_zones(path, cells=cells, name=Path(path).name)


@st.cache_data(show_spinner=False, max_entries=64)
def _flow_summaries(model_key: str, folder: str, hours: tuple, day: str, top_n: int, k: int,
                    zones_key: str | None, _predictions, _zones):
    from trajmoe.analysis.flows import (
        filter_transitions,
        observed_transitions,
        predicted_transitions,
        summarize_flows,
    )

    data = city_data(folder)
    observed = filter_transitions(observed_transitions(data, split="all"), hours=hours, day=day)
    predicted = filter_transitions(predicted_transitions(_predictions.table, top_n=top_n,
                                                         weekday_reliable=data.weekday_reliable), hours=hours, day=day)
    return summarize_flows(observed, k=k, zones=_zones), summarize_flows(predicted, k=k, zones=_zones)


def flow_summaries(shown: Shown, data, *, hours: tuple, day: str, top_n: int, k: int, zones, zones_key: str | None):
    """Observed and predicted flows after the filters and the privacy rule (cached per model,
    city, filters and districts: switching back to a page does not redo the work)."""
    return _flow_summaries(shown.key, str(data.folder), tuple(hours), day, top_n, k, zones_key,
                           shown.outputs, zones)


@st.cache_data(show_spinner=False, max_entries=32)
def _expert_view(model_key: str, layer: int, k: int, _routing) -> dict | None:
    from trajmoe.analysis.flows import (
        describe_experts,
        expert_category_matrix,
        expert_hour_matrix,
        routing_by_cell,
    )

    private, hidden = _routing.private(k)
    if len(private.cell) == 0:
        return None
    categories = expert_category_matrix(private, layer=layer)
    return {"by_cell": routing_by_cell(private, layer=layer), "hidden": hidden,
            "texts": describe_experts(private, layer=layer),
            "categories": categories.loc[:, private.poi_share.sum(axis=0) > 0],
            "hours": expert_hour_matrix(private, layer=layer, relative=True, min_visits=20)}


def expert_view(shown: Shown, *, layer: int, k: int) -> dict | None:
    """Routing maps, heatmaps and texts of one layer from the visits in cells with >= k persons
    (None when no cell has enough); cached per model, layer and k."""
    return _expert_view(shown.key, layer, k, shown.outputs.routing)


def _scenario(model, data, fraction: float, edits: tuple):
    from trajmoe.analysis.scenario import POIEdit, run_scenario

    bar = st.progress(0.0, text="Asking the model again with the changed POIs...")
    result = run_scenario(model, data, [POIEdit(*e) for e in edits], windows=run_subset(data, fraction).windows,
                          stride=STRIDE, progress=lambda d, t: bar.progress(
        d / max(t, 1), text=f"Predicting next places before and after the change: {d:,} of {t:,}"))
    bar.empty()
    return result


@st.cache_data(show_spinner=False, max_entries=32)
def _base_scenario(path: str, mtime: float, folder: str, fraction: float, edits: tuple):
    model, _ = load_model(path, mtime)
    return _scenario(model, city_data(folder), fraction, edits)


def scenario(shown: Shown, data, edits: tuple):
    """The scenario result of the shown model (cached per model, city and edits)."""
    if not shown.finetuned:
        path = base_checkpoint()
        return _base_scenario(str(path), path.stat().st_mtime, str(data.folder), shown.fraction, edits)
    memo = st.session_state.setdefault("_scenarios", {})
    if (shown.key, edits) not in memo:
        memo[(shown.key, edits)] = _scenario(shown.model, data, shown.fraction, edits)
    return memo[(shown.key, edits)]
