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
               "is_current", "log_pop", "log_successor", "transition")
# Relation buckets of a context cell for the learned return scorer: visits to it in the context,
# visits since the most recent one, times it followed the current cell (upper edges, inclusive).
COUNT_EDGES = (1, 2, 4, 8, 16)  # -> 6 buckets
BACK_EDGES = (0, 1, 2, 4, 8, 16, 32)  # -> 8 buckets
SUCCESSOR_EDGES = (0, 1, 2, 4)  # -> 5 buckets
# Initial values: decay 1 per log-km (softplus^-1(1) = log(e - 1)), preferential return (count and
# recency 1), popularity 0.5; seen / exploration / current-cell learned from zero.
_PRIOR_INIT = {"distance_decay": math.log(math.e - 1.0), "log_count": 1.0, "recency": 1.0, "log_pop": 0.5}


class RetrievalHead(nn.Module):
    """Next-cell scores (B, Q, N) over a city's candidate cells.

    Hand-made mobility-prior terms (weights :data:`PRIOR_TERMS`, one row per kind of data):

        - softplus(a) * log(1 + km)                  gravity: distance from the current cell
        + w_c * log1p(count) + w_r * recency         preferential return (returns.py)
        + w_s * seen                                 return vs. explore (Song et al. 2010)
        + (1 - seen) * (w_ep * log_pop - w_ed * log(1 + km))  explorers choose by gravity
        + w_cur * is_current                         staying put (never, on collapsed check-ins)
        + w_p * log_pop                              popularity relative to the mean cell
        + w_succ * log1p(successor)                  where this person went after the current cell
        + w_tr * transition                          where the city's moves out of it went

    and two learned terms, what the Transformer and the cell encoder add to them:

        + s * (W h) . cell_out(cell_emb) / sqrt(C)       exploration and return alike: similarity
                                                         of the state with each candidate's embedding
        + r * (U h) . (key(cell_emb) + rel) / sqrt(C)    the learned return scorer, on the person's
                                                         own context cells only: which of them comes
                                                         next given the sequence; ``rel`` embeds the
                                                         cell's relation to the person (visits in the
                                                         context, visits since the last one, times it
                                                         followed the current cell), so the model can
                                                         weigh them by the state, not by one fixed rule
                                                         (DeepMove's history attention, RepeatNet's
                                                         repeat mode, pointer networks' copy scores).

    s and r (``sim_scale``, ``return_scale``) say how far a city trusts each learned term; head
    calibration fits them on the city's validation targets, next to the prior weights. The keys
    come from the SAME shared encoder, so any city with a cell table can be scored.

    The prior weights are one row per kind of data (``kinds.KINDS``: check-ins, GPS staypoints,
    trips, bike stations), chosen by ``city.kind``. The kinds are different regimes: a taxi may
    drop off where it picked up, a check-in never repeats the current cell, GPS staypoints return
    home far more often. Pooled into one set of weights, the taxi and GPS sources pull the
    check-in weights off: in a one-off diagnostic (on la_gowalla's test split, after the pooled
    head had been benchmarked there), return + gravity weights fitted on Beijing GPS or SF taxis
    scored 0.16 / 0.04 Acc@1 on LA check-ins, weights fitted on any other check-in city 0.21-0.22.
    A new city of a known kind therefore starts from the weights its kind learned on every source
    city of that kind. A kind no source city had keeps the initial weights, and calibration then
    fits them without a prior (``TrajMoEConfig.pretrained_kinds``).
    """

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.query = nn.Linear(d, d, bias=False)
        self.cell_out = nn.Linear(d, d)  # output-side cell embedding
        init = torch.tensor([_PRIOR_INIT.get(t, 0.0) for t in PRIOR_TERMS])
        self.prior = nn.Parameter(init.repeat(len(KINDS), 1))  # (kinds, terms)
        # Trust in the learned similarity; calibrate_head can shrink it for a city where the
        # pretrained embeddings transfer poorly, leaving the mobility-prior terms.
        self.sim_scale = nn.Parameter(torch.tensor(1.0))
        if config.return_terms and config.return_scorer:
            self.return_query = nn.Linear(d, d, bias=False)
            self.return_key = nn.Linear(d, d)
            self.count_emb = nn.Embedding(len(COUNT_EDGES) + 1, d)
            self.back_emb = nn.Embedding(len(BACK_EDGES) + 1, d)
            self.successor_emb = nn.Embedding(len(SUCCESSOR_EDGES) + 1, d)
            self.return_scale = nn.Parameter(torch.tensor(1.0))
            for name, edges in (("count", COUNT_EDGES), ("back", BACK_EDGES), ("successor", SUCCESSOR_EDGES)):
                self.register_buffer(f"{name}_edges", torch.tensor(edges, dtype=torch.float32), persistent=False)

    @property
    def scales(self) -> list[nn.Parameter]:
        """The learned terms' trust scalars (similarity, and the return scorer when there is one)."""
        return [self.sim_scale] + ([self.return_scale] if hasattr(self, "return_scale") else [])

    def prior_weights(self, kind: str) -> dict[str, torch.Tensor]:
        """The prior weights of one kind of data, by term name (views into :attr:`prior`)."""
        if kind not in KINDS:
            raise TrajMoEError(f"unknown kind of data {kind!r}: the model knows {', '.join(KINDS)}")
        return dict(zip(PRIOR_TERMS, self.prior[KINDS.index(kind)].unbind()))

    def _return_scores(self, h: torch.Tensor, ctx, cell_emb: torch.Tensor) -> torch.Tensor:
        """(B, Q, W) learned scores of each context entry (only ``ctx.first`` entries are used)."""
        n_c = h.shape[-1]
        q = self.return_query(h) * (self.return_scale / math.sqrt(n_c))  # (B, Q, C)
        keys = self.return_key(cell_emb)  # (N, C)
        per_cell = (q @ keys.T).gather(2, ctx.cell)  # (B, Q, W): cheaper than gathering (B, Q, W, C) keys
        back = (1.0 / ctx.recency - 1.0).round()  # visits since the most recent one
        rel = torch.cat([self.count_emb.weight, self.back_emb.weight, self.successor_emb.weight])  # (R, C)
        rel_scores = q @ rel.T  # (B, Q, R)
        n_count, n_back = self.count_emb.num_embeddings, self.back_emb.num_embeddings
        for offset, value, edges in ((0, ctx.count, self.count_edges), (n_count, back, self.back_edges),
                                     (n_count + n_back, ctx.successor, self.successor_edges)):
            bucket = torch.bucketize(value.to(edges.dtype), edges) + offset  # (B, Q, W)
            per_cell = per_cell + rel_scores.gather(2, bucket)
        return per_cell

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
        # (explorers choose by gravity), and the city's transitions out of the current cell;
        # returns to the context's cells are corrected below.
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
        if cfg.successor_terms and city.trans_ptr is not None:
            weights.append(w["transition"])
            terms.append(city.transition_rows(current.reshape(-1)).view(n_b, n_q, n_cells).to(h.dtype))
        logits = _AddWeightedTerms.apply(logits, torch.stack(weights), *terms)
        # Sparse part, the few cells of each position's recent context (returns.window_returns):
        # preferential return, the return-vs-explore split, undoing the explore terms there, the
        # personal successors and the learned return scorer.
        if cfg.return_terms:
            ctx = window_returns(batch.cells, batch.mask, positions, window=cfg.return_window)  # (B, Q, W)
            seen = (w["log_count"] * ctx.count.log1p().to(h.dtype) + w["recency"] * ctx.recency.to(h.dtype)
                    + w["seen"] - explore_pop * log_pop[ctx.cell])
            if log_km is not None:
                seen = seen + explore_km * log_km.gather(2, ctx.cell)
            if cfg.successor_terms:
                seen = seen + w["log_successor"] * ctx.successor.log1p().to(h.dtype)
            if hasattr(self, "return_scale"):
                seen = seen + self._return_scores(h, ctx, cell_emb)
            logits = logits.scatter_add_(2, ctx.cell, seen * ctx.first.to(h.dtype))
        stay = w["is_current"].expand(n_b, n_q, 1).to(h.dtype)  # staying put: the current cell
        return logits.scatter_add_(2, current.unsqueeze(-1), stay)
