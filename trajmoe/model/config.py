"""TrajMoEConfig: every size, ablation flag and loss weight of the TrajMoE network.

The config needs nothing from the model's modules (only the feature schema, the POI categories
and the MoE layer's own config), so every module imports it and it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trajmoe.city.batch import TASKS, UNKNOWN_WEEKDAY
from trajmoe.city.features import FEATURE_WIDTHS
from trajmoe.errors import TrajMoEError
from trajmoe.model.moe import MoEConfig
from trajmoe.pois.categories import CATEGORIES

N_HOURS = 24
N_WEEKDAYS = UNKNOWN_WEEKDAY + 1  # Mon..Sun + unknown


@dataclass
class TrajMoEConfig:
    """Configuration of :class:`~trajmoe.model.trajmoe.TrajMoE`; round-trips through ``asdict``.

    Ablation flags: ``use_poi_features`` (False: the encoder drops the POI groups and the router
    loses its spatial prior), ``router_priors`` (False: the router sees the token state only),
    ``shared_expert``, ``moe`` (False: dense FFN with the same active parameters),
    ``return_terms``, ``distance_term``, ``successor_terms`` (hand-made output-head terms) and
    ``return_scorer`` (the head's learned score of the person's own context cells).
    """

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 64  # training window length in visits (the protocol's L; sequences may be longer)
    # Each position attends to itself and the attn_window - 1 visits before it, in every layer, with
    # rotary (relative) positions: a score depends only on the last `reach` visits, wherever the
    # sequence starts, so one causal pass over a person's history scores all of its targets.
    # 32 with 2 layers reaches 2 * 31 + 1 = 63 visits, inside one 64-visit training window.
    attn_window: int = 32
    dropout: float = 0.1  # attention, residual, embedding and feed-forward output dropout
    # Spatial semantic encoder. Group name -> width, in feature-matrix column order.
    feature_groups: dict[str, int] = field(default_factory=lambda: dict(FEATURE_WIDTHS))
    encoder_group_dim: int = 32  # width of each group's projection
    encoder_cross_layers: int = 2  # DCN cross layers
    n_poi_categories: int = len(CATEGORIES)  # width of CityTensors.poi_share (spatial prior)
    use_poi_features: bool = True  # False: the "without POI features" ablation
    # SAMoE feed-forward (paper default: E=8 routed experts, top-2, one shared expert).
    moe: bool = True
    n_routed_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 0  # 0 -> 4 * d_model
    shared_expert: bool = True
    router_priors: bool = True
    router_prior_init: float = 2.0  # initial logit bonus of expert g for POIs of semantic group g
    router_aux_loss_coef: float = 0.01  # Switch Transformer's alpha (load balancing)
    router_z_loss_coef: float = 0.001  # ST-MoE's z-loss coefficient
    domain_expert_rank: int = 16  # hidden width of a per-city low-rank domain expert
    domain_experts: tuple[str, ...] = ()  # cities with a domain expert (add_domain_expert)
    # Kinds of data (kinds.KINDS) the head's prior rows have been trained on (train.fit records
    # them). Calibration pulls only a trained row toward its weights; an untrained row (e.g. bike
    # stations when no source city had any) is fitted freely on the new city's targets.
    pretrained_kinds: tuple[str, ...] = ()
    # Tasks (batch.TASKS: "next", "at-time") the model has been trained for (train.fit records
    # them); a verb asked for another task says so instead of scoring with untrained weights.
    tasks: tuple[str, ...] = ()
    # Output head.
    return_terms: bool = True  # log1p(count) and recency of each candidate in the context
    return_window: int = 64  # the last 64 visits, as in the return + gravity baseline
    distance_term: bool = True  # -softplus(a) * log(1 + km from the current cell)
    successor_terms: bool = True  # personal successors and city transitions of the current cell
    return_scorer: bool = True  # the learned return scorer over the context's cells (head.py)
    # at-time: the learned time relations (head.py): state-dependent weights on each context cell's
    # visits per hour band around the target time, and a state-dependent distance decay. Off: on the
    # source cities' validation (bench/source_val.py --task at-time, New York held out) they scored
    # 0.235 / 0.219 Acc@1 on SF / LA against 0.243 / 0.223 without them (source_val.json).
    time_relations: bool = False

    def __post_init__(self) -> None:
        self.feature_groups = {str(k): int(v) for k, v in dict(self.feature_groups).items()}
        self.domain_experts = tuple(self.domain_experts)
        self.pretrained_kinds = tuple(self.pretrained_kinds)
        self.tasks = tuple(self.tasks)
        if self.expert_hidden == 0:
            self.expert_hidden = 4 * self.d_model
        problems = []
        if self.d_model <= 0 or self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        if min(self.n_layers, self.max_len, self.encoder_group_dim, self.return_window, self.attn_window) < 1:
            problems.append("n_layers, max_len, attn_window, encoder_group_dim and return_window must be >= 1")
        if (self.d_model // max(self.n_heads, 1)) % 2:
            problems.append(f"d_model / n_heads = {self.d_model // max(self.n_heads, 1)} must be even (rotary positions)")
        if self.encoder_cross_layers < 0 or not 0.0 <= self.dropout < 1.0:
            problems.append("encoder_cross_layers must be >= 0 and dropout in [0, 1)")
        if not 1 <= self.top_k <= self.n_routed_experts:
            problems.append(f"top_k={self.top_k} must be in 1..n_routed_experts={self.n_routed_experts}")
        if any(w < 1 for w in self.feature_groups.values()) or not self.feature_groups:
            problems.append(f"feature_groups needs positive widths, got {self.feature_groups}")
        if any(t not in TASKS for t in self.tasks):
            problems.append(f"tasks must be among {', '.join(TASKS)}, got {self.tasks}")
        if problems:
            raise TrajMoEError("invalid TrajMoE config: " + "; ".join(problems))

    @property
    def receptive_field(self) -> int:
        """Visits the Transformer states at a position depend on: n_layers * (attn_window - 1) + 1."""
        return self.n_layers * (self.attn_window - 1) + 1

    @property
    def reach(self) -> int:
        """Most recent visits (the current one included) a next-visit score depends on: the
        Transformer's receptive field or the head's return window, whichever is longer."""
        return max(self.receptive_field, self.return_window if self.return_terms else 1)

    @property
    def n_prior_features(self) -> int:
        """Router prior width: POI shares (if used) + hour and weekday one-hots of the current visit
        + hour and weekday one-hots of the target visit (at-time; the next task leaves them out)."""
        return (self.n_poi_categories if self.use_poi_features else 0) + 2 * (N_HOURS + N_WEEKDAYS)

    def moe_config(self) -> MoEConfig:
        return MoEConfig(
            d_model=self.d_model, n_routed_experts=self.n_routed_experts, top_k=self.top_k,
            expert_hidden=self.expert_hidden, shared_expert=self.shared_expert,
            router_priors=self.router_priors, n_prior_features=self.n_prior_features,
            domain_expert_rank=self.domain_expert_rank,
            router_aux_loss_coef=self.router_aux_loss_coef,
            router_z_loss_coef=self.router_z_loss_coef, dropout=self.dropout,
        )
