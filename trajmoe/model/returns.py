"""Preferential-return features: how often and how recently each candidate cell appears in the
user's own recent visits.

Human mobility is mostly exploration and preferential return (Song et al. 2010, the EPR model):
in nyc_foursquare 84% of next cells are among the user's previous 64 visits. These features are
city-invariant, so they carry over to a new city with little data. TrajMoE's output head and the
return + gravity baseline both use :func:`context_return_features`.
"""

from __future__ import annotations

import torch


def context_return_features(
    cells: torch.Tensor,
    mask: torch.Tensor,
    n_cells: int,
    *,
    window: int = 64,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Count and recency of every candidate cell in each position's recent context.

    For sequence b and query position t, the context is the real visits
    ``cells[b, max(0, t - window + 1) : t + 1]`` (visit t itself included, padding excluded).

    Parameters
    ----------
    cells
        (B, T) long: cell index of each visit (any value where ``mask`` is False).
    mask
        (B, T) bool: True where a real visit.
    n_cells
        N, the number of candidate cells (``cells`` values of real visits are in ``[0, N)``).
    window
        How many most recent visits (up to and including t) count.
    positions
        Optional (B, Q) long query positions; default: every position ``0..T-1``. Scoring only
        the last real position of each sequence (evaluation) passes (B, 1) and is much cheaper.

    Returns
    -------
    count, recency : torch.Tensor
        Both (B, Q, N) float (Q = T by default). ``count[b, q, n]`` is how many context visits are
        in cell n; ``recency[b, q, n]`` is ``1 / (1 + steps since the last such visit)`` (1 when
        visit t itself is in n) and 0 when n is not in the context.

    Notes
    -----
    Vectorised over (query, context visit) pairs: a (B, Q, T) validity mask, then one
    ``scatter_add_`` (counts) and one ``scatter_reduce_(amax)`` (recency) straight into the two
    (B, Q, N) outputs; no loop over positions, no (B, T, N) one-hot or other temporaries.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n_batch, n_steps = cells.shape
    device = cells.device
    if positions is None:
        positions = torch.arange(n_steps, device=device).expand(n_batch, n_steps)
    s = torch.arange(n_steps, device=device)  # context position
    q = positions.unsqueeze(-1)  # (B, Q, 1)
    valid = mask.unsqueeze(1) & (s <= q) & (s > q - window)  # (B, Q, T)
    index = torch.where(mask, cells, 0).unsqueeze(1).expand_as(valid)  # (B, Q, T)
    shape = (n_batch, positions.shape[1], n_cells)
    count = torch.zeros(shape, device=device).scatter_add_(2, index, valid.float())
    # 1 / (1 + steps since) grows with the context position s, so the amax over a cell's
    # occurrences is the recency of its most recent one, and 0 (the initial value) if absent.
    closeness = valid / (1.0 + (q - s)).clamp(min=1.0)  # (B, Q, T)
    recency = torch.zeros(shape, device=device).scatter_reduce_(2, index, closeness, reduce="amax")
    return count, recency


def window_returns(
    cells: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    *,
    window: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same count and recency as :func:`context_return_features`, sparse: per query position,
    only the distinct cells of its context (at most ``window`` of them, where N may be thousands).

    Parameters
    ----------
    cells, mask
        (B, T) cell index of each visit and True where a real visit.
    positions
        (B, Q) long query positions.
    window
        How many most recent visits (up to and including the query's) count.

    Returns
    -------
    cell, count, recency, first : torch.Tensor
        Each (B, Q, W) with W = min(window, T). Entries where ``first`` is True list each distinct
        context cell once (``cell``), with its ``count`` and ``recency`` (1 / (1 + steps since its
        most recent visit)); other entries are repeats or outside the context (``cell`` is then a
        valid index but must be ignored).

    Notes
    -----
    Sorting each position's window by (cell, steps back) puts a cell's visits side by side, most
    recent first: the first of each run is the cell's entry, the run length its count. That is
    O(W log W) per position instead of the dense version's O(N) writes per output tensor.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n_b, n_t = cells.shape
    n_w = min(window, n_t)
    steps = torch.arange(n_w, device=cells.device)  # j = visits back from the query
    src = positions.unsqueeze(-1) - steps  # (B, Q, W) context position of each entry
    inside = src >= 0
    src = src.clamp(min=0)
    flat = src.reshape(n_b, -1)
    inside &= mask.gather(1, flat).view_as(src)
    cell = torch.where(inside, cells.gather(1, flat).view_as(src), -1)  # -1: no visit there
    order = (cell * n_w + steps).argsort(dim=-1)  # by cell, then most recent first
    cell = cell.gather(-1, order)
    back = steps.expand_as(order).gather(-1, order)
    first = torch.ones_like(inside)
    first[..., 1:] = cell[..., 1:] != cell[..., :-1]
    run = first.long().cumsum(-1) - 1  # index of each entry's run within its row
    count = torch.zeros(cell.shape, device=cells.device).scatter_add_(-1, run, inside.gather(-1, order).float())
    count = count.gather(-1, run)
    recency = 1.0 / (1.0 + back.float())
    return cell.clamp(min=0), count, recency, first & (cell >= 0)
