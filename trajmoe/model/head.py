"""Retrieval head: final states (B, Q, C) -> next-cell scores (B, Q, N) over a city's candidates.

Similarity with each candidate's embedding (from the shared encoder) plus mobility-prior terms
(gravity, preferential return, exploration, popularity) weighted per kind of data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.city.batch import TASKS, Batch, CityTensors, check_task
from trajmoe.errors import TrajMoEError
from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.returns import N_TIME_BANDS, window_returns
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
# The last two are at-time terms (zero in the next task): the person's visits to the candidate at
# about the target's time (returns.context_time_counts) and the candidate's share of the city's
# visits at the target hour (features.hour_log_share).
PRIOR_TERMS = ("distance_decay", "log_count", "recency", "seen", "explore_log_pop", "explore_log_km",
               "is_current", "log_pop", "log_successor", "transition", "log_time_count", "hour_share")
PRIOR_LR_SCALE = 50.0  # learning-rate multiplier of the prior weights in training (RetrievalHead.param_groups)
# Relation buckets of a context cell for the learned return scorer: visits to it in the context,
# visits since the most recent one, times it followed the current cell (upper edges, inclusive).
COUNT_EDGES = (1, 2, 4, 8, 16)  # -> 6 buckets
BACK_EDGES = (0, 1, 2, 4, 8, 16, 32)  # -> 8 buckets
SUCCESSOR_EDGES = (0, 1, 2, 4)  # -> 5 buckets
TIME_COUNT_EDGES = (0, 1, 2, 4, 8)  # at-time: visits to it at about the target's time -> 6 buckets
# Initial values: decay 1 per log-km (softplus^-1(1) = log(e - 1)), preferential return (count and
# recency 1), popularity 0.5; seen / exploration / current-cell learned from zero.
_PRIOR_INIT = {"distance_decay": math.log(math.e - 1.0), "log_count": 1.0, "recency": 1.0, "log_pop": 0.5,
               "log_time_count": 1.0, "hour_share": 0.5}


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
        + w_t * log1p(time_count)                    at-time: their visits to it at about that time
        + w_h * hour_share                           at-time: the cell's share of visits at that hour

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

    Each task (``batch.TASKS``) has its own prior rows and trust scalars (the same term weighs
    differently when the target's time is known: recency matters less, the time-matched count
    more). In at-time the return scorer also embeds the time-matched count, and the state holds
    the target's time. An option (``time_relations``, off: worse on the source cities'
    validation, config.py) adds two more learned at-time terms:

        + r * (V h) . [log1p(visits per time band), log(1 + km)]   per context cell: how much its
                                                         visits 0, 1, 2, 3-4, 5-8, 9-12 h from the
                                                         target hour (same weekday type or not)
                                                         count, weighed by the state (which holds
                                                         the target time and the gap), and the
                                                         return scorer's time-matched count bucket
        + s * (g . h) * log(1 + km)                      a distance decay that depends on the state
                                                         (a 20-minute gap allows less distance)

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
        self.prior = nn.Parameter(init.repeat(len(TASKS) * len(KINDS), 1))  # (tasks * kinds, terms)
        # Trust in the learned similarity, per task; calibrate_head can shrink it for a city where
        # the pretrained embeddings transfer poorly, leaving the mobility-prior terms.
        self.sim_scale = nn.Parameter(torch.ones(len(TASKS)))
        if config.return_terms and config.return_scorer:
            self.return_query = nn.Linear(d, d, bias=False)
            self.return_key = nn.Linear(d, d)
            self.count_emb = nn.Embedding(len(COUNT_EDGES) + 1, d)
            self.back_emb = nn.Embedding(len(BACK_EDGES) + 1, d)
            self.successor_emb = nn.Embedding(len(SUCCESSOR_EDGES) + 1, d)
            self.time_count_emb = nn.Embedding(len(TIME_COUNT_EDGES) + 1, d)  # at-time only
            self.return_scale = nn.Parameter(torch.ones(len(TASKS)))
            if config.time_relations:  # at-time: the state weighs each time band's visits (+ the cell's distance)
                self.band_query = nn.Linear(d, N_TIME_BANDS + 1)
            for name, edges in (("count", COUNT_EDGES), ("back", BACK_EDGES), ("successor", SUCCESSOR_EDGES),
                                ("time_count", TIME_COUNT_EDGES)):
                self.register_buffer(f"{name}_edges", torch.tensor(edges, dtype=torch.float32), persistent=False)
        if config.time_relations and config.distance_term:  # at-time: a distance decay that depends on the state
            self.gap_decay = nn.Linear(d, 1)

    @property
    def scales(self) -> list[nn.Parameter]:
        """The learned terms' trust scalars (similarity, and the return scorer when there is one),
        each (tasks,): one entry per task."""
        return [self.sim_scale] + ([self.return_scale] if hasattr(self, "return_scale") else [])

    def prior_row(self, kind: str, task: str) -> int:
        """Row of :attr:`prior` holding the weights of ``kind`` in ``task``."""
        if kind not in KINDS:
            raise TrajMoEError(f"unknown kind of data {kind!r}: the model knows {', '.join(KINDS)}")
        return TASKS.index(check_task(task)) * len(KINDS) + KINDS.index(kind)

    def prior_weights(self, kind: str, task: str) -> dict[str, torch.Tensor]:
        """``task``'s prior weights of one kind of data, by term name (views into :attr:`prior`)."""
        return dict(zip(PRIOR_TERMS, self.prior[self.prior_row(kind, task)].unbind()))

    def param_groups(self, params: list[nn.Parameter]) -> list[dict]:
        """Optimizer groups of the head's own scalars among ``params`` (the rest is the caller's).

        The mobility-prior weights (:attr:`prior`) get :data:`PRIOR_LR_SCALE` times the learning rate and no
        weight decay: Adam moves every parameter by about ``lr`` per step, so at 2e-3 a weight that
        must reach -8 (never predict the current cell on collapsed check-ins) would need thousands
        of steps; the return + gravity baseline fits the same weights to convergence with Newton's
        method. The trust scalars (:attr:`scales`) are frozen (learning rate 0): trained by gradient
        steps from the start they collapse while the embeddings are still noise; only head
        calibration (train.calibration) sets them.
        """
        chosen = {id(p) for p in params}
        groups = []
        if id(self.prior) in chosen:
            groups.append({"params": [self.prior], "lr_scale": PRIOR_LR_SCALE, "weight_decay": 0.0})
        frozen = [p for p in self.scales if id(p) in chosen]
        if frozen:
            groups.append({"params": frozen, "lr_scale": 0.0, "weight_decay": 0.0})
        return groups

    def _return_scores(self, h: torch.Tensor, ctx, cell_emb: torch.Tensor, ctx_log_km: torch.Tensor | None,
                       task: str) -> torch.Tensor:
        """(B, Q, W) learned scores of each context entry (only ``ctx.first`` entries are used)."""
        n_c = h.shape[-1]
        scale = self.return_scale[TASKS.index(task)]
        q = self.return_query(h) * (scale / math.sqrt(n_c))  # (B, Q, C)
        keys = self.return_key(cell_emb)  # (N, C)
        per_cell = (q @ keys.T).gather(2, ctx.cell)  # (B, Q, W): cheaper than gathering (B, Q, W, C) keys
        back = (1.0 / ctx.recency - 1.0).round()  # visits since the most recent one
        relations = [(self.count_emb, ctx.count, self.count_edges), (self.back_emb, back, self.back_edges),
                     (self.successor_emb, ctx.successor, self.successor_edges)]
        if ctx.time_count is not None:  # at-time: how often they were there at about that time
            relations.append((self.time_count_emb, ctx.time_count, self.time_count_edges))
        rel_scores = q @ torch.cat([emb.weight for emb, _, _ in relations]).T  # (B, Q, R)
        offset = 0
        for emb, value, edges in relations:
            bucket = torch.bucketize(value.to(edges.dtype), edges) + offset  # (B, Q, W)
            per_cell = per_cell + rel_scores.gather(2, bucket)
            offset += emb.num_embeddings
        if ctx.time_bands is not None and hasattr(self, "band_query"):
            # at-time: how much a visit 0, 1, 2, 3-4, 5-8 or 9-12 h from the target hour (same weekday
            # type or not) counts, and how far the cell may be, decided by the state (which holds the
            # target's time and the gap since the current visit), not by one fixed +-2 h rule
            feats = ctx.time_bands.log1p()
            far = ctx_log_km if ctx_log_km is not None else torch.zeros_like(per_cell)
            feats = torch.cat([feats, far.unsqueeze(-1)], dim=-1)  # (B, Q, W, bands + 1)
            per_cell = per_cell + (feats * (self.band_query(h) * scale).unsqueeze(2)).sum(-1)
        return per_cell

    def forward(
        self,
        h: torch.Tensor,
        positions: torch.Tensor | None,
        *,
        batch: Batch,
        city: CityTensors,
        cell_emb: torch.Tensor,
        task: str = TASKS[0],
    ) -> torch.Tensor:
        """Scores (B, Q, N) in ``task`` (batch.TASKS) from states ``h`` (B, Q, C) at ``positions``
        (B, Q) (None = all T)."""
        cfg = self.config
        n_b, n_q, n_c = h.shape
        n_cells = city.n_cells
        w = self.prior_weights(city.kind, task)
        t = TASKS.index(task)
        keys = self.cell_out(cell_emb)  # (N, C)
        at_time = task == "at-time"
        logits = (self.query(h) * (self.sim_scale[t] / math.sqrt(n_c))) @ keys.T  # (B, Q, N)
        if positions is None:
            positions = torch.arange(batch.shape[1], device=h.device).expand(n_b, n_q)
        current = batch.cells.gather(1, positions)  # (B, Q)
        target_hour = target_day = None
        if at_time:
            target_hour, target_day, _ = batch.target_time()
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
        if at_time and city.hour_share is not None:  # the candidates' share of visits at the target hour
            weights.append(w["hour_share"])
            terms.append(city.hour_share.to(h.dtype)[target_hour.gather(1, positions)])  # (B, Q, N)
        logits = _AddWeightedTerms.apply(logits, torch.stack(weights), *terms)
        if at_time and log_km is not None and hasattr(self, "gap_decay"):  # learned, state-dependent decay
            logits = logits + (self.gap_decay(h) * self.sim_scale[t]) * log_km
        # Sparse part, the few cells of each position's recent context (returns.window_returns):
        # preferential return, the return-vs-explore split, undoing the explore terms there, the
        # personal successors and the learned return scorer.
        if cfg.return_terms:
            time = (batch.hour, batch.weekday, target_hour, target_day) if at_time else None
            ctx = window_returns(batch.cells, batch.mask, positions, window=cfg.return_window, time=time,
                                 bands=hasattr(self, "band_query"))  # (B, Q, W)
            seen = (w["log_count"] * ctx.count.log1p().to(h.dtype) + w["recency"] * ctx.recency.to(h.dtype)
                    + w["seen"] - explore_pop * log_pop[ctx.cell])
            if log_km is not None:
                seen = seen + explore_km * log_km.gather(2, ctx.cell)
            if cfg.successor_terms:
                seen = seen + w["log_successor"] * ctx.successor.log1p().to(h.dtype)
            if at_time:
                seen = seen + w["log_time_count"] * ctx.time_count.log1p().to(h.dtype)
            if hasattr(self, "return_scale"):
                ctx_km = log_km.gather(2, ctx.cell) if log_km is not None else None
                seen = seen + self._return_scores(h, ctx, cell_emb, ctx_km, task)
            logits = logits.scatter_add_(2, ctx.cell, seen * ctx.first.to(h.dtype))
        stay = w["is_current"].expand(n_b, n_q, 1).to(h.dtype)  # staying put: the current cell
        return logits.scatter_add_(2, current.unsqueeze(-1), stay)
