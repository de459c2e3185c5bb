"""SAMoE: the Spatially-Aware Mixture-of-Experts feed-forward of TrajMoE (arXiv 2505.18670 §3).

One always-on shared expert (city-invariant patterns) plus ``n_routed_experts`` routed experts,
top-k per token. The router (``gate``) sees the token state AND structured priors: the current
cell's POI category shares (spatial) and the time of week (temporal). Optional per-city domain
experts (small low-rank adapters, with a per-city router bias) are added by
:meth:`SAMoE.add_domain_expert` for fine-tuning on a new city.

Conventions follow Mixtral / Qwen2-MoE in HF transformers (``gate``, ``experts``,
``shared_expert``, router softmax in float32, a separate padding-masked load-balancing loss,
experts without tokens skipped) and lucidrains/st-moe-pytorch (results as a NamedTuple with the
weighted aux loss and the raw balance / z losses; aux losses are zero in eval).

Dispatch: the (token, expert) assignments are sorted by expert ONCE and the tokens gathered in
that order; the routed experts' weights are stacked, (E, H, C) and (E, C, H), so on CPU in
float32/bfloat16 ONE grouped matmul per projection (``F.grouped_mm``: each expert on its own
contiguous slice, padding-free) runs all of them; batches too large for that to pay off, and other
dtypes/devices, run one matmul pair per expert slice. The weighted outputs are added back with
one ``index_add_``. Experts without tokens
get an empty slice. No capacity factor, no dropped tokens, no per-token Python loop
(bench/moe_dispatch.py measures it against a dense FFN). Checkpoints keep one key per expert
(``experts.3.c_fc.weight``), so files written before the weights were stacked still load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.model.experts import Expert, RoutedExperts

# Readable expert specialisation: the router's prior projection is initialised so that routed
# expert e prefers cells whose POIs fall in semantic group e (mod E). Groups partition
# categories.CATEGORIES; the names are what routing maps show before training moves them.
SEMANTIC_EXPERT_GROUPS: dict[str, tuple[str, ...]] = {
    "food_nightlife": ("food_drink", "nightlife"),
    "shopping_services": ("retail", "grocery", "personal_services"),
    "education_culture": ("education", "culture_tourism", "religion"),
    "health_public": ("health", "public_service"),
    "transport": ("transport", "automotive"),
    "leisure_sport": ("parks_leisure", "sport", "entertainment"),
    "work": ("office_work", "industrial"),
    "home_stay": ("residential", "accommodation", "other"),
}


@dataclass
class MoEConfig:
    """Configuration of one SAMoE feed-forward layer."""

    d_model: int
    n_routed_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 0  # 0 -> 4 * d_model (nanoGPT's MLP width)
    shared_expert: bool = True  # one always-on expert of width expert_hidden
    router_priors: bool = True  # router also sees the spatial/temporal prior vector
    n_prior_features: int = 0  # width of the prior vector (0 = no priors even if router_priors)
    domain_expert_rank: int = 16  # hidden width of a per-city low-rank domain expert
    router_aux_loss_coef: float = 0.01  # Switch Transformer's alpha
    router_z_loss_coef: float = 0.001  # ST-MoE's z-loss coefficient
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.expert_hidden == 0:
            self.expert_hidden = 4 * self.d_model
        if self.d_model <= 0 or self.expert_hidden <= 0:
            raise ValueError(f"d_model and expert_hidden must be positive, got {self}")
        if not 1 <= self.top_k <= self.n_routed_experts:
            raise ValueError(
                f"top_k={self.top_k} must be between 1 and n_routed_experts={self.n_routed_experts}"
            )
        if self.n_prior_features < 0 or self.domain_expert_rank <= 0:
            raise ValueError("n_prior_features must be >= 0 and domain_expert_rank > 0")

    @property
    def uses_priors(self) -> bool:
        return self.router_priors and self.n_prior_features > 0


class MoEOutput(NamedTuple):
    """What a feed-forward layer returns (st-moe-pytorch style)."""

    output: torch.Tensor  # (M, C) same shape as the input
    aux_loss: torch.Tensor  # () coef-weighted balance + z loss; 0 in eval
    balance_loss: torch.Tensor  # () raw Switch load-balancing loss; 0 in eval
    z_loss: torch.Tensor  # () raw router z-loss; 0 in eval
    router_probs: torch.Tensor | None  # (M, E) float32 router softmax; None for a dense FFN


def load_balancing_loss(
    router_probs: torch.Tensor,
    expert_index: torch.Tensor,
    *,
    n_experts: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Switch Transformer load-balancing loss ``E * sum_e f_e * P_e`` over real tokens.

    Parameters
    ----------
    router_probs
        (M, E) router softmax per token.
    expert_index
        (M, k) the experts each token was dispatched to.
    n_experts
        E.
    mask
        (M,) bool, True for real tokens; padding is excluded from both averages (as in HF
        Mixtral's ``load_balancing_loss_func`` with an attention mask).

    Returns
    -------
    torch.Tensor
        Scalar; 1.0 for a perfectly uniform router, up to E when everything goes to one expert.
        ``f_e`` is the share of the M*k assignments that went to expert e, ``P_e`` the mean router
        probability of e.
    """
    if mask is not None:
        router_probs, expert_index = router_probs[mask], expert_index[mask]
    if router_probs.shape[0] == 0:
        return router_probs.new_zeros(())
    counts = torch.bincount(expert_index.reshape(-1), minlength=n_experts).to(router_probs.dtype)
    fraction = counts / expert_index.numel()  # f_e: no gradient, as in Switch
    return n_experts * torch.sum(fraction * router_probs.mean(dim=0))


def router_z_loss(router_logits: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE router z-loss: mean of ``logsumexp(logits)^2`` over real tokens.

    Keeps router logits small so the float32 softmax stays well conditioned (Zoph et al. 2022).
    ``router_logits`` is (M, E); ``mask`` (M,) bool excludes padding.
    """
    if mask is not None:
        router_logits = router_logits[mask]
    if router_logits.shape[0] == 0:
        return router_logits.new_zeros(())
    return torch.logsumexp(router_logits.float(), dim=-1).square().mean()


class DomainExpert(nn.Module):
    """A city's own small expert: a low-rank FFN added to every token of that city.

    The up-projection starts at zero, so adding a domain expert does not change the model until
    fine-tuning trains it. ``router_bias`` (E,) is the city's learned shift of the router logits:
    the "optional city embedding" of the router, kept per city so new cities need no vocabulary.
    """

    def __init__(self, d_model: int, rank: int, n_routed_experts: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, rank)
        self.up = nn.Linear(rank, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        # None for a dense FFN, which has no router.
        self.router_bias = nn.Parameter(torch.zeros(n_routed_experts)) if n_routed_experts else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(x)))


def domain_key(city: str) -> str:
    """The nn.ModuleDict key of a city's domain expert.

    ModuleDict keys may not contain '.' nor shadow a ModuleDict attribute (a city called "keys"
    or "pop"), hence the prefix.
    """
    return "city_" + city.replace(".", "_")


class _FeedForward(nn.Module):
    """Common part of SAMoE and the dense FFN: the per-city domain experts."""

    def __init__(self, d_model: int, domain_rank: int, n_router_bias: int) -> None:
        super().__init__()
        self._d_model, self._domain_rank, self._n_router_bias = d_model, domain_rank, n_router_bias
        self.domain_experts = nn.ModuleDict()

    def add_domain_expert(self, city: str) -> DomainExpert:
        """Add (or return the existing) domain expert of ``city``."""
        key = domain_key(city)
        if key not in self.domain_experts:
            # Created on the device/dtype of the layer so fine-tuning can add one to a loaded model.
            ref = next(self.parameters())
            self.domain_experts[key] = DomainExpert(
                self._d_model, self._domain_rank, self._n_router_bias
            ).to(device=ref.device, dtype=ref.dtype)
        return self.domain_experts[key]  # type: ignore[return-value]

    def _domain(self, city: str | None) -> DomainExpert | None:
        if city is None:
            return None
        return self.domain_experts[domain_key(city)] if domain_key(city) in self.domain_experts else None


class SAMoE(_FeedForward):
    """Shared expert + top-k routed experts with a prior-aware router.

    ``forward(x, prior, *, city=None)`` takes flat tokens ``x`` (M, C), all real (the caller
    drops padding), and their prior vectors (M, P) (ignored when the config has no priors).
    """

    def __init__(self, config: MoEConfig) -> None:
        super().__init__(config.d_model, config.domain_expert_rank, config.n_routed_experts)
        self.config = config
        d, h, n_exp = config.d_model, config.expert_hidden, config.n_routed_experts
        self.gate = nn.Linear(d, n_exp, bias=False)  # router on the token state
        # Router on the structured priors (POI shares, hour, weekday): a linear map, so its
        # weights read directly as "category/hour -> expert preference".
        self.prior_gate = nn.Linear(config.n_prior_features, n_exp, bias=False) if config.uses_priors else None
        self.experts = RoutedExperts(n_exp, d, h)
        self.shared_expert = Expert(d, h) if config.shared_expert else None
        self.dropout = nn.Dropout(config.dropout)  # once on the layer output, not per expert
        nn.init.normal_(self.gate.weight, std=0.02)
        if self.prior_gate is not None:
            nn.init.zeros_(self.prior_gate.weight)

    def init_prior_groups(self, groups: Sequence[Sequence[int]], *, scale: float) -> None:
        """Bias routed expert ``g % E`` toward prior features ``groups[g]`` (readable specialisation).

        E.g. with the spatial prior's category indices grouped by :data:`SEMANTIC_EXPERT_GROUPS`,
        a cell whose POIs are all food & nightlife starts with a ``+scale`` logit on expert 0.
        """
        if self.prior_gate is None:
            return
        n_exp = self.config.n_routed_experts
        with torch.no_grad():
            for g, feature_idx in enumerate(groups):
                self.prior_gate.weight[g % n_exp, list(feature_idx)] = scale

    def router_logits(
        self, x: torch.Tensor, prior: torch.Tensor | None, *, city: str | None = None
    ) -> torch.Tensor:
        """(M, E) float32 router logits from the token state, the priors and the city bias."""
        logits = self.gate(x).float()
        if self.prior_gate is not None:
            if prior is None:
                raise ValueError("this SAMoE layer routes with priors: pass the (M, P) prior vector")
            # A prior narrower than the gate (TrajMoE's next task leaves out the target-time
            # columns, which would be zeros) meets the gate's leading columns only: the same logits.
            weight = self.prior_gate.weight[:, : prior.shape[-1]]
            logits = logits + F.linear(prior.to(weight.dtype), weight).float()
        domain = self._domain(city)
        if domain is not None and domain.router_bias is not None:
            logits = logits + domain.router_bias.float()
        return logits

    def route(
        self, x: torch.Tensor, prior: torch.Tensor | None, *, city: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits (M, E), probs (M, E), top-k weights (M, k) and expert indices (M, k).

        Softmax in float32 (as in Mixtral / Qwen2-MoE); the k weights are renormalised to sum to 1.
        """
        logits = self.router_logits(x, prior, city=city)
        probs = logits.softmax(dim=-1)
        top_w, top_i = probs.topk(self.config.top_k, dim=-1)
        top_w = (top_w / top_w.sum(dim=-1, keepdim=True)).to(x.dtype)
        return logits, probs, top_w, top_i

    def forward(
        self,
        x: torch.Tensor,
        prior: torch.Tensor | None = None,
        *,
        city: str | None = None,
    ) -> MoEOutput:
        cfg = self.config
        n_tok = x.shape[0]  # x: (M, C)
        logits, probs, top_w, top_i = self.route(x, prior, city=city)

        # Sort the M*k assignments by expert once; each expert then sees one contiguous slice.
        flat_expert = top_i.reshape(-1)
        order = flat_expert.argsort()
        token_of = order // cfg.top_k  # (M*k,) token index of each sorted assignment
        counts = torch.bincount(flat_expert, minlength=cfg.n_routed_experts)  # (E,)
        y_sorted = self.experts(x.index_select(0, token_of), counts)  # (M*k, C)
        y_sorted = y_sorted * top_w.reshape(-1)[order].unsqueeze(-1)
        out = self.shared_expert(x) if self.shared_expert is not None else torch.zeros_like(x)
        out = out.index_add_(0, token_of, y_sorted)  # in place: no backward reads the shared output
        domain = self._domain(city)
        if domain is not None:
            out = out + domain(x)
        out = self.dropout(out)

        if self.training and n_tok > 0:
            balance = load_balancing_loss(probs, top_i, n_experts=cfg.n_routed_experts)
            z = router_z_loss(logits)
            aux = cfg.router_aux_loss_coef * balance + cfg.router_z_loss_coef * z
        else:  # aux losses are training signals only (st-moe-pytorch): zero in eval
            balance = z = aux = logits.new_zeros(())
        return MoEOutput(out, aux, balance, z, probs)


class DenseFFN(_FeedForward):
    """A dense FFN with SAMoE's ACTIVE parameter count: hidden = (top_k + shared) * expert_hidden.

    The dense ablation (``moe=False``) and the dense-Transformer baseline use it; it returns the
    same :class:`MoEOutput` with zero aux losses and no router probabilities.
    """

    def __init__(self, config: MoEConfig) -> None:
        super().__init__(config.d_model, config.domain_expert_rank, 0)
        self.config = config
        hidden = (config.top_k + int(config.shared_expert)) * config.expert_hidden
        self.mlp = Expert(config.d_model, hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        prior: torch.Tensor | None = None,
        *,
        city: str | None = None,
    ) -> MoEOutput:
        out = self.mlp(x)
        domain = self._domain(city)
        if domain is not None:
            out = out + domain(x)
        out = self.dropout(out)
        zero = x.new_zeros(())
        return MoEOutput(out, zero, zero, zero, None)
