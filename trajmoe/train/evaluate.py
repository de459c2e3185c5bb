"""Evaluation: the next-cell scores and pessimistic rank of every target of a split, and its metrics.

Every model is scored through ONE path, :func:`iter_scores`:

* models with a finite ``reach`` (TrajMoE and the dense Transformer: sliding-window rotary
  attention; the count baselines) score all of a person's targets from one causal pass over a few
  segments of that person's history (:mod:`trajmoe.city.segments`), via
  ``score_positions(batch, city, positions)``;
* a model without one (the GRU: its state depends on every earlier visit of the sequence) gets
  each target's own context of ``max_len`` visits, via ``score_last(batch, city)``.

Ranks and metrics follow README.md § Protocol (``metrics.py``). Targets are streamed in bounded
batches, so memory does not grow with the number of targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from trajmoe.city.batch import TASKS, CityTensors
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData, iter_batches
from trajmoe.city.segments import segment_batches
from trajmoe.city.subset import RunSubset
from trajmoe.train.device import model_device
from trajmoe.train.metrics import metrics_by_kind, metrics_from_ranks, target_ranks
from trajmoe.train.models import check_model_task

Progress = Callable[[int, int], None]  # (targets done, total) -> None


@torch.no_grad()
def iter_scores(model, data: CityData, targets: np.ndarray, *, city: CityTensors, task: str = TASKS[0],
                router: bool = False, max_len: int = DEFAULT_MAX_LEN, batch_size: int = 256,
                progress: Progress | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(targets, scores, router_probs)`` chunks covering every visit of ``targets``, in ``task``.

    ``scores`` (n, N) float32 on the CPU are the next-cell logits for each target from its
    previous visit (``softmax`` gives probabilities); ``router_probs`` (n, n_layers, E) the router
    probabilities at that previous visit when ``router`` and the model has routed experts, else
    None. The model runs where its parameters are; chunks come in no particular order.
    """
    check_model_task(model, task)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = model_device(model)
    city_on = city.to(device)
    targets = np.asarray(targets, dtype=np.int64)
    done, reach = 0, getattr(model, "reach", None)
    encode = getattr(model, "encode_cells", None)  # the city's cell embeddings, once per pass
    cells = {"cell_emb": encode(city_on)} if encode is not None else {}
    try:
        if reach is None:  # each target from its own context of up to max_len visits
            for chunk in iter_batches(targets, batch_size):
                scores = model.score_last(data.eval_batch(chunk, max_len=max_len).to(device), city_on, task=task, **cells)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(targets))
                yield chunk, scores.float().cpu(), None
            return
        for part in segment_batches(data, targets, reach=reach, n_cells=city.n_cells):
            out = model.score_positions(part.batch.to(device), city_on, part.positions.to(device), task=task, **cells)
            valid = part.valid.to(device)
            probs = None
            if router and out.router_probs:
                probs = torch.stack([p[valid] for p in out.router_probs], dim=1).float().cpu()  # (n, L, E)
            done += len(part.targets)
            if progress is not None:
                progress(done, len(targets))
            yield part.targets, out.logits[valid].float().cpu(), probs
    finally:
        if was_training:
            model.train()


def rank_targets(model, data: CityData, city: CityTensors, targets: np.ndarray, *, task: str = TASKS[0],
                 max_len: int = DEFAULT_MAX_LEN, batch_size: int = 256) -> np.ndarray:
    """Pessimistic rank of every target in ``task``, in the order of ``targets`` (inf outside the candidates)."""
    unique, inverse = np.unique(np.asarray(targets, dtype=np.int64), return_inverse=True)
    ranks = np.zeros(len(unique))
    for chunk, scores, _ in iter_scores(model, data, unique, city=city, task=task, max_len=max_len,
                                        batch_size=batch_size):
        ranks[np.searchsorted(unique, chunk)] = target_ranks(scores, torch.from_numpy(data.cell_idx[chunk])).numpy()
    return ranks[inverse]


def evaluate(model, data: CityData, *, split: str = "test", city: CityTensors | None = None,
             subset: RunSubset | None = None, max_len: int = DEFAULT_MAX_LEN, batch_size: int = 256,
             task: str = TASKS[0]) -> dict:
    """Metrics on a split's targets in ``task`` (batch.TASKS): overall, and under ``returns`` /
    ``explorations``.

    ``subset`` gives the cell features (and, for ``split="val"``, the run's share of validation
    targets); otherwise ``city`` gives the features, by default from all training visits. A return
    is a target whose cell is among the person's last ``DEFAULT_MAX_LEN`` earlier visits, whatever
    ``max_len`` the model reads (``CityData.is_return``), so the split is the same for every method.
    """
    if subset is not None:
        city = subset.city
    city = city if city is not None else data.city_tensors()
    targets = subset.val_targets if subset is not None and split == "val" else data.targets(split)
    ranks = rank_targets(model, data, city, targets, task=task, max_len=max_len, batch_size=batch_size)
    return {**metrics_from_ranks(ranks), **metrics_by_kind(ranks, data.is_return(targets))}
