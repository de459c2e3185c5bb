"""Design check on SOURCE cities' validation splits (never a target's test split).

A design idea is judged here before the transfer table reads a test split once: pretrain TrajMoE on
the sources of one held-out metro (as bench/transfer.py does), then on each check-in source city
fine-tune 1 epoch on 5% and score the validation targets outside the run's 5% share (the share is
used for early stopping and head calibration). Beside it, on the same targets: the prior terms
alone (the learned terms' trust set to 0, the prior weights calibrated on the share) and the
return + gravity(+) baselines fitted on the share.

    python bench/source_val.py --held-out nyc                     # the full model
    python bench/source_val.py --held-out nyc --set return_scorer=False --tag no_scorer

Writes bench/results/source_val.json (one entry per tag, held-out metro and city; re-runs
overwrite their own entry) and prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch

from tools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real
from trajmoe.city.subset import run_subset
from trajmoe.city.tasks import TASKS
from trajmoe.train.baselines import ReturnGravity
from trajmoe.train.calibration import calibrate_head
from trajmoe.train.checkpoint import load_checkpoint
from trajmoe.train.evaluate import rank_targets
from trajmoe.train.fit import TrainConfig, fit, pretrain_config
from trajmoe.train.metrics import metrics_from_ranks
from trajmoe.train.models import new_model

CACHE = REPO_ROOT / "bench" / "results" / "cache"
OUT = REPO_ROOT / "bench" / "results" / "source_val.json"
CHECKINS = ("nyc_foursquare", "nyc_gowalla", "sf_gowalla", "la_gowalla")


def parse_value(v: str):
    return {"True": True, "False": False}.get(v, int(v) if v.lstrip("-").isdigit() else v)


def held_out_val(data, subset) -> np.ndarray:
    """Validation targets outside the run's share (those decide nothing in the run)."""
    return np.setdiff1d(data.targets("val"), subset.val_targets)


def score(model, data, city, targets, task: str) -> dict:
    m = metrics_from_ranks(rank_targets(model, data, city, targets, task=task))
    return {k: round(m[k], 4) for k in ("acc@1", "mrr", "n")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--held-out", default="nyc", help="metro left out of pretraining (nyc, sf, la)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--tag", default="full")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--no-cross-fit", action="store_true", help="train on features that include the targets' visits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--task", choices=TASKS, default="next", help="the task fine-tuned and scored")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="start from this pretrained checkpoint (e.g. bench/transfer.py's cached one for the same "
                        "held-out metro) instead of pretraining")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}
    sources = [k for k, v in REAL_DATASETS.items() if v[2] != args.held_out]
    cities = {k: prepare_real(k, CACHE / "prepared") for k in sources}
    t0 = time.perf_counter()
    kinds = None  # a checkpoint's config records the kinds its head rows were trained on
    if args.checkpoint is not None:
        model, _ = load_checkpoint(args.checkpoint)
    else:
        model, _ = new_model("trajmoe", seed=0, d_model=128, n_layers=2, **overrides)
        kinds = fit(model, list(cities.values()), pretrain_config(max_steps=args.steps, seed=0,
                                                                  cross_fit=not args.no_cross_fit)).trained_kinds
    out = {"pretrain_seconds": round(time.perf_counter() - t0, 1), "overrides": overrides, "task": args.task,
           "cross_fit": not args.no_cross_fit, "steps": args.steps,
           "checkpoint": args.checkpoint.name if args.checkpoint else None}
    for key in [k for k in CHECKINS if k in cities]:
        data = cities[key]
        subset = run_subset(data, fraction=0.05, seed=args.seed)
        targets = held_out_val(data, subset)
        row = {}
        ft = copy.deepcopy(model)
        res = fit(ft, [data], TrainConfig(fraction=0.05, epochs=1, seed=args.seed, batch_size=8, lr=1e-3, warmup_steps=1,
                                          cross_fit=not args.no_cross_fit, tasks=(args.task,)), val_city=data,
                  kinds_before=kinds)
        row["trajmoe"] = score(ft, data, subset.city, targets, args.task)
        row["trajmoe_all_features"] = score(ft, data, data.city_tensors(), targets, args.task)
        row["kept"], row["calibration_kept"] = res.kept, res.calibration_kept
        prior = copy.deepcopy(model)  # its learned terms are switched off: the shared model keeps them
        with torch.no_grad():
            for s in prior.head.scales:
                s.zero_()
        calibrate_head(prior, data, subset.city, subset.val_targets, task=args.task, fit_similarity=False)
        row["prior_terms_only"] = score(prior, data, subset.city, targets, args.task)
        baselines = (("epr", {}), ("epr+", {"plus": True})) + ((("epr-time", {"time": True}),)
                                                             if args.task == "at-time" else ())
        for name, kw in baselines:
            rg = ReturnGravity(**kw)
            rg.fit(data, subset.city, subset.val_targets)
            row[name] = score(rg, data, subset.city, targets, args.task)
        out[key] = row
        print(key, json.dumps(row), flush=True)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results[f"{args.tag}__{args.held_out}" + ("" if args.task == "next" else f"__{args.task}")] = out
    OUT.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
