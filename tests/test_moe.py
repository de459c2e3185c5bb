"""SAMoE feed-forward: sorted dispatch equals a naive loop, routing, aux losses, domain experts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trajmoe.model import experts as routed
from trajmoe.model.experts import Expert, RoutedExperts
from trajmoe.model.moe import (
    SEMANTIC_EXPERT_GROUPS,
    DenseFFN,
    MoEConfig,
    SAMoE,
    load_balancing_loss,
    router_z_loss,
)
from trajmoe.pois.categories import CATEGORIES

D, P = 16, 12


def _layer(**kw) -> SAMoE:
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=D, n_routed_experts=4, top_k=2, n_prior_features=P, **kw)
    layer = SAMoE(cfg)
    if layer.prior_gate is not None:  # non-zero so the priors really take part in routing
        torch.nn.init.normal_(layer.prior_gate.weight, std=0.5)
    return layer


def _expert(experts: RoutedExperts, e: int, x: torch.Tensor) -> torch.Tensor:
    """Routed expert e alone, as the nn.Linear pair of an :class:`Expert`."""
    return F.linear(F.gelu(F.linear(x, experts.c_fc.weight[e])), experts.c_proj.weight[e])


def _naive(layer: SAMoE, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by its renormalised top-k weight (0 if not chosen)."""
    _, _, top_w, top_i = layer.route(x, prior)
    out = layer.shared_expert(x) if layer.shared_expert is not None else torch.zeros_like(x)
    for e in range(layer.config.n_routed_experts):
        weight = (top_w * (top_i == e)).sum(dim=-1, keepdim=True)  # (M, 1)
        out = out + weight * _expert(layer.experts, e, x)
    return out


@pytest.mark.parametrize("shared", [True, False])
def test_sorted_dispatch_equals_naive_loop_forward_and_backward(shared):
    layer = _layer(shared_expert=shared).train()
    x = torch.randn(37, D, requires_grad=True)
    prior = torch.rand(37, P)

    got = layer(x, prior).output
    (got * torch.linspace(-1, 1, D)).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    x_grad = x.grad.clone()

    layer.zero_grad()
    x.grad = None
    want = _naive(layer, x, prior)
    (want * torch.linspace(-1, 1, D)).sum().backward()

    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_grad, x.grad, rtol=1e-5, atol=1e-6)
    for name, p in layer.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
        else:  # an expert that got no tokens gets no gradient; the naive loop gives it zeros
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    assert "gate.weight" in grads and "prior_gate.weight" in grads  # the router learns


@pytest.mark.parametrize(("dtype", "grouped"), [(torch.float32, True), (torch.float32, False),
                                               (torch.float64, False)])
def test_stacked_experts_equal_a_per_expert_loop_with_empty_experts(dtype, grouped, monkeypatch):
    """The one grouped GEMM (float32) and the per-slice path (a batch over the cache budget,
    float64) against a float64 loop over experts; sorted routing where experts 1, 4 get no tokens."""
    if not grouped:
        monkeypatch.setattr(routed, "_GROUPED_MAX_HIDDEN_BYTES", 0)
    torch.manual_seed(1)
    experts = RoutedExperts(6, D, 4 * D).to(dtype)
    counts = torch.tensor([9, 0, 14, 1, 0, 7])
    x = torch.randn(int(counts.sum()), D, dtype=dtype, requires_grad=True)
    assert routed.grouped_mm_applies(x, experts.c_fc.weight) == grouped
    grad_out = torch.randn(x.shape, dtype=dtype)
    got = experts(x, counts)
    got.backward(grad_out)

    ref = RoutedExperts(6, D, 4 * D).double()
    ref.load_state_dict(experts.state_dict())
    x64 = x.detach().double().requires_grad_()
    want = torch.cat([_expert(ref, e, chunk) for e, chunk in enumerate(x64.split(counts.tolist()))])
    want.backward(grad_out.double())

    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(got.double(), want, **tol)
    torch.testing.assert_close(x.grad.double(), x64.grad, **tol)
    for name in ("c_fc", "c_proj"):
        grad = getattr(experts, name).weight.grad
        torch.testing.assert_close(grad.double(), getattr(ref, name).weight.grad, **tol)
        assert torch.count_nonzero(grad[[1, 4]]) == 0 and torch.count_nonzero(grad[[0, 2, 3, 5]]) > 0


def test_stacked_experts_load_and_write_per_expert_checkpoint_keys():
    """The layout of checkpoints written with a ModuleList of Experts loads strictly, round-trips."""
    torch.manual_seed(2)
    old = nn.ModuleList(Expert(D, 4 * D) for _ in range(4))
    old_state = old.state_dict()
    experts = RoutedExperts(4, D, 4 * D)
    experts.load_state_dict(old_state)  # strict
    torch.testing.assert_close(experts.c_proj.weight[2], old[2].c_proj.weight, rtol=0, atol=0)
    state = experts.state_dict()
    assert list(state) == list(old_state)  # 0.c_fc.weight, 0.c_proj.weight, 1.c_fc.weight, ...
    for key, value in state.items():
        torch.testing.assert_close(value, old_state[key], rtol=0, atol=0)
    assert len({v.untyped_storage().data_ptr() for v in state.values()}) == len(state)  # safetensors
    layer = _layer()
    copy = _layer()
    with torch.no_grad():
        copy.experts.c_fc.weight.zero_()
    copy.load_state_dict(layer.state_dict())  # a whole SAMoE, strict
    torch.testing.assert_close(copy.experts.c_fc.weight, layer.experts.c_fc.weight, rtol=0, atol=0)
    del old_state["3.c_fc.weight"]  # an incomplete set of experts is not silently stacked
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*c_fc\.weight"):
        experts.load_state_dict(old_state)


def test_experts_without_tokens_are_skipped():
    layer = _layer()
    with torch.no_grad():  # route everything to experts 1 and 3
        layer.gate.weight.zero_()
        layer.prior_gate.weight.zero_()
        layer.prior_gate.weight[1] = 5.0
        layer.prior_gate.weight[3] = 4.0
    x = torch.randn(10, D)
    prior = torch.ones(10, P)
    res = layer(x, prior)
    res.output.sum().backward()
    grad = layer.experts.c_fc.weight.grad  # (E, H, C): an empty group adds nothing
    assert torch.count_nonzero(grad[[0, 2]]) == 0 and torch.count_nonzero(grad[1]) > 0
    torch.testing.assert_close(res.output, _naive(layer, x, prior), rtol=1e-5, atol=1e-6)


def test_topk_weights_sum_to_one_and_router_softmax_is_float32():
    layer = _layer()
    logits, probs, top_w, top_i = layer.route(torch.randn(50, D), torch.rand(50, P))
    assert probs.dtype == torch.float32 and logits.dtype == torch.float32
    torch.testing.assert_close(top_w.sum(-1), torch.ones(50))
    assert top_i.shape == (50, 2) and (top_i[:, 0] != top_i[:, 1]).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))


def test_aux_losses_positive_in_train_and_zero_in_eval():
    layer = _layer()
    x, prior = torch.randn(40, D), torch.rand(40, P)
    res = layer.train()(x, prior)
    assert res.balance_loss > 0 and res.z_loss > 0
    cfg = layer.config
    torch.testing.assert_close(
        res.aux_loss, cfg.router_aux_loss_coef * res.balance_loss + cfg.router_z_loss_coef * res.z_loss
    )
    res.aux_loss.backward()  # the aux loss trains the router
    assert layer.gate.weight.grad is not None and layer.gate.weight.grad.abs().sum() > 0
    res = layer.eval()(x, prior)
    assert res.aux_loss == 0 and res.balance_loss == 0 and res.z_loss == 0


def test_load_balancing_loss_values_and_padding_mask():
    n_exp = 4
    uniform = torch.full((8, n_exp), 1.0 / n_exp)
    spread = torch.arange(16).reshape(8, 2) % n_exp
    assert load_balancing_loss(uniform, spread, n_experts=n_exp).item() == pytest.approx(1.0)
    collapsed = torch.zeros(8, n_exp)
    collapsed[:, 0] = 1.0
    assert load_balancing_loss(collapsed, torch.zeros(8, 1, dtype=torch.long), n_experts=n_exp).item() == pytest.approx(n_exp)
    # Padded tokens (mask False) do not count: a collapsed padding half leaves the loss at 1.
    probs = torch.cat([uniform, collapsed])
    index = torch.cat([spread, torch.zeros(8, 2, dtype=torch.long)])
    mask = torch.arange(16) < 8
    assert load_balancing_loss(probs, index, n_experts=n_exp, mask=mask).item() == pytest.approx(1.0)
    logits = torch.randn(16, n_exp)
    want = torch.logsumexp(logits[:8], -1).square().mean()
    torch.testing.assert_close(router_z_loss(logits, mask=mask), want)


def test_prior_groups_make_specialisation_readable():
    cfg = MoEConfig(d_model=D, n_routed_experts=8, top_k=2, n_prior_features=len(CATEGORIES))
    layer = SAMoE(cfg)
    index = {c: i for i, c in enumerate(CATEGORIES)}
    groups = [[index[c] for c in cats] for cats in SEMANTIC_EXPERT_GROUPS.values()]
    assert sorted(i for g in groups for i in g) == list(range(len(CATEGORIES)))  # a partition
    layer.init_prior_groups(groups, scale=3.0)
    with torch.no_grad():
        layer.gate.weight.zero_()
    prior = torch.zeros(len(groups), len(CATEGORIES))
    for g, idx in enumerate(groups):
        prior[g, idx[0]] = 1.0  # a cell whose POIs are all of one category of group g
    _, _, _, top_i = layer.route(torch.randn(len(groups), D), prior)
    assert top_i[:, 0].tolist() == list(range(len(groups)))


def test_router_without_priors_ignores_prior_and_requires_none():
    layer = _layer(router_priors=False)
    assert layer.prior_gate is None
    x = torch.randn(5, D)
    torch.testing.assert_close(layer(x, None).output, layer(x, torch.rand(5, P)).output)
    with pytest.raises(ValueError, match="prior"):
        _layer()(x, None)


def test_domain_expert_starts_as_identity_and_applies_only_to_its_city():
    layer = _layer().eval()
    x, prior = torch.randn(9, D), torch.rand(9, P)
    base = layer(x, prior).output
    expert = layer.add_domain_expert("st.louis")
    assert list(layer.domain_experts) == ["city_st_louis"] and layer.add_domain_expert("st.louis") is expert
    torch.testing.assert_close(layer(x, prior, city="st.louis").output, base)  # zero-init up
    with torch.no_grad():
        expert.up.weight.normal_()
        expert.router_bias[0] = 10.0
    assert not torch.allclose(layer(x, prior, city="st.louis").output, base)
    assert (layer.route(x, prior, city="st.louis")[3] == 0).any(dim=1).all()  # city router bias
    torch.testing.assert_close(layer(x, prior, city="helsinki").output, base)  # unknown: none
    torch.testing.assert_close(layer(x, prior).output, base)


def test_dense_ffn_matches_active_parameters_and_returns_zero_aux():
    cfg = MoEConfig(d_model=D, n_routed_experts=4, top_k=2, n_prior_features=P)
    moe, dense = SAMoE(cfg), DenseFFN(cfg)
    assert dense.mlp.c_fc.out_features == 3 * 4 * D
    per_expert = sum(p[0].numel() for p in moe.experts.parameters())
    assert sum(p.numel() for p in dense.parameters()) == 3 * per_expert  # shared + top-2
    res = dense.train()(torch.randn(6, D))
    assert res.aux_loss == 0 and res.router_probs is None and res.output.shape == (6, D)
    dense.add_domain_expert("keys")  # a name that is also a ModuleDict method
    assert list(dense.domain_experts) == ["city_keys"]


def test_no_tokens_and_config_validation():
    layer = _layer().train()
    res = layer(torch.zeros(0, D), torch.zeros(0, P))
    assert res.output.shape == (0, D) and res.aux_loss == 0
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(d_model=D, n_routed_experts=2, top_k=3)
    assert MoEConfig(d_model=D).expert_hidden == 4 * D
