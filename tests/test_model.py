"""TrajMoE model: causality, padding invariance, return features, overfitting, ablations, round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from trajmoe.city.batch import IGNORE, MISS, N_DIST_BUCKETS, N_GAP_BUCKETS, Batch, CityTensors
from trajmoe.city.features import FEATURE_DIM, FEATURE_WIDTHS
from trajmoe.city.transitions import count_transitions
from trajmoe.errors import PreparedDataError, TrajMoEError
from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.moe import domain_key
from trajmoe.model.returns import context_return_features, context_successor_counts
from trajmoe.model.trajmoe import TrajMoE
from trajmoe.pois.categories import CATEGORIES
from trajmoe.train.models import trainable_parameters

TINY = dict(d_model=32, n_layers=2, n_heads=4, max_len=16, dropout=0.0, encoder_group_dim=8,
            n_routed_experts=4, top_k=2)


def _city(n: int = 30, *, name: str = "testville", seed: int = 0) -> CityTensors:
    """A random city whose feature matrix follows the feature groups (mask group all ones)."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for group, width in FEATURE_WIDTHS.items():
        parts.append(torch.ones(n, width) if group == "mask" else torch.rand(n, width, generator=g))
    share = torch.rand(n, len(CATEGORIES), generator=g)
    return CityTensors(name=name, features=torch.cat(parts, dim=1),
                       xy_km=torch.randn(n, 2, generator=g) * 5,
                       poi_share=share / share.sum(1, keepdim=True),
                       log_pop=torch.rand(n, generator=g) * 3)


def _batch(b: int = 3, t: int = 10, n: int = 30, *, lengths: list[int] | None = None, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [t] * b
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    cells = torch.randint(0, n, (b, t), generator=g)
    targets = torch.where(mask, torch.roll(cells, -1, dims=1), IGNORE)
    targets[torch.arange(b), torch.tensor(lengths) - 1] = IGNORE
    return Batch(cells=cells.masked_fill(~mask, 0),
                 hour=torch.randint(0, 24, (b, t), generator=g),
                 weekday=torch.randint(0, 8, (b, t), generator=g),
                 gap_bucket=torch.randint(0, N_GAP_BUCKETS, (b, t), generator=g),
                 dist_bucket=torch.randint(0, N_DIST_BUCKETS, (b, t), generator=g),
                 mask=mask, targets=targets,
                 next_hour=torch.randint(0, 24, (b, t), generator=g),
                 next_weekday=torch.randint(0, 8, (b, t), generator=g),
                 next_gap_bucket=torch.randint(0, N_GAP_BUCKETS, (b, t), generator=g))


def _model(**kw) -> TrajMoE:
    torch.manual_seed(0)
    return TrajMoE(TrajMoEConfig(**{**TINY, **kw}))


def test_return_features_match_a_brute_force_loop():
    g = torch.Generator().manual_seed(3)
    b, t, n, window = 4, 13, 7, 5
    cells = torch.randint(0, n, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) > 0.2
    count, recency = context_return_features(cells, mask, n, window=window)
    assert count.shape == recency.shape == (b, t, n)
    for i in range(b):
        for q in range(t):
            want_c, want_r = torch.zeros(n), torch.zeros(n)
            for s in range(max(0, q - window + 1), q + 1):
                if mask[i, s]:
                    want_c[cells[i, s]] += 1
                    want_r[cells[i, s]] = 1.0 / (1 + q - s)  # later s overwrite: most recent
            torch.testing.assert_close(count[i, q], want_c)
            torch.testing.assert_close(recency[i, q], want_r)
    positions = torch.tensor([[12, 3], [0, 7], [5, 5], [11, 1]])
    c2, r2 = context_return_features(cells, mask, n, window=window, positions=positions)
    torch.testing.assert_close(c2, count.gather(1, positions.unsqueeze(-1).expand(-1, -1, n)))
    torch.testing.assert_close(r2, recency.gather(1, positions.unsqueeze(-1).expand(-1, -1, n)))


def test_causal_future_visits_do_not_change_past_scores():
    model, city = _model().eval(), _city()
    batch = _batch()
    before = model(batch, city).logits
    future = dataclasses.replace(batch, cells=batch.cells.clone(), hour=batch.hour.clone())
    future.cells[:, 6:] = (future.cells[:, 6:] + 5) % city.n_cells
    future.hour[:, 6:] = (future.hour[:, 6:] + 3) % 24
    after = model(future, city).logits
    torch.testing.assert_close(after[:, :6], before[:, :6])
    assert not torch.allclose(after[:, 6:], before[:, 6:])


def test_padding_does_not_change_real_positions_and_empty_rows_are_finite():
    model, city = _model().eval(), _city()
    batch = _batch(lengths=[10, 6, 3])
    out = model(batch, city)
    g = torch.Generator().manual_seed(9)
    extra = 5  # more padding with garbage in the padded slots
    pad = dict(cells=torch.randint(0, 30, (3, extra), generator=g),
               hour=torch.randint(0, 24, (3, extra), generator=g),
               weekday=torch.zeros(3, extra, dtype=torch.long),
               gap_bucket=torch.zeros(3, extra, dtype=torch.long),
               dist_bucket=torch.zeros(3, extra, dtype=torch.long),
               mask=torch.zeros(3, extra, dtype=torch.bool),
               targets=torch.full((3, extra), IGNORE))
    longer = Batch(**{k: torch.cat([getattr(batch, k), v], dim=1) for k, v in pad.items()})
    # Garbage inside the existing padding too.
    longer.cells[2, 3:10] = 7
    out_long = model(longer, city)
    for i, length in enumerate([10, 6, 3]):
        torch.testing.assert_close(out_long.logits[i, :length], out.logits[i, :length])
        torch.testing.assert_close(out_long.router_probs[0][i, :length], out.router_probs[0][i, :length])
    torch.testing.assert_close(out_long.loss, out.loss)
    assert (out_long.router_probs[0][~longer.mask] == 0).all()
    empty = _batch(lengths=[4, 1, 1])
    empty.mask[1:] = False
    empty.targets[1:] = IGNORE
    res = model.train()(empty, city)
    assert torch.isfinite(res.logits).all() and torch.isfinite(res.loss)


def test_score_last_equals_forward_at_the_last_real_position():
    model, city = _model().eval(), _city()
    batch = _batch(lengths=[10, 4, 7])
    full = model(batch, city, targets=False)
    assert full.loss is None
    last = model.score_last(batch, city)
    torch.testing.assert_close(last, full.logits[torch.arange(3), torch.tensor([9, 3, 6])])


def test_loss_ignores_padding_and_misses_and_aux_only_in_training():
    model, city = _model(), _city()
    batch = _batch()
    batch.targets[0, :4] = MISS
    model.eval()
    out = model(batch, city)
    assert out.aux_loss == 0
    valid = batch.targets >= 0
    want = torch.nn.functional.cross_entropy(out.logits[valid], batch.targets[valid])
    torch.testing.assert_close(out.loss, want)
    out = model.train()(batch, city)
    assert out.aux_loss > 0 and len(out.router_probs) == 2
    assert out.router_probs[0].shape == (3, 10, 4) and out.hidden.shape == (3, 10, 32)


def test_tiny_model_overfits_a_tiny_synthetic_dataset():
    """Next cell = a fixed permutation of the current cell: learnable only through the encoder."""
    n = 24
    city = _city(n)
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(n, generator=g)
    start = torch.randint(0, n, (16,), generator=g)
    seq = [start]
    for _ in range(11):
        seq.append(perm[seq[-1]])
    cells = torch.stack(seq, dim=1)  # (16, 12)
    batch = _batch(16, 12, n)
    batch = dataclasses.replace(batch, cells=cells, mask=torch.ones(16, 12, dtype=torch.bool),
                                targets=torch.cat([cells[:, 1:], torch.full((16, 1), IGNORE)], 1))
    model = _model()
    # as the model's param_groups say: the head's scales are set only by calibration, not by gradient steps
    opt = torch.optim.AdamW([p for p in model.parameters() if all(p is not s for s in model.head.scales)], lr=3e-3)
    model.train()
    first = None
    for _ in range(400):  # the learned return scorer adds parameters: 250 steps reach 0.89
        loss = model(batch, city).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model(batch, city)
    valid = batch.targets >= 0
    acc = (out.logits.argmax(-1)[valid] == batch.targets[valid]).float().mean().item()
    assert out.loss.item() < 0.1 * first and acc > 0.95, (first, out.loss.item(), acc)


@pytest.mark.parametrize("flags", [
    dict(moe=False), dict(router_priors=False), dict(shared_expert=False),
    dict(use_poi_features=False), dict(return_terms=False), dict(distance_term=False),
    dict(moe=False, return_terms=False, distance_term=False, use_poi_features=False),
])
def test_ablation_flags_construct_train_and_score(flags):
    model, city = _model(**flags).train(), _city()
    out = model(_batch(lengths=[10, 5, 2]), city)
    assert out.logits.shape == (3, 10, 30) and torch.isfinite(out.logits).all()
    out.loss.backward()
    if not flags.get("moe", True):
        assert out.router_probs == () and out.aux_loss == 0
    if flags.get("use_poi_features") is False:
        assert "poi_share" not in model.encoder.group_proj
    assert model.num_parameters(active=True) <= model.num_parameters()


def test_state_dict_and_config_round_trip_give_identical_scores():
    model, city = _model().eval(), _city()
    model.add_domain_expert("testville")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = _batch()
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))
    clone = TrajMoE(TrajMoEConfig(**config)).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    assert clone.config == model.config
    torch.testing.assert_close(clone(batch, city).logits, model(batch, city).logits, rtol=0, atol=0)


def test_add_domain_expert_changes_only_its_city_and_feeds_light_mode():
    model, batch = _model().eval(), _batch()
    home, other = _city(name="helsinki"), _city(name="espoo")
    before = model(batch, home).logits
    model.add_domain_expert("helsinki")
    model.add_domain_expert("helsinki")  # idempotent
    assert model.config.domain_experts == ("helsinki",) and model.domain_expert_names() == ["helsinki"]
    torch.testing.assert_close(model(batch, home).logits, before)  # starts as identity
    with torch.no_grad():
        for block in model.blocks:
            block.ffn.domain_experts[domain_key("helsinki")].up.weight.normal_()
    assert not torch.allclose(model(batch, home).logits, before)
    plain = TrajMoE(TrajMoEConfig(**TINY)).eval()  # same weights, no domain expert
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "domain" not in k})
    torch.testing.assert_close(plain(batch, other).logits, model(batch, other).logits)
    # Light fine-tuning (trajmoe/train/fit.py) selects parameters by name: domain experts, routers, head.
    light = {id(p) for p in trainable_parameters(model, "light")}
    names = {n for n, p in model.named_parameters() if id(p) in light}
    assert any(".domain_experts." in n for n in names) and "head.prior" in names
    assert "blocks.0.ffn.gate.weight" in names and "blocks.0.ffn.prior_gate.weight" in names
    assert not any(n.startswith(("encoder.", "blocks.0.attn", "blocks.0.ffn.experts")) for n in names)


def test_config_validation_and_feature_schema_errors():
    assert sum(TrajMoEConfig().feature_groups.values()) == FEATURE_DIM
    with pytest.raises(TrajMoEError, match="n_heads"):
        TrajMoEConfig(d_model=30, n_heads=4)
    with pytest.raises(TrajMoEError, match="top_k"):
        TrajMoEConfig(n_routed_experts=2, top_k=3)
    model = _model()
    city = _city()
    bad = dataclasses.replace(city, features=city.features[:, :-2])
    with pytest.raises(PreparedDataError, match="features"):
        model(_batch(), bad)
    # Relative positions: a sequence longer than the training windows is scored, not refused.
    assert torch.isfinite(model(_batch(t=20), city).logits).all()
    with pytest.raises(TrajMoEError, match="attn_window"):
        TrajMoEConfig(attn_window=0)
    with pytest.raises(TrajMoEError, match="rotary"):
        TrajMoEConfig(d_model=12, n_heads=4)


def test_missing_poi_mask_zeroes_poi_groups():
    model = _model().eval()
    city = _city()
    no_poi = city.features.clone()
    no_poi[:, -3] = 0.0  # has_poi = 0 in the mask group
    other = no_poi.clone()
    sl = slice(0, FEATURE_WIDTHS["poi_share"])
    other[:, sl] = torch.rand_like(other[:, sl])  # POI values are ignored when masked
    torch.testing.assert_close(model.encoder(no_poi), model.encoder(other))
    assert not torch.allclose(model.encoder(city.features), model.encoder(no_poi))


def test_head_terms_are_added_in_place_with_exact_weight_gradients():
    from trajmoe.model.head import _AddWeightedTerms

    g = torch.Generator().manual_seed(4)
    terms = (torch.rand(2, 3, 5, generator=g, dtype=torch.double),
             torch.rand(5, generator=g, dtype=torch.double))  # (B, Q, N) and per-candidate (N,)
    logits = torch.randn(2, 3, 5, generator=g, dtype=torch.double, requires_grad=True)
    weights = torch.randn(2, generator=g, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda lg, w: _AddWeightedTerms.apply(lg.clone(), w, *terms), (logits, weights)
    )
    out = _AddWeightedTerms.apply(logits.clone(), weights, *terms)
    torch.testing.assert_close(out, logits + weights[0] * terms[0] + weights[1] * terms[1])


def test_head_prior_weights_are_one_row_per_kind_of_data():
    from trajmoe.city.batch import TASKS
    from trajmoe.model.head import PRIOR_TERMS
    from trajmoe.trajectories.kinds import KINDS

    model = _model().eval()
    assert tuple(model.head.prior.shape) == (len(TASKS) * len(KINDS), len(PRIOR_TERMS))
    checkins, trips = _city(), dataclasses.replace(_city(), kind="trips")
    batch = _batch()
    before = model(batch, checkins).logits.clone()
    with torch.no_grad():  # trips may stay put: a trips-only weight must not touch check-in scores
        model.head.prior[model.head.prior_row("trips", "next"), PRIOR_TERMS.index("is_current")] = 5.0
    torch.testing.assert_close(model(batch, checkins).logits, before)
    assert not torch.allclose(model(batch, trips).logits, before)
    # a check-in city's loss moves only the check-in row of the task trained
    for task in TASKS:
        model.train()
        model.zero_grad()
        model(batch, checkins, task=task).loss.backward()
        grad = model.head.prior.grad
        row = model.head.prior_row("checkins", task)
        assert grad[row].abs().sum() > 0
        assert torch.all(grad[[i for i in range(len(grad)) if i != row]] == 0)
    with pytest.raises(TrajMoEError, match="unknown kind"):
        model(batch, dataclasses.replace(_city(), kind="teleport"))


def _dense_head(head, h, positions, batch, city, cell_emb, task):
    """The head's score formula written densely (every term a (B, Q, N) tensor), as a reference."""
    import math

    import torch.nn.functional as F

    from trajmoe.city.batch import TASKS
    from trajmoe.model.returns import context_time_counts

    w = head.prior_weights(city.kind, task)
    cfg = head.config
    ti = TASKS.index(task)
    logits = (head.query(h) * (head.sim_scale[ti] / math.sqrt(h.shape[-1]))) @ head.cell_out(cell_emb).T
    current = batch.cells.gather(1, positions)
    n = city.n_cells
    log_km = torch.cdist(city.xy_km[current].reshape(-1, 2), city.xy_km,
                         compute_mode="donot_use_mm_for_euclid_dist").view(*current.shape, n).log1p()
    count, recency = context_return_features(batch.cells, batch.mask, n, window=cfg.return_window, positions=positions)
    succ = context_successor_counts(batch.cells, batch.mask, n, window=cfg.return_window, positions=positions)
    seen = (count > 0).to(h.dtype)
    trans = city.transition_rows(current.reshape(-1)).view(*current.shape, n)
    # the learned return scorer, per candidate: (U h) . (key(cell) + relation embeddings), context cells only
    q = head.return_query(h) * (head.return_scale[ti] / math.sqrt(h.shape[-1]))
    back = torch.where(recency > 0, 1.0 / recency.clamp(min=1e-9) - 1.0, 0.0).round()
    rel = (head.count_emb(torch.bucketize(count, head.count_edges))
           + head.back_emb(torch.bucketize(back, head.back_edges))
           + head.successor_emb(torch.bucketize(succ, head.successor_edges)))  # (B, Q, N, C)
    at_time = 0.0
    if task == "at-time":  # the time-matched count and the hour share
        timed = context_time_counts(batch.cells, batch.mask, batch.hour, batch.weekday, batch.next_hour,
                                    batch.next_weekday, n, window=cfg.return_window, positions=positions)
        rel = rel + head.time_count_emb(torch.bucketize(timed, head.time_count_edges))
        at_time = (seen * w["log_time_count"] * timed.log1p()
                   + w["hour_share"] * city.hour_share[batch.next_hour.gather(1, positions)]
                   + head.gap_decay(h) * head.sim_scale[ti] * log_km)
        # visits per time band of every candidate, densely: band b of a context visit, scattered by cell
        from trajmoe.model.returns import N_TIME_BANDS, time_band

        steps = torch.arange(batch.shape[1])
        q_pos = positions.unsqueeze(-1)  # (B, Q, 1)
        inside = batch.mask.unsqueeze(1) & (steps <= q_pos) & (steps > q_pos - cfg.return_window)  # (B, Q, T)
        band = time_band(batch.hour.unsqueeze(1), batch.weekday.unsqueeze(1),
                         batch.next_hour.gather(1, positions).unsqueeze(-1),
                         batch.next_weekday.gather(1, positions).unsqueeze(-1))  # (B, Q, T)
        bands = torch.zeros(*positions.shape, n, N_TIME_BANDS)
        for b in range(N_TIME_BANDS):
            bands[..., b] = torch.zeros(*positions.shape, n).scatter_add_(
                2, batch.cells.unsqueeze(1).expand_as(band), (inside & (band == b)).float())
        feats = torch.cat([bands.log1p(), log_km.unsqueeze(-1)], dim=-1)  # (B, Q, N, bands + 1)
        band_score = (feats * (head.band_query(h) * head.return_scale[ti]).unsqueeze(2)).sum(-1)
        at_time = at_time + seen * band_score
    learned = ((q.unsqueeze(2) * (head.return_key(cell_emb) + rel)).sum(-1))
    return (logits + w["log_pop"] * city.log_pop - F.softplus(w["distance_decay"]) * log_km
            + w["log_count"] * count.log1p() + w["recency"] * recency + w["seen"] * seen
            + (1 - seen) * (w["explore_log_pop"] * city.log_pop - w["explore_log_km"] * log_km)
            + w["is_current"] * F.one_hot(current, n)
            + seen * (w["log_successor"] * succ.log1p() + learned) + w["transition"] * trans + at_time)


@pytest.mark.parametrize("task", ["next", "at-time"])
@pytest.mark.parametrize("window", [1, 3, 8, 64])
def test_sparse_return_terms_equal_the_dense_formula_with_their_gradients(window, task):
    from trajmoe.city.features import hour_log_share

    model = _model(return_window=window, time_relations=True)
    with torch.no_grad():  # the learned time relations start at zero: give them values
        for layer in (model.head.band_query, model.head.gap_decay):
            layer.weight.normal_(generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # every prior term non-zero
        model.head.prior.copy_(torch.randn(model.head.prior.shape, generator=torch.Generator().manual_seed(3)))
    city, batch = _city(), _batch(b=4, t=12, lengths=[12, 7, 1, 10])
    batch.cells[:, 3:6] = batch.cells[:, :3]  # repeats inside the window: personal successors
    moves = count_transitions(batch.cells.reshape(-1).numpy(), [np.arange(48)], city.n_cells)
    shares = torch.from_numpy(hour_log_share(batch.cells.reshape(-1).numpy(), batch.hour.reshape(-1).numpy(), city.n_cells))
    city = dataclasses.replace(city, trans_ptr=moves.ptr, trans_dst=moves.dst, trans_share=moves.shares(),
                               hour_share=shares)
    positions = torch.tensor([[11, 4, 0], [6, 2, 5], [0, 0, 0], [9, 3, 8]])
    cell_emb = model.encoder(city.features)
    h = torch.randn(4, 3, 32, generator=torch.Generator().manual_seed(4))
    got = model.head(h, positions, batch=batch, city=city, cell_emb=cell_emb, task=task)
    want = _dense_head(model.head, h, positions, batch, city, cell_emb, task)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    learned = [model.head.prior, model.head.return_scale, model.head.return_query.weight, model.head.back_emb.weight]
    if task == "at-time":
        learned += [model.head.time_count_emb.weight, model.head.band_query.weight, model.head.gap_decay.weight]
    g_got = torch.autograd.grad(got.square().sum(), learned)
    g_want = torch.autograd.grad(_dense_head(model.head, h, positions, batch, city, cell_emb, task).square().sum(), learned)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_city_distance_table_gives_the_same_scores_as_distances_per_position():
    from trajmoe.city.batch import log_km_table

    model = _model().eval()
    city, batch = _city(), _batch(b=4, t=12, lengths=[12, 7, 1, 10])
    table = dataclasses.replace(city, log_km=log_km_table(city.xy_km))
    assert table.log_km.shape == (city.n_cells, city.n_cells) and (table.log_km.diagonal() == 0).all()
    positions = torch.tensor([[11, 4], [6, 2], [0, 0], [9, 3]])
    torch.testing.assert_close(model.score_positions(batch, table, positions).logits,
                               model.score_positions(batch, city, positions).logits, rtol=1e-6, atol=1e-6)
