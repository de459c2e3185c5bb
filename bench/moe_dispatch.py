"""Time one SAMoE feed-forward against a dense FFN with the same ACTIVE parameters (fwd + bwd).

SAMoE: 4,096 tokens, d=128, E=8 routed experts, top-2, shared expert on, router with a 52-dim
prior vector. Dense: hidden (k+1) * 4d = 1,536. Both are timed in one run, alternating
MoE/dense pairs after warm-up, median of the pairs, on 2 threads. Writes
bench/results/moe_dispatch.txt; its last line reads ``moe/dense time ratio: X``.

Run: ``.venv/bin/python bench/moe_dispatch.py [--pairs 15]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from trajmoe.model.moe import DenseFFN, MoEConfig, SAMoE

RESULT = Path(__file__).resolve().parent / "results" / "moe_dispatch.txt"


def _step(layer: torch.nn.Module, x: torch.Tensor, prior: torch.Tensor) -> float:
    """Seconds for one forward + backward (loss = output sum + aux loss)."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    res = layer(x, prior)
    (res.output.sum() + res.aux_loss).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=15, help="timed MoE/dense pairs (>= 7)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = MoEConfig(d_model=args.d_model, n_routed_experts=8, top_k=2, shared_expert=True,
                    router_priors=True, n_prior_features=52)
    load_start = os.getloadavg()[0]
    moe, dense = SAMoE(cfg).train(), DenseFFN(cfg).train()
    x = torch.randn(args.tokens, args.d_model, requires_grad=True)
    prior = torch.rand(args.tokens, 52)
    for _ in range(args.warmup):
        _step(moe, x, prior)
        _step(dense, x, prior)
    t_moe, t_dense = [], []
    for _ in range(max(args.pairs, 7)):
        t_moe.append(_step(moe, x, prior))
        t_dense.append(_step(dense, x, prior))
    m, d = statistics.median(t_moe), statistics.median(t_dense)
    ratios = statistics.median(a / b for a, b in zip(t_moe, t_dense, strict=True))

    n_moe = sum(p.numel() for p in moe.parameters())
    n_dense = sum(p.numel() for p in dense.parameters())
    lines = [
        "SAMoE dispatch vs dense FFN, forward + backward, median of alternating pairs",
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {args.threads}",
        f"tokens {args.tokens}, d_model {args.d_model}, E 8, top_k 2, shared expert, "
        f"priors 52; dense hidden {dense.mlp.c_fc.out_features}",
        f"params: SAMoE total {n_moe:,}, dense {n_dense:,}",
        f"pairs {len(t_moe)} after {args.warmup} warm-up pairs; 1-min load average "
        f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end (shared cores: a loaded "
        "machine slows the many small MoE ops more than the dense FFN's few large ones)",
        f"SAMoE  median {m * 1e3:8.2f} ms",
        f"dense  median {d * 1e3:8.2f} ms",
        f"median of per-pair ratios {ratios:.3f}",
        f"moe/dense time ratio: {m / d:.3f}",
    ]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
