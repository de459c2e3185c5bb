"""How strongly head calibration should trust a city's few validation targets (train.CALIBRATION_PRIOR_TARGETS).

After fine-tuning, ``train.calibrate_head`` refits the head's mobility-prior weights on the run's
validation targets. With 5% of a small city's validation share (54 targets on la_gowalla) a plain
maximum-likelihood fit is noisy, so the fit is maximum a posteriori: a Gaussian prior centred on
the weights the city's kind learned in pretraining, worth ``n0`` targets. This picks ``n0`` on
SOURCE cities only (never a target's test split): each pseudo-target city gets prior weights fitted
on another check-in city, is refitted on 54 random validation targets with each ``n0``, and is
scored on ALL its validation targets. The return + gravity features stand in for the head's prior
terms (the same eight terms, returns.py).

    python bench/calibration_prior.py          # ~15 min on one core; writes bench/results/calibration_prior.md
    python bench/calibration_prior.py --device cuda   # the features and fits on the GPU (default cpu)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch
import torch.nn.functional as F

from tools.realdata import REPO_ROOT, prepare_real, shared_data_dir
from trajmoe.city.data import CityData, iter_batches
from trajmoe.city.subset import run_subset
from trajmoe.train.baselines import ReturnGravity
from trajmoe.train.device import DEVICES, resolve_device_or_exit

PAIRS = [("sf_gowalla", "nyc_gowalla"), ("nyc_gowalla", "sf_gowalla"),
         ("sf_gowalla", "nyc_foursquare"), ("nyc_foursquare", "sf_gowalla")]  # (pseudo-target, prior source)
STRENGTHS = [0.0, 30.0, 100.0, 300.0, 1000.0, float("inf")]
N_VAL = 54  # la_gowalla's 5% validation share: the hardest case among the targets
SEEDS = 5


def features(model: ReturnGravity, data: CityData, city, targets: np.ndarray,
             device: torch.device = torch.device("cpu")) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    city = city.to(device)
    for chunk in iter_batches(np.asarray(targets), 256):
        batch = data.eval_batch(chunk).to(device)
        last = batch.last_positions()
        truth = batch.targets.gather(1, last).squeeze(1)
        keep = truth >= 0
        out.append((model._features(batch, city, last)[:, keep, 0], truth[keep]))
    return out


def map_fit(cached, w0: torch.Tensor, n0: float) -> torch.Tensor:
    """Validation NLL + 0.5 * n0 / n * |w - w0|^2, by L-BFGS (the objective calibrate_head uses)."""
    if n0 == float("inf"):
        return w0.clone()
    n = sum(len(t) for _, t in cached)
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = sum(F.cross_entropy(torch.tensordot(w, f, dims=1), t, reduction="sum") for f, t in cached) / n
        loss = nll + 0.5 * n0 / n * ((w - w0) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def acc1(w: torch.Tensor, cached) -> float:
    hits = n = 0
    for f, t in cached:
        s = torch.tensordot(w, f, dims=1)
        hits += int(((s >= s.gather(1, t[:, None])).sum(1) == 1).sum())  # a tie with another candidate is a miss
        n += len(t)
    return hits / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where the features and fits run (default cpu: the committed table is a CPU one)")
    device = resolve_device_or_exit(p.parse_args().device)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    if shared_data_dir() is None:
        raise SystemExit("../shared/data not found: this benchmark needs the real data.")
    cache = REPO_ROOT / "bench" / "results" / "cache" / "prepared"
    prior = {}
    for key in sorted({s for _, s in PAIRS}):
        data = prepare_real(key, cache)
        m = ReturnGravity()
        full = run_subset(data)
        m.fit(data, full.city, full.val_targets)
        prior[key] = m.weight.detach().clone().to(device)
    rows = []
    for target, source in PAIRS:
        data = prepare_real(target, cache)
        all_val = data.targets("val")
        accs = {n0: [] for n0 in STRENGTHS}
        for seed in range(SEEDS):
            city = run_subset(data, fraction=0.05, seed=seed).city
            m = ReturnGravity()
            small = features(m, data, city, np.random.default_rng(seed).choice(all_val, N_VAL, replace=False), device)
            everything = features(m, data, city, all_val, device)
            for n0 in STRENGTHS:
                accs[n0].append(acc1(map_fit(small, prior[source], n0), everything))
        rows.append((target, source, {n0: float(np.mean(a)) for n0, a in accs.items()}))
        print(target, source, {n0: round(v, 4) for n0, v in rows[-1][2].items()}, flush=True)
    head = " | ".join(f"n0={n0:g}" for n0 in STRENGTHS)
    lines = ["# Calibration prior strength (chosen on source cities only)", "",
             f"Acc@1 on ALL validation targets after refitting the eight prior weights on {N_VAL} random validation",
             f"targets (5% few-shot cell features, mean of {SEEDS} seeds), starting from weights fitted on another",
             "check-in city, for each prior strength n0 (in targets; 0 = maximum likelihood, inf = keep the prior).", "",
             f"| pseudo-target | prior from | {head} |", "|---|---|" + "---|" * len(STRENGTHS)]
    for target, source, acc in rows:
        lines.append(f"| {target} | {source} | " + " | ".join(f"{acc[n0]:.4f}" for n0 in STRENGTHS) + " |")
    mean = {n0: np.mean([r[2][n0] for r in rows]) for n0 in STRENGTHS}
    lines += ["| **mean** | | " + " | ".join(f"{mean[n0]:.4f}" for n0 in STRENGTHS) + " |", "",
              f"Best mean: n0 = {max(mean, key=mean.get):g}. Re-run: `python bench/calibration_prior.py`.", "",
              "The optimum is flat (n0 from 30 to infinity within 0.001 of the best mean). Against n0 = 0, a prior",
              "gains 0.004-0.007 on sf_gowalla <- nyc_foursquare and nyc_gowalla <- sf_gowalla, and loses 0.001 on",
              "sf_gowalla <- nyc_gowalla and 0.006 on nyc_foursquare <- sf_gowalla. trajmoe uses n0 = 100",
              "(train.CALIBRATION_PRIOR_TARGETS), picked from a first 8-seed run of this script (mean 0.2464 vs",
              "0.2462 for n0 = 30), before any target metro's test split was scored with it.", ""]
    out = REPO_ROOT / "bench" / "results" / "calibration_prior.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
