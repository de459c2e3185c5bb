"""Model passes over a prepared city: next-cell scores, top-k predictions and routing.

* :func:`iter_next_scores` - the next-cell logits (and, for strided passes, the router
  probabilities) of every target visit's predecessor, chunk by chunk.
* :func:`predict` / :func:`predict_next` - the top-k next cells (with probabilities) for every
  target visit, and the rank of the true one; the ``trajmoe predict`` verb writes the table.
  A strided :func:`predict` pass also keeps each MoE layer's router probabilities at every visit
  it predicts from (:class:`trajmoe.analysis.routing.Routing`).
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


def _model_max_len(model, max_len: int | None) -> int:
    from trajmoe.city.data import DEFAULT_MAX_LEN

    cap = getattr(getattr(model, "config", None), "max_len", DEFAULT_MAX_LEN)
    return min(max_len or cap, cap)


def target_visits(data: CityData, split: str = "test") -> np.ndarray:
    """Visit indices whose next-location is predicted: a split's targets, or ``all`` of them."""
    from trajmoe.city.data import SPLITS

    if split == "all":
        return np.flatnonzero(data.seq > 0)
    if split not in SPLITS:
        raise InputDataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)} or all.")
    return data.targets(split)


def _strided_windows(data: CityData, targets: np.ndarray, max_len: int, stride: int):
    """Windows of consecutive visits whose LAST ``stride`` positions are origins of targets.

    Returns (windows, positions, targets): per window its visit indices, the window positions to
    read, and the target predicted at each. Every origin sees at least ``max_len - stride + 1``
    visits of context, or all its user's earlier visits when there are fewer.
    """
    origins = np.sort(np.asarray(targets)) - 1
    user = data.user_of_visit[origins]
    windows, positions, covered = [], [], []
    i = len(origins) - 1
    while i >= 0:
        end, first = origins[i], data.user_start[user[i]]
        start = max(first, end - max_len + 1)
        low = start if start == first else end - stride + 1
        j = i
        while j >= 0 and user[j] == user[i] and origins[j] >= low:
            j -= 1
        windows.append(np.arange(start, end + 1))
        positions.append(origins[j + 1 : i + 1] - start)
        covered.append(origins[j + 1 : i + 1] + 1)
        i = j
    return windows, positions, covered


def iter_next_scores(model, data: CityData, targets: np.ndarray, *, city: CityTensors | None = None,
                     stride: int | None = None, max_len: int | None = None, batch_size: int = 256,
                     progress: Progress | None = None):
    """Yield ``(chunk, scores, router)`` for the target visits ``targets``.

    ``scores`` (B, N) float32 are the next-cell logits of each target's predecessor (``softmax``
    gives probabilities); ``router`` (B, n_layers, E) the router probabilities of that
    predecessor visit, or None (exact passes, models without routed experts).

    ``stride=None`` is the protocol exactly (DESIGN.md §Protocol): each target's context is up to
    ``max_len`` earlier visits of its user, one sequence per target. ``stride=s`` reads the last
    ``s`` positions of each sequence instead, so one sequence serves ``s`` targets (about ``s``
    times less compute) and a target's context is at least ``max_len - s + 1`` visits (or all
    of its user's earlier visits): the app uses it to stay interactive. ``city`` defaults to
    features from all training visits. Chunks come in no particular order.
    """
    import torch

    from trajmoe.city.data import iter_batches

    city = city if city is not None else data.city_tensors()
    max_len = _model_max_len(model, max_len)
    targets = np.asarray(targets)
    done = 0
    if stride is None:
        for chunk in iter_batches(targets, batch_size):
            with torch.no_grad():
                scores = model.score_last(data.eval_batch(chunk, max_len=max_len), city)  # (B, N)
            done += len(chunk)
            if progress is not None:
                progress(done, len(targets))
            yield chunk, scores.float(), None
        return
    if not 1 <= stride <= max_len:
        raise InputDataError(f"stride must be in 1..{max_len}, got {stride}")
    windows, positions, covered = _strided_windows(data, targets, max_len, stride)
    per_batch = max(1, batch_size // 4)  # sequences per pass (each up to max_len visits)
    for group in iter_batches(list(range(len(windows))), per_batch):
        with torch.no_grad():
            out = model(data.window_batch([windows[w] for w in group]), city, targets=False)
        rows = torch.from_numpy(np.concatenate([np.full(len(positions[w]), b) for b, w in enumerate(group)]))
        cols = torch.from_numpy(np.concatenate([positions[w] for w in group]))
        layers = getattr(out, "router_probs", None)
        router = torch.stack([p[rows, cols] for p in layers], dim=1) if layers else None  # (B, n_layers, E)
        chunk = np.concatenate([covered[w] for w in group])
        done += len(chunk)
        if progress is not None:
            progress(done, len(targets))
        yield chunk, out.logits[rows, cols].float(), router


@dataclass
class Predictions:
    """One model pass over a split's target visits."""

    table: pd.DataFrame  # predict_next rows: user_id, timestamp, cell, rank, next_cell, prob
    targets: np.ndarray  # (n,) the target visits, ascending
    ranks: np.ndarray  # (n,) pessimistic rank of each target's true cell (inf outside the candidates)
    routing: Routing | None  # router probabilities at each target's predecessor (strided passes)

    def metrics(self, data: CityData, split: str = "test") -> dict:
        """Acc@1/5/10, MRR, NDCG@10 over this pass's targets of ``split``."""
        from trajmoe.city.data import SPLITS
        from trajmoe.train.metrics import metrics_from_ranks

        return metrics_from_ranks(self.ranks[data.split[self.targets] == SPLITS.index(split)])


def predict(model, data: CityData, *, top_k: int = 10, split: str = "test", city: CityTensors | None = None,
            stride: int | None = None, max_len: int | None = None, batch_size: int = 256,
            progress: Progress | None = None) -> Predictions:
    """Top-k next cells of every target's predecessor, the rank of each true next cell and (with
    ``stride``) the routing of each predecessor visit, from one pass (see :func:`iter_next_scores`)."""
    import torch

    from trajmoe.train.metrics import target_ranks

    if top_k < 1:
        raise InputDataError(f"top_k must be >= 1, got {top_k}: e.g. --top-k 10")
    targets = target_visits(data, split)
    k = min(top_k, data.n_cells)
    order, idx, prob, ranks, router = [], [], [], [], []
    for chunk, scores, probs in iter_next_scores(model, data, targets, city=city, stride=stride, max_len=max_len,
                                                 batch_size=batch_size, progress=progress):
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
        "timestamp": pd.to_datetime(v["timestamp"]).to_numpy()[origin],
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
                 stride: int | None = None, max_len: int | None = None, batch_size: int = 256,
                 progress: Progress | None = None) -> pd.DataFrame:
    """Top-k next cells of every target visit's predecessor (``split``: test, val or all).

    Returns
    -------
    pandas.DataFrame
        One row per (visit, rank), in visit order: ``user_id``, ``timestamp`` and ``cell`` of the
        visit the prediction is made at, ``rank`` (1 = most likely), ``next_cell``, ``prob``.
    """
    return predict(model, data, top_k=top_k, split=split, city=city, stride=stride, max_len=max_len,
                   batch_size=batch_size, progress=progress).table
