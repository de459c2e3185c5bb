"""Evaluation: the pessimistic rank of every target of a split, and its metrics.

Every model (TrajMoE, the dense Transformer, the baselines) is scored through its
``score_last(batch, city) -> (B, N)``; ranks and metrics follow DESIGN.md §Protocol (metrics.py).
"""

from __future__ import annotations

import numpy as np
import torch

from trajmoe.city.batch import CityTensors
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData, iter_batches
from trajmoe.city.subset import RunSubset
from trajmoe.train.metrics import metrics_from_ranks, target_ranks


@torch.no_grad()
def rank_targets(model, data: CityData, city: CityTensors, targets: np.ndarray, *, max_len: int = DEFAULT_MAX_LEN,
                 batch_size: int = 256) -> np.ndarray:
    """Pessimistic rank of every target (inf for targets outside the candidates)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    ranks = []
    for chunk in iter_batches(np.asarray(targets), batch_size):
        batch = data.eval_batch(chunk, max_len=max_len)
        scores = model.score_last(batch, city)  # (B, N)
        truth = batch.targets.gather(1, batch.last_positions()).squeeze(1)
        ranks.append(target_ranks(scores, truth).numpy())
    if was_training:
        model.train()
    return np.concatenate(ranks) if ranks else np.zeros(0)


def evaluate(model, data: CityData, *, split: str = "test", city: CityTensors | None = None,
             subset: RunSubset | None = None, max_len: int = DEFAULT_MAX_LEN, batch_size: int = 256) -> dict:
    """Metrics on a split's targets.

    ``subset`` gives the cell features (and, for ``split="val"``, the run's share of validation
    targets); otherwise ``city`` gives the features, by default from all training visits.
    """
    if subset is not None:
        city = subset.city
    city = city if city is not None else data.city_tensors()
    targets = subset.val_targets if subset is not None and split == "val" else data.targets(split)
    return metrics_from_ranks(rank_targets(model, data, city, targets, max_len=max_len, batch_size=batch_size))
