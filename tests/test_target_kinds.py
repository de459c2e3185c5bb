"""Metrics split by target kind: a return (cell among the person's last 64 visits) or an exploration."""

import numpy as np
import pandas as pd
import pytest

from trajmoe.city.data import DEFAULT_MAX_LEN, CityData
from trajmoe.city.subset import run_subset
from trajmoe.train.baselines import Markov
from trajmoe.train.evaluate import evaluate
from trajmoe.train.metrics import metrics_by_kind, metrics_from_ranks


def _loop_is_return(data: CityData, targets: np.ndarray, window: int) -> np.ndarray:
    """The definition, one target at a time: the same user's previous ``window`` H3 cells."""
    cells = data.visits["cell"].to_numpy()
    users = data.visits["user_id"].to_numpy()
    out = []
    for t in targets:
        earlier = [j for j in range(max(0, t - window), t) if users[j] == users[t]]
        out.append(any(cells[j] == cells[t] for j in earlier))
    return np.array(out, dtype=bool)


def _hand_built() -> CityData:
    """Two users' visits (cells by H3 id; "z" is outside the candidates, cell_idx -1)."""
    data = CityData.__new__(CityData)
    data.visits = pd.DataFrame({"user_id": list("aaaaabbbb"), "cell": list("xyzxzxzyz")})
    data.user_start = np.array([0, 5])
    data.user_of_visit = np.array([0] * 5 + [1] * 4)
    return data


def test_is_return_hand_built_window_and_miss():
    data = _hand_built()
    targets = np.arange(1, 9)
    # a: x y z x z -> y new, z new, x back (3 ago), z back (2 ago); b: x z y z -> x new (a's x does not count), z new, y new, z back
    assert data.is_return(targets).tolist() == [False, False, True, True, False, False, False, True]
    assert data.is_return(targets, window=2).tolist() == [False, False, False, True, False, False, False, True]
    assert data.is_return(np.array([], dtype=np.int64)).tolist() == []


def test_is_return_matches_a_plain_loop(small_helsinki):
    data = small_helsinki
    targets = np.r_[data.targets("val"), data.targets("test")]
    for window in (DEFAULT_MAX_LEN, 3):
        expected = _loop_is_return(data, targets, window)
        assert (data.is_return(targets, window=window) == expected).all()
    assert 0 < expected.mean() < 1  # both kinds present


def test_metrics_by_kind_parts_add_up():
    ranks = np.array([1, 3, np.inf, 1, 12, 2], dtype=float)
    kinds = metrics_by_kind(ranks, np.array([True, True, False, False, True, False]))
    assert kinds["returns"] == metrics_from_ranks(ranks[[0, 1, 4]])
    assert kinds["explorations"]["n"] == 3 and kinds["explorations"]["acc@1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        metrics_by_kind(ranks, np.ones(2, dtype=bool))


def test_evaluate_reports_returns_and_explorations(small_helsinki):
    data = small_helsinki
    subset = run_subset(data, fraction=0.5, seed=0)
    m = evaluate(Markov().fit(data, subset.windows), data, split="test", subset=subset)
    back, away = m["returns"], m["explorations"]
    assert set(back) == set(away) == {"acc@1", "acc@5", "acc@10", "mrr", "ndcg@10", "n"}
    assert back["n"] + away["n"] == m["n"] == len(data.targets("test"))
    assert back["n"] == int(_loop_is_return(data, data.targets("test"), DEFAULT_MAX_LEN).sum())
    for key in ("acc@1", "mrr"):
        assert (back[key] * back["n"] + away[key] * away["n"]) / m["n"] == pytest.approx(m[key])
