"""Leave-one-metro-out transfer benchmark (DESIGN.md §Protocol), cached and resumable.

For each target metro (New York = both NYC files, San Francisco, Los Angeles): pretrain TrajMoE
and the dense Transformer on every OTHER dataset (GPS, taxi and bike cities included as sources),
fine-tune ONE epoch on 5% of the target's training windows, evaluate on its test targets; on the
same targets, baselines from scratch on 5% and 100%, TrajMoE without pretraining, and zero-shot.
Ablations with New York as target. Every finished run is stored as one JSON file in
``bench/results/transfer_runs/`` (committed), so a re-run computes only what is missing and the
table can be completed across sessions.

    python bench/transfer.py                      # everything missing, then the tables
    python bench/transfer.py --targets la --pretrain-steps 600 --scratch-budget-min 3
    python bench/transfer.py --no-ablations --no-scratch-neural   # the headline rows first (every target)
    python bench/transfer.py --table-only         # re-render transfer.md / .json / .png
    python bench/transfer.py --device cuda        # train and evaluate on the GPU (default cpu)

Outputs: bench/results/transfer.md, transfer.json, transfer.png. Every test metric is also given
for returns (the target's cell is among the person's last 64 visits) and explorations apart.

Your own cities: ``--data DIR DIR [DIR ...]`` (at least two folders made by ``trajmoe prepare``)
runs leave-one-city-out on them instead: each folder (its name is the target key) is the target
once, TrajMoE pretrained on all the other folders, then fine-tuned 1 epoch on 5% and zero-shot,
against return + gravity, Markov and most-popular from scratch on 5% and 100% (``--scratch-neural``
adds the slow GRU, dense Transformer and TrajMoE from scratch). Runs, checkpoints and tables go to
``--out`` (default bench/results/custom/, git-ignored), never the shared tables; delete that folder
when the set of folders or their contents change.

    python bench/transfer.py --data prepared/lyon prepared/turin prepared/porto --pretrain-steps 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch

from tools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real, shared_data_dir
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData
from trajmoe.city.subset import run_subset
from trajmoe.city.tasks import TASKS
from trajmoe.errors import PreparedDataError
from trajmoe.train.calibration import calibrate_head
from trajmoe.train.checkpoint import load_checkpoint, save_checkpoint
from trajmoe.train.device import DEVICES, resolve_device_or_exit
from trajmoe.train.evaluate import evaluate
from trajmoe.train.finetune import finetune
from trajmoe.train.fit import TrainConfig, fit
from trajmoe.train.models import new_model, require_task
from trajmoe.train.runner import run_baseline

log = logging.getLogger("bench.transfer")
RESULTS = REPO_ROOT / "bench" / "results"
RUNS = RESULTS / "transfer_runs"
CACHE = RESULTS / "cache"  # git-ignored: prepared folders and pretrained checkpoints
# Bump when the protocol or a default changes: runs of an older version are then ignored.
# Version 3 (issue 13): popularity relative to the mean cell (every method reading it: the count
# baselines, return + gravity, the GRU and the TrajMoE head), cross-fitted training, successor and
# transition terms, the learned return scorer, keep-the-better fine-tuning, metrics for returns and
# explorations, and the fine-tuned model scored with all training visits too.
# Version 4: fine-tuning keeps the starting state (and undoes head calibration) only when the validation
# share shows it worse beyond noise (train.fit.worse_beyond_noise; bench/results/keep_rule.md), not
# whenever it scores lower there. Pretraining, zero-shot and the prior-terms ablation never pass
# through that rule: their version-3 checkpoints and runs stand.
# Version 5 (issue 14): checkpoint format 4, pretrained for both tasks (next and at-time, steps in
# turn, twice the steps). The headline rows (FORMAT4_METHODS) are re-run on it; the other pretrained
# rows (ablations, the dense Transformer) and the from-scratch neural rows stay version 4 / 3 runs of
# the format-3 design and say so in the table.
BENCH_VERSION = 4
PRETRAIN_VERSION = 4  # of the cached pretrained checkpoints (v4: format 4, both tasks)
BASELINE_VERSION = 3
FORMAT4_VERSION = 5
COUNT_BASELINES = ("popular", "markov", "epr", "epr+", "gru")
NO_KEEP_RULE = ("trajmoe_zero_shot", "ablation_prior_terms_only")  # runs that never fine-tune
FORMAT4_METHODS = ("trajmoe_pretrained_ft1", "trajmoe_zero_shot", "ablation_prior_terms_only")
# The at-time section (issue 14): its runs are named AT_TIME + method, with their own version.
AT_TIME = "at-time_"
AT_TIME_VERSION = 1
TIME_BLIND = ("popular", "markov", "epr", "epr+")  # ignore the target's time: at-time = next scores


def method_version(method: str) -> int:
    if method.startswith(AT_TIME):
        return AT_TIME_VERSION
    if method in COUNT_BASELINES:
        return BASELINE_VERSION
    if method.startswith(FORMAT4_METHODS):
        return FORMAT4_VERSION
    return 3 if method.startswith(NO_KEEP_RULE) else BENCH_VERSION

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
ABLATIONS = {  # name -> TrajMoE config overrides (pretrained and fine-tuned like TrajMoE)
    "no_return_scorer": {"return_scorer": False},  # the learned return scorer removed (issue 13)
    "no_successor_terms": {"successor_terms": False},  # the hand-made successor / transition terms removed
    "no_poi": {"use_poi_features": False},
    "no_router_priors": {"router_priors": False},
    "no_shared_expert": {"shared_expert": False},
    "no_return_terms": {"return_terms": False},
}
MODEL_WIDTH = {"d_model": 128, "n_layers": 2}
# Where models train and are evaluated (set by --device; default cpu, so the committed runs, timed
# on a 2-core CPU, stay comparable). Count baselines always run on CPU (train.runner).
DEVICE = torch.device("cpu")


def prepared(key: str) -> CityData:
    return prepare_real(key, CACHE / "prepared")


def run_key(target: str, method: str, fraction: float, seed: int) -> Path:
    return RUNS / f"v{method_version(method)}__{target}__{method}__f{fraction:g}__s{seed}.json"


def cached(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def store(path: Path, result: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------- pretraining
# Fixed optimiser steps (set by --pretrain-steps): results do not depend on machine load. The tasks
# take the steps in turn, so 1,200 give each task the 600 of the format-3 (next only) pretraining.
PRETRAIN_STEPS = 1200
DEFAULT_PRETRAIN_STEPS = 1200
LONG_PRETRAIN_STEPS = 3000  # the "longer pretraining" rows (--pretrain-steps 3000)


def pre(method: str) -> str:
    """Run name of a pretrained method: ``trajmoe_pretrained_ft1`` at the default step count,
    ``trajmoe_pretrained_ft1_3000`` for another, so both rows live side by side in the table."""
    return method if PRETRAIN_STEPS == DEFAULT_PRETRAIN_STEPS else f"{method}_{PRETRAIN_STEPS}"


def pretrained(metro: str, arch: str, variant: str, overrides: dict, budget_s: float,
               sources: list[str | CityData] | None = None, *, ckpt_dir: Path | None = None):
    """Pretrain (or load) ``arch`` on every dataset outside ``metro``; returns the checkpoint path.

    ``sources``: dataset keys of REAL_DATASETS or loaded CityData (``--data``: the other folders;
    ``metro`` then names the cache entry); ``ckpt_dir``: where checkpoints are cached (CACHE/ckpt)."""
    ckpt = (ckpt_dir or CACHE / "ckpt") / f"v{PRETRAIN_VERSION}_{metro}_{variant}_{PRETRAIN_STEPS}.safetensors"
    if ckpt.is_file():
        return ckpt
    sources = sources or [k for k, v in REAL_DATASETS.items() if v[2] != metro]
    cities = [s if isinstance(s, CityData) else prepared(s) for s in sources]
    sources = [str(s.folder) if isinstance(s, CityData) else s for s in sources]  # JSON-able names
    model, config = new_model(arch, seed=0, **MODEL_WIDTH, **overrides)
    model.to(DEVICE)
    cfg = TrainConfig(epochs=1000, max_steps=PRETRAIN_STEPS, max_seconds=budget_s, seed=0, batch_size=32, lr=2e-3,
                      warmup_steps=30, tasks=TASKS)
    res = fit(model, cities, cfg)
    info = {"cities": [c.name for c in cities], "domain_experts": model.domain_expert_names() if hasattr(model, "domain_expert_names") else [],
            "training": {"kind": "pretrain", "sources": sources, "steps": res.steps, "seconds": round(res.seconds, 1),
                         "final_loss": float(np.mean(res.losses[-50:]))}}
    save_checkpoint(ckpt, model, arch=arch, config=config, info=info)
    log.info("pretrained %s/%s on %s: %d steps in %.0fs", metro, variant, sources, res.steps, res.seconds)
    return ckpt


def finetune_run(ckpt: Path, data: CityData, seed: int, *, epochs: int = 1, zero_shot: bool = False,
                 prior_only: bool = False, task: str = "next") -> dict:
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
    model.to(DEVICE)
    require_task(model, task, checkpoint=ckpt.name)
    cfg = TrainConfig(fraction=FEW, epochs=epochs, seed=seed, batch_size=8, lr=1e-3, warmup_steps=1, tasks=(task,))
    t0 = time.perf_counter()
    steps, extra = 0, {}
    if zero_shot or prior_only:
        subset = run_subset(data, fraction=FEW, seed=seed, max_len=cfg.max_len)
        if prior_only:
            with torch.no_grad():
                for scale in model.head.scales:
                    scale.zero_()
            calibrate_head(model, data, subset.city, subset.val_targets, fit_similarity=False)
        metrics = evaluate(model, data, split="test", subset=subset)
        metrics["all_visits"] = evaluate(model, data, split="test")
    else:  # the one fine-tune service (CLI and app): fit, then test with the subset's and all visits' features
        run = finetune(model, data, cfg, base_info=meta, source=ckpt.name)
        metrics = {**run.metrics, "all_visits": run.metrics_all}
        steps, extra = run.train.steps, {"kept": run.train.kept, "calibration_kept": run.train.calibration_kept}
    metrics.update(seconds=round(time.perf_counter() - t0, 2), steps=steps, **extra,
                   pretrain_steps=meta["training"]["steps"], pretrain_seconds=meta["training"]["seconds"])
    return metrics


SCRATCH_BUDGET_S = 300.0  # wall-time cap of one from-scratch neural run (set by --scratch-budget-min)


def scratch_run(method: str, data: CityData, fraction: float, seed: int, *, task: str = "next") -> dict:
    from dataclasses import replace

    from trajmoe.train.runner import default_train_config

    cfg = replace(default_train_config(fraction=fraction, seed=seed), max_seconds=SCRATCH_BUDGET_S)
    if method != "trajmoe":
        return run_baseline(method, data, fraction=fraction, seed=seed, train_config=cfg, device=DEVICE, task=task)
    t0 = time.perf_counter()
    model, _ = new_model("trajmoe", seed=seed, **MODEL_WIDTH)
    model.to(DEVICE)
    res = fit(model, [data], cfg, val_city=data)
    steps = res.steps
    metrics = evaluate(model, data, split="test", subset=res.val_subset)
    metrics.update(seconds=round(time.perf_counter() - t0, 2), steps=steps)
    return metrics


def with_seeds(target: str, method: str, fraction: float, fn, seeds: int) -> None:
    """Seed 0 first; seeds 1..n-1 only when a run takes under 2 minutes (budget rule)."""
    first = cached(run_key(target, method, fraction, 0)) or store(run_key(target, method, fraction, 0), fn(0))
    log.info("%s %s f=%g s0: acc@1 %.4f (%.0fs)", target, method, fraction, first["acc@1"], first["seconds"])
    if first["seconds"] < 120:
        for s in range(1, seeds):
            if cached(run_key(target, method, fraction, s)) is None:
                r = store(run_key(target, method, fraction, s), fn(s))
                log.info("%s %s f=%g s%d: acc@1 %.4f", target, method, fraction, s, r["acc@1"])


EVERY_TARGET_ABLATIONS = ("no_return_scorer",)  # the learned part removed: on every check-in target


def run_target(metro: str, *, seeds: int, budget_s: float, ablations: bool, main_table: bool = True,
               scratch_neural: bool = True) -> None:
    """The metro's runs in order of what the goals need first: the headline rows and every
    hand-made comparison, then the dense and learned-part ablations, then the rest."""
    cities = {target: prepared(target) for target in CHECKIN_TARGETS[metro]}  # read once
    if main_table:
        main_runs(metro, cities, seeds=seeds, budget_s=budget_s)
    if ablations:
        names = [n for n in ABLATIONS if metro == "nyc" or n in EVERY_TARGET_ABLATIONS]
        for name in names:
            ck = pretrained(metro, "trajmoe", name, ABLATIONS[name], budget_s)
            for target, data in cities.items():
                with_seeds(target, f"ablation_{name}", FEW, lambda s, c=ck, d=data: finetune_run(c, d, s), seeds)
    if main_table and scratch_neural:
        for target, data in cities.items():
            for method in NEURAL_SCRATCH:
                for fraction in (FEW, 1.0):
                    with_seeds(target, method, fraction, lambda s, m=method, f=fraction, d=data: scratch_run(m, d, f, s),
                               seeds)


def other_kind_runs(key: str, *, seeds: int, budget_s: float) -> None:
    """The second table: one GPS / taxi / bike dataset as target, its metro held out of pretraining."""
    metro = REAL_DATASETS[key][2]
    ck_moe = pretrained(metro, "trajmoe", "trajmoe", {}, budget_s)
    data = prepared(key)
    with_seeds(key, pre("trajmoe_pretrained_ft1"), FEW, lambda s: finetune_run(ck_moe, data, s), seeds)
    with_seeds(key, pre("trajmoe_zero_shot"), FEW, lambda s: finetune_run(ck_moe, data, s, zero_shot=True), seeds)
    with_seeds(key, "ablation_prior_terms_only", FEW, lambda s: finetune_run(ck_moe, data, s, prior_only=True), seeds)
    for method in OTHER_SCRATCH:
        for fraction in (FEW, 1.0):
            with_seeds(key, method, fraction, lambda s, m=method, f=fraction: scratch_run(m, data, f, s), seeds)
    ck_dense = pretrained(metro, "transformer", "transformer", {}, budget_s)
    with_seeds(key, pre("transformer_pretrained_ft1"), FEW, lambda s: finetune_run(ck_dense, data, s), seeds)
    for method in ("gru", "transformer"):
        for fraction in (FEW, 1.0):
            with_seeds(key, method, fraction, lambda s, m=method, f=fraction: scratch_run(m, data, f, s), seeds)


def at_time_runs(metro: str, *, seeds: int, budget_s: float, scratch_neural: bool = True, dense: bool = False) -> None:
    """The at-time section (issue 14): the same checkpoints (pretrained for both tasks) fine-tuned,
    calibrated and scored for at-time; epr-time and the dense Transformer from scratch trained for it."""
    cities = {target: prepared(target) for target in CHECKIN_TARGETS[metro]}
    ck_moe = pretrained(metro, "trajmoe", "trajmoe", {}, budget_s)
    for target, data in cities.items():
        with_seeds(target, AT_TIME + pre("trajmoe_pretrained_ft1"), FEW,
                   lambda s, d=data: finetune_run(ck_moe, d, s, task="at-time"), seeds)
        with_seeds(target, AT_TIME + pre("trajmoe_zero_shot"), FEW,
                   lambda s, d=data: finetune_run(ck_moe, d, s, zero_shot=True, task="at-time"), seeds)
        with_seeds(target, AT_TIME + "ablation_prior_terms_only", FEW,
                   lambda s, d=data: finetune_run(ck_moe, d, s, prior_only=True, task="at-time"), seeds)
        for fraction in (FEW, 1.0):
            with_seeds(target, AT_TIME + "epr-time", fraction,
                       lambda s, f=fraction, d=data: scratch_run("epr-time", d, f, s, task="at-time"), seeds)
    if dense:
        ck_dense = pretrained(metro, "transformer", "transformer", {}, budget_s)
        for target, data in cities.items():
            with_seeds(target, AT_TIME + pre("transformer_pretrained_ft1"), FEW,
                       lambda s, d=data: finetune_run(ck_dense, d, s, task="at-time"), seeds)
    if scratch_neural:
        for target, data in cities.items():
            for fraction in (FEW, 1.0):
                with_seeds(target, AT_TIME + "transformer", fraction,
                           lambda s, f=fraction, d=data: scratch_run("transformer", d, f, s, task="at-time"), seeds)


def main_runs(metro: str, cities: dict[str, CityData], *, seeds: int, budget_s: float) -> None:
    ck_moe = pretrained(metro, "trajmoe", "trajmoe", {}, budget_s)
    for target, data in cities.items():
        with_seeds(target, pre("trajmoe_pretrained_ft1"), FEW, lambda s, d=data: finetune_run(ck_moe, d, s), seeds)
        with_seeds(target, pre("trajmoe_zero_shot"), FEW, lambda s, d=data: finetune_run(ck_moe, d, s, zero_shot=True), seeds)
        with_seeds(target, "ablation_prior_terms_only", FEW,
                   lambda s, d=data: finetune_run(ck_moe, d, s, prior_only=True), seeds)
        for method in COUNTS:
            for fraction in (FEW, 1.0):
                with_seeds(target, method, fraction, lambda s, m=method, f=fraction, d=data: scratch_run(m, d, f, s), seeds)
    def dense() -> Path:  # pretrained only when a run needs it (cached runs do not)
        return pretrained(metro, "transformer", "transformer", {}, budget_s)

    for target, data in cities.items():
        with_seeds(target, pre("transformer_pretrained_ft1"), FEW, lambda s, d=data: finetune_run(dense(), d, s), seeds)


# --------------------------------------------------------------------------- tables
METHOD_LABELS = [
    ("trajmoe_pretrained_ft1", 0.05, "TrajMoE pretrained, fine-tuned 1 epoch on 5%"),
    ("trajmoe_zero_shot", 0.05, "TrajMoE zero-shot (pretrained, no fine-tuning)"),
    ("transformer_pretrained_ft1", 0.05, "Dense Transformer pretrained, fine-tuned 1 epoch on 5%"),
    (f"trajmoe_pretrained_ft1_{LONG_PRETRAIN_STEPS}", 0.05, f"TrajMoE pretrained {LONG_PRETRAIN_STEPS} steps, fine-tuned 1 epoch on 5%"),
    (f"trajmoe_zero_shot_{LONG_PRETRAIN_STEPS}", 0.05, f"TrajMoE pretrained {LONG_PRETRAIN_STEPS} steps, zero-shot"),
    (f"transformer_pretrained_ft1_{LONG_PRETRAIN_STEPS}", 0.05, f"Dense Transformer pretrained {LONG_PRETRAIN_STEPS} steps, fine-tuned 1 epoch on 5%"),
    *[(m, f, f"{m} from scratch, {f:.0%}") for m in SCRATCH for f in (FEW, 1.0)],
    *[("epr-time", f, f"epr-time from scratch, {f:.0%} (at-time only)") for f in (FEW, 1.0)],
    *[(f"ablation_{a}", 0.05, f"ablation: {a.replace('_', ' ')}") for a in ABLATIONS],
    ("ablation_prior_terms_only", 0.05, "ablation: every hand-made prior term alone (pretrained kind weights "
                                        "calibrated on the 5% share; no Transformer, no learned terms)"),
]


TARGET_KINDS = ("returns", "explorations")  # evaluate's split of the targets (CityData.is_return)
KIND_METRICS = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg@10")


def kind_means(runs: list[dict]) -> dict:
    """Seed means of the ``returns`` / ``explorations`` metrics, for each kind some run carries
    (runs older than the split lack them: the kind is then left out, or averaged over the others)."""
    out = {}
    for kind in TARGET_KINDS:
        parts = [r[kind] for r in runs if isinstance(r.get(kind), dict)]
        if parts:
            out[kind] = {**{k: float(np.mean([p[k] for p in parts])) for k in KIND_METRICS},
                         "n": parts[0]["n"], "seeds": len(parts)}
    return out


def summarise(runs_dir: Path | None = None) -> dict:
    """One row per (target, method@fraction): seed means of the run JSONs in ``runs_dir`` (RUNS)."""
    rows = {}
    for path in sorted((runs_dir or RUNS).glob("v*__*.json")):
        version, target, method, f, _ = path.stem.split("__")
        if version != f"v{method_version(method)}":
            continue
        rows.setdefault((target, method, float(f[1:])), []).append(json.loads(path.read_text()))
    table = {}
    for (target, method, f), runs in rows.items():
        acc = np.array([r["acc@1"] for r in runs])
        section = table
        if method.startswith(AT_TIME):  # the at-time section: transfer.json["at-time"][target][row]
            section, method = table.setdefault("at-time", {}), method[len(AT_TIME):]
        section.setdefault(target, {})[f"{method}@{f:g}"] = {
            "acc@1": float(acc.mean()), "acc@1_std": float(acc.std()),
            **{k: float(np.mean([r[k] for r in runs])) for k in ("acc@5", "acc@10", "mrr", "ndcg@10", "seconds", "steps")},
            "seeds": len(runs), "n": runs[0]["n"],
            "pretrain_steps": runs[0].get("pretrain_steps"), "pretrain_seconds": runs[0].get("pretrain_seconds"),
            **kind_means(runs),
        }
        row = section[target][f"{method}@{f:g}"]
        every = [r["all_visits"] for r in runs if isinstance(r.get("all_visits"), dict)]
        if every:  # the same model scored with all training visits' features (trajmoe evaluate's default)
            row["all_visits"] = {**{k: float(np.mean([r[k] for r in every])) for k in ("acc@1", "mrr")},
                                 "seeds": len(every)}
        kept = [r["kept"] for r in runs if r.get("kept")]
        if kept:
            row["kept_fine_tuned"] = sum(k == "fine-tuned" for k in kept)
    for target, rows_at in table.get("at-time", {}).items():  # time-blind baselines score both tasks alike
        for key, row in table.get(target, {}).items():
            if key.split("@")[0] in TIME_BLIND:
                rows_at.setdefault(key, {**row, "time_blind": True})
    return table


def goal_check(table: dict) -> list[str]:
    """The goals of issue 13, per check-in target, computed from the table (never typed by hand)."""
    lines = ["## Goal check (computed from the rows below; TrajMoE = pretrained, fine-tuned 1 epoch on 5%)", "",
             "| target | TrajMoE Acc@1 / MRR | prior terms alone Acc@1 / MRR | full - prior terms (goal >= +0.02 both) "
             "| best baseline on 100% | TrajMoE / best (goal >= 1.05) | explorations MRR: TrajMoE / epr 100% "
             "(goal >= 1.3) | all training visits: fine-tuned / zero-shot (goal >= 1) | seeds that kept the "
             "fine-tuned state |",
             "|---|---|---|---|---|---|---|---|---|"]
    for target in [*sum(CHECKIN_TARGETS.values(), [])]:
        t = table.get(target, {})
        ours, prior, zero = (t.get(f"{m}@0.05") for m in ("trajmoe_pretrained_ft1", "ablation_prior_terms_only",
                                                           "trajmoe_zero_shot"))
        full = {m: t[f"{m}@1"]["acc@1"] for m in SCRATCH if f"{m}@1" in t}
        if ours is None or not full:
            continue
        best = max(full, key=full.get)
        cells = [target, f"{ours['acc@1']:.4f} / {ours['mrr']:.4f}"]
        if prior:
            cells += [f"{prior['acc@1']:.4f} / {prior['mrr']:.4f}",
                      f"{ours['acc@1'] - prior['acc@1']:+.4f} / {ours['mrr'] - prior['mrr']:+.4f}"]
        else:
            cells += ["", ""]
        cells += [f"{best} {full[best]:.4f}", f"{ours['acc@1'] / full[best]:.3f}"]
        epr = t.get("epr@1", {})
        cells.append(f"{ours['explorations']['mrr'] / epr['explorations']['mrr']:.2f}"
                     if ours.get("explorations") and epr.get("explorations") else "")
        ours_all, zero_all = ours.get("all_visits"), (zero or {}).get("all_visits")
        cells.append(f"{ours_all['acc@1']:.4f} / {zero_all['acc@1']:.4f}" if ours_all and zero_all else "")
        cells.append(f"{ours.get('kept_fine_tuned', 0)} of {ours['seeds']}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def goal_check_at_time(section: dict) -> list[str]:
    """The goals of issue 14 (at-time, 5% / 1 epoch), per check-in target, computed from the section."""
    lines = ["## Goal check, at-time (computed from the rows below; TrajMoE = pretrained for both tasks, "
             "fine-tuned 1 epoch on 5% for at-time)", "",
             "| target | TrajMoE Acc@1 / MRR | prior terms alone Acc@1 / MRR | full - prior terms (goal >= +0.03 Acc@1) "
             "| best baseline on 100% | TrajMoE / best (goal >= 1.10) | returns Acc@1: TrajMoE / epr-time 100% "
             "| seeds that kept the fine-tuned state |",
             "|---|---|---|---|---|---|---|---|"]
    for target in [*sum(CHECKIN_TARGETS.values(), [])]:
        t = section.get(target, {})
        ours, prior = t.get("trajmoe_pretrained_ft1@0.05"), t.get("ablation_prior_terms_only@0.05")
        full = {k.split("@")[0]: r["acc@1"] for k, r in t.items() if k.endswith("@1")}
        if ours is None or not full:
            continue
        best = max(full, key=full.get)
        cells = [target, f"{ours['acc@1']:.4f} / {ours['mrr']:.4f}"]
        cells += ([f"{prior['acc@1']:.4f} / {prior['mrr']:.4f}", f"{ours['acc@1'] - prior['acc@1']:+.4f}"]
                  if prior else ["", ""])
        cells += [f"{best} {full[best]:.4f}", f"{ours['acc@1'] / full[best]:.3f}"]
        epr = t.get("epr-time@1", {})
        cells.append(f"{ours['returns']['acc@1']:.4f} / {epr['returns']['acc@1']:.4f}"
                     if ours.get("returns") and epr.get("returns") else "")
        cells.append(f"{ours.get('kept_fine_tuned', 0)} of {ours['seeds']}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def kind_cell(row: dict, kind: str) -> str:
    """``Acc@1 / MRR`` of the row's returns or explorations; blank for runs without the split."""
    part = row.get(kind)
    return f"{part['acc@1']:.4f} / {part['mrr']:.4f}" if part else ""


def target_table(target: str, t: dict, *, every_row: bool = False) -> list[str]:
    """One target's Markdown table: the METHOD_LABELS rows it has (``every_row``: then any other
    row of ``t`` too, labelled by its key, e.g. a pretraining at a custom step count)."""
    first = t[next(iter(t))]
    share = f", {first['returns']['n'] / first['n']:.0%} returns" if first.get("returns") and first["n"] else ""
    lines = [f"## target: {target} ({first['n']} test targets{share})", "",
             "| method | Acc@1 | Acc@5 | Acc@10 | MRR | NDCG@10 | returns Acc@1 / MRR | explorations Acc@1 / MRR "
             "| Acc@1 with all training visits | seeds | steps | wall s | pretrain steps / s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    labels = [(f"{m}@{f:g}", label) for m, f, label in METHOD_LABELS]
    if every_row:
        labels += [(key, key) for key in t if key not in dict(labels)]
    for key, label in labels:
        r = t.get(key)
        if r is None:
            continue
        if r.get("time_blind"):
            label += " (ignores the target's time: the next-task run)"
        pre = f"{r['pretrain_steps']} / {r['pretrain_seconds']:.0f}" if r.get("pretrain_steps") else ""
        every = f"{r['all_visits']['acc@1']:.4f}" if r.get("all_visits") else ""
        lines.append(f"| {label} | {r['acc@1']:.4f} ± {r['acc@1_std']:.4f} | {r['acc@5']:.4f} | {r['acc@10']:.4f} | "
                     f"{r['mrr']:.4f} | {r['ndcg@10']:.4f} | {kind_cell(r, 'returns')} | {kind_cell(r, 'explorations')} | "
                     f"{every} | {r['seeds']} | {r['steps']:.0f} | {r['seconds']:.1f} | {pre} |")
    return lines + [""]


KINDS_NOTE = (f"A return is a test target whose cell is among the person's last {DEFAULT_MAX_LEN} earlier visits "
              "(any split), an exploration any other target, the same for every method.")


def render(table: dict) -> str:
    checkins = [t for t in [*sum(CHECKIN_TARGETS.values(), [])] if t in table]
    others = [t for t in OTHER_KINDS if t in table]
    # rows whose runs predate checkpoint format 4 (bench version 5): the format-3 design, not re-run
    old = sorted({key.split("@")[0] for t in checkins for key in table[t]
                  if key.split("@")[0] not in TIME_BLIND and method_version(key.split("@")[0]) != FORMAT4_VERSION})
    lines = ["# Leave-one-metro-out transfer (real data, DESIGN.md §Protocol)", "",
             "Acc@1 (mean ± std over seeds) / MRR; steps and wall time on this 2-core CPU machine in brackets.",
             "Pretraining: every dataset of the OTHER metros (GPS, taxi, bike cities included), d=128, 2 layers, "
             "batches of 32 windows (cities drawn ∝ size^0.5); its steps and seconds are in the last column.",
             "Neural runs from scratch: up to 20 epochs, early stopping with patience 3, capped at 3 minutes each (`--scratch-budget-min 3`).",
             "Wall times were measured on a machine shared with other jobs (2-3 benchmark processes on 2 cores): read "
             "them as upper bounds.", KINDS_NOTE,
             "Checkpoint format 4 (issue 14): the TrajMoE rows (fine-tuned, zero-shot, prior terms alone) are "
             f"pretrained {DEFAULT_PRETRAIN_STEPS} steps for both tasks in turn. Rows not re-run on format 4 are the "
             "format-3 design (next only, 600 steps): " + (", ".join(old) if old else "none") + ".", "",
             *goal_check(table)]
    for target in checkins + others:
        if target == (others[0] if others else None):
            lines += ["# Second table: GPS, taxi and bike cities (MANIFEST: reported separately)", "",
                      "Same leave-one-metro-out protocol (each dataset's metro held out of pretraining; "
                      "sf_cabspotting_gps uses the San Francisco checkpoint). mexico_city_taxi_trips is origin -> "
                      "destination only (each 'user' is one trip, split by time); jersey_city_citibike is H3 "
                      "resolution 10 (stations). GRU and dense Transformer rows where their runs finished.", ""]
        lines += target_table(target, table[target])
    at_time = table.get("at-time", {})
    if at_time:
        lines += ["# at-time: where is the next visit, given when it happens", "",
                  "The same protocol, targets and subsets; the model is told the target visit's local hour, weekday "
                  "and the time since the current visit (never its place). The pretrained checkpoints are the ones "
                  "above (trained for both tasks, steps in turn); fine-tuning, head calibration and the keep rule use "
                  "the at-time task. epr-time: return + gravity plus the person's visits within 2 h of the target's "
                  "hour on the same weekday type (hour only where the weekday is unreliable: SF and LA Gowalla) "
                  "and the place's share of the city's visits at that hour, fitted like epr. Most popular, Markov, "
                  "epr and epr+ ignore the target's time: their rows are the next-task runs. In transfer.json: "
                  "the top-level key `at-time`.", "", *goal_check_at_time(at_time)]
        for target in [t for t in [*sum(CHECKIN_TARGETS.values(), [])] if t in at_time]:
            lines += target_table(target, at_time[target])
        lines += ["Re-run the section: `python bench/transfer.py --tasks at-time` (`--at-time-dense` adds the dense "
                  "Transformer pretrained for both tasks).", ""]
    lines += ["Re-run: `python bench/transfer.py` (only missing runs are computed; `--table-only` re-renders).", ""]
    return "\n".join(lines)


def plot(table: dict, path: Path, targets: list[str] | None = None) -> None:
    """Bar chart of test Acc@1 per target (default: the check-in targets) and non-ablation method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if targets is None:
        targets = [t for t in sum(CHECKIN_TARGETS.values(), []) if t in table]
    methods = [(m, f, lab) for m, f, lab in METHOD_LABELS if not m.startswith("ablation")]
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / max(1, len(methods))
    colors = plt.get_cmap("tab20").colors
    for i, (m, f, lab) in enumerate(methods):
        vals = [table[t].get(f"{m}@{f:g}", {}).get("acc@1", np.nan) for t in targets]
        ax.bar(np.arange(len(targets)) + i * width, vals, width, label=lab, color=colors[i % len(colors)])
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets)
    ax.set_ylabel("test Acc@1")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title("TrajMoE leave-one-metro-out transfer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- your own folders (--data)
CUSTOM_OUT = RESULTS / "custom"  # --out default (git-ignored): its transfer_runs/, cache/ckpt/ and tables
CUSTOM_SCRATCH = ["popular", "markov", "epr"]  # from scratch on 5% and 100%; --scratch-neural: all of SCRATCH


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


def custom_runs(cities: dict[str, CityData], *, seeds: int, budget_s: float, ckpt_dir: Path,
                scratch: list[str]) -> None:
    """Leave-one-city-out on ``cities``: per target, TrajMoE pretrained on all the others (cached
    per set of source folders), fine-tuned 1 epoch on 5% and zero-shot, and ``scratch`` on 5% and 100%."""
    for key, data in cities.items():
        sources = [c for k, c in cities.items() if k != key]
        digest = hashlib.sha1("\n".join(sorted(str(c.folder.resolve()) for c in sources)).encode()).hexdigest()[:10]
        ck = pretrained(f"custom-{key}-{digest}", "trajmoe", "trajmoe", {}, budget_s, sources=sources, ckpt_dir=ckpt_dir)
        with_seeds(key, pre("trajmoe_pretrained_ft1"), FEW, lambda s, c=ck, d=data: finetune_run(c, d, s), seeds)
        with_seeds(key, pre("trajmoe_zero_shot"), FEW, lambda s, c=ck, d=data: finetune_run(c, d, s, zero_shot=True), seeds)
        for method in scratch:
            for fraction in (FEW, 1.0):
                with_seeds(key, method, fraction, lambda s, m=method, f=fraction, d=data: scratch_run(m, d, f, s), seeds)


def render_custom(table: dict) -> str:
    """Markdown of a ``--data`` run: one table per target folder, every row it has."""
    lines = ["# Leave-one-city-out transfer on your prepared folders (DESIGN.md §Protocol)", "",
             "Acc@1 (mean ± std over seeds) / MRR. Each folder is the target once: TrajMoE pretrained on all the "
             "other folders (d=128, 2 layers), fine-tuned 1 epoch on 5% of the target's training windows or "
             "zero-shot; baselines from scratch on 5% and 100%.", KINDS_NOTE, ""]
    for target in sorted(table):
        lines += target_table(target, table[target], every_row=True)
    return "\n".join(lines)


def custom_main(args) -> None:
    """``--data``: run (unless ``--table-only``) and render into ``--out``, never the shared tables."""
    global RUNS
    cities = load_folders(args.data)
    RUNS = args.out / "transfer_runs"  # with_seeds / run_key / summarise store and read here
    if not args.table_only:
        custom_runs(cities, seeds=args.seeds, budget_s=args.budget_min * 60, ckpt_dir=args.out / "cache" / "ckpt",
                    scratch=SCRATCH if args.scratch_neural else CUSTOM_SCRATCH)
    table = summarise(RUNS)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.json").write_text(json.dumps(table, indent=2))
    (args.out / "transfer.md").write_text(render_custom(table))
    plot(table, args.out / "transfer.png", sorted(table))
    print(render_custom(table))


def main() -> None:
    global SCRATCH_BUDGET_S, PRETRAIN_STEPS, DEVICE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", default=list(CHECKIN_TARGETS), choices=list(CHECKIN_TARGETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS, help="optimiser steps of each pretraining")
    p.add_argument("--budget-min", type=float, default=20.0, help="wall-time cap of each pretraining (<= 20)")
    p.add_argument("--scratch-budget-min", type=float, default=5.0, help="wall-time cap of one from-scratch neural run")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--no-scratch-neural", action="store_true",
                   help="leave out the GRU, dense Transformer and TrajMoE trained from scratch (minutes each)")
    p.add_argument("--ablations-only", action="store_true", help="only the New York ablations (run beside the main table)")
    p.add_argument("--other-kinds", nargs="*", choices=OTHER_KINDS, default=None,
                   help="the second table: GPS / taxi / bike targets (none given: all four)")
    p.add_argument("--data", nargs="+", type=Path, metavar="DIR", default=None,
                   help="your own prepared folders (`trajmoe prepare`, at least 2): leave-one-city-out on them "
                        "instead of the shared data")
    p.add_argument("--out", type=Path, default=CUSTOM_OUT,
                   help="with --data: where its runs, checkpoints and tables go (default bench/results/custom)")
    p.add_argument("--scratch-neural", action="store_true",
                   help="with --data: also the GRU, dense Transformer and TrajMoE from scratch (slow)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                   help="which sections to run: next (the main table) and/or at-time (default both)")
    p.add_argument("--at-time-dense", action="store_true",
                   help="at-time: also pretrain the dense Transformer for both tasks and fine-tune it")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where models train and are evaluated (default cpu: the committed runs are CPU ones)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # One thread: on a shared 2-core machine two OpenMP threads spin-wait on each other and a
    # training step gets several times slower (bench/results/moe_dispatch.txt shows the effect).
    torch.set_num_threads(args.threads)
    SCRATCH_BUDGET_S = args.scratch_budget_min * 60
    PRETRAIN_STEPS = args.pretrain_steps
    DEVICE = resolve_device_or_exit(args.device)
    if args.data is not None:
        custom_main(args)
        return
    if shared_data_dir() is None:
        raise SystemExit("../shared/data not found: the transfer benchmark needs the real data.")
    if not args.table_only and args.other_kinds is not None:
        for key in args.other_kinds or OTHER_KINDS:
            other_kind_runs(key, seeds=args.seeds, budget_s=args.budget_min * 60)
    elif not args.table_only:
        for metro in args.targets:
            if "next" in args.tasks:
                run_target(metro, seeds=args.seeds, budget_s=args.budget_min * 60, ablations=not args.no_ablations,
                           main_table=not args.ablations_only, scratch_neural=not args.no_scratch_neural)
            if "at-time" in args.tasks and not args.ablations_only:
                at_time_runs(metro, seeds=args.seeds, budget_s=args.budget_min * 60,
                             scratch_neural=not args.no_scratch_neural, dense=args.at_time_dense)
    table = summarise()
    (RESULTS / "transfer.json").write_text(json.dumps(table, indent=2))
    (RESULTS / "transfer.md").write_text(render(table))
    plot(table, RESULTS / "transfer.png")
    print(render(table))


if __name__ == "__main__":
    main()
