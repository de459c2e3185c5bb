"""What the Fine-tune page shows: fine-tuning a session's own copy of the starting model, its
scores against the pretrained model and two baselines on the same data, and the table's words.

The shared model in ``st.cache_resource`` is never touched: the session trains a deep copy, kept
in its :class:`state.session.Session` (with its predictions and downloads).
"""

from __future__ import annotations

import shutil
from types import MappingProxyType

import pandas as pd
import streamlit as st

from state import inputs
from state.inputs import Prepared, city_data
from state.models import base_model
from state.predictions import SEED, base_outputs, compute_outputs, run_subset
from state.session import Finetuned

MIN_HELD_OUT = 10  # fewer validation or test visits than this: too little to fine-tune and score on


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
    run_subset(data, fraction, made=run.subset)  # the app's views of this share read the fine-tuning's own subset
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
    kept = run.verdict.kept if run.verdict is not None else "fine-tuned"
    label += KEPT_NOTE.get(kept, "")  # the sidebar and every page name what the maps really show
    return Finetuned(folder=prep.folder, model=model, outputs=outputs, fraction=fraction, metrics=metrics,
                     files=files, label=label, steps=run.train.steps, seconds=run.train.seconds,
                     key=f"finetuned:{inputs.digest(files['safetensors'])}:{prep.folder}",
                     verdict=run.verdict.in_plain_words() if run.verdict is not None else "")


# What a fine-tuned model is when the keep rule (trajmoe/train/keep.py) set the tuned state aside.
KEPT_NOTE = MappingProxyType({
    "starting": ": the pretrained state kept, fine-tuning did not beat it",
    "baseline": ": the simple return + distance baseline inside it kept, the learned parts did not beat it",
})


MODEL_NAMES = MappingProxyType({"zero-shot": "Pretrained, no fine-tuning (zero-shot)", "fine-tuned": "Fine-tuned",
                               "markov": "Markov baseline (same data)", "epr": "Return + gravity baseline (same data)"})
RANK_SCORE = "Rank score (mean reciprocal rank)"
MEASURES = MappingProxyType({  # column -> what it means, in the table's help and the page's caption
    "First guess right": "share of the held-out visits where the model's first guess was the right place",
    "Right place in top 5": "share where the right place was among its first 5 guesses",
    "Right place in top 10": "share where it was among its first 10 guesses",
    RANK_SCORE: "100% when the right place is always the first guess, 50% when it is always the second, "
                "33% the third...: the average of 1 / (position of the right place in the model's list)",
})


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
