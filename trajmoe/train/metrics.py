"""Ranking metrics exactly as README.md § Protocol states them.

Rank of the target = 1 + #candidates scored higher + #other candidates scored equal, so ties never
help (a constant scorer ranks every target last). A target outside the candidates (MISS) has rank
infinity: it counts in ``n`` and scores zero on every metric.
"""

from __future__ import annotations

import numpy as np
import torch

KS = (1, 5, 10)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pessimistic rank of each target among all candidates.

    Parameters
    ----------
    scores
        (B, N) candidate scores (higher = more likely).
    targets
        (B,) candidate index, or a negative value for a target outside the candidates.

    Returns
    -------
    (B,) float64 ranks, ``inf`` for targets outside the candidates.
    """
    # A NaN score (a diverged model) ranks below everything: compared as is, NaN is neither higher
    # nor equal, so a model that outputs NaN everywhere would rank every target first.
    scores = scores.float().nan_to_num(nan=float("-inf"))
    valid = targets >= 0
    safe = targets.clamp(min=0)
    target_score = scores.gather(1, safe[:, None])  # (B, 1)
    higher = (scores > target_score).sum(1)
    equal_others = (scores == target_score).sum(1) - 1
    ranks = (1 + higher + equal_others).double()
    return torch.where(valid, ranks, torch.full_like(ranks, float("inf")))


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Acc@1/5/10, MRR over the full ranking, NDCG@10, and ``n`` targets."""
    r = np.asarray(ranks, dtype=np.float64)
    n = len(r)
    if n == 0:
        return {"acc@1": 0.0, "acc@5": 0.0, "acc@10": 0.0, "mrr": 0.0, "ndcg@10": 0.0, "n": 0}
    out = {f"acc@{k}": float((r <= k).mean()) for k in KS}
    out["mrr"] = float((1.0 / r).mean())
    out["ndcg@10"] = float(np.where(r <= 10, 1.0 / np.log2(r + 1.0), 0.0).mean())
    out["n"] = int(n)
    return out


def metrics_by_kind(ranks: np.ndarray | torch.Tensor, is_return: np.ndarray) -> dict[str, dict[str, float]]:
    """:func:`metrics_from_ranks` of the returns and of the explorations apart.

    Parameters
    ----------
    ranks
        (n,) ranks of the targets (inf outside the candidates).
    is_return
        (n,) bool, True where the target is a return (``CityData.is_return``).

    Returns
    -------
    ``{"returns": metrics, "explorations": metrics}``; their ``n`` add up to ``len(ranks)``.
    """
    r = np.asarray(ranks, dtype=np.float64)
    back = np.asarray(is_return, dtype=bool)
    if back.shape != r.shape:
        raise ValueError(f"is_return has shape {back.shape}, ranks {r.shape}")
    return {"returns": metrics_from_ranks(r[back]), "explorations": metrics_from_ranks(r[~back])}
