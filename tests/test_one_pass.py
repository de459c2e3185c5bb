"""One causal pass per person scores every target exactly as its own last `reach` visits would.

In float64 on real check-ins (San Francisco Gowalla, ../shared/data): (a) one pass over a whole
history gives the same scores as scoring each target from only its last R visits (per-visit inputs,
such as the time-gap bucket of the first visit, computed before the cut); (b) moving the start of
the sequence further back than R changes no score.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tools.realdata import prepare_real
from trajmoe.city.segments import one_pass_segments, segment_batches
from trajmoe.train.baselines import ReturnGravity


@pytest.fixture(scope="module")
def sf(shared_data, tmp_path_factory):
    return prepare_real("sf_gowalla", tmp_path_factory.mktemp("real"))


def _double(city):
    return dataclasses.replace(city, **{f: getattr(city, f).double() for f in ("features", "xy_km", "poi_share", "log_pop")})


def _targets(data, n_users: int = 40) -> np.ndarray:
    """Test targets of the people with the longest histories (several segments each), plus short ones."""
    sizes = np.diff(np.r_[data.user_start, len(data.seq)])
    users = np.r_[np.argsort(-sizes)[:n_users], np.argsort(sizes)[:5]]
    test = data.targets("test")
    return test[np.isin(data.user_of_visit[test], users)]


def _one_pass(model, data, city, targets, *, reach, span=256) -> dict[int, torch.Tensor]:
    out = {}
    for part in segment_batches(data, targets, reach=reach, n_cells=city.n_cells, span=span):
        scores = model.score_positions(part.batch, city, part.positions)
        logits = scores.logits if hasattr(scores, "logits") else scores
        for t, row in zip(part.targets, logits[part.valid]):
            out[int(t)] = row
    return out


@pytest.mark.parametrize("attn_window, return_window", [(12, 16), (6, 40)])
def test_one_pass_equals_each_target_from_its_last_reach_visits(sf, attn_window, return_window, new_tiny):
    model, _ = new_tiny(dropout=0.0, attn_window=attn_window, return_window=return_window)
    model = model.double().eval()
    with torch.no_grad():  # a trained-looking head: every term matters
        model.head.sim_scale.fill_(3.0)
    reach = model.reach
    assert reach == max(2 * (attn_window - 1) + 1, return_window)
    city = _double(sf.city_tensors())
    targets = _targets(sf)
    assert (np.diff(np.r_[sf.user_start, len(sf.seq)])[sf.user_of_visit[targets]] > 3 * reach).any()
    together = _one_pass(model, sf, city, targets, reach=10**9, span=10**9)  # whole histories, one segment each
    # Each target alone: a sequence of only its last `reach` visits, inputs as computed before the cut.
    alone = model.score_last(sf.eval_batch(targets, max_len=reach), city)
    stacked = torch.stack([together[int(t)] for t in targets])
    assert stacked.dtype == torch.float64
    torch.testing.assert_close(stacked, alone, rtol=1e-9, atol=1e-9)
    # A context shorter than the reach changes scores: the test can fail.
    short = model.score_last(sf.eval_batch(targets, max_len=reach - 3), city)
    assert not torch.allclose(short, alone, rtol=1e-6, atol=1e-6)


def test_moving_the_start_back_beyond_the_reach_changes_no_score(sf, new_tiny):
    model, _ = new_tiny(seed=1, dropout=0.0, attn_window=10, return_window=16)
    model = model.double().eval()
    reach = model.reach
    city = _double(sf.city_tensors())
    targets = _targets(sf)
    tight = _one_pass(model, sf, city, targets, reach=reach, span=7)  # many short segments
    loose = _one_pass(model, sf, city, targets, reach=3 * reach, span=50)
    whole = _one_pass(model, sf, city, targets, reach=10**9, span=10**9)
    for t in targets:
        torch.testing.assert_close(tight[int(t)], whole[int(t)], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(loose[int(t)], whole[int(t)], rtol=1e-9, atol=1e-9)


def test_the_count_baseline_is_exact_in_one_pass_too(sf):
    model = ReturnGravity(window=16)  # its features are float32 counts and distances by design
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 2.0, -6.0, 0.5, 0.7, -1.2, 0.3, -0.4]))
    city = sf.city_tensors()
    targets = _targets(sf, n_users=10)
    together = _one_pass(model, sf, city, targets, reach=model.reach, span=9)
    alone = model.score_last(sf.eval_batch(targets, max_len=model.reach), city)
    torch.testing.assert_close(torch.stack([together[int(t)] for t in targets]), alone, rtol=1e-6, atol=1e-6)


def test_segments_cover_every_target_once_with_its_context(sf):
    targets = sf.targets("val")[::3]
    segments = one_pass_segments(sf, targets, reach=20, span=16)
    covered = np.concatenate([s.targets for s in segments])
    assert np.array_equal(np.sort(covered), np.unique(targets))
    for s in segments:
        assert (np.diff(s.visits) == 1).all() and len(np.unique(sf.user_of_visit[s.visits])) == 1
        assert np.array_equal(s.visits[s.positions] + 1, s.targets)
        first = sf.user_start[sf.user_of_visit[s.visits[0]]]
        assert (s.positions >= 19).all() or s.visits[0] == first  # reach - 1 earlier visits, or all of them
        assert s.positions.max() - s.positions.min() < 16
