"""Baselines: exact count models, the return + gravity features and fit, the GRU, run_baseline."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from tools.realdata import prepare_real
from trajmoe.city.batch import IGNORE
from trajmoe.city.data import CityData
from trajmoe.city.subset import run_subset
from trajmoe.city.transitions import TRANSITION_PRIOR
from trajmoe.errors import TrajMoEError
from trajmoe.train.baselines import (
    EPR_FEATURES,
    EPR_PLUS_FEATURES,
    Markov,
    MostPopular,
    ReturnGravity,
)
from trajmoe.train.fit import TrainConfig, fit
from trajmoe.train.gru import GRUConfig, GRUNextLocation
from trajmoe.train.metrics import KS
from trajmoe.train.runner import run_baseline

METRIC_KEYS = {f"acc@{k}" for k in KS} | {"mrr", "ndcg@10", "n", "seconds", "steps", "returns", "explorations"}


@pytest.fixture(scope="module")
def data(helsinki):
    return helsinki


def _dense_rank(values) -> np.ndarray:
    return pd.Series(np.asarray(values)).rank(method="dense").to_numpy()


def _train_counts(data: CityData, windows) -> np.ndarray:
    seen = data.train_visits(windows)
    return np.bincount(data.cell_idx[seen], minlength=data.n_cells)


def test_most_popular_ranks_cells_by_training_subset_counts(data):
    windows = run_subset(data, fraction=0.3, seed=1).windows
    city = data.city_tensors(windows)
    batch = data.eval_batch(data.targets("test")[:7])
    scores = MostPopular().score_last(batch, city)
    assert scores.shape == (7, data.n_cells)
    counts = _train_counts(data, windows)
    for row in scores.numpy():  # same order and the same ties as the raw counts
        assert np.array_equal(_dense_rank(row), _dense_rank(counts))
    assert torch.equal(MostPopular()(batch, city).logits[:, 0], scores)


def test_markov_orders_by_transition_count_then_popularity_and_backs_off(data):
    windows = run_subset(data, fraction=0.1, seed=0).windows  # few windows: many cells have no outgoing transition
    city = data.city_tensors(windows)
    model = Markov().fit(data, windows)
    transitions = Counter()
    for w in windows:
        for a, b in zip(data.cell_idx[w[:-1]], data.cell_idx[w[1:]]):
            transitions[a, b] += 1
    pop = _train_counts(data, windows)
    out_degree = Counter(a for a, _ in transitions)
    with_out = [c for c in range(data.n_cells) if out_degree[c]]
    without = [c for c in range(data.n_cells) if not out_degree[c]]
    assert with_out and without
    current = torch.tensor(with_out[:5] + without[:3])
    scores = model._scores(current, city).numpy()
    for c, row in zip(current.tolist(), scores):
        count = np.array([transitions[c, n] for n in range(data.n_cells)], dtype=np.int64)
        expected = count * (pop.max() + 1) + pop  # lexicographic (count, popularity), exact integers
        assert np.array_equal(_dense_rank(row), _dense_rank(expected))
        if not out_degree[c]:  # back-off: pure popularity
            assert np.array_equal(_dense_rank(row), _dense_rank(pop))
    # score_last uses the last real visit of each (right-padded) sequence
    batch = data.eval_batch(data.targets("val")[:6])
    last = batch.mask.sum(1) - 1
    cur = batch.cells.gather(1, last[:, None]).squeeze(1)
    assert torch.equal(model.score_last(batch, city), model._scores(cur, city))


def test_markov_needs_fit(data):
    with pytest.raises(TrajMoEError, match="not fitted"):
        Markov().transition_counts(torch.tensor([0]))


def test_return_gravity_features_match_brute_force(data):
    """epr's eight features and epr+'s two more, from a plain loop over each context."""
    windows = run_subset(data, fraction=0.5, seed=2).windows
    city = data.city_tensors(windows)
    model = ReturnGravity(window=8, plus=True)  # shorter than most contexts: the window must cut
    assert model.feature_names == EPR_PLUS_FEATURES and model.feature_names[:8] == EPR_FEATURES
    batch = data.eval_batch(data.targets("test")[::97][:12])
    last = batch.mask.sum(1) - 1
    feats = model.features(batch, city, last[:, None])[:, 0]  # (B, N, 10)
    counts = _train_counts(data, windows)
    pop = np.log1p(counts * len(counts) / counts.sum())  # relative to the mean cell
    moves = {}  # (from, to) -> count over consecutive visits of the windows
    for w in windows:
        for a, b in zip(data.cell_idx[w[:-1]], data.cell_idx[w[1:]]):
            if a >= 0 and b >= 0:
                moves[(a, b)] = moves.get((a, b), 0) + 1
    xy = city.xy_km.double().numpy()
    for b in range(batch.shape[0]):
        seq = batch.cells[b, : last[b] + 1].tolist()[-8:]
        cur = seq[-1]
        out_of_cur = sum(v for (a, _), v in moves.items() if a == cur)
        for n in range(data.n_cells):
            count = seq.count(n)
            steps_since = len(seq) - 1 - max(i for i, c in enumerate(seq) if c == n) if count else None
            km = float(np.hypot(*(xy[n] - xy[cur])))
            seen = float(count > 0)
            successor = sum(1 for i in range(1, len(seq)) if seq[i - 1] == cur and seq[i] == n)
            transition = moves.get((cur, n), 0) / (out_of_cur + TRANSITION_PRIOR)
            expected = [np.log1p(count), 0.0 if steps_since is None else 1 / (1 + steps_since), float(n == cur),
                        seen, pop[n], np.log1p(km), (1 - seen) * pop[n], (1 - seen) * np.log1p(km),
                        np.log1p(successor), transition]
            np.testing.assert_allclose(feats[b, n].numpy(), expected, rtol=1e-5, atol=1e-5,
                                       err_msg=f"row {b} cell {n}: {EPR_PLUS_FEATURES}")


def test_return_gravity_fit_improves_validation_likelihood(data):
    few = run_subset(data, fraction=0.5, seed=0)
    windows = few.windows
    city = data.city_tensors(windows)
    model = ReturnGravity()
    val = few.val_targets
    batches = [data.eval_batch(val)]
    zero = model.nll(batches, city)
    assert zero == pytest.approx(np.log(data.n_cells), rel=1e-5)  # zero weights = uniform
    result = model.fit(data, city, val)
    assert result["nll_before"] == pytest.approx(zero, rel=1e-6)
    assert model.nll(batches, city) == pytest.approx(result["nll_after"], rel=1e-5)
    assert result["nll_after"] < zero - 1.0
    # the hand-written Newton gradient led to a true optimum: autograd's gradient vanishes there
    b = batches[0]
    last = b.mask.sum(1) - 1
    truth = b.targets[torch.arange(len(last)), last]
    keep = truth >= 0
    logits = model.score_last(b, city)
    objective = torch.nn.functional.cross_entropy(logits[keep], truth[keep]) + 1e-4 * model.weight.square().sum()
    (grad,) = torch.autograd.grad(objective, model.weight)
    assert grad.abs().max() < 1e-3
    weights = dict(zip(EPR_FEATURES, model.weight.tolist()))
    assert weights["is_current"] < 0  # consecutive repeats are collapsed: never the next cell
    assert weights["log_count"] > 0  # preferential return
    # forward (all positions) agrees with score_last at the last position
    b = data.eval_batch(val[:5])
    last = b.mask.sum(1) - 1
    with torch.no_grad():
        full = model(b, city).logits
    torch.testing.assert_close(full[torch.arange(5), last], model.score_last(b, city))


def _gru(d_model=16, **kw):
    torch.manual_seed(0)
    return GRUNextLocation(GRUConfig(d_model=d_model, **kw))


def test_gru_trains(data):
    model = _gru(dropout=0.0)
    res = fit(model, [data], TrainConfig(max_steps=30, epochs=5, batch_size=16, lr=1e-2, fraction=0.3))
    assert res.steps == 30
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5]) - 0.3


def test_gru_is_padding_invariant_and_causal(data):
    model = _gru().eval()
    windows = run_subset(data, fraction=0.2, seed=0).windows
    short = next(w for w in windows if 5 <= len(w) < 40)
    long = max(windows, key=len)
    city = data.city_tensors(windows)
    alone = data.window_batch([short])
    padded = data.window_batch([short, long])
    assert padded.shape[1] > alone.shape[1]
    with torch.no_grad():
        a = model(alone, city).logits[0]
        p = model(padded, city).logits[0, : len(short)]
        torch.testing.assert_close(a, p, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.score_last(padded, city)[0], a[-1], rtol=1e-5, atol=1e-5)
        # changing visit 3 leaves the scores at positions 0..2 unchanged
        changed = data.window_batch([short])
        changed.cells[0, 3] = (changed.cells[0, 3] + 1) % data.n_cells
        c = model(changed, city).logits[0]
        torch.testing.assert_close(c[:3], a[:3])
        assert not torch.allclose(c[3], a[3])


def test_gru_rejects_foreign_feature_width(data):
    model = _gru(feature_dim=7)
    with pytest.raises(TrajMoEError, match="cell features"):
        model(data.window_batch(data.all_train_windows()[:1]), data.city_tensors())


@pytest.mark.parametrize("name", ["popular", "markov", "epr", "gru", "transformer"])
def test_run_baseline_returns_test_metrics(data, name):
    cfg = TrainConfig(max_steps=2, batch_size=8, eval_batch_size=512)
    m = run_baseline(name, data, fraction=0.05, seed=3, train_config=cfg)
    assert set(m) == METRIC_KEYS
    assert m["n"] == len(data.targets("test"))
    assert 0 <= m["acc@1"] <= m["acc@5"] <= m["acc@10"] <= 1
    assert m["steps"] == {"popular": 0, "markov": 0, "gru": 2, "transformer": 2}.get(name, m["steps"])
    assert m["steps"] > 0 or name in ("popular", "markov")  # epr: passes over the validation targets


def test_run_baseline_unknown_name(data):
    with pytest.raises(TrajMoEError, match="Unknown baseline"):
        run_baseline("lstm", data)


def test_baseline_loss_ignores_padding_and_misses(data):
    batch = data.window_batch(data.all_train_windows()[:3])
    batch.targets[0, 0] = -1  # MISS is never trainable
    city = data.city_tensors()
    out = MostPopular()(batch, city, targets=True)
    keep = batch.targets >= 0
    expected = torch.nn.functional.cross_entropy(out.logits[keep], batch.targets[keep])
    torch.testing.assert_close(out.loss, expected)
    assert (batch.targets == IGNORE).any()


@pytest.mark.slow
def test_real_nyc_foursquare_epr_beats_markov_beats_popular(shared_data, tmp_path_factory):
    nyc = prepare_real("nyc_foursquare", tmp_path_factory.mktemp("real"))
    acc = {name: run_baseline(name, nyc)["acc@1"] for name in ("popular", "markov", "epr")}
    assert acc["epr"] > acc["markov"] + 0.1 > acc["popular"] + 0.1, acc


def test_return_gravity_fits_real_taxi_trips_with_collinear_features(shared_data, tmp_path_factory):
    """Mexico City taxi trips: the context is one origin, so recency = is_current = seen and the Newton
    Hessian is near-singular; the full Newton step is huge. The fit used to give up at zero weights
    (Acc@1 0: every candidate tied) after 5 halvings; it must backtrack further and fit."""
    trips = prepare_real("mexico_city_taxi_trips", tmp_path_factory.mktemp("real"))
    acc = {name: run_baseline(name, trips)["acc@1"] for name in ("popular", "epr")}
    assert acc["epr"] > acc["popular"] + 0.05, acc
