"""The model the pages show and its predictions: shared by the Flows, Experts, Scenario and
Fine-tune pages' outputs (:mod:`state.flows`, :mod:`state.experts`, :mod:`state.scenario`,
:mod:`state.finetuning`).

The pretrained model's predictions are cached for every session (``st.cache_data`` on the
checkpoint path and the city folder); a session's fine-tuned model and its predictions stay in its
own :class:`state.session.Session`. Every view of a city reads the app's one run subset of it
(:func:`run_subset`: the few-shot share whose training visits give the cell features), made once
per city and share, or kept from the fine-tuning that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import streamlit as st

from state import inputs
from state.inputs import Prepared, city_data
from state.models import base_model, load_model
from state.session import Finetuned, session
from trajmoe.errors import CheckpointError, TrajMoEError

TOP_K = 10  # next cells kept per visit (the flows page uses up to this many)
CONTEXT_VISITS = 64  # each prediction reads up to this many earlier visits (the protocol's L)
FRACTION = 0.05  # the paper's few-shot share; the pretrained model's views use the same features
SEED = 0  # the app's run subset seed (fine-tuning and the pretrained model's views share it)


def run_subset(data, fraction: float, *, made=None):
    """The app's run subset of a city: ``fraction`` of its training windows with the app's seed.

    Made once per prepared city and share, and shared (read-only) by every view of it: the
    pretrained and fine-tuned predictions, the at-time pass and the scenarios. ``made``: the run
    subset a fine-tuning on the same city, share and seed already produced, kept instead of made again."""
    assert made is None or (made.fraction, made.seed) == (fraction, SEED), "another run's subset"
    return _run_subset(str(data.folder), fraction, data, made)


@st.cache_resource(show_spinner=False, max_entries=8)
def _run_subset(folder: str, fraction: float, _data, _made):
    from trajmoe.city.subset import run_subset as subset_of

    return _made if _made is not None else subset_of(_data, fraction=fraction, seed=SEED)


_DOING = MappingProxyType({"next": "Predicting where each person goes next",
                           "at-time": "Predicting where each person arrives, knowing when"})  # progress text per task


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
    loaded again from the session's folder, its predictions made again). Kept files that no longer
    load are forgotten (the pretrained model is shown again) and a CheckpointError says so."""
    ft = session().finetuned
    if ft is None or ft.folder != folder:
        return None
    if ft.model is None:
        from trajmoe.train.checkpoint import load_checkpoint

        try:
            ft.model, _ = load_checkpoint(inputs.finetuned_path())
        except TrajMoEError as exc:  # the kept files were damaged: forget them, the page says so
            session().finetuned = None
            raise CheckpointError(f"Your fine-tuned model could not be loaded again ({exc}); fine-tune once more.") from exc
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
