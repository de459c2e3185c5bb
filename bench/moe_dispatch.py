"""Time one SAMoE feed-forward against a dense FFN with the same ACTIVE parameters (fwd + bwd).

SAMoE: 4,096 tokens, d=128, E=8 routed experts, top-2, shared expert on, router with a 52-dim
prior vector. Dense: hidden (k+1) * 4d = 1,536. Both are timed in one run at 1 thread (what the
CLI uses) and at 2 threads, side by side: each round times a MoE/dense pair at 1 thread, then one
at 2 threads, so both see the same machine load; medians over the rounds after warm-up.

``--busy N`` runs N spinning processes beside the timing (killed afterwards), to measure the
layer on a loaded machine. bench/results/moe_dispatch.txt keeps one section per condition (quiet
or N spinners) and token count; a run replaces its own. Each section ends with
``moe/dense time ratio (1 thread): X`` and ``moe/dense time ratio (2 threads): Y``.

Run: ``.venv/bin/python bench/moe_dispatch.py [--pairs 15] [--busy 1]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from trajmoe.model.experts import grouped_mm_applies
from trajmoe.model.moe import DenseFFN, MoEConfig, SAMoE

RESULT = Path(__file__).resolve().parent / "results" / "moe_dispatch.txt"
THREADS = (1, 2)
QUIET = "quiet"


def _step(layer: torch.nn.Module, x: torch.Tensor, prior: torch.Tensor) -> float:
    """Seconds for one forward + backward (loss = output sum + aux loss)."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    res = layer(x, prior)
    (res.output.sum() + res.aux_loss).backward()
    return time.perf_counter() - start


def _time_pairs(moe: SAMoE, dense: DenseFFN, x: torch.Tensor, prior: torch.Tensor, *,
                pairs: int, warmup: int) -> dict[int, tuple[list[float], list[float]]]:
    """Per thread count: the MoE and dense step times of each round, rounds alternating counts."""
    times: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in THREADS}
    for round_ in range(warmup + pairs):
        for n in THREADS:
            torch.set_num_threads(n)
            t_moe, t_dense = _step(moe, x, prior), _step(dense, x, prior)
            if round_ >= warmup:
                times[n][0].append(t_moe)
                times[n][1].append(t_dense)
    return times


def _write_section(name: str, lines: list[str]) -> None:
    """Replace this condition's section of the results file, keep the other one."""
    sections: dict[str, list[str]] = {}
    if RESULT.is_file():
        current = None
        for line in RESULT.read_text().splitlines():
            if line.startswith("== ") and line.endswith(" =="):
                current = line[3:-3]
                sections[current] = []
            elif current is not None and line:
                sections[current].append(line)
    sections[name] = lines
    order = sorted(sections, key=lambda c: (not c.startswith(QUIET), c))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n\n".join("\n".join([f"== {c} ==", *sections[c]]) for c in order) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=15, help="timed rounds (>= 7)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes run beside the timing")
    args = parser.parse_args()
    torch.manual_seed(0)

    cfg = MoEConfig(d_model=args.d_model, n_routed_experts=8, top_k=2, shared_expert=True,
                    router_priors=True, n_prior_features=52)
    moe, dense = SAMoE(cfg).train(), DenseFFN(cfg).train()
    x = torch.randn(args.tokens, args.d_model, requires_grad=True)
    prior = torch.rand(args.tokens, 52)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let the spinners reach full speed
        load_start = os.getloadavg()[0]
        times = _time_pairs(moe, dense, x, prior, pairs=max(args.pairs, 7), warmup=args.warmup)
        load_end = os.getloadavg()[0]
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()

    spinners = f"{args.busy} spinning process{'es' if args.busy > 1 else ''}"
    condition = f"under load: {spinners}" if args.busy else QUIET
    n_moe = sum(p.numel() for p in moe.parameters())
    n_dense = sum(p.numel() for p in dense.parameters())
    lines = [
        "SAMoE dispatch vs dense FFN, forward + backward, median of alternating MoE/dense pairs",
        f"condition: {condition}"
        + (" beside the bench, keeping cores busy (the 1-min load average lags behind them)"
           if args.busy else " (no extra process started)"),
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}",
        f"tokens {args.tokens}, d_model {args.d_model}, E 8, top_k 2, shared expert, "
        f"priors 52; dense hidden {dense.mlp.c_fc.out_features}",
        f"params: SAMoE total {n_moe:,}, dense {n_dense:,}",
        f"rounds {max(args.pairs, 7)} after {args.warmup} warm-up rounds, each a pair at 1 thread "
        "then a pair at 2 threads",
        f"load average (1 min): {load_start:.2f} at start, {load_end:.2f} at end",
    ]
    ratios = []
    for n in THREADS:
        t_moe, t_dense = times[n]
        m, d = statistics.median(t_moe), statistics.median(t_dense)
        per_pair = statistics.median(a / b for a, b in zip(t_moe, t_dense, strict=True))
        label = f"{n} thread{'s' if n > 1 else ''}"
        torch.set_num_threads(n)
        sorted_tokens = x.new_empty(args.tokens * cfg.top_k, args.d_model)
        path = ("one grouped GEMM" if grouped_mm_applies(sorted_tokens, moe.experts.c_fc.weight)
                else "a matmul pair per expert slice")
        lines.append(f"{label}: SAMoE median {m * 1e3:8.2f} ms, dense median {d * 1e3:8.2f} ms, "
                     f"median of per-pair ratios {per_pair:.3f} (routed experts: {path})")
        ratios.append(f"moe/dense time ratio ({label}): {m / d:.3f}")
    lines += ratios
    _write_section(f"{condition}, {args.tokens} tokens", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
