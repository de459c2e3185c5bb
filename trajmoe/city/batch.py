"""Tensors the models consume: one city's cell table and a batch of visit sequences.

Every model (TrajMoE, the dense Transformer, the GRU, the scorers) reads the same two objects,
so baselines and TrajMoE are trained and evaluated through one interface. Built by
``data.py``; the caller moves them to a device (``.to(device)``), modules never store one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from trajmoe.city.tasks import TASKS, check_task  # noqa: F401  (re-exported: the batch's tasks)
from trajmoe.city.transitions import csr_rows
from trajmoe.errors import TrajMoEError

# Special index values.
IGNORE = -100  # no target at this position (padding, or a training position without a successor)
MISS = -1  # the true next cell is not among the city's candidates: always counts as a miss
UNKNOWN_WEEKDAY = 7  # datasets whose weekday is unreliable (sf/la Gowalla) use this weekday index


# Time since the previous visit of the same user: 0 = first visit, then <0.5h, <1h, <2h, <4h, <8h,
# <24h, <72h, >=72h. Jump from the previous visit: 0 = first visit, then <0.5, <1, <2, <5, <10,
# <20, >=20 km. The edges live in data.py (GAP_EDGES_H, DIST_EDGES_KM).
N_GAP_BUCKETS = 9
N_DIST_BUCKETS = 8


@dataclass
class CityTensors:
    """One city's candidate cells. N = number of candidate cells, F = feature width."""

    name: str
    features: torch.Tensor  # (N, F) float: features.cell_feature_matrix(...), schema in features.py
    xy_km: torch.Tensor  # (N, 2) float: cell centre relative to the city centre, km
    poi_share: torch.Tensor  # (N, C) float: POI category shares of the cell (router spatial prior)
    # (N,) float: log(1 + the cell's training-subset visits relative to the mean cell's,
    # features.log_popularity): about the same for 5% and for 100% of a city's visits.
    log_pop: torch.Tensor
    kind: str = "checkins"  # kind of data (kinds.KINDS): selects the model head's prior weights
    # (N, N) float log(1 + km) between cell centres, or None (computed per position instead): a city's
    # geometry, shared by all its run subsets; only kept for cities up to LOG_KM_TABLE_CELLS cells.
    log_km: torch.Tensor | None = None
    # Global transitions of the run's training windows (city.transitions), CSR: moves out of cell
    # c go to trans_dst[trans_ptr[c]:trans_ptr[c+1]] with shrunk shares trans_share. None: unknown.
    trans_ptr: torch.Tensor | None = None  # (N + 1,) long
    trans_dst: torch.Tensor | None = None  # (E,) long
    trans_share: torch.Tensor | None = None  # (E,) float
    # (24, N) float log share of each cell's training visits at each hour relative to a flat day
    # (features.hour_log_share): the at-time task's popularity at the target hour. None: unknown.
    hour_share: torch.Tensor | None = None

    @property
    def n_cells(self) -> int:
        return self.features.shape[0]

    def transition_rows(self, current: torch.Tensor) -> torch.Tensor:
        """(M,) current cells -> (M, N) share of moves out of each that went to every candidate
        (zeros when the city tensors carry no transition table)."""
        if self.trans_ptr is None:
            return torch.zeros(len(current), self.n_cells, dtype=self.log_pop.dtype, device=current.device)
        return csr_rows(self.trans_ptr, self.trans_dst, self.trans_share, current, self.n_cells)

    def to(self, device: torch.device | str) -> CityTensors:
        return CityTensors(
            name=self.name,
            features=self.features.to(device),
            xy_km=self.xy_km.to(device),
            poi_share=self.poi_share.to(device),
            log_pop=self.log_pop.to(device),
            kind=self.kind,
            log_km=self.log_km.to(device) if self.log_km is not None else None,
            **{f: getattr(self, f).to(device) if getattr(self, f) is not None else None
               for f in ("trans_ptr", "trans_dst", "trans_share", "hour_share")},
        )


# A distance table costs N^2 floats (3,000 cells: 36 MB) and saves the head a distance and a
# log1p per (position, candidate): about a tenth of a prediction's time on New York's 1,731 cells.
LOG_KM_TABLE_CELLS = 3000


def log_km_table(xy_km: torch.Tensor) -> torch.Tensor | None:
    """(N, N) log(1 + km) between the rows of ``xy_km`` (exact 0 on the diagonal), or None when N is
    above :data:`LOG_KM_TABLE_CELLS`."""
    if len(xy_km) > LOG_KM_TABLE_CELLS:
        return None
    return torch.cdist(xy_km, xy_km, compute_mode="donot_use_mm_for_euclid_dist").log1p_()


@dataclass
class Batch:
    """A batch of B visit sequences of length T (left-aligned, right-padded).

    Position t holds visit t of the sequence; ``targets[:, t]`` is the cell of visit t+1 (the
    next location to predict), IGNORE where nothing is to be predicted, MISS where the true next
    cell is outside the candidates.

    ``next_hour``, ``next_weekday`` and ``next_gap_bucket`` hold the TIME of visit t+1 (its hour,
    weekday and the gap since visit t), never its place: the query of the ``at-time`` task
    (:data:`TASKS`, "where will this person be at time t"). In the ``next`` task ("where next")
    no model reads them. They are None in batches built without them (``next`` only).
    """

    cells: torch.Tensor  # (B, T) long: index into CityTensors rows; 0 where padded
    hour: torch.Tensor  # (B, T) long 0..23, local wall-clock
    weekday: torch.Tensor  # (B, T) long 0..6 (Mon=0), UNKNOWN_WEEKDAY when unreliable
    gap_bucket: torch.Tensor  # (B, T) long 0..N_GAP_BUCKETS-1
    dist_bucket: torch.Tensor  # (B, T) long 0..N_DIST_BUCKETS-1
    mask: torch.Tensor  # (B, T) bool: True where a real visit
    targets: torch.Tensor  # (B, T) long: next cell index, IGNORE or MISS
    next_hour: torch.Tensor | None = None  # (B, T) long 0..23: local hour of visit t+1 (0 where none)
    next_weekday: torch.Tensor | None = None  # (B, T) long 0..7: weekday of visit t+1
    next_gap_bucket: torch.Tensor | None = None  # (B, T) long: gap bucket of visit t+1 (time since visit t)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                        for f in fields(self)})

    def target_time(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next_hour, next_weekday, next_gap_bucket), each (B, T): the at-time task's query."""
        if self.next_hour is None or self.next_weekday is None or self.next_gap_bucket is None:
            raise TrajMoEError("this batch carries no target times: the at-time task needs batches built by "
                               "CityData (window_batch / eval_batch / one-pass segments)")
        return self.next_hour, self.next_weekday, self.next_gap_bucket

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.cells.shape)  # type: ignore[return-value]

    def last_positions(self) -> torch.Tensor:
        """(B, 1) long: index of each sequence's last real visit (0 for an all-padding row)."""
        return (self.mask.sum(dim=1) - 1).clamp(min=0).unsqueeze(1)
