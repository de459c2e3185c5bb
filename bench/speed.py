"""Fine-tune and prediction speed of the shipped checkpoint on a real city (goal: 1 epoch on 5%
in <= 15 s on this 2-core machine), with peak memory. Writes bench/results/speed.md.

    python bench/speed.py [--city la_gowalla] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from trajmoe.devtools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real
from trajmoe.train.checkpoint import load_checkpoint
from trajmoe.train.evaluate import evaluate, rank_targets
from trajmoe.train.fit import TrainConfig, fit

CKPT = REPO_ROOT / "assets" / "trajmoe_pretrained.safetensors"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cities", nargs="+", default=["la_gowalla", "nyc_foursquare"], choices=list(REAL_DATASETS))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for key in args.cities:
        data = prepare_real(key, REPO_ROOT / "bench" / "results" / "cache" / "prepared")
        model, _ = load_checkpoint(CKPT)
        t0 = time.perf_counter()
        res = fit(model, [data], TrainConfig(fraction=0.05, epochs=1, batch_size=8, lr=1e-3, warmup_steps=1), val_city=data)
        ft_s = time.perf_counter() - t0
        city = res.val_subset.city
        targets = data.targets("test")
        t0 = time.perf_counter()
        rank_targets(model, data, city, targets)
        pred_s = time.perf_counter() - t0
        acc = evaluate(model, data, city=city)["acc@1"]
        rows.append((key, data.n_cells, res.steps, ft_s, len(targets) / pred_s, acc))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = ["# Speed of the shipped checkpoint", "",
             f"{args.threads} torch thread(s), 2-core shared machine (load average {open('/proc/loadavg').read().split()[0]}).",
             "Fine-tune = 1 epoch on 5% of the training windows + validation + head calibration.", "",
             "| city | candidate cells | fine-tune steps | fine-tune s (goal <= 15) | predictions / s | test Acc@1 after |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {n} | {s} | {f:.1f} | {pps:,.0f} | {a:.4f} |" for k, n, s, f, pps, a in rows]
    lines += ["", f"Peak memory of the whole run: {peak:,.0f} MB.", "", "Re-run: `python bench/speed.py`"]
    (REPO_ROOT / "bench" / "results" / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
