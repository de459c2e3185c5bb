"""The one fine-tune service: fit on a city's run subset, evaluate on the same subset, describe it.

``trajmoe finetune`` and the app's Fine-tune page both call :func:`finetune`, so a model tuned in
the browser and one tuned on the command line are trained, scored and described the same way:

1. :func:`trajmoe.train.fit.fit` on ``cfg.fraction`` of the city's training windows (seed
   ``cfg.seed``), early stopping and head calibration on the same share of validation targets,
   and the keep rule's verdict among the fine-tuned state, the starting one and the simple baseline
   inside the model (:attr:`FinetuneResult.verdict`). :func:`preset_config` builds ``cfg`` from a
   preset (:data:`trajmoe.train.recipe.PRESETS`: ``city`` for a planner's whole file, ``protocol``
   for the benchmark's);
2. test metrics with cell features from exactly that subset's training visits (what the model
   was tuned on; README.md § Protocol);
3. the sidecar ``info`` for :func:`trajmoe.train.checkpoint.save_checkpoint`, recording the run
   subset (fraction, seed, window and visit counts) so ``evaluate`` and ``predict`` can say which
   visit features they use, and rebuild the subset's with ``--features subset``.

The test metrics are measured twice: with the subset's visit features (what the model was tuned
on) and with all of the city's training visits (what ``evaluate`` and ``predict`` use by default).
A model must not depend on how much data stands behind its features; both numbers are printed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from trajmoe.city.data import CityData
from trajmoe.city.subset import RunSubset, run_subset
from trajmoe.errors import CheckpointError, TrajMoEError
from trajmoe.train.checkpoint import save_checkpoint
from trajmoe.train.evaluate import evaluate
from trajmoe.train.fit import Progress, TrainConfig, TrainResult, fit
from trajmoe.train.keep import Verdict
from trajmoe.train.recipe import PRESETS
from trajmoe.train.record import TrainingRecord, training_record

log = logging.getLogger(__name__)

VISIT_FEATURES = ("all", "subset")  # where evaluate / predict take visit-derived cell features from


@dataclass
class FinetuneResult:
    """A fine-tuned model and everything needed to show or save it."""

    model: torch.nn.Module  # the tuned model (the one passed in, trained in place), in eval mode
    train: TrainResult  # steps, seconds, losses, validation history
    subset: RunSubset  # the windows, features and validation targets the run used
    metrics: dict  # test metrics with the subset's cell features
    info: dict  # sidecar info for save_checkpoint (cities, domain experts, metrics)
    record: TrainingRecord  # the sidecar's training record
    metrics_all: dict | None = None  # test metrics with cell features from all training visits

    @property
    def verdict(self) -> Verdict | None:
        """Which state the keep rule kept (fine-tuned, starting, baseline), each state's validation
        Acc@1 and MRR, and the paired z (:class:`trajmoe.train.keep.Verdict`; its ``sentence()`` says
        it in plain words); the same is in :attr:`record` (``verdict``) and the saved sidecar."""
        return self.train.verdict

    def record_metrics(self, metrics: dict) -> None:
        """Store test metrics measured by the caller (see ``evaluate_test`` of :func:`finetune`)."""
        self.metrics = metrics
        self.info["metrics"] = {"test": metrics}

    def save(self, path: str | Path, *, arch: str) -> Path:
        """Write ``NAME.safetensors`` + ``NAME.json`` (the run's config and :attr:`info`)."""
        return save_checkpoint(path, self.model, arch=arch, config=self.model.config, info=self.info, record=self.record)


def preset_config(preset: str, **overrides) -> TrainConfig:
    """The TrainConfig of fine-tuning preset ``preset`` (:data:`trajmoe.train.recipe.PRESETS`);
    ``overrides`` (not None) set other fields, e.g. ``seed`` or ``tasks``."""
    if preset not in PRESETS:
        raise TrajMoEError(f"Unknown fine-tuning preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    fields = {**dataclasses.asdict(PRESETS[preset]), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)


def finetune(model: torch.nn.Module, data: CityData, cfg: TrainConfig, *, base_info: dict, source: str,
             progress: Progress | None = None, evaluate_test: bool = True) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``cfg.fraction`` of ``data`` and evaluate it on the test targets.

    Parameters
    ----------
    model
        A loaded checkpoint's model. It is trained in place: pass a copy to keep the original.
    data
        The prepared city.
    cfg
        Fraction, seed, epochs, mode (full / light) and the optimiser settings.
    base_info
        The starting checkpoint's sidecar (its ``cities`` carry over into the new one; its training
        record's kinds say which head rows calibration pulls toward their weights).
    source
        The starting checkpoint, as a path or a file name: the sidecar records its file name only
        (a sidecar is shared with others; it never carries a path of the user's machine).
    progress
        Optional ``(step, total, loss)`` or ``(step, total, loss, seconds_left)`` callback
        (:data:`trajmoe.train.fit.Progress`: with a time budget, ``total`` is the steps expected to
        fit in it and ``seconds_left`` what is left of it).
    evaluate_test
        False skips the exact test evaluation (one context per target): the app scores every
        visit in its own faster pass and records those metrics with
        :meth:`FinetuneResult.record_metrics`.
    """
    base = TrainingRecord.of(base_info)  # the kinds its head rows were trained on (default: the model's config)
    result = fit(model, [data], cfg, val_city=data, progress=progress, kinds_before=base.trained_kinds if base else None)
    subset = result.val_subset
    task = cfg.tasks[0]  # the test metrics are the first task's (the one `trajmoe finetune --task` names)
    metrics, metrics_all = {}, None
    if evaluate_test:
        metrics = evaluate(model, data, split="test", subset=subset, max_len=cfg.max_len,
                           batch_size=cfg.eval_batch_size, task=task)
        metrics_all = evaluate(model, data, split="test", max_len=cfg.max_len, batch_size=cfg.eval_batch_size, task=task)
    names = getattr(model, "domain_expert_names", None)
    record = training_record("finetune", result, cfg, source=source)
    info = {
        "cities": sorted(set(base_info.get("cities", [])) | {data.name}),
        "domain_experts": list(names()) if names is not None else [],
        "metrics": {"test": metrics, **({"test_all_visits": metrics_all} if metrics_all is not None else {})},
    }
    log.info("fine-tuned on %.3g of %s: %d steps, test %s", cfg.fraction, data.name, result.steps, metrics)
    return FinetuneResult(model=model, train=result, subset=subset, metrics=metrics, info=info, record=record,
                          metrics_all=metrics_all)


def visit_features(meta: dict, data: CityData, *, choice: str = "all") -> tuple[RunSubset | None, str]:
    """The cell features ``evaluate`` / ``predict`` use for a checkpoint, and a sentence saying which.

    ``choice="all"``: features from every training visit of the city (the default: a fine-tuned
    model must not depend on how many visits stand behind its features). ``choice="subset"``:
    rebuild the run subset the checkpoint's fine-tuning recorded in its sidecar (same fraction and
    seed), to reproduce the number ``finetune`` reported. Returns ``(subset or None, sentence)``.
    """
    if choice not in VISIT_FEATURES:
        raise CheckpointError(f"visit features must be one of {', '.join(VISIT_FEATURES)}, got {choice!r}.")
    record = TrainingRecord.of(meta)
    recorded = record.subset if record is not None and record.kind == "finetune" else None
    n_all = len(data.train_visits(None))
    tuned = ""
    if recorded is not None:
        tuned = (f" The checkpoint was fine-tuned on {record.city!r} with {recorded['fraction']:.0%} of its "
                 f"training windows (seed {recorded['seed']}, {recorded['train_visits']:,} visits).")
    if choice == "all":
        return None, f"Visit features: all {n_all:,} training visits of {data.name}.{tuned}"
    if recorded is None:
        raise CheckpointError(
            "This checkpoint records no fine-tuning subset (it was not written by `trajmoe finetune` of this "
            "version): use --features all.")
    if record.city != data.name:
        raise CheckpointError(
            f"This checkpoint was fine-tuned on {record.city!r}, not {data.name!r}: its subset does not "
            "apply here; use --features all.")
    subset = run_subset(data, fraction=recorded["fraction"], seed=recorded["seed"], max_len=recorded["max_len"])
    if subset.n_train_visits != recorded["train_visits"]:
        raise CheckpointError(
            f"The prepared folder gives {subset.n_train_visits:,} training visits for the recorded subset, the "
            f"fine-tuning run saw {recorded['train_visits']:,}: the folder was prepared differently. Prepare it "
            "from the same file and settings, or use --features all.")
    return subset, (f"Visit features: the fine-tuning subset, {subset.n_train_visits:,} of {n_all:,} training "
                    f"visits ({subset.fraction:.0%} of the windows, seed {subset.seed}).")
