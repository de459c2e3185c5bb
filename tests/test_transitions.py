"""The transition table (trajmoe/city/transitions.py) and cross-fitting (RunSubset.cross_fit)."""

from __future__ import annotations

import numpy as np
import torch

from trajmoe.city.subset import run_subset
from trajmoe.city.transitions import TRANSITION_PRIOR, count_transitions, csr_rows


def test_counts_and_shares_match_a_plain_loop():
    cells = np.array([0, 1, 0, 2, 0, 1, -1, 1, 3])
    moves = count_transitions(cells, [np.arange(5), np.arange(4, 9)], 4)  # windows share visit 4
    dense = csr_rows(moves.ptr, moves.dst, moves.count, torch.arange(4), 4).numpy()
    expected = np.zeros((4, 4))
    for a, b in zip(cells[:-1], cells[1:]):  # each move once, the shared visit not twice, -1 skipped
        if a >= 0 and b >= 0:
            expected[a, b] += 1
    np.testing.assert_array_equal(dense, expected)
    shares = csr_rows(moves.ptr, moves.dst, moves.shares(), torch.arange(4), 4).numpy()
    np.testing.assert_allclose(shares, expected / (expected.sum(1, keepdims=True) + TRANSITION_PRIOR), rtol=1e-6)


def test_city_tensors_carry_the_windows_transitions(helsinki):
    subset = run_subset(helsinki, fraction=0.3, seed=1)
    city = subset.city
    moves = count_transitions(helsinki.cell_idx, subset.windows, helsinki.n_cells)
    current = torch.arange(helsinki.n_cells)
    np.testing.assert_allclose(city.transition_rows(current).numpy(),
                               csr_rows(moves.ptr, moves.dst, moves.shares(), current, helsinki.n_cells).numpy())


def test_cross_fit_trains_each_person_fold_against_the_other_folds_counts(helsinki):
    subset = run_subset(helsinki, fraction=0.5, seed=4)
    folds = subset.cross_fit()
    assert len(folds) == 2
    people = [{int(helsinki.user_of_visit[w[0]]) for w in windows} for windows, _ in folds]
    assert people[0] and people[1] and not people[0] & people[1]  # split by person
    assert sorted(map(tuple, folds[0][0] + folds[1][0])) == sorted(map(tuple, subset.windows))  # nothing lost
    for k, (windows, city) in enumerate(folds):
        other = folds[1 - k][0]
        want = helsinki.city_tensors(other)
        torch.testing.assert_close(city.features, want.features)
        torch.testing.assert_close(city.log_pop, want.log_pop)
        # none of this fold's moves is counted in the table it trains against, unless the other fold made it too
        mine = count_transitions(helsinki.cell_idx, windows, helsinki.n_cells)
        theirs = count_transitions(helsinki.cell_idx, other, helsinki.n_cells)
        rows = torch.arange(helsinki.n_cells)
        shown = city.transition_rows(rows) > 0
        assert torch.equal(shown, csr_rows(theirs.ptr, theirs.dst, theirs.count, rows, helsinki.n_cells) > 0)
        assert mine.count.sum() > 0
    again = run_subset(helsinki, fraction=0.5, seed=4).cross_fit()  # seeded
    assert [list(map(tuple, w)) for w, _ in again] == [list(map(tuple, w)) for w, _ in folds]
