"""Cell-to-cell transitions of a run's training windows: where visits to a cell went next.

Two users of one table: the Markov baseline ranks by transition counts, and TrajMoE's head and
return + gravity+ (``epr+``) read the global-transition feature, the share of moves out of the
current cell that went to each candidate. The table is sparse (CSR, one row per origin cell): a
city has N^2 cell pairs, its training windows a few thousand distinct moves.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# Shrinkage of the transition share count(c -> n) / (moves out of c + TRANSITION_PRIOR): a cell
# left once gives its one successor a share of 1/2, not 1, so a share means about the same at
# 5% and at 100% of a city's windows (one move out of a cell is no evidence of a habit).
TRANSITION_PRIOR = 1.0


class Transitions(NamedTuple):
    """CSR transition table over N cells: moves out of cell c are ``dst[ptr[c]:ptr[c+1]]``."""

    ptr: torch.Tensor  # (N + 1,) long
    dst: torch.Tensor  # (E,) long destination cell of each distinct move
    count: torch.Tensor  # (E,) float64 number of such moves

    @property
    def n_cells(self) -> int:
        return self.ptr.numel() - 1

    def shares(self) -> torch.Tensor:
        """(E,) float32 shrunk share of each move among the moves out of its origin."""
        origin = torch.repeat_interleave(torch.arange(self.n_cells), self.ptr.diff())
        out_total = torch.zeros(self.n_cells, dtype=self.count.dtype).index_add_(0, origin, self.count)
        return (self.count / (out_total[origin] + TRANSITION_PRIOR)).float()


def count_transitions(cell_idx: np.ndarray, windows: list[np.ndarray], n_cells: int) -> Transitions:
    """Moves between consecutive visits inside ``windows`` (consecutive windows share one visit,
    so no move is counted twice or lost); visits outside the candidates (cell < 0) are skipped."""
    pairs = [np.column_stack([cell_idx[w[:-1]], cell_idx[w[1:]]]) for w in windows if len(w) > 1]
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    pairs = pairs[(pairs >= 0).all(axis=1)]
    keys, counts = np.unique(pairs[:, 0] * n_cells + pairs[:, 1], return_counts=True)  # sorted by origin
    src = keys // max(n_cells, 1)
    return Transitions(ptr=torch.from_numpy(np.searchsorted(src, np.arange(n_cells + 1)).astype(np.int64)),
                       dst=torch.from_numpy((keys % max(n_cells, 1)).astype(np.int64)),
                       count=torch.from_numpy(counts.astype(np.float64)))


def csr_rows(ptr: torch.Tensor, dst: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(M,) row indices -> (M, n_cols) dense rows of the CSR matrix ``(ptr, dst, values)``."""
    start, stop = ptr[rows], ptr[rows + 1]
    lengths = stop - start
    row = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths)
    offset = torch.arange(int(lengths.sum()), device=rows.device) - torch.repeat_interleave(
        lengths.cumsum(0) - lengths, lengths)
    flat = torch.repeat_interleave(start, lengths) + offset
    out = torch.zeros(len(rows), n_cols, dtype=values.dtype, device=rows.device)
    out[row, dst[flat]] = values[flat]
    return out
