"""The recurrent baseline: a DeepMove-style GRU next-location model (Feng et al., WWW 2018).

GRU over the visits, attention over its past states, candidates scored by embedding similarity;
cells are embedded from their features, never from a per-city ID table, so one model serves any
city. Same interface as TrajMoE and the count baselines (``baselines.py``), trained by
:func:`trajmoe.train.fit.fit`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from trajmoe.city.batch import N_GAP_BUCKETS, TASKS, UNKNOWN_WEEKDAY, Batch, CityTensors
from trajmoe.city.features import FEATURE_DIM
from trajmoe.errors import TrajMoEError
from trajmoe.train.baselines import BaselineOutput, baseline_output

N_HOUR_OF_WEEK = 24 * (UNKNOWN_WEEKDAY + 1)  # Mon..Sun + unknown weekday, 24 hours each


def _check_next(task: str) -> None:
    if task != TASKS[0]:
        raise TrajMoEError("the GRU baseline predicts --task next only; for at-time use transformer or epr-time.")


@dataclasses.dataclass
class GRUConfig:
    """Configuration of :class:`GRUNextLocation`; round-trips through ``dataclasses.asdict``."""

    d_model: int = 128  # width of cell/time embeddings and of the GRU state (TrajMoE's default width)
    n_layers: int = 1  # DeepMove uses one recurrent layer
    feature_dim: int = FEATURE_DIM  # width of CityTensors.features (features.py schema)
    dropout: float = 0.1
    # Wavelengths (km) of the sin/cos encoding of each cell's position relative to the city centre:
    # from a quarter of a res-8 cell's width to a metro area. See GRUNextLocation.
    coord_scales_km: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

    def __post_init__(self) -> None:
        self.coord_scales_km = tuple(float(x) for x in self.coord_scales_km)
        if any(x <= 0 for x in self.coord_scales_km):
            raise TrajMoEError(f"invalid GRU config: coord_scales_km must be positive, got {self.coord_scales_km}")
        if self.d_model < 1 or self.n_layers < 1 or self.feature_dim < 1:
            raise TrajMoEError(f"invalid GRU config: d_model, n_layers and feature_dim must be >= 1, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise TrajMoEError(f"invalid GRU config: dropout must be in [0, 1), got {self.dropout}")


class GRUNextLocation(nn.Module):
    """DeepMove-style recurrent next-location model (Feng et al., WWW 2018), city-agnostic.

    Token = cell embedding + hour-of-week embedding + time-gap embedding; a GRU runs over the
    visits; at each position the state attends (causally) over the states of the earlier visits
    of the sequence — DeepMove's historical attention — and ``[state, attended]`` becomes a query
    that scores every candidate by dot product with its embedding (plus a per-cell bias from the
    same features). Cell embeddings come from a small MLP over ``city.features`` (the spatial
    features TrajMoE's encoder sees), so one model works on any city that has a cell table.
    No explicit return terms: it is the recurrent baseline as published, not TrajMoE's head.

    Without an ID table, telling neighbouring cells apart rests on their coordinates, which an MLP
    reads badly as two raw numbers (spectral bias; Tancik et al., NeurIPS 2020). The MLP therefore
    also gets ``sin/cos(2 pi x / lambda)`` of the cell's km offsets for the wavelengths
    ``coord_scales_km`` — the same information, encoded so that nearby cells differ. On
    nyc_foursquare (100%, 10 epochs, an earlier tanh-scaled head) it lifted test Acc@1 from 0.164
    to 0.194; with the plain head below, 10 epochs reach 0.258 and 25 epochs 0.299.
    """

    def __init__(self, config: GRUConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.register_buffer("coord_freq", 2 * math.pi / torch.tensor(config.coord_scales_km), persistent=False)
        n_in = config.feature_dim + 4 * len(config.coord_scales_km)  # + sin, cos of x and y per wavelength
        self.cell_mlp = nn.Sequential(nn.Linear(n_in, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.LayerNorm(d))
        self.time_emb = nn.Embedding(N_HOUR_OF_WEEK, d)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, d)
        self.drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(d, d, num_layers=config.n_layers, batch_first=True,
                          dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.attn_query = nn.Linear(d, d, bias=False)
        self.head = nn.Linear(2 * d, d)
        self.cell_out = nn.Linear(d, d)
        self.cell_bias = nn.Linear(d, 1)

    def _states(self, batch: Batch, cell_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, C) query states; position t depends on visits 0..t only (right padding ignored)."""
        x = cell_emb[batch.cells] + self.time_emb(batch.weekday * 24 + batch.hour) + self.gap_emb(batch.gap_bucket)
        h, _ = self.gru(self.drop(x))  # (B, T, C), causal by construction
        n_t = h.shape[1]
        scores = self.attn_query(h) @ h.transpose(1, 2) / math.sqrt(h.shape[-1])  # (B, T, T)
        causal = torch.ones(n_t, n_t, dtype=torch.bool, device=h.device).tril()
        allowed = causal & batch.mask.unsqueeze(1)  # keys: earlier real visits (and itself)
        ctx = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0) @ h  # (B, T, C)
        return self.head(self.drop(torch.cat([h, ctx], dim=-1)))  # DeepMove: dropout, then a linear output layer

    def _logits(self, q: torch.Tensor, cell_emb: torch.Tensor) -> torch.Tensor:
        keys = self.cell_out(cell_emb)  # (N, C)
        # An unscaled dot product, like DeepMove's final fully connected layer (whose weight rows
        # are the candidates' embeddings here): 1/sqrt(C) and a tanh on q cost 0.06 Acc@1 at 10 epochs.
        return q @ keys.T + self.cell_bias(cell_emb).squeeze(-1)

    def _cell_emb(self, city: CityTensors) -> torch.Tensor:
        if city.features.shape[1] != self.config.feature_dim:
            raise TrajMoEError(f"city {city.name!r} has {city.features.shape[1]} cell features, the GRU expects "
                               f"{self.config.feature_dim}: prepare the city with this trajmoe version.")
        angle = (city.xy_km.unsqueeze(-1) * self.coord_freq).flatten(1)  # (N, 2 * S)
        return self.cell_mlp(torch.cat([city.features, angle.sin(), angle.cos()], dim=1))  # (N, C)

    scored_tasks = (TASKS[0],)  # next only: it has no input for the target's time

    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = False, task: str = TASKS[0]) -> BaselineOutput:
        _check_next(task)
        cell_emb = self._cell_emb(city)
        return baseline_output(self._logits(self._states(batch, cell_emb), cell_emb), batch, targets=targets)

    @torch.no_grad()
    def score_last(self, batch: Batch, city: CityTensors, *, task: str = TASKS[0]) -> torch.Tensor:
        _check_next(task)
        cell_emb = self._cell_emb(city)
        q = self._states(batch, cell_emb)
        last = batch.last_positions()
        q_last = q.gather(1, last.unsqueeze(-1).expand(-1, -1, q.shape[-1])).squeeze(1)  # (B, C)
        return self._logits(q_last, cell_emb)

