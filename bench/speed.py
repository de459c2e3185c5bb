"""Prediction speed (one pass per person vs each target from its own context), fine-tune time and
peak memory of the shipped checkpoint on New York Foursquare, in ONE process, side by side.

    python bench/speed.py [--city nyc_foursquare] [--threads 1] [--device cpu] [--prefix-sample 3000]

Prints, for the city (integers without separators):

    predictions/s: N                 one causal pass per person (trajmoe.train.evaluate.iter_scores)
    prefix predictions/s: M          the same targets, each from a sequence of only its last R visits
    one-pass/prefix speedup: X
    peak memory MB: P                this process, the city only
    fine-tune s: F                   1 epoch on 5% + validation + head calibration

"Predictions" are a city's predictions: the next place after every visit that has one (what
`trajmoe predict --split all` and the app's maps compute). The prefix path is timed on a seeded
sample of the same targets, and its scores are checked equal to the one-pass scores there. The
test split alone (what `evaluate` scores: the last 20% of each person's visits, each segment with
R - 1 visits of warm-up) is reported too. Writes bench/results/speed.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch

from tools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real
from trajmoe.city.data import iter_batches
from trajmoe.train.checkpoint import load_checkpoint
from trajmoe.train.device import DEVICES, resolve_device_or_exit
from trajmoe.train.evaluate import evaluate, iter_scores
from trajmoe.train.fit import TrainConfig, fit

CKPT = REPO_ROOT / "assets" / "trajmoe_pretrained.safetensors"
OUT = REPO_ROOT / "bench" / "results" / "speed.md"


def one_pass(model, data, city, targets, keep: np.ndarray) -> tuple[float, dict]:
    """Seconds to score ``targets`` in one pass per person; the score rows of ``keep`` (only
    those: every row of a city is ~N floats, and the benchmark measures the pass's own memory)."""
    t0 = time.perf_counter()
    scores = {}
    for chunk, s, _ in iter_scores(model, data, targets, city=city):
        hit = np.isin(chunk, keep)
        scores.update(zip(chunk[hit].tolist(), s[torch.from_numpy(hit)]))
    return time.perf_counter() - t0, scores


def prefix(model, data, city, targets, reach: int, device) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        cell_emb = model.encode_cells(city)  # once, as the one-pass path does
        for chunk in iter_batches(targets, 256):
            batch = data.eval_batch(chunk, max_len=reach).to(device)
            out.append(model.score_last(batch, city, cell_emb=cell_emb).float().cpu())
    return time.perf_counter() - t0, torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--city", default="nyc_foursquare", choices=list(REAL_DATASETS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=DEVICES, help="default cpu: the committed results are CPU ones")
    p.add_argument("--prefix-sample", type=int, default=3000, help="targets timed on the slow prefix path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device_or_exit(args.device)
    load_before = open("/proc/loadavg").read().split()[0]
    data = prepare_real(args.city, REPO_ROOT / "bench" / "results" / "cache" / "prepared")
    model, _ = load_checkpoint(CKPT)
    model.to(device)
    t0 = time.perf_counter()
    res = fit(model, [data], TrainConfig(fraction=0.05, epochs=1, batch_size=8, lr=1e-3, warmup_steps=1), val_city=data)
    ft_s = time.perf_counter() - t0
    city = res.val_subset.city.to(device)
    reach = model.reach

    every = np.flatnonzero(data.seq > 0)  # a city's predictions: after every visit that has a next one
    sample = np.sort(np.random.default_rng(0).choice(every, size=min(args.prefix_sample, len(every)), replace=False))
    one_s, scores = one_pass(model, data, city, every, sample)
    pre_s, pre_scores = prefix(model, data, city, sample, reach, device)
    same = torch.stack([scores[int(t)] for t in sample])
    max_diff = float((same - pre_scores).abs().max())
    assert torch.allclose(same, pre_scores, rtol=1e-4, atol=1e-4), f"one-pass and prefix scores differ by {max_diff}"
    test = data.targets("test")
    test_s, _ = one_pass(model, data, city, test, test[:0])
    acc = evaluate(model, data, city=city)["acc@1"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    n_one, n_pre = len(every) / one_s, len(sample) / pre_s
    head = [f"predictions/s: {n_one:.0f}", f"prefix predictions/s: {n_pre:.0f}",
            f"one-pass/prefix speedup: {n_one / n_pre:.1f}", f"peak memory MB: {peak:.0f}", f"fine-tune s: {ft_s:.1f}"]
    load_after = open("/proc/loadavg").read().split()[0]
    lines = ["# Speed of the shipped checkpoint", "", "```", *head, "```", "",
             f"{args.city} ({data.n_cells} candidate cells), {args.threads} torch thread(s), device {device}; "
             f"2-core shared machine, load average {load_before} before, {load_after} after.", "",
             f"- one pass per person: {len(every):,} predictions (every visit with a next one) in {one_s:.1f} s;",
             f"- prefix: {len(sample):,} of them, each from a sequence of only its last R = {reach} visits, in "
             f"{pre_s:.1f} s; scores equal to the one-pass ones (largest difference {max_diff:.1e});",
             f"- the test split alone (what `evaluate` scores, with R - 1 visits of warm-up per segment): "
             f"{len(test):,} targets in {test_s:.1f} s = {len(test) / test_s:,.0f} predictions/s;",
             f"- fine-tune: 1 epoch on 5% of the training windows ({res.steps} steps) + validation + head calibration "
             f"in {ft_s:.1f} s (goal <= 15 s); test Acc@1 after {acc:.4f};",
             f"- peak memory (this process, {args.city} only): {peak:,.0f} MB (goal <= 1,500).", "",
             f"Re-run: `python bench/speed.py --city {args.city}`", ""]
    OUT.write_text("\n".join(lines))
    print("\n".join(head))
    print("\n".join(lines[len(head) + 5:]))


if __name__ == "__main__":
    main()
