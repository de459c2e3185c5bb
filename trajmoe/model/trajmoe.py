"""TrajMoE: spatial semantic encoder + SAMoE Transformer + retrieval head (arXiv 2505.18670).

One model serves every city that has a cell table: cells are embedded from their features
(POI semantics, visit patterns, coordinates) by an encoder shared by all cities, never by
per-city ID tables, and the next visit is scored against the city's own candidate cells.

Read bottom-up, nanoGPT style: ``encoder.py`` :class:`CellEncoder` (features -> cell embedding),
``attention.py`` :class:`CausalSelfAttention` and :class:`Block` (attention + SAMoE feed-forward,
``moe.py``), ``head.py`` :class:`RetrievalHead` (scores over the city's cells), ``config.py``
:class:`TrajMoEConfig`, then :class:`TrajMoE` here. Shapes: B batch, T visits, C d_model,
N candidate cells, E routed experts, P prior width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.city.batch import N_DIST_BUCKETS, N_GAP_BUCKETS, TASKS, Batch, CityTensors, check_task
from trajmoe.errors import PreparedDataError
from trajmoe.model.attention import Block, rotary, sliding_window_mask
from trajmoe.model.config import N_HOURS, N_WEEKDAYS, TrajMoEConfig
from trajmoe.model.encoder import CellEncoder
from trajmoe.model.head import RetrievalHead
from trajmoe.model.loss import next_cell_loss
from trajmoe.model.moe import SEMANTIC_EXPERT_GROUPS, SAMoE
from trajmoe.pois.categories import CATEGORIES


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, N) next-cell scores
    loss: torch.Tensor | None  # () CE over positions with a target + aux loss (when training)
    aux_loss: torch.Tensor  # () summed router aux losses over layers; 0 in eval
    router_probs: tuple[torch.Tensor, ...]  # per MoE layer (B, T, E) float32; 0 at padding
    hidden: torch.Tensor  # (B, T, C) final normed states


class PositionScores(NamedTuple):
    """Scores at chosen positions of each sequence (:meth:`TrajMoE.score_positions`)."""

    logits: torch.Tensor  # (B, Q, N) next-cell scores after each chosen position
    router_probs: tuple[torch.Tensor, ...]  # per MoE layer (B, Q, E) float32 router probabilities


class TrajMoE(nn.Module):
    """The TrajMoE next-location model. ``forward(batch, city, task=...) -> ModelOutput``.

    The task (batch.TASKS) is an argument of every scoring call, never a mode of the model: one
    shared, unmodified model scores both tasks (their head rows and trust scalars differ).
    """

    scored_tasks = TASKS  # the tasks it can score (trained for: config.tasks)

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.encoder = CellEncoder(config)
        self.hour_emb = nn.Embedding(N_HOURS, d)
        self.weekday_emb = nn.Embedding(N_WEEKDAYS, d)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, d)
        self.dist_emb = nn.Embedding(N_DIST_BUCKETS, d)
        # at-time: the target visit's hour, weekday and gap since the current visit join each
        # position's input (TPG's "time as prompt"; GETNext and STAN likewise condition on it)
        self.target_hour_emb = nn.Embedding(N_HOURS, d)
        self.target_weekday_emb = nn.Embedding(N_WEEKDAYS, d)
        self.target_gap_emb = nn.Embedding(N_GAP_BUCKETS, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = RetrievalHead(config)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2 scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))
        self._init_router_priors()
        for name in ("band_query", "gap_decay"):  # at-time's learned time relations start as no change
            layer = getattr(self.head, name, None)
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        for city in config.domain_experts:
            for block in self.blocks:
                block.ffn.add_domain_expert(city)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _init_router_priors(self) -> None:
        """Zero the prior gates, then bias expert g toward the POIs of semantic group g."""
        index = {c: i for i, c in enumerate(CATEGORIES)}
        groups = [[index[c] for c in cats] for cats in SEMANTIC_EXPERT_GROUPS.values()]
        use = self.config.use_poi_features and self.config.n_poi_categories == len(CATEGORIES)
        for block in self.blocks:
            if isinstance(block.ffn, SAMoE) and block.ffn.prior_gate is not None:
                nn.init.zeros_(block.ffn.prior_gate.weight)
                if use:  # the spatial prior occupies the first n_poi_categories prior columns
                    block.ffn.init_prior_groups(groups, scale=self.config.router_prior_init)

    # ----------------------------------------------------------------- public helpers
    def param_groups(self, params: list[nn.Parameter]) -> list[dict]:
        """Optimizer groups of ``params`` (the trainable ones): the head's few scalars get their own
        learning-rate scale (:meth:`RetrievalHead.param_groups`), everything else ``lr_scale`` 1."""
        head = self.head.param_groups(params)
        special = {id(p) for g in head for p in g["params"]}
        return [{"params": [p for p in params if id(p) not in special], "lr_scale": 1.0}, *head]

    def add_domain_expert(self, city: str) -> None:
        """Give ``city`` its own domain expert in every layer (no-op if it has one)."""
        for block in self.blocks:
            block.ffn.add_domain_expert(city)
        if city not in self.config.domain_experts:
            self.config.domain_experts = (*self.config.domain_experts, city)

    def domain_expert_names(self) -> list[str]:
        """Cities that have a domain expert (a checkpoint sidecar stores them)."""
        return list(self.config.domain_experts)

    def num_parameters(self, *, active: bool = False) -> int:
        """Parameter count; ``active=True`` counts only the top_k routed experts a token uses."""
        n = sum(p.numel() for p in self.parameters())
        if active:
            for block in self.blocks:
                if isinstance(block.ffn, SAMoE):
                    per_expert = sum(p[0].numel() for p in block.ffn.experts.parameters())  # (E, ...) stacked
                    n -= (self.config.n_routed_experts - self.config.top_k) * per_expert
        return n

    # ----------------------------------------------------------------- forward pieces
    def _prior(self, batch: Batch, city: CityTensors, task: str) -> torch.Tensor | None:
        """(B, T, P) router priors: current cell's POI shares, hour and weekday one-hots, and the
        target visit's hour and weekday one-hots in the at-time task (left out in next)."""
        cfg = self.config
        if not (cfg.moe and cfg.router_priors):
            return None
        parts = []
        if cfg.use_poi_features:
            if city.poi_share.shape[1] != cfg.n_poi_categories:
                raise PreparedDataError(
                    f"city {city.name!r} has {city.poi_share.shape[1]} POI categories but the model "
                    f"expects {cfg.n_poi_categories}; prepare it with the same trajmoe version"
                )
            parts.append(city.poi_share[batch.cells].to(self.hour_emb.weight.dtype))
        dtype = self.hour_emb.weight.dtype
        parts.append(F.one_hot(batch.hour, N_HOURS).to(dtype))
        parts.append(F.one_hot(batch.weekday, N_WEEKDAYS).to(dtype))
        if task == "at-time":
            hour, weekday, _ = batch.target_time()
            parts += [F.one_hot(hour, N_HOURS).to(dtype), F.one_hot(weekday, N_WEEKDAYS).to(dtype)]
        # next: the target-time columns are left out (zeros); the router's gate reads the columns given
        return torch.cat(parts, dim=-1)

    def _needed(self, mask: torch.Tensor, positions: torch.Tensor | None) -> list[torch.Tensor]:
        """Per layer, the (B, T) visits whose feed-forward output a later layer or the head reads.

        The head reads the last layer at ``positions`` only; attention in layer l + 1 at position t
        reads layer l at t - attn_window + 1 .. t. The feed-forward (most of a layer's work) is
        skipped elsewhere; the states at ``positions`` are exactly those of the full pass.
        """
        if positions is None:
            return [mask] * self.config.n_layers
        n_t, window = mask.shape[1], self.config.attn_window
        needed = [torch.zeros_like(mask).scatter_(1, positions, True) & mask]
        for _ in range(self.config.n_layers - 1):
            after = F.pad(needed[0].long().flip(1).cumsum(1).flip(1), (0, window))  # sum over t >= s
            needed.insert(0, ((after[:, :n_t] - after[:, window:window + n_t]) > 0) & mask)
        return needed

    def _trunk(
        self, batch: Batch, city: CityTensors, cell_emb: torch.Tensor, positions: torch.Tensor | None, task: str
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """Final normed states (B, T, C) in ``task``, router probs per layer, summed aux loss.

        With ``positions`` (B, Q) only the states there are computed exactly (and the router
        probabilities there); other positions skip work nothing downstream reads."""
        n_b, n_t = batch.shape
        mask = batch.mask
        # No absolute position: order enters through rotary attention (relative) and the gap and
        # jump buckets, so a visit's state is the same wherever its sequence starts.
        x = (cell_emb[batch.cells] + self.hour_emb(batch.hour) + self.weekday_emb(batch.weekday)
             + self.gap_emb(batch.gap_bucket) + self.dist_emb(batch.dist_bucket))
        if check_task(task) == "at-time":
            hour, weekday, gap = batch.target_time()
            x = x + self.target_hour_emb(hour) + self.target_weekday_emb(weekday) + self.target_gap_emb(gap)
        x = self.drop(x)  # (B, T, C)
        attn_mask = sliding_window_mask(mask, self.config.attn_window)  # (B, 1, T, T)
        rope = rotary(n_t, self.config.d_model // self.config.n_heads, device=x.device, dtype=x.dtype)
        prior = self._prior(batch, city, task)
        aux = x.new_zeros(())
        probs = []
        for block, need in zip(self.blocks, self._needed(mask, positions)):
            x, res = block(x, prior, attn_mask=attn_mask, rope=rope, mask=need, city=city.name)
            aux = aux + res.aux_loss
            if res.router_probs is not None:
                full = res.router_probs.new_zeros(n_b, n_t, res.router_probs.shape[-1])
                probs.append(full.masked_scatter(need.unsqueeze(-1), res.router_probs))
        return self.ln_f(x), tuple(probs), aux

    # ----------------------------------------------------------------- forward
    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = True, task: str = TASKS[0]) -> ModelOutput:
        """Scores over the city's candidate cells for the next visit at every position, in ``task``
        (batch.TASKS: ``next``, its time unknown, or ``at-time``, told when it happens).

        ``loss`` (when ``targets``) is the mean cross-entropy over positions whose target is a
        candidate (IGNORE and MISS excluded) plus the router aux losses (zero in eval).
        """
        cell_emb = self.encoder(city.features)  # (N, C)
        h, probs, aux = self._trunk(batch, city, cell_emb, None, task)
        logits = self.head(h, None, batch=batch, city=city, cell_emb=cell_emb, task=task)
        loss = None
        if targets:
            n_valid = (batch.targets >= 0).sum().clamp(min=1)  # 0, not NaN, for a batch without one
            ce = next_cell_loss(logits, batch.targets, reduction="sum") / n_valid
            loss = ce + aux
        return ModelOutput(logits, loss, aux, probs, h)

    @property
    def reach(self) -> int:
        """Most recent visits a score depends on (:attr:`TrajMoEConfig.reach`): one pass over a
        longer sequence scores each position exactly as that position's last ``reach`` visits would."""
        return self.config.reach

    @torch.no_grad()
    def encode_cells(self, city: CityTensors) -> torch.Tensor:
        """(N, C) cell embeddings of a city: compute once, pass to every scoring call of a pass."""
        return self.encoder(city.features)

    @torch.no_grad()
    def score_positions(self, batch: Batch, city: CityTensors, positions: torch.Tensor, *,
                        cell_emb: torch.Tensor | None = None, task: str = TASKS[0]) -> PositionScores:
        """Scores in ``task`` for the visit after each of ``positions`` (B, Q) from ONE pass over ``batch``.

        The Transformer runs once over every position; the (B, Q, N) head only at the Q chosen
        ones (evaluation, predict, flows and routing views, scenarios). ``cell_emb``: the city's
        :meth:`encode_cells`, when the caller scores many batches of one city.
        """
        cell_emb = self.encoder(city.features) if cell_emb is None else cell_emb
        h, probs, _ = self._trunk(batch, city, cell_emb, positions, task)
        h_q = _at(h, positions)  # (B, Q, C)
        logits = self.head(h_q, positions, batch=batch, city=city, cell_emb=cell_emb, task=task)
        return PositionScores(logits, tuple(_at(p, positions) for p in probs))

    @torch.no_grad()
    def score_last(self, batch: Batch, city: CityTensors, *, cell_emb: torch.Tensor | None = None,
                   task: str = TASKS[0]) -> torch.Tensor:
        """(B, N) scores in ``task`` for the visit after each sequence's LAST real position."""
        return self.score_positions(batch, city, batch.last_positions(), cell_emb=cell_emb, task=task).logits.squeeze(1)

    def states_at(self, batch: Batch, city: CityTensors, cell_emb: torch.Tensor, positions: torch.Tensor, *,
                  task: str = TASKS[0]) -> torch.Tensor:
        """Final states (B, Q, C) in ``task`` at ``positions`` (B, Q) (head calibration caches them)."""
        h, _, _ = self._trunk(batch, city, cell_emb, positions, task)
        return _at(h, positions)


def _at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, Q, D) rows at ``positions`` (B, Q)."""
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
