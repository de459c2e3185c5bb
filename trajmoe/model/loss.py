"""Next-cell cross-entropy, the one training loss of every model (TrajMoE, the dense Transformer, the baselines).

Positions without a trainable target are left out: IGNORE (padding, or the last visit of a
training window) and MISS (the true next cell is not among the city's candidates).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from trajmoe.city.batch import IGNORE


def next_cell_loss(logits: torch.Tensor, targets: torch.Tensor, *,
                   reduction: Literal["sum", "mean"] = "sum") -> torch.Tensor:
    """Cross-entropy of next-cell scores over the positions whose target is a candidate cell.

    Parameters
    ----------
    logits
        (..., N) scores over the city's candidate cells, e.g. (B, T, N).
    targets
        (...) next-cell index per position, IGNORE or MISS (:class:`~trajmoe.city.batch.Batch` ``targets``).
    reduction
        ``"sum"`` over the trainable positions, or ``"mean"`` over them (``F.cross_entropy``'s
        mean: NaN when there is none).

    Returns
    -------
    torch.Tensor
        () loss, in the dtype of ``logits``.
    """
    tgt = targets.masked_fill(targets < 0, IGNORE)  # MISS is not trainable
    # ignore_index on the flat view: no (B, T, N) copy of the selected rows
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE,
                           reduction=reduction)
