import math

import numpy as np
import torch

from trajmoe.train.metrics import metrics_from_ranks, target_ranks


def test_ties_never_help():
    scores = torch.zeros(2, 5)  # a constant scorer
    ranks = target_ranks(scores, torch.tensor([0, 3]))
    assert ranks.tolist() == [5.0, 5.0]


def test_rank_counts_higher_and_equal_others():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, torch.tensor([1])).item() == 3  # one higher, one equal other
    assert target_ranks(scores, torch.tensor([0])).item() == 1


def test_miss_is_counted_and_scores_zero():
    ranks = target_ranks(torch.randn(3, 4), torch.tensor([-1, 0, -1]))
    assert math.isinf(ranks[0]) and math.isinf(ranks[2])
    m = metrics_from_ranks(np.array([1.0, np.inf]))
    assert m["n"] == 2 and m["acc@1"] == 0.5 and m["mrr"] == 0.5 and m["ndcg@10"] == 0.5


def test_metric_values():
    m = metrics_from_ranks(np.array([1, 2, 6, 11], dtype=float))
    assert m["acc@1"] == 0.25 and m["acc@5"] == 0.5 and m["acc@10"] == 0.75
    assert np.isclose(m["mrr"], (1 + 1 / 2 + 1 / 6 + 1 / 11) / 4)
    assert np.isclose(m["ndcg@10"], (1 + 1 / np.log2(3) + 1 / np.log2(7)) / 4)


def test_nan_scores_rank_last_never_first():
    scores = torch.tensor([[float("nan")] * 4, [0.1, float("nan"), 0.3, 0.2]])
    ranks = target_ranks(scores, torch.tensor([2, 1]))
    assert ranks.tolist() == [4.0, 4.0]  # all NaN: every candidate tied last; a NaN target below every number
    assert metrics_from_ranks(ranks)["acc@1"] == 0.0
