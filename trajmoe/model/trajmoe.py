"""TrajMoE: spatial semantic encoder + SAMoE Transformer + retrieval head (arXiv 2505.18670).

One model serves every city that has a cell table: cells are embedded from their features
(POI semantics, visit patterns, coordinates) by an encoder shared by all cities, never by
per-city ID tables, and the next visit is scored against the city's own candidate cells.

Read bottom-up, nanoGPT style: :class:`CellEncoder` (features -> cell embedding),
:class:`CausalSelfAttention`, :class:`Block` (attention + SAMoE feed-forward),
:class:`RetrievalHead` (scores over the city's cells), :class:`TrajMoEConfig`, :class:`TrajMoE`. Shapes: B batch, T visits, C d_model, N candidate
cells, E routed experts, P prior width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.city.batch import (
    IGNORE,
    N_DIST_BUCKETS,
    N_GAP_BUCKETS,
    UNKNOWN_WEEKDAY,
    Batch,
    CityTensors,
)
from trajmoe.city.features import FEATURE_WIDTHS
from trajmoe.errors import PreparedDataError, TrajMoEError
from trajmoe.model.moe import SEMANTIC_EXPERT_GROUPS, DenseFFN, MoEConfig, MoEOutput, SAMoE
from trajmoe.model.returns import context_return_features
from trajmoe.pois.categories import CATEGORIES
from trajmoe.trajectories.kinds import KINDS

N_HOURS = 24
N_WEEKDAYS = UNKNOWN_WEEKDAY + 1  # Mon..Sun + unknown

# Which columns of the ``mask`` feature group switch which groups off (features.py order:
# has_poi, has_visits, weekday_known). Popularity is never masked: its last bucket already says
# "never visited". Groups masked by has_poi are the POI groups the use_poi_features ablation drops.
_MASK_COLUMNS: dict[str, tuple[int, ...]] = {
    "poi_share": (0,),
    "poi_log_count": (0,),
    "ring_poi_share": (0,),
    "ring_poi_log_count": (0,),
    "poi_total": (0,),
    "visit_hour": (1,),
    "visit_weekday": (1, 2),
    "log_visits": (1,),
}
POI_GROUPS = tuple(name for name, cols in _MASK_COLUMNS.items() if cols == (0,))


class CellEncoder(nn.Module):
    """Spatial semantic encoder: cell features (N, F) -> cell embeddings (N, C).

    Each feature group gets its own projection (a missing group, per the ``mask`` group, is
    zeroed after it), then a DCN-v2 cross network models feature interactions such as "many
    offices AND busy at 9am" (Wang et al. 2021), then an MLP and a LayerNorm.
    """

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.widths = dict(config.feature_groups)
        self.slices: dict[str, slice] = {}
        start = 0
        for name, width in self.widths.items():
            self.slices[name] = slice(start, start + width)
            start += width
        self.n_features = start
        used = [n for n in self.widths if config.use_poi_features or n not in POI_GROUPS]
        g = config.encoder_group_dim
        self.group_proj = nn.ModuleDict({n: nn.Linear(self.widths[n], g) for n in used})
        width = g * len(used)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.encoder_cross_layers))
        self.mlp = nn.Sequential(nn.Linear(width, 2 * config.d_model), nn.GELU(),
                                 nn.Linear(2 * config.d_model, config.d_model))
        self.ln = nn.LayerNorm(config.d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise PreparedDataError(
                f"cell features have shape {tuple(features.shape)} but this model expects "
                f"(N, {self.n_features}) with groups {self.widths}; prepare the city with the "
                "same trajmoe version as the checkpoint (features.SCHEMA_ID) or retrain"
            )
        mask = features[:, self.slices["mask"]] if "mask" in self.slices else None
        parts = []
        for name, proj in self.group_proj.items():
            part = proj(features[:, self.slices[name]])  # (N, g)
            if mask is not None and name in _MASK_COLUMNS:
                part = part * mask[:, list(_MASK_COLUMNS[name])].prod(dim=1, keepdim=True)
            parts.append(part)
        x0 = torch.cat(parts, dim=-1)  # (N, G * g)
        x = x0
        for layer in self.cross:  # DCN-v2: x_{l+1} = x_0 * (W x_l + b) + x_l
            x = x0 * layer(x) + x
        return self.ln(self.mlp(x))  # (N, C)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (nanoGPT) with a key padding mask."""

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)
        self.c_proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        n_b, n_t, n_c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(n_c, dim=2)
        q, k, v = (z.view(n_b, n_t, self.n_heads, n_c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, C/H)
        y = y.transpose(1, 2).contiguous().view(n_b, n_t, n_c)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    """Pre-norm Transformer block: causal attention, then the SAMoE (or dense) feed-forward."""

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.ffn = SAMoE(config.moe_config()) if config.moe else DenseFFN(config.moe_config())

    def forward(
        self,
        x: torch.Tensor,
        prior: torch.Tensor | None,
        *,
        attn_mask: torch.Tensor,
        mask: torch.Tensor,
        city: str,
    ) -> tuple[torch.Tensor, MoEOutput]:
        x = x + self.attn(self.ln_1(x), attn_mask)
        h = self.ln_2(x)  # (B, T, C)
        # Only real visits go through the feed-forward: padding is never routed and never
        # counted in the load-balancing loss.
        res = self.ffn(h[mask], prior[mask] if prior is not None else None, city=city)  # (M, C)
        x = x + h.new_zeros(h.shape).masked_scatter(mask.unsqueeze(-1), res.output)
        return x, res


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
        current = batch.cells if positions is None else batch.cells.gather(1, positions)  # (B, Q)
        weights, terms = [w["log_pop"]], [city.log_pop.to(h.dtype)]
        if cfg.distance_term:
            xy = city.xy_km.to(h.dtype)
            km = torch.cdist(xy[current].reshape(-1, 2), xy,
                             compute_mode="donot_use_mm_for_euclid_dist")  # exact 0 for self
            log_km = km.view(n_b, n_q, n_cells).log1p_()
            weights.append(-F.softplus(w["distance_decay"]))
            terms.append(log_km)
        if cfg.return_terms:
            count, recency = context_return_features(
                batch.cells, batch.mask, n_cells, window=cfg.return_window, positions=positions
            )
            seen = (count > 0).to(h.dtype)
            weights.extend([w["log_count"], w["recency"], w["seen"]])
            terms.extend([count.log1p_().to(h.dtype), recency.to(h.dtype), seen])
            new = 1.0 - seen
            weights.append(w["explore_log_pop"])
            terms.append(new * city.log_pop.to(h.dtype))
            if cfg.distance_term:
                weights.append(-w["explore_log_km"])
                terms.append(new * log_km)
        weights.append(w["is_current"])
        terms.append(F.one_hot(current, n_cells).to(h.dtype))  # (B, Q, N)
        return _AddWeightedTerms.apply(logits, torch.stack(weights), *terms)


@dataclass
class TrajMoEConfig:
    """Configuration of :class:`TrajMoE`; round-trips through ``dataclasses.asdict``.

    Ablation flags: ``use_poi_features`` (False: the encoder drops the POI groups and the router
    loses its spatial prior), ``router_priors`` (False: the router sees the token state only),
    ``shared_expert``, ``moe`` (False: dense FFN with the same active parameters),
    ``return_terms`` and ``distance_term`` (output-head terms).
    """

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 64  # longest visit sequence (context L of the protocol)
    dropout: float = 0.1
    # Spatial semantic encoder. Group name -> width, in feature-matrix column order.
    feature_groups: dict[str, int] = field(default_factory=lambda: dict(FEATURE_WIDTHS))
    encoder_group_dim: int = 32  # width of each group's projection
    encoder_cross_layers: int = 2  # DCN cross layers
    n_poi_categories: int = len(CATEGORIES)  # width of CityTensors.poi_share (spatial prior)
    use_poi_features: bool = True
    # SAMoE feed-forward (paper default: E=8 routed experts, top-2, one shared expert).
    moe: bool = True
    n_routed_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 0  # 0 -> 4 * d_model
    shared_expert: bool = True
    router_priors: bool = True
    router_prior_init: float = 2.0  # initial logit bonus of expert g for POIs of semantic group g
    router_aux_loss_coef: float = 0.01
    router_z_loss_coef: float = 0.001
    domain_expert_rank: int = 16
    domain_experts: tuple[str, ...] = ()  # cities with a domain expert (add_domain_expert)
    # Kinds of data (kinds.KINDS) the head's prior rows have been trained on (train.fit records
    # them). Calibration pulls only a trained row toward its weights; an untrained row (e.g. bike
    # stations when no source city had any) is fitted freely on the new city's targets.
    pretrained_kinds: tuple[str, ...] = ()
    # Output head.
    return_terms: bool = True  # log1p(count) and recency of each candidate in the context
    return_window: int = 64  # the last 64 visits, as in the return + gravity baseline
    distance_term: bool = True  # -softplus(a) * log(1 + km from the current cell)

    def __post_init__(self) -> None:
        self.feature_groups = {str(k): int(v) for k, v in dict(self.feature_groups).items()}
        self.domain_experts = tuple(self.domain_experts)
        self.pretrained_kinds = tuple(self.pretrained_kinds)
        if self.expert_hidden == 0:
            self.expert_hidden = 4 * self.d_model
        problems = []
        if self.d_model <= 0 or self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        if min(self.n_layers, self.max_len, self.encoder_group_dim, self.return_window) < 1:
            problems.append("n_layers, max_len, encoder_group_dim and return_window must be >= 1")
        if self.encoder_cross_layers < 0 or not 0.0 <= self.dropout < 1.0:
            problems.append("encoder_cross_layers must be >= 0 and dropout in [0, 1)")
        if not 1 <= self.top_k <= self.n_routed_experts:
            problems.append(f"top_k={self.top_k} must be in 1..n_routed_experts={self.n_routed_experts}")
        if any(w < 1 for w in self.feature_groups.values()) or not self.feature_groups:
            problems.append(f"feature_groups needs positive widths, got {self.feature_groups}")
        if problems:
            raise TrajMoEError("invalid TrajMoE config: " + "; ".join(problems))

    @property
    def n_prior_features(self) -> int:
        """Router prior width: POI shares (if used) + hour one-hot + weekday one-hot."""
        return (self.n_poi_categories if self.use_poi_features else 0) + N_HOURS + N_WEEKDAYS

    def moe_config(self) -> MoEConfig:
        return MoEConfig(
            d_model=self.d_model, n_routed_experts=self.n_routed_experts, top_k=self.top_k,
            expert_hidden=self.expert_hidden, shared_expert=self.shared_expert,
            router_priors=self.router_priors, n_prior_features=self.n_prior_features,
            domain_expert_rank=self.domain_expert_rank,
            router_aux_loss_coef=self.router_aux_loss_coef,
            router_z_loss_coef=self.router_z_loss_coef, dropout=self.dropout,
        )


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, N) next-cell scores
    loss: torch.Tensor | None  # () CE over positions with a target + aux loss (when training)
    aux_loss: torch.Tensor  # () summed router aux losses over layers; 0 in eval
    router_probs: tuple[torch.Tensor, ...]  # per MoE layer (B, T, E) float32; 0 at padding
    hidden: torch.Tensor  # (B, T, C) final normed states


class TrajMoE(nn.Module):
    """The TrajMoE next-location model. ``forward(batch, city) -> ModelOutput``."""

    def __init__(self, config: TrajMoEConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.encoder = CellEncoder(config)
        self.hour_emb = nn.Embedding(N_HOURS, d)
        self.weekday_emb = nn.Embedding(N_WEEKDAYS, d)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, d)
        self.dist_emb = nn.Embedding(N_DIST_BUCKETS, d)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = RetrievalHead(config)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2 scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))
        self._init_router_priors()
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
                    per_expert = sum(p.numel() for p in block.ffn.experts[0].parameters())
                    n -= (self.config.n_routed_experts - self.config.top_k) * per_expert
        return n

    # ----------------------------------------------------------------- forward pieces
    def _prior(self, batch: Batch, city: CityTensors) -> torch.Tensor | None:
        """(B, T, P) router priors: current cell's POI shares, hour one-hot, weekday one-hot."""
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
        parts.append(F.one_hot(batch.hour, N_HOURS).to(self.hour_emb.weight.dtype))
        parts.append(F.one_hot(batch.weekday, N_WEEKDAYS).to(self.hour_emb.weight.dtype))
        return torch.cat(parts, dim=-1)

    def _trunk(
        self, batch: Batch, city: CityTensors, cell_emb: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """Final normed states (B, T, C), router probs per layer, summed aux loss."""
        n_b, n_t = batch.shape
        if n_t > self.config.max_len:
            raise TrajMoEError(
                f"sequences of {n_t} visits exceed max_len={self.config.max_len}; cut the context "
                "to max_len visits (dataset windows) or train a model with a larger max_len"
            )
        mask = batch.mask
        pos = torch.arange(n_t, device=mask.device)
        x = (cell_emb[batch.cells] + self.hour_emb(batch.hour) + self.weekday_emb(batch.weekday)
             + self.gap_emb(batch.gap_bucket) + self.dist_emb(batch.dist_bucket) + self.pos_emb(pos))
        x = self.drop(x)  # (B, T, C)
        # Causal AND key padding; every query may also see itself, so a fully padded row
        # never has all keys masked (SDPA would return NaN there).
        causal = torch.ones(n_t, n_t, dtype=torch.bool, device=mask.device).tril()
        keys = mask.unsqueeze(1) | torch.eye(n_t, dtype=torch.bool, device=mask.device)  # (B, T, T)
        attn_mask = (causal & keys).unsqueeze(1)  # (B, 1, T, T)
        prior = self._prior(batch, city)
        aux = x.new_zeros(())
        probs = []
        for block in self.blocks:
            x, res = block(x, prior, attn_mask=attn_mask, mask=mask, city=city.name)
            aux = aux + res.aux_loss
            if res.router_probs is not None:
                full = res.router_probs.new_zeros(n_b, n_t, res.router_probs.shape[-1])
                probs.append(full.masked_scatter(mask.unsqueeze(-1), res.router_probs))
        return self.ln_f(x), tuple(probs), aux

    # ----------------------------------------------------------------- forward
    def forward(self, batch: Batch, city: CityTensors, *, targets: bool = True) -> ModelOutput:
        """Scores over the city's candidate cells for the next visit at every position.

        ``loss`` (when ``targets``) is the mean cross-entropy over positions whose target is a
        candidate (IGNORE and MISS excluded) plus the router aux losses (zero in eval).
        """
        cell_emb = self.encoder(city.features)  # (N, C)
        h, probs, aux = self._trunk(batch, city, cell_emb)
        logits = self.head(h, None, batch=batch, city=city, cell_emb=cell_emb)
        loss = None
        if targets:
            tgt = batch.targets.masked_fill(batch.targets < 0, IGNORE)  # MISS is not trainable
            n_valid = (tgt >= 0).sum().clamp(min=1)
            ce = F.cross_entropy(logits.reshape(-1, city.n_cells), tgt.reshape(-1),
                                 ignore_index=IGNORE, reduction="sum") / n_valid
            loss = ce + aux
        return ModelOutput(logits, loss, aux, probs, h)

    @torch.no_grad()
    def score_last(self, batch: Batch, city: CityTensors) -> torch.Tensor:
        """(B, N) scores for the visit after each sequence's LAST real position (eval, predict).

        The Transformer runs over all positions (attention needs them) but the (B, T, N) head
        is computed for one position per sequence only.
        """
        cell_emb = self.encoder(city.features)
        h_last, last = self.last_states(batch, city, cell_emb)
        return self.head(h_last, last, batch=batch, city=city, cell_emb=cell_emb).squeeze(1)

    def last_states(self, batch: Batch, city: CityTensors, cell_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final state at each sequence's last real position (B, 1, C) and that position (B, 1)."""
        h, _, _ = self._trunk(batch, city, cell_emb)
        last = (batch.mask.sum(dim=1) - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
        return h.gather(1, last.unsqueeze(-1).expand(-1, -1, h.shape[-1])), last
