"""Retrieval head: final states (B, Q, C) -> next-cell scores (B, Q, N) over a city's candidates.

Similarity with each candidate's embedding (from the shared encoder) plus mobility-prior terms
(gravity, preferential return, exploration, popularity) weighted per kind of data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.city.batch import Batch, CityTensors
from trajmoe.errors import TrajMoEError
from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.returns import window_returns
from trajmoe.trajectories.kinds import KINDS


class _AddWeightedTerms(torch.autograd.Function):
    """``logits += sum_i w_i * X_i`` in place, for constant features X_i (no gradient).

    Autograd's ``addcmul_`` would materialise ``grad * X_i`` (and a scaled copy) per term in the
    backward pass: (B, T, N) temporaries that dominate a CPU training step. Here the forward adds
    in place and the backward is one dot product per term, allocating nothing of size (B, T, N).
    A term may also be (N,) (per candidate, broadcast over positions).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, weights: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
        for i, x in enumerate(terms):
            logits.addcmul_(x, weights[i])
        ctx.mark_dirty(logits)
        ctx.save_for_backward(*terms)
        return logits

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        flat = grad.reshape(-1)
        per_candidate = None
        grads = []
        for x in ctx.saved_tensors:
            if x.dim() == 1:  # (N,): sum the gradient over positions once
                if per_candidate is None:
                    per_candidate = grad.reshape(-1, grad.shape[-1]).sum(dim=0)
                grads.append(torch.dot(per_candidate, x))
            else:
                grads.append(torch.dot(flat, x.reshape(-1)))
        grad_weights = torch.stack(grads) if ctx.needs_input_grad[1] else None
        return (grad, grad_weights, *([None] * len(ctx.saved_tensors)))


# The head's mobility-prior terms, one weight each per kind of data (columns of RetrievalHead.prior).
PRIOR_TERMS = ("distance_decay", "log_count", "recency", "seen", "explore_log_pop", "explore_log_km",
               "is_current", "log_pop")
# Initial values: decay 1 per log-km (softplus^-1(1) = log(e - 1)), preferential return (count and
# recency 1), popularity 0.5; seen / exploration / current-cell learned from zero.
_PRIOR_INIT = {"distance_decay": math.log(math.e - 1.0), "log_count": 1.0, "recency": 1.0, "log_pop": 0.5}


class RetrievalHead(nn.Module):
    """Next-cell scores (B, Q, N) over a city's candidate cells.

    score = s * (W h) . cell_out(cell_emb) / sqrt(C)  similarity with each candidate's embedding,
                                                     scaled by s: how far this city trusts it
            - softplus(a) * log(1 + km)                  gravity: distance from the current cell
            + w_c * log1p(count) + w_r * recency         preferential return (returns.py)
            + w_s * seen                                 return vs. explore (Song et al. 2010)
            + (1 - seen) * (w_ep * log_pop - w_ed * log(1 + km))  explorers choose by gravity
            + w_cur * is_current                         staying put (never, on collapsed check-ins)
            + w_p * log_pop                              popularity in the training subset
    The keys come from the SAME shared encoder, so any city with a cell table can be scored.

    The prior weights (a, w_c, ..., w_p: :data:`PRIOR_TERMS`) are one row per kind of data
    (``kinds.KINDS``: check-ins, GPS staypoints, trips, bike stations), chosen by ``city.kind``.
    The kinds are different regimes: a taxi may drop off where it picked up, a check-in never
    repeats the current cell, GPS staypoints return home far more often. Pooled into one set of
    weights, the taxi and GPS sources pull the check-in weights off: in a one-off diagnostic (on
    la_gowalla's test split, after the pooled head had been benchmarked there), return + gravity
    weights fitted on Beijing GPS or SF taxis scored 0.16 / 0.04 Acc@1 on LA check-ins, weights
    fitted on any other check-in city 0.21-0.22. A new city of a known kind therefore starts from
    the weights its kind learned on every source city of that kind. A kind no source city had
    keeps the initial weights, and calibration then fits them without a prior
    (``TrajMoEConfig.pretrained_kinds``; Jersey City bikes, the only stations data, in
    bench/results/transfer.md).
    """

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.config = config
        self.query = nn.Linear(config.d_model, config.d_model, bias=False)
        self.cell_out = nn.Linear(config.d_model, config.d_model)  # output-side cell embedding
        init = torch.tensor([_PRIOR_INIT.get(t, 0.0) for t in PRIOR_TERMS])
        self.prior = nn.Parameter(init.repeat(len(KINDS), 1))  # (kinds, terms)
        # Trust in the learned similarity; calibrate_head can shrink it for a city where the
        # pretrained embeddings transfer poorly, leaving the mobility-prior terms.
        self.sim_scale = nn.Parameter(torch.tensor(1.0))

    def prior_weights(self, kind: str) -> dict[str, torch.Tensor]:
        """The prior weights of one kind of data, by term name (views into :attr:`prior`)."""
        if kind not in KINDS:
            raise TrajMoEError(f"unknown kind of data {kind!r}: the model knows {', '.join(KINDS)}")
        return dict(zip(PRIOR_TERMS, self.prior[KINDS.index(kind)].unbind()))

    def forward(
        self,
        h: torch.Tensor,
        positions: torch.Tensor | None,
        *,
        batch: Batch,
        city: CityTensors,
        cell_emb: torch.Tensor,
    ) -> torch.Tensor:
        """Scores (B, Q, N) from states ``h`` (B, Q, C) at ``positions`` (B, Q) (None = all T)."""
        cfg = self.config
        n_b, n_q, n_c = h.shape
        n_cells = city.n_cells
        w = self.prior_weights(city.kind)
        keys = self.cell_out(cell_emb)  # (N, C)
        logits = (self.query(h) * (self.sim_scale / math.sqrt(n_c))) @ keys.T  # (B, Q, N)
        if positions is None:
            positions = torch.arange(batch.shape[1], device=h.device).expand(n_b, n_q)
        current = batch.cells.gather(1, positions)  # (B, Q)
        log_pop = city.log_pop.to(h.dtype)
        # Dense part, every candidate: popularity and distance as for a place never visited
        # (explorers choose by gravity); returns to the context's cells are corrected below.
        explore_pop = w["explore_log_pop"] if cfg.return_terms else torch.zeros_like(w["log_pop"])
        explore_km = w["explore_log_km"] if cfg.return_terms else torch.zeros_like(w["log_pop"])
        weights, terms = [w["log_pop"] + explore_pop], [log_pop]
        log_km = None
        if cfg.distance_term:
            if city.log_km is not None and city.log_km.dtype == h.dtype:  # the city's table: rows
                log_km = city.log_km.index_select(0, current.reshape(-1)).view(n_b, n_q, n_cells)
            else:
                xy = city.xy_km.to(h.dtype)
                km = torch.cdist(xy[current].reshape(-1, 2), xy,
                                 compute_mode="donot_use_mm_for_euclid_dist")  # exact 0 for self
                log_km = km.view(n_b, n_q, n_cells).log1p_()
            weights.append(-F.softplus(w["distance_decay"]) - explore_km)
            terms.append(log_km)
        logits = _AddWeightedTerms.apply(logits, torch.stack(weights), *terms)
        # Sparse part, the few cells of each position's recent context (returns.window_returns):
        # preferential return, the return-vs-explore split, and undoing the explore terms there.
        if cfg.return_terms:
            cell, count, recency, first = window_returns(batch.cells, batch.mask, positions,
                                                         window=cfg.return_window)  # (B, Q, W)
            seen = (w["log_count"] * count.log1p().to(h.dtype) + w["recency"] * recency.to(h.dtype)
                    + w["seen"] - explore_pop * log_pop[cell])
            if log_km is not None:
                seen = seen + explore_km * log_km.gather(2, cell)
            logits = logits.scatter_add_(2, cell, seen * first.to(h.dtype))
        stay = w["is_current"].expand(n_b, n_q, 1).to(h.dtype)  # staying put: the current cell
        return logits.scatter_add_(2, current.unsqueeze(-1), stay)
