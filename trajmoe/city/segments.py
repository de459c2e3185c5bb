"""One-pass scoring: cut each person's visits into a few segments that score all of their targets.

A model whose score at a position depends only on that position's last ``reach`` visits (TrajMoE
with sliding-window rotary attention, the count baselines) does not need one sequence per target:
one causal pass over a person's history scores every target at once. A segment is a run of one
person's consecutive visits that starts ``reach - 1`` visits before its first scored position (or
at the person's first visit), so every scored position sees exactly the visits its own context
would; a long history is cut into several segments of at most ``span`` scored positions each, so
memory stays bounded whatever the person's history length.

:func:`segment_batches` packs segments into batches under a token budget (the Transformer's work)
and a score budget (the (B, Q, N) head's memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trajmoe.city.batch import IGNORE, Batch
from trajmoe.city.data import CityData

SPAN = 256  # scored positions per segment at most (a longer history becomes several segments)
MAX_TOKENS = 16_384  # visits per batch, padding included (the Transformer's work per pass)
MAX_SCORES = 1 << 21  # (scored positions x candidate cells) per batch: ~8 MB per (B, Q, N) float tensor


@dataclass(frozen=True)
class Segment:
    """Consecutive visits of one person and the positions in them whose next visit is scored."""

    visits: np.ndarray  # (T,) visit indices, consecutive, one user
    positions: np.ndarray  # (Q,) positions in ``visits`` of each target's previous visit
    targets: np.ndarray  # (Q,) the target visits (visits[positions] + 1)


@dataclass(frozen=True)
class SegmentBatch:
    """Segments packed for one pass: read scores at ``positions`` where ``valid``."""

    batch: Batch  # (B, T); ``targets`` holds each scored position's true next cell (MISS outside)
    positions: torch.Tensor  # (B, Q) long; padded rows repeat position 0
    valid: torch.Tensor  # (B, Q) bool: a real scored position
    targets: np.ndarray  # (n,) target visits, in the row-major order of ``valid``


def one_pass_segments(data: CityData, targets: np.ndarray, *, reach: int, span: int = SPAN) -> list[Segment]:
    """Segments that score every target in ``targets`` (visit indices with an earlier visit).

    Each scored position keeps ``reach - 1`` earlier visits of its person in its segment (fewer
    only when the person has no more), so a model whose scores depend on at most the last
    ``reach`` visits gives every target the same score as its own context would.
    """
    if reach < 1 or span < 1:
        raise ValueError(f"reach and span must be >= 1, got {reach}, {span}")
    targets = np.unique(np.asarray(targets, dtype=np.int64))
    if len(targets) and (data.seq[targets] == 0).any():
        raise ValueError("a target must have an earlier visit of the same person (seq > 0)")
    origins = targets - 1
    user = data.user_of_visit[origins]
    bounds = np.flatnonzero(np.r_[True, user[1:] != user[:-1], True]) if len(origins) else np.array([0])
    segments = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        first_visit = data.user_start[user[a]]
        j = a
        while j < b:
            k = a + int(np.searchsorted(origins[a:b], origins[j] + span, side="left"))
            start = max(first_visit, origins[j] - (reach - 1))
            segments.append(Segment(visits=np.arange(start, origins[k - 1] + 1), positions=origins[j:k] - start,
                                    targets=targets[j:k]))
            j = k
    return segments


def segment_batches(data: CityData, targets: np.ndarray, *, reach: int, n_cells: int, span: int = SPAN,
                    max_tokens: int = MAX_TOKENS, max_scores: int = MAX_SCORES) -> Iterator[SegmentBatch]:
    """Batches of :func:`one_pass_segments`, longest first, within the token and score budgets."""
    segments = sorted(one_pass_segments(data, targets, reach=reach, span=span), key=lambda s: -len(s.visits))
    group: list[Segment] = []
    for seg in segments:
        longest = len(group[0].visits) if group else len(seg.visits)
        n_q = max([len(s.positions) for s in group] + [len(seg.positions)])
        if group and ((len(group) + 1) * longest > max_tokens or (len(group) + 1) * n_q * n_cells > max_scores):
            yield _pack(data, group)
            group = []
        group.append(seg)
    if group:
        yield _pack(data, group)


def _pack(data: CityData, group: list[Segment]) -> SegmentBatch:
    batch = data.window_batch([s.visits for s in group])
    n_q = max(len(s.positions) for s in group)
    positions = np.zeros((len(group), n_q), dtype=np.int64)
    valid = np.zeros((len(group), n_q), dtype=bool)
    truth = np.full(batch.targets.shape, IGNORE, dtype=np.int64)
    for b, s in enumerate(group):
        positions[b, : len(s.positions)] = s.positions
        valid[b, : len(s.positions)] = True
        truth[b, s.positions] = data.cell_idx[s.targets]  # MISS (-1) where outside the candidates
    batch.targets = torch.from_numpy(truth)
    return SegmentBatch(batch=batch, positions=torch.from_numpy(positions), valid=torch.from_numpy(valid),
                        targets=np.concatenate([s.targets for s in group]))
