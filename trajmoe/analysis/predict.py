"""Model passes over a prepared city: next-cell scores, top-k predictions and routing.

* :func:`iter_next_scores` - the next-cell logits and the router probabilities of every target
  visit's predecessor, chunk by chunk, from one causal pass per person.
* :func:`predict` / :func:`predict_next` - the top-k next cells (with probabilities) for every
  target visit, and the rank of the true one; the ``trajmoe predict`` verb writes the table.
  :func:`predict` also keeps each MoE layer's router probabilities at every visit it predicts
  from (:class:`trajmoe.analysis.routing.Routing`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trajmoe.analysis.routing import Routing, _routing
from trajmoe.errors import InputDataError

if TYPE_CHECKING:  # torch (imported by dataset) costs ~2 s: the app's data pages never pay it
    from trajmoe.city.batch import CityTensors
    from trajmoe.city.data import CityData

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total) -> None


def target_visits(data: CityData, split: str = "test") -> np.ndarray:
    """Visit indices whose next-location is predicted: a split's targets, or ``all`` of them."""
    from trajmoe.city.data import SPLITS

    if split == "all":
        return np.flatnonzero(data.seq > 0)
    if split not in SPLITS:
        raise InputDataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)} or all.")
    return data.targets(split)


def iter_next_scores(model, data: CityData, targets: np.ndarray, *, city: CityTensors | None = None,
                     task: str = "next", router: bool = True, progress: Progress | None = None):
    """Yield ``(chunk, scores, router)`` for the target visits ``targets``, in ``task`` (``next``, or
    ``at-time``: told when each target visit happens).

    ``scores`` (B, N) float32 are the next-cell logits of each target's predecessor (``softmax``
    gives probabilities); ``router`` (B, n_layers, E) the router probabilities of that
    predecessor visit, or None (models without routed experts, or ``router=False``). One causal
    pass per person scores all of that person's targets, each exactly as from its own context
    (:func:`trajmoe.train.evaluate.iter_scores`). ``city`` defaults to features from all
    training visits. Chunks come in no particular order.
    """
    from trajmoe.train.evaluate import iter_scores

    city = city if city is not None else data.city_tensors()
    yield from iter_scores(model, data, np.asarray(targets), city=city, task=task, router=router, progress=progress)


@dataclass
class Predictions:
    """One model pass over a split's target visits."""

    table: pd.DataFrame  # predict_next rows: user_id, timestamp, cell, rank, next_cell, prob
    targets: np.ndarray  # (n,) the target visits, ascending
    ranks: np.ndarray  # (n,) pessimistic rank of each target's true cell (inf outside the candidates)
    routing: Routing | None  # router probabilities at each target's predecessor (None: no routed experts)

    def metrics(self, data: CityData, split: str = "test") -> dict:
        """Acc@1/5/10, MRR, NDCG@10 over this pass's targets of ``split``."""
        from trajmoe.city.data import SPLITS
        from trajmoe.train.metrics import metrics_from_ranks

        return metrics_from_ranks(self.ranks[data.split[self.targets] == SPLITS.index(split)])


def predict(model, data: CityData, *, top_k: int = 10, split: str = "test", city: CityTensors | None = None,
            task: str = "next", progress: Progress | None = None) -> Predictions:
    """Top-k next cells of every target's predecessor, the rank of each true next cell and the
    routing of each predecessor visit, from one pass per person (see :func:`iter_next_scores`)."""
    import torch

    from trajmoe.train.metrics import target_ranks

    if top_k < 1:
        raise InputDataError(f"top_k must be >= 1, got {top_k}: e.g. --top-k 10")
    targets = target_visits(data, split)
    k = min(top_k, data.n_cells)
    order, idx, prob, ranks, router = [], [], [], [], []
    for chunk, scores, probs in iter_next_scores(model, data, targets, city=city, task=task, progress=progress):
        p, i = scores.softmax(dim=-1).topk(k, dim=-1)  # (B, k)
        order.append(chunk)
        idx.append(i.numpy())
        prob.append(p.numpy())
        ranks.append(target_ranks(scores, torch.from_numpy(data.cell_idx[chunk])).numpy())
        if probs is not None:
            router.append(probs.numpy())
    chunk = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    sort = np.argsort(chunk, kind="stable")
    chunk = chunk[sort]
    origin = np.repeat(chunk - 1, k)
    v = data.visits
    table = pd.DataFrame({
        "user_id": v["user_id"].to_numpy()[origin],
        "timestamp": data.times.to_numpy()[origin],  # parsed once, by CityData
        "cell": v["cell"].to_numpy()[origin],
        "rank": np.tile(np.arange(1, k + 1), len(chunk)),
        "next_cell": data.cells["cell"].to_numpy()[np.concatenate(idx)[sort].reshape(-1)] if idx else [],
        "prob": np.concatenate(prob)[sort].reshape(-1) if prob else np.zeros(0, dtype=np.float32),
    })
    routing = None
    if router:
        origins = chunk - 1
        routing = _routing(data, city if city is not None else data.city_tensors(), origins,
                           np.concatenate(router)[sort])
    return Predictions(table=table, targets=chunk, ranks=np.concatenate(ranks)[sort] if ranks else np.zeros(0),
                       routing=routing)


def predict_next(model, data: CityData, *, top_k: int = 10, split: str = "test", city: CityTensors | None = None,
                 task: str = "next", progress: Progress | None = None) -> pd.DataFrame:
    """Top-k next cells of every target visit's predecessor (``split``: test, val or all), in ``task``.

    Returns
    -------
    pandas.DataFrame
        One row per (visit, rank), in visit order: ``user_id``, ``timestamp`` and ``cell`` of the
        visit the prediction is made at, ``rank`` (1 = most likely), ``next_cell``, ``prob``.
    """
    return predict(model, data, top_k=top_k, split=split, city=city, task=task, progress=progress).table
