"""What the pages show from the model: predictions, fine-tuning, flows, experts and scenarios.

The pretrained model's views are cached for every session (``st.cache_data`` on the checkpoint
path and the city folder); a session's fine-tuned model and what is computed from it stay in its
own :class:`state.session.Session`. Everything shown goes through the privacy rule
(trajmoe.analysis.privacy) with the sidebar's k.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from state import inputs
from state.inputs import Prepared, base_checkpoint, base_model, city_data, load_model
from state.session import Finetuned, session
from trajmoe.errors import TrajMoEError

TOP_K = 10  # next cells kept per visit (the flows page uses up to this many)
CONTEXT_VISITS = 64  # each prediction reads up to this many earlier visits (the protocol's L)
FRACTION = 0.05  # the paper's few-shot share; the pretrained model's views use the same features
SEED = 0  # the app's run subset seed (fine-tuning and the pretrained model's views share it)
MIN_HELD_OUT = 10  # fewer validation or test visits than this: too little to fine-tune and score on
MIN_HOUR_VISITS = 20  # an expert x hour-of-week square with fewer visits is left blank


def run_subset(data, fraction: float):
    """The app's run subset of a city: ``fraction`` of its training windows with the app's seed."""
    from trajmoe.city.subset import run_subset as subset_of

    return subset_of(data, fraction=fraction, seed=SEED)


# --------------------------------------------------------------------------- predictions
_DOING = {"next": "Predicting where each person goes next",
          "at-time": "Predicting where each person arrives, knowing when"}  # progress text per task


def compute_outputs(model, data, fraction: float, *, task: str = "next"):
    """One pass over every visit: next-cell predictions, ranks of the true next cells and routing.

    Cell features come from the training visits of the few-shot share ``fraction`` (what a model
    fine-tuned on that share saw), so zero-shot and fine-tuned views are compared like for like.
    ``task`` (trajmoe.city.tasks) is passed to the model's scoring (the shared model is never
    modified); None when the checkpoint was not trained for it.
    """
    from trajmoe.analysis.predict import predict

    if task != "next":
        from trajmoe.errors import CheckpointError
        from trajmoe.train.models import require_task

        try:
            require_task(model, task)
        except CheckpointError:  # config.tasks lacks it: the page says so in plain words
            return None
    doing = _DOING[task]
    bar = st.progress(0.0, text=f"{doing}...")
    out = predict(model, data, top_k=TOP_K, split="all", city=run_subset(data, fraction).city, task=task,
                  progress=lambda d, t: bar.progress(d / max(t, 1), text=f"{doing}: {d:,} of {t:,} moves"))
    bar.empty()
    return out


@st.cache_data(show_spinner=False, max_entries=8)
def _task_outputs(model_key: str, task: str, folder: str, fraction: float, _model):
    return compute_outputs(_model, city_data(folder), fraction, task=task)


@st.cache_data(show_spinner=False, max_entries=8)
def base_outputs(path: str, mtime: float, folder: str, fraction: float = FRACTION):
    model, _ = load_model(path, mtime)
    return compute_outputs(model, city_data(folder), fraction)


@dataclass
class Shown:
    """The model whose predictions the pages show."""

    label: str
    model: object
    outputs: object  # trajmoe.analysis.predict.Predictions over every visit
    fraction: float  # few-shot share whose training visits give the cell features
    key: str  # identifies model + city for caches
    finetuned: bool


def finetuned_for(folder: str) -> Finetuned | None:
    """The session's fine-tuned model when it was tuned on this prepared city (after a refresh:
    loaded again from the session's folder, its predictions made again)."""
    ft = session().finetuned
    if ft is None or ft.folder != folder:
        return None
    if ft.model is None:
        from trajmoe.train.checkpoint import load_checkpoint

        try:
            ft.model, _ = load_checkpoint(inputs.finetuned_path())
        except TrajMoEError as exc:  # the kept files were damaged: say so, show the pretrained model
            st.warning(f"Your fine-tuned model could not be loaded again ({exc}); fine-tune once more.")
            session().finetuned = None
            return None
        ft.outputs = compute_outputs(ft.model, city_data(folder), ft.fraction)
    return ft


def shown_model(prep: Prepared) -> Shown | None:
    ft = finetuned_for(prep.folder)
    if ft:
        return Shown(ft.label, ft.model, ft.outputs, ft.fraction, ft.key, True)
    base = base_model()
    if base is None:
        return None
    model, meta, path = base
    outputs = base_outputs(str(path), path.stat().st_mtime, prep.folder)
    what = "the shipped pretrained model" if path == inputs.SHIPPED_CHECKPOINT else f"the pretrained model {path.name}"
    seen = pretrained_on(meta, prep)
    city = prep.meta.get("city", "this city")
    label = (f"{what}, not fine-tuned here; its pretraining included {seen}, so this is not a zero-shot result"
             if seen else f"{what}, zero-shot (not fine-tuned on {city})")
    return Shown(label, model, outputs, FRACTION, f"{path}:{path.stat().st_mtime}:{prep.folder}", False)


def task_outputs(shown: Shown, data, task: str):
    """The shown model's pass for ``task``: ``next`` is ``shown.outputs``; another task is one
    more pass, cached per model key, task, city and few-shot share (None: not trained for it)."""
    if task == "next":
        return shown.outputs
    return _task_outputs(shown.key, task, str(data.folder), shown.fraction, shown.model)


def pretrained_on(meta: dict, prep: Prepared) -> str | None:
    """The city of the checkpoint's pretraining data this upload is, in words ("Los Angeles
    (la_gowalla)"), or None: matched by the file's name against the datasets of the sidecar's
    pretraining record (trajmoe.train.record.TrainingRecord, older records migrated) or by the
    city name against its cities (a result there is not zero-shot: the model has seen it)."""
    from trajmoe.train.record import TrainingRecord

    record = TrainingRecord.of(meta)
    datasets = {k.lower(): d for k, d in record.datasets.items()} if record and record.kind == "pretrain" else {}
    stem = Path(str(prep.report.get("source", ""))).name.split(".")[0].lower()
    if stem in datasets and datasets[stem].city:
        return f"{datasets[stem].city} ({stem})"
    city = str(prep.meta.get("city", "")).strip().lower()
    return next((c for c in meta.get("cities", []) if str(c).lower() == city), None)


def require_model(prep: Prepared) -> Shown:
    """The shown model, said in an info line, or stop the page with the reason in plain words."""
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


# --------------------------------------------------------------------------- fine-tuning
@st.cache_data(show_spinner=False, max_entries=32)
def baseline_metrics(folder: str, name: str, fraction: float) -> dict:
    """Test metrics of a baseline trained on the same few-shot share (README.md § Protocol)."""
    from trajmoe.train.runner import run_baseline

    return run_baseline(name, city_data(folder), fraction=fraction, seed=SEED)


def finetune(prep: Prepared, data, *, fraction: float, epochs: int, max_steps: int | None, mode: str) -> Finetuned:
    """Fine-tune a deep copy of the session's starting model; predictions, metrics, files.

    The shared model in st.cache_resource is never touched: fit() trains the copy. The test
    metrics come from the app's own one-pass predictions over every visit (``evaluate_test=False``:
    the same scores as the service's evaluation, without scoring the test visits twice).
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

    out = run.save(inputs.scratch_dir() / "trajmoe_finetuned.safetensors", arch=base_meta["arch"])
    files = {"safetensors": out.read_bytes(), "json": out.with_suffix(".json").read_bytes()}
    shutil.rmtree(out.parent, ignore_errors=True)
    label = f"your model fine-tuned on {fraction:.0%} of {prep.meta['city']} ({epochs} epoch{'s' if epochs > 1 else ''})"
    return Finetuned(folder=prep.folder, model=model, outputs=outputs, fraction=fraction, metrics=metrics,
                     files=files, label=label, steps=run.train.steps, seconds=run.train.seconds,
                     key=f"finetuned:{inputs.digest(files['safetensors'])}:{prep.folder}")


MODEL_NAMES = {"zero-shot": "Pretrained, no fine-tuning (zero-shot)", "fine-tuned": "Fine-tuned",
               "markov": "Markov baseline (same data)", "epr": "Return + gravity baseline (same data)"}
RANK_SCORE = "Rank score (mean reciprocal rank)"
MEASURES = {  # column -> what it means, in the table's help and the page's caption
    "First guess right": "share of the held-out visits where the model's first guess was the right place",
    "Right place in top 5": "share where the right place was among its first 5 guesses",
    "Right place in top 10": "share where it was among its first 10 guesses",
    RANK_SCORE: "100% when the right place is always the first guess, 50% when it is always the second, "
                "33% the third...: the average of 1 / (position of the right place in the model's list)",
}


def metrics_table(metrics: dict, *, seen: str | None = None) -> pd.DataFrame:
    """One row per model (zero-shot, fine-tuned, the two baselines): hit rates and the rank score,
    all shares of 1 (one format on the page); ``seen``: the pretraining included this city, so
    the pretrained row is not called zero-shot."""
    names = dict(MODEL_NAMES, **({"zero-shot": f"Pretrained, no fine-tuning (it saw {seen} in pretraining)"}
                                 if seen else {}))
    return pd.DataFrame([
        {"Model": names[key], "First guess right": metrics[key]["acc@1"],
         "Right place in top 5": metrics[key]["acc@5"], "Right place in top 10": metrics[key]["acc@10"],
         RANK_SCORE: metrics[key]["mrr"]}
        for key in MODEL_NAMES
    ])


# --------------------------------------------------------------------------- flows
@st.cache_data(show_spinner=False, max_entries=8)
def zones(key: str, path: str, folder: str):
    """Districts from an uploaded GeoJSON, with each of the city's cells placed in one."""
    from pathlib import Path

    from trajmoe.analysis.zones import read_zones

    data = city_data(folder)
    cells = set(data.visits["cell"].astype(str)) | set(data.cells["cell"].astype(str))
    return read_zones(path, cells=cells, name=Path(path).name)


@st.cache_data(show_spinner=False, max_entries=64)
def _side_by_side(what: str, model_key: str, folder: str, hours: tuple, day: str, top_n: int, k: int,
                  zones_key: str | None, resolution: int | None, _predictions, _zones):
    """Observed and predicted ``flows`` (moves timed at their start) or ``arrivals`` (timed at
    the visit they arrive at), of the same moves: each observed one, and the model's guesses for it."""
    from trajmoe.analysis import flows

    data = city_data(folder)
    if what == "flows":
        observe, guess = flows.observed_transitions, flows.model_transitions

        def summarize(moves):
            return flows.summarize_flows(moves, k=k, zones=_zones, resolution=resolution)
    else:
        observe, guess = flows.observed_arrivals, flows.model_arrivals

        def summarize(moves):
            return flows.summarize_arrivals(moves, k=k, resolution=resolution)
    observed = flows.filter_transitions(observe(data, split="all"), hours=hours, day=day)
    predicted = flows.filter_transitions(guess(data, _predictions, top_n=top_n), hours=hours, day=day)
    return summarize(observed), summarize(predicted)


def flow_summaries(shown: Shown, data, *, hours: tuple, day: str, top_n: int, k: int, zones, zones_key: str | None,
                   resolution: int | None = None):
    """Observed and predicted flows of the same moves after the filters and the privacy rule, over
    cells, their parents at a coarser ``resolution``, or districts (cached per model, city, filters
    and places: switching back to a page does not redo the work)."""
    return _side_by_side("flows", shown.key, str(data.folder), tuple(hours), day, top_n, k, zones_key, resolution,
                         shown.outputs, zones)


def arrival_summaries(shown: Shown, data, *, hours: tuple, day: str, top_n: int, k: int,
                      resolution: int | None = None):
    """Observed arrivals per place in the arrival hours, and the at-time task's for the same moves,
    after the privacy rule; None when the shown model was not trained for the at-time task."""
    at_time = task_outputs(shown, data, "at-time")
    if at_time is None:
        return None
    return _side_by_side("arrivals", shown.key, str(data.folder), tuple(hours), day, top_n, k, None, resolution,
                         at_time, None)


def per_place_table(observed, predicted, names: pd.Series | None) -> pd.DataFrame:
    """Arrivals, departures and net flow per shown place, observed next to predicted, busiest first;
    cells get their readable (unique) name, districts keep theirs. Cell ids are in the downloads only."""
    cols = ["place", "inflow", "outflow", "net"]
    table = observed.places[cols].merge(predicted.places[cols], on="place", how="outer",
                                        suffixes=(" (observed)", " (predicted)")).fillna(0.0)  # absent: no flow shown
    if names is not None:
        table["place"] = table["place"].map(names)
    table = table.rename(columns=lambda c: c.replace("inflow", "arrivals").replace("outflow", "departures"))
    return table.sort_values(["arrivals (observed)", "arrivals (predicted)"], ascending=False)


# --------------------------------------------------------------------------- experts
@dataclass
class ExpertView:
    """Routing of one layer over the cells visited by >= k persons."""

    by_cell: pd.DataFrame  # routing_by_cell: expert shares, dominant expert, persons per cell
    hidden: int  # cells left out by the privacy rule
    texts: list[str]  # one sentence per expert
    categories: pd.DataFrame  # expert x kind of place (1 = city average), kinds present only
    hours: pd.DataFrame  # expert x hour of week (1 = the expert's usual share)
    busiest: int  # the expert most places go to (1-based)


@st.cache_data(show_spinner=False, max_entries=32)
def _expert_view(model_key: str, layer: int, k: int, _routing) -> ExpertView | None:
    from trajmoe.analysis.routing import (
        describe_experts,
        expert_category_matrix,
        expert_hour_matrix,
        routing_by_cell,
    )

    private, hidden = _routing.private(k)
    if len(private.cell) == 0:
        return None
    by_cell = routing_by_cell(private, layer=layer)
    categories = expert_category_matrix(private, layer=layer)
    return ExpertView(by_cell=by_cell, hidden=hidden, texts=describe_experts(private, layer=layer),
                      categories=categories.loc[:, private.poi_share.sum(axis=0) > 0],
                      hours=expert_hour_matrix(private, layer=layer, relative=True, min_visits=MIN_HOUR_VISITS),
                      busiest=int(by_cell["dominant"].value_counts().index[0]))


def expert_view(shown: Shown, *, layer: int, k: int) -> ExpertView | None:
    """Routing maps, heatmaps and texts of one layer from the visits in cells with >= k persons
    (None when no cell has enough); cached per model, layer and k."""
    return _expert_view(shown.key, layer, k, shown.outputs.routing)


def layer_labels(n_layers: int) -> list[str]:
    return [f"Layer {i + 1}" + (" (closest to the places)" if i == 0 else "") for i in range(n_layers)]


# --------------------------------------------------------------------------- scenario
def _scenario(model, data, fraction: float, edits: tuple, hours: tuple | None = None):
    from trajmoe.analysis.scenario import POIEdit, run_scenario

    bar = st.progress(0.0, text="Asking the model again with the changed POIs...")
    result = run_scenario(model, data, [POIEdit(*e) for e in edits], windows=run_subset(data, fraction).windows,
                          arrival_hours=hours, progress=lambda d, t: bar.progress(
        d / max(t, 1), text=f"Predicting next places before and after the change: {d:,} of {t:,}"))
    bar.empty()
    return result


@st.cache_data(show_spinner=False, max_entries=32)
def _base_scenario(path: str, mtime: float, folder: str, fraction: float, edits: tuple, hours: tuple | None = None):
    model, _ = load_model(path, mtime)
    return _scenario(model, city_data(folder), fraction, edits, hours)


def scenario(shown: Shown, data, edits: tuple, *, hours: tuple | None = None):
    """The scenario result of the shown model (cached per model, city, edits and arrival hours;
    ``hours``: only arrivals then, asked in the at-time task)."""
    hours = tuple(hours) if hours is not None else None
    if not shown.finetuned:
        path = base_checkpoint()
        return _base_scenario(str(path), path.stat().st_mtime, str(data.folder), shown.fraction, edits, hours)
    memo = session().scenarios
    if (shown.key, edits, hours) not in memo:
        memo[(shown.key, edits, hours)] = _scenario(shown.model, data, shown.fraction, edits, hours)
    return memo[(shown.key, edits, hours)]


@dataclass
class ScenarioView:
    """A scenario's cells that may be shown (>= k persons) and the numbers the page states."""

    cells: pd.DataFrame  # ScenarioResult.cells of the shown cells
    hidden: int  # cells left out by the privacy rule
    here: float  # change of expected arrivals in the edited (shown) places
    elsewhere: float  # change in the other shown places, together
    share: float  # ``here`` relative to the edited places' arrivals before

    def top(self, names: pd.Series, n: int = 12) -> pd.DataFrame:
        """The ``n`` places that change most, named."""
        top = self.cells.reindex(self.cells["change"].abs().sort_values(ascending=False).index).head(n)
        return pd.DataFrame({"place": top["cell"].map(names), "before": top["inflow_before"],
                             "after": top["inflow_after"], "change": top["change"], "change %": top["change_pct"]})


def scenario_view(result, k: int) -> ScenarioView:
    cells, hidden = result.private(k)
    edited = cells[cells["edited"]]
    here = float(edited["change"].sum())
    return ScenarioView(cells=cells, hidden=hidden, here=here, elsewhere=float(cells["change"].sum()) - here,
                        share=here / max(float(edited["inflow_before"].sum()), 1e-9))
