"""The transfer benchmark's runs: what is trained and scored for each target, each run cached on disk.

Pretraining (:func:`pretrained`) holds the target's metro out; :func:`finetune_run` fine-tunes ONE
epoch on 5% of the target's training windows (or scores zero-shot, or the prior terms alone);
:func:`scratch_run` trains a baseline from scratch. :func:`with_seeds` runs one row's seeds unless
their files are cached (bench/transfer_cache.py). Everything a run depends on besides its arguments
is in :class:`TransferSettings`, which the command line builds (bench/transfer.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from bench.transfer_cache import (
    AT_TIME,
    CACHE,
    RUNS,
    cached,
    checkpoint_path,
    prepared,
    run_path,
    store,
)
from tools.realdata import REAL_DATASETS
from trajmoe.city.data import CityData
from trajmoe.city.subset import run_subset
from trajmoe.errors import PreparedDataError
from trajmoe.train.calibration import calibrate_head
from trajmoe.train.checkpoint import load_checkpoint, save_checkpoint
from trajmoe.train.evaluate import evaluate
from trajmoe.train.finetune import finetune
from trajmoe.train.fit import TrainConfig, fit, pretrain_config
from trajmoe.train.models import new_model, require_task
from trajmoe.train.record import TrainingRecord, training_record
from trajmoe.train.runner import default_train_config, run_baseline

log = logging.getLogger("bench.transfer")

CHECKIN_TARGETS = {"nyc": ["nyc_foursquare", "nyc_gowalla"], "sf": ["sf_gowalla"], "la": ["la_gowalla"]}
OTHER_KINDS = ["beijing_geolife_gps", "sf_cabspotting_gps", "mexico_city_taxi_trips", "jersey_city_citibike"]
# Second table (MANIFEST: these kinds get "the protocol their kind allows"): the same leave-one-metro-out
# transfer for GPS staypoints (Beijing), taxi trips (SF Cabspotting: the SF checkpoint; Mexico City:
# origin -> destination only, every "user" is one trip) and bike stations (Jersey City), against
# the count baselines, TrajMoE from scratch, the GRU and the dense Transformer (pretrained and from
# scratch), run last.
OTHER_SCRATCH = ["popular", "markov", "epr", "epr+", "trajmoe"]
FEW = 0.05
COUNTS = ["popular", "markov", "epr", "epr+"]  # cheap: every target, 5% and 100%, every seed
NEURAL_SCRATCH = ["gru", "transformer", "trajmoe"]  # from scratch, minutes each (--scratch-neural)
SCRATCH = COUNTS + NEURAL_SCRATCH
TIME_BLIND = ("popular", "markov", "epr", "epr+")  # ignore the target's time: at-time = next scores
ABLATIONS = {  # name -> TrajMoE config overrides (pretrained and fine-tuned like TrajMoE)
    "no_return_scorer": {"return_scorer": False},  # the learned return scorer removed (issue 13)
    "no_successor_terms": {"successor_terms": False},  # the hand-made successor / transition terms removed
    "no_poi": {"use_poi_features": False},
    "no_router_priors": {"router_priors": False},
    "no_shared_expert": {"shared_expert": False},
    "no_return_terms": {"return_terms": False},
}
EVERY_TARGET_ABLATIONS = ("no_return_scorer",)  # the learned part removed: on every check-in target
MODEL_WIDTH = {"d_model": 128, "n_layers": 2}
# Fixed optimiser steps (--pretrain-steps): results do not depend on machine load. The tasks take the
# steps in turn, so 1,200 give each task the 600 of the format-3 (next only) pretraining.
DEFAULT_PRETRAIN_STEPS = 1200
LONG_PRETRAIN_STEPS = 3000  # the "longer pretraining" rows (--pretrain-steps 3000)
CUSTOM_SCRATCH = ["popular", "markov", "epr"]  # --data: from scratch on 5% and 100%; --scratch-neural: all of SCRATCH


@dataclass(frozen=True)
class TransferSettings:
    """What every run of one benchmark invocation shares; the command line's flags, one to one."""

    seeds: int = 3  # seeds 1..n-1 only where seed 0 took under 2 minutes (with_seeds)
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS
    pretrain_budget_s: float = 1200.0  # wall-time cap of each pretraining (--budget-min 20)
    scratch_budget_s: float = 300.0  # wall-time cap of one from-scratch neural run (--scratch-budget-min 5)
    # Where models train and are evaluated (--device; default cpu, so the committed runs, timed on a
    # 2-core CPU, stay comparable). Count baselines always run on CPU (train.runner).
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    runs_dir: Path = RUNS  # the run files read and written (--data: OUT/transfer_runs)
    ckpt_dir: Path = CACHE / "ckpt"  # the pretrained checkpoints (--data: OUT/cache/ckpt)

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.pretrain_steps < 1:
            raise ValueError(f"seeds ({self.seeds}) and pretrain_steps ({self.pretrain_steps}) must be >= 1")
        if self.pretrain_budget_s <= 0 or self.scratch_budget_s <= 0:
            raise ValueError("the wall-time budgets must be positive")

    def pre(self, method: str) -> str:
        """Run name of a pretrained method: ``trajmoe_pretrained_ft1`` at the default step count,
        ``trajmoe_pretrained_ft1_3000`` for another, so both rows live side by side in the table."""
        return method if self.pretrain_steps == DEFAULT_PRETRAIN_STEPS else f"{method}_{self.pretrain_steps}"


# --------------------------------------------------------------------------- one run
def pretrain_sidecar(model, cities: list[CityData], res, cfg: TrainConfig) -> tuple[dict, TrainingRecord]:
    """The sidecar ``info`` and typed training record of a pretrained checkpoint (the record of
    trajmoe/train/checkpoint.py, as the CLI and assets/regenerate.py write it)."""
    experts = model.domain_expert_names() if hasattr(model, "domain_expert_names") else []
    return {"cities": [c.name for c in cities], "domain_experts": experts}, training_record("pretrain", res, cfg)


def pretrained(settings: TransferSettings, metro: str, arch: str, variant: str, overrides: dict,
               sources: list[str | CityData] | None = None) -> Path:
    """Pretrain (or load) ``arch`` on every dataset outside ``metro``; returns the checkpoint path.

    ``sources``: dataset keys of REAL_DATASETS or loaded CityData (``--data``: the other folders;
    ``metro`` then names the cache entry)."""
    ckpt = checkpoint_path(settings.ckpt_dir, metro, variant, settings.pretrain_steps)
    if ckpt.is_file():
        return ckpt
    sources = sources or [k for k, v in REAL_DATASETS.items() if v[2] != metro]
    cities = [s if isinstance(s, CityData) else prepared(s) for s in sources]
    sources = [str(s.folder) if isinstance(s, CityData) else s for s in sources]  # JSON-able names
    model, config = new_model(arch, seed=0, **MODEL_WIDTH, **overrides)
    model.to(settings.device)
    cfg = pretrain_config(max_steps=settings.pretrain_steps, max_seconds=settings.pretrain_budget_s, seed=0)
    res = fit(model, cities, cfg)
    info, record = pretrain_sidecar(model, cities, res, cfg)
    save_checkpoint(ckpt, model, arch=arch, config=config, info=info, record=record)
    log.info("pretrained %s/%s on %s: %d steps in %.0fs", metro, variant, sources, res.steps, res.seconds)
    return ckpt


def finetune_run(settings: TransferSettings, ckpt: Path, data: CityData, seed: int, *, epochs: int = 1,
                 zero_shot: bool = False, prior_only: bool = False, task: str = "next") -> dict:
    """Fine-tune 1 epoch on 5% (or zero-shot) and evaluate on the test targets, with the subset's
    visit features (the headline number) and with all training visits (``all_visits``: what
    ``trajmoe evaluate`` reports by default).

    ``prior_only``: the ablation "mobility-prior terms alone": both learned terms' trust set to 0
    (no Transformer, no embeddings, no learned return scorer), no fine-tuning steps, EVERY
    hand-made term's kind weights (successor and transition terms included) calibrated on the same
    5% validation targets with the same prior as after fine-tuning. Fine-tuning records which state
    it kept (``kept``: the starting state when no epoch beat it on the validation share).

    ``task``: the task fine-tuned, calibrated and scored (``next`` or ``at-time``)."""
    model, meta = load_checkpoint(ckpt)
    record = TrainingRecord.of(meta)
    model.to(settings.device)
    task = require_task(model, task, checkpoint=ckpt.name)
    cfg = TrainConfig(fraction=FEW, epochs=epochs, seed=seed, batch_size=8, lr=1e-3, warmup_steps=1, tasks=(task,))
    t0 = time.perf_counter()
    steps, extra = 0, {}
    if zero_shot or prior_only:
        subset = run_subset(data, fraction=FEW, seed=seed, max_len=cfg.max_len)
        if prior_only:
            with torch.no_grad():
                for scale in model.head.scales:
                    scale.zero_()
            calibrate_head(model, data, subset.city, subset.val_targets, task=task, fit_similarity=False)
        metrics = evaluate(model, data, split="test", subset=subset, task=task)
        metrics["all_visits"] = evaluate(model, data, split="test", task=task)
    else:  # the one fine-tune service (CLI and app): fit, then test with the subset's and all visits' features
        run = finetune(model, data, cfg, base_info=meta, source=ckpt.name)
        metrics = {**run.metrics, "all_visits": run.metrics_all}
        steps, extra = run.train.steps, {"kept": run.train.kept, "calibration_kept": run.train.calibration_kept}
    metrics.update(seconds=round(time.perf_counter() - t0, 2), steps=steps, **extra,
                   pretrain_steps=record.steps, pretrain_seconds=record.seconds)
    return metrics


def scratch_run(settings: TransferSettings, method: str, data: CityData, fraction: float, seed: int, *,
                task: str = "next") -> dict:
    """``method`` trained from scratch on ``fraction`` of the target's training windows, then tested."""
    cfg = replace(default_train_config(fraction=fraction, seed=seed), max_seconds=settings.scratch_budget_s)
    if method != "trajmoe":
        return run_baseline(method, data, fraction=fraction, seed=seed, train_config=cfg, device=settings.device,
                            task=task)
    t0 = time.perf_counter()
    model, _ = new_model("trajmoe", seed=seed, **MODEL_WIDTH)
    model.to(settings.device)
    res = fit(model, [data], cfg, val_city=data)
    metrics = evaluate(model, data, split="test", subset=res.val_subset)
    metrics.update(seconds=round(time.perf_counter() - t0, 2), steps=res.steps)
    return metrics


def with_seeds(settings: TransferSettings, target: str, method: str, fraction: float, fn) -> None:
    """Seed 0 first; seeds 1..n-1 only when a run takes under 2 minutes (budget rule)."""
    def path(seed: int) -> Path:
        return run_path(settings.runs_dir, target, method, fraction, seed)

    first = cached(path(0)) or store(path(0), fn(0))
    log.info("%s %s f=%g s0: acc@1 %.4f (%.0fs)", target, method, fraction, first["acc@1"], first["seconds"])
    if first["seconds"] < 120:
        for s in range(1, settings.seeds):
            if cached(path(s)) is None:
                r = store(path(s), fn(s))
                log.info("%s %s f=%g s%d: acc@1 %.4f", target, method, fraction, s, r["acc@1"])


# --------------------------------------------------------------------------- the shared data's targets
def run_target(settings: TransferSettings, metro: str, *, ablations: bool, main_table: bool = True,
               scratch_neural: bool = True) -> None:
    """The metro's runs in order of what the goals need first: the headline rows and every
    hand-made comparison, then the dense and learned-part ablations, then the rest."""
    cities = {target: prepared(target) for target in CHECKIN_TARGETS[metro]}  # read once
    if main_table:
        main_runs(settings, metro, cities)
    if ablations:
        names = [n for n in ABLATIONS if metro == "nyc" or n in EVERY_TARGET_ABLATIONS]
        for name in names:
            ck = pretrained(settings, metro, "trajmoe", name, ABLATIONS[name])
            for target, data in cities.items():
                with_seeds(settings, target, f"ablation_{name}", FEW,
                           lambda s, c=ck, d=data: finetune_run(settings, c, d, s))
    if main_table and scratch_neural:
        for target, data in cities.items():
            for method in NEURAL_SCRATCH:
                for fraction in (FEW, 1.0):
                    with_seeds(settings, target, method, fraction,
                               lambda s, m=method, f=fraction, d=data: scratch_run(settings, m, d, f, s))


def main_runs(settings: TransferSettings, metro: str, cities: dict[str, CityData]) -> None:
    """The headline rows: TrajMoE fine-tuned, zero-shot and its prior terms alone, the count
    baselines, and the dense Transformer pretrained."""
    pre = settings.pre
    ck_moe = pretrained(settings, metro, "trajmoe", "trajmoe", {})
    for target, data in cities.items():
        with_seeds(settings, target, pre("trajmoe_pretrained_ft1"), FEW,
                   lambda s, d=data: finetune_run(settings, ck_moe, d, s))
        with_seeds(settings, target, pre("trajmoe_zero_shot"), FEW,
                   lambda s, d=data: finetune_run(settings, ck_moe, d, s, zero_shot=True))
        with_seeds(settings, target, "ablation_prior_terms_only", FEW,
                   lambda s, d=data: finetune_run(settings, ck_moe, d, s, prior_only=True))
        for method in COUNTS:
            for fraction in (FEW, 1.0):
                with_seeds(settings, target, method, fraction,
                           lambda s, m=method, f=fraction, d=data: scratch_run(settings, m, d, f, s))

    def dense() -> Path:  # pretrained only when a run needs it (cached runs do not)
        return pretrained(settings, metro, "transformer", "transformer", {})

    for target, data in cities.items():
        with_seeds(settings, target, pre("transformer_pretrained_ft1"), FEW,
                   lambda s, d=data: finetune_run(settings, dense(), d, s))


def other_kind_runs(settings: TransferSettings, key: str) -> None:
    """The second table: one GPS / taxi / bike dataset as target, its metro held out of pretraining."""
    pre = settings.pre
    metro = REAL_DATASETS[key][2]
    ck_moe = pretrained(settings, metro, "trajmoe", "trajmoe", {})
    data = prepared(key)
    with_seeds(settings, key, pre("trajmoe_pretrained_ft1"), FEW, lambda s: finetune_run(settings, ck_moe, data, s))
    with_seeds(settings, key, pre("trajmoe_zero_shot"), FEW,
               lambda s: finetune_run(settings, ck_moe, data, s, zero_shot=True))
    with_seeds(settings, key, "ablation_prior_terms_only", FEW,
               lambda s: finetune_run(settings, ck_moe, data, s, prior_only=True))
    for method in OTHER_SCRATCH:
        for fraction in (FEW, 1.0):
            with_seeds(settings, key, method, fraction,
                       lambda s, m=method, f=fraction: scratch_run(settings, m, data, f, s))
    ck_dense = pretrained(settings, metro, "transformer", "transformer", {})
    with_seeds(settings, key, pre("transformer_pretrained_ft1"), FEW,
               lambda s: finetune_run(settings, ck_dense, data, s))
    for method in ("gru", "transformer"):
        for fraction in (FEW, 1.0):
            with_seeds(settings, key, method, fraction,
                       lambda s, m=method, f=fraction: scratch_run(settings, m, data, f, s))


def at_time_runs(settings: TransferSettings, metro: str, *, scratch_neural: bool = True, dense: bool = False) -> None:
    """The at-time section (issue 14): the same checkpoints (pretrained for both tasks) fine-tuned,
    calibrated and scored for at-time; epr-time and the dense Transformer from scratch trained for it."""
    pre = settings.pre
    cities = {target: prepared(target) for target in CHECKIN_TARGETS[metro]}
    ck_moe = pretrained(settings, metro, "trajmoe", "trajmoe", {})
    for target, data in cities.items():
        with_seeds(settings, target, AT_TIME + pre("trajmoe_pretrained_ft1"), FEW,
                   lambda s, d=data: finetune_run(settings, ck_moe, d, s, task="at-time"))
        with_seeds(settings, target, AT_TIME + pre("trajmoe_zero_shot"), FEW,
                   lambda s, d=data: finetune_run(settings, ck_moe, d, s, zero_shot=True, task="at-time"))
        with_seeds(settings, target, AT_TIME + "ablation_prior_terms_only", FEW,
                   lambda s, d=data: finetune_run(settings, ck_moe, d, s, prior_only=True, task="at-time"))
        for fraction in (FEW, 1.0):
            with_seeds(settings, target, AT_TIME + "epr-time", fraction,
                       lambda s, f=fraction, d=data: scratch_run(settings, "epr-time", d, f, s, task="at-time"))
    if dense:
        ck_dense = pretrained(settings, metro, "transformer", "transformer", {})
        for target, data in cities.items():
            with_seeds(settings, target, AT_TIME + pre("transformer_pretrained_ft1"), FEW,
                       lambda s, d=data: finetune_run(settings, ck_dense, d, s, task="at-time"))
    if scratch_neural:
        for target, data in cities.items():
            for fraction in (FEW, 1.0):
                with_seeds(settings, target, AT_TIME + "transformer", fraction,
                           lambda s, f=fraction, d=data: scratch_run(settings, "transformer", d, f, s, task="at-time"))


# --------------------------------------------------------------------------- your own folders (--data)
def folder_key(folder: Path) -> str:
    """Target key of a prepared folder: its name, safe in a run file name (no ``__``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(folder).resolve().name)
    return re.sub(r"_{2,}", "_", name).strip("_.") or "city"


def load_folders(folders: list[Path]) -> dict[str, CityData]:
    """``{target key: CityData}`` of the ``--data`` folders; SystemExit with the fix when they cannot be used."""
    if len(folders) < 2:
        raise SystemExit("--data needs at least 2 prepared folders: each is the target once, pretrained on the others.")
    keys = [folder_key(f) for f in folders]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SystemExit(f"--data: several folders are named {', '.join(twice)}: rename them, the folder name "
                         "is the target's key in the tables.")
    try:
        return {key: CityData(folder) for key, folder in zip(keys, folders)}
    except PreparedDataError as exc:
        raise SystemExit(str(exc)) from exc


def custom_runs(settings: TransferSettings, cities: dict[str, CityData], *, scratch: list[str]) -> None:
    """Leave-one-city-out on ``cities``: per target, TrajMoE pretrained on all the others (cached
    per set of source folders), fine-tuned 1 epoch on 5% and zero-shot, and ``scratch`` on 5% and 100%."""
    pre = settings.pre
    for key, data in cities.items():
        sources = [c for k, c in cities.items() if k != key]
        digest = hashlib.sha1("\n".join(sorted(str(c.folder.resolve()) for c in sources)).encode()).hexdigest()[:10]
        ck = pretrained(settings, f"custom-{key}-{digest}", "trajmoe", "trajmoe", {}, sources=sources)
        with_seeds(settings, key, pre("trajmoe_pretrained_ft1"), FEW,
                   lambda s, c=ck, d=data: finetune_run(settings, c, d, s))
        with_seeds(settings, key, pre("trajmoe_zero_shot"), FEW,
                   lambda s, c=ck, d=data: finetune_run(settings, c, d, s, zero_shot=True))
        for method in scratch:
            for fraction in (FEW, 1.0):
                with_seeds(settings, key, method, fraction,
                           lambda s, m=method, f=fraction, d=data: scratch_run(settings, m, d, f, s))
