"""Preferential-return features: how often and how recently each candidate cell appears in the
user's own recent visits.

Human mobility is mostly exploration and preferential return (Song et al. 2010, the EPR model):
in nyc_foursquare 84% of next cells are among the user's previous 64 visits. These features are
city-invariant, so they carry over to a new city with little data. TrajMoE's output head and the
return + gravity baseline both use :func:`context_return_features`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from trajmoe.city.batch import UNKNOWN_WEEKDAY


def _query_grid(cells: torch.Tensor, positions: torch.Tensor | None, window: int):
    """The (query, context visit) grid of the dense functions: ``positions`` (B, Q) (default every
    position), context positions ``s`` (T,) and query positions ``q`` (B, Q, 1)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n_batch, n_steps = cells.shape
    if positions is None:
        positions = torch.arange(n_steps, device=cells.device).expand(n_batch, n_steps)
    return positions, torch.arange(n_steps, device=cells.device), positions.unsqueeze(-1)


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
    positions, s, q = _query_grid(cells, positions, window)
    valid = mask.unsqueeze(1) & (s <= q) & (s > q - window)  # (B, Q, T)
    index = torch.where(mask, cells, 0).unsqueeze(1).expand_as(valid)  # (B, Q, T)
    shape = (cells.shape[0], positions.shape[1], n_cells)
    count = torch.zeros(shape, device=cells.device).scatter_add_(2, index, valid.float())
    # 1 / (1 + steps since) grows with the context position s, so the amax over a cell's
    # occurrences is the recency of its most recent one, and 0 (the initial value) if absent.
    closeness = valid / (1.0 + (q - s)).clamp(min=1.0)  # (B, Q, T)
    recency = torch.zeros(shape, device=cells.device).scatter_reduce_(2, index, closeness, reduce="amax")
    return count, recency


def context_successor_counts(
    cells: torch.Tensor,
    mask: torch.Tensor,
    n_cells: int,
    *,
    window: int = 64,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Personal successors: how often the user went from the current cell to each candidate.

    For query position t with current cell c = ``cells[b, t]``, ``out[b, q, n]`` counts the pairs
    of consecutive context visits (s - 1, s), both among the last ``window`` visits up to t, with
    ``cells[s - 1] == c`` and ``cells[s] == n`` ("where did this person go after c before").

    Returns
    -------
    (B, Q, N) float (Q = T by default), the same shapes and context as
    :func:`context_return_features`.
    """
    positions, s, q = _query_grid(cells, positions, window)
    n_batch = cells.shape[0]
    current = cells.gather(1, positions).unsqueeze(-1)  # (B, Q, 1)
    prev_cell = torch.cat([cells.new_full((n_batch, 1), -1), cells[:, :-1]], dim=1)  # cell at s - 1
    prev_mask = torch.cat([mask.new_zeros((n_batch, 1)), mask[:, :-1]], dim=1)
    both = (mask & prev_mask).unsqueeze(1)  # (B, 1, T)
    valid = both & (s <= q) & (s - 1 > q - window) & (prev_cell.unsqueeze(1) == current)  # (B, Q, T)
    index = torch.where(mask, cells, 0).unsqueeze(1).expand_as(valid)
    shape = (n_batch, positions.shape[1], n_cells)
    return torch.zeros(shape, device=cells.device).scatter_add_(2, index, valid.float())


TIME_BAND_H = 2  # at-time: a context visit "matches" the target time within +-2 h, same weekday type


def time_matches(hour: torch.Tensor, weekday: torch.Tensor, target_hour: torch.Tensor,
                 target_weekday: torch.Tensor) -> torch.Tensor:
    """True where a visit's hour is within :data:`TIME_BAND_H` of the target's (on the 24-h clock)
    and both fall on weekdays or both on weekends; the weekday type is ignored where either is
    unknown (``UNKNOWN_WEEKDAY``: datasets whose weekday is unreliable use the hour only).
    Arguments broadcast against each other."""
    diff = (hour - target_hour).abs()
    near = torch.minimum(diff, 24 - diff) <= TIME_BAND_H
    unknown = (weekday >= UNKNOWN_WEEKDAY) | (target_weekday >= UNKNOWN_WEEKDAY)
    return near & (unknown | ((weekday >= 5) == (target_weekday >= 5)))


# Hour-difference bands of the learned at-time relations (head.py): a context visit 0, 1, 2, 3-4,
# 5-8 or 9-12 hours from the target's hour of day (upper edges), on the same weekday type or not.
HOUR_BAND_EDGES = (0, 1, 2, 4, 8, 12)
N_TIME_BANDS = 2 * len(HOUR_BAND_EDGES)


def time_band(hour: torch.Tensor, weekday: torch.Tensor, target_hour: torch.Tensor,
              target_weekday: torch.Tensor) -> torch.Tensor:
    """Band index 0..N_TIME_BANDS-1 of each visit relative to the target time: its hour-of-day
    distance band (:data:`HOUR_BAND_EDGES`), + len(edges) when the weekday type differs (an
    unknown weekday counts as the same type). Arguments broadcast against each other."""
    diff = (hour - target_hour).abs()
    diff = torch.minimum(diff, 24 - diff)
    edges = torch.tensor(HOUR_BAND_EDGES, device=hour.device)
    unknown = (weekday >= UNKNOWN_WEEKDAY) | (target_weekday >= UNKNOWN_WEEKDAY)
    other = ~unknown & ((weekday >= 5) != (target_weekday >= 5))
    return torch.bucketize(diff, edges) + other.long() * len(HOUR_BAND_EDGES)


def context_time_counts(
    cells: torch.Tensor,
    mask: torch.Tensor,
    hour: torch.Tensor,
    weekday: torch.Tensor,
    target_hour: torch.Tensor,
    target_weekday: torch.Tensor,
    n_cells: int,
    *,
    window: int = 64,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """At-time returns: how often the user was in each candidate at about the target's time.

    ``out[b, q, n]`` counts the context visits (the same context as
    :func:`context_return_features`) in cell n whose time matches the time of the visit after
    query position t (``target_hour`` / ``target_weekday`` at t; :func:`time_matches`).

    Returns
    -------
    (B, Q, N) float.
    """
    positions, s, q = _query_grid(cells, positions, window)
    t_hour = target_hour.gather(1, positions).unsqueeze(-1)  # (B, Q, 1)
    t_day = target_weekday.gather(1, positions).unsqueeze(-1)
    match = time_matches(hour.unsqueeze(1), weekday.unsqueeze(1), t_hour, t_day)  # (B, Q, T)
    valid = mask.unsqueeze(1) & (s <= q) & (s > q - window) & match
    index = torch.where(mask, cells, 0).unsqueeze(1).expand_as(valid)
    shape = (cells.shape[0], positions.shape[1], n_cells)
    return torch.zeros(shape, device=cells.device).scatter_add_(2, index, valid.float())


class ContextCells(NamedTuple):
    """The distinct cells of each query position's recent context (:func:`window_returns`)."""

    cell: torch.Tensor  # (B, Q, W) long: a cell index (valid only where ``first``)
    count: torch.Tensor  # (B, Q, W) float: visits to it in the context
    recency: torch.Tensor  # (B, Q, W) float: 1 / (1 + steps since its most recent visit)
    successor: torch.Tensor  # (B, Q, W) float: times it followed a visit to the current cell
    first: torch.Tensor  # (B, Q, W) bool: True at each distinct context cell's one entry
    time_count: torch.Tensor | None = None  # (B, Q, W) float: its visits at about the target time (at-time)
    time_bands: torch.Tensor | None = None  # (B, Q, W, N_TIME_BANDS) float: its visits per time band (at-time)


def window_returns(
    cells: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    *,
    window: int = 64,
    time: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    bands: bool = False,
) -> ContextCells:
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
    time
        At-time only: ``(hour, weekday, target_hour, target_weekday)``, each (B, T), the visits'
        times and the time of the visit after each position; gives ``time_count``
        (:func:`context_time_counts`, sparse).
    bands
        With ``time``: also ``time_bands``, the visits per :func:`time_band` (the head's optional
        learned time relations).

    Returns
    -------
    ContextCells
        Each field (B, Q, W) with W = min(window, T). Entries where ``first`` is True list each
        distinct context cell once (``cell``), with its ``count``, ``recency`` (1 / (1 + steps
        since its most recent visit)) and ``successor`` count (:func:`context_successor_counts`);
        other entries are repeats or outside the context (``cell`` is then a valid index but must
        be ignored).

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
    # Entry j follows entry j + 1 (one visit earlier, also inside the window): a personal successor
    # of the current cell when that earlier visit was to the current cell.
    current = cells.gather(1, positions).unsqueeze(-1)  # (B, Q, 1)
    after_current = torch.zeros_like(inside)
    after_current[..., :-1] = inside[..., :-1] & (cell[..., 1:] == current)
    order = (cell * n_w + steps).argsort(dim=-1)  # by cell, then most recent first
    cell = cell.gather(-1, order)
    back = steps.expand_as(order).gather(-1, order)
    first = torch.ones_like(inside)
    first[..., 1:] = cell[..., 1:] != cell[..., :-1]
    run = first.long().cumsum(-1) - 1  # index of each entry's run within its row
    zeros = torch.zeros(cell.shape, device=cells.device)
    count = zeros.scatter_add(-1, run, inside.gather(-1, order).float()).gather(-1, run)
    successor = zeros.scatter_add(-1, run, after_current.gather(-1, order).float()).gather(-1, run)
    recency = 1.0 / (1.0 + back.float())
    time_count = time_bands = None
    if time is not None:
        hour, weekday, target_hour, target_weekday = time
        # each entry's visit time (B, Q, W) against its query's target time (B, Q, 1)
        when = (hour.gather(1, flat).view_as(src), weekday.gather(1, flat).view_as(src),
                target_hour.gather(1, positions).unsqueeze(-1), target_weekday.gather(1, positions).unsqueeze(-1))
        match = time_matches(*when) & inside
        time_count = zeros.scatter_add(-1, run, match.gather(-1, order).float()).gather(-1, run)
    if time is not None and bands:
        band = time_band(*when).gather(-1, order)  # (B, Q, W)
        one_hot = torch.nn.functional.one_hot(band, N_TIME_BANDS).float() * inside.gather(-1, order).unsqueeze(-1)
        per_run = torch.zeros(*cell.shape, N_TIME_BANDS, device=cells.device)
        per_run = per_run.scatter_add(-2, run.unsqueeze(-1).expand_as(one_hot), one_hot)
        time_bands = per_run.gather(-2, run.unsqueeze(-1).expand_as(one_hot))
    return ContextCells(cell.clamp(min=0), count, recency, successor, first & (cell >= 0), time_count, time_bands)
