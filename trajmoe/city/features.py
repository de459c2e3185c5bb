"""Per-cell location features: the spatial semantic encoder's input (:mod:`trajmoe.model.encoder`).

Two parts with different lifetimes:

* POI part (counts and shares per functional category for the cell and its ring-1 neighbourhood,
  coordinates relative to the city centre) depends only on the city's POIs and cell grid. It is
  computed once by :func:`build_cell_table` and stored in ``cells.parquet``.
* Visit part (hour-of-day and weekday profile of visits, popularity-rank bucket, visit volume) is
  computed by :func:`cell_feature_matrix` from exactly the training visits a run may see (the
  few-shot subset, or all training visits) — never baked from 100% of training, never from
  validation or test visits.

Features are per cell, never one histogram per city (a public port of a sibling model scored
near zero for exactly that mistake). A city without POIs still gets features: its POI groups are
zero and the ``mask`` group says so, so the encoder can tell "no POIs known" from "no POIs here".
"""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd

from trajmoe.geo import cell_centres, latlon_to_cells, project_km
from trajmoe.pois.categories import CATEGORIES

SCHEMA_ID = f"trajmoe-cellfeat-v1-c{len(CATEGORIES)}"

N_POP_BUCKETS = 10  # popularity-rank deciles among visited cells; one more bucket = never visited

# Group name -> width, in matrix column order. The encoder projects each group separately.
_C = len(CATEGORIES)
FEATURE_WIDTHS: dict[str, int] = {
    "poi_share": _C,  # share of the cell's POIs in each category
    "poi_log_count": _C,  # log1p POI count per category in the cell
    "ring_poi_share": _C,  # the same over the cell and its 6 neighbours (H3 ring 1)
    "ring_poi_log_count": _C,
    "poi_total": 2,  # log1p total POIs: cell, ring
    "visit_hour": 24,  # share of the cell's training visits per local hour of day
    "visit_weekday": 7,  # share per weekday (zeros when the dataset's weekday is unreliable)
    "popularity": N_POP_BUCKETS + 1,  # one-hot popularity-rank bucket (last = never visited)
    "log_visits": 1,  # log_popularity (visits relative to the mean cell) / 10
    "coords": 3,  # x / 10 km, y / 10 km, log1p(km to centre)
    "mask": 3,  # POIs known for this city, cell has training visits, weekday known
}


def feature_slices(widths: dict[str, int]) -> dict[str, slice]:
    """Group name -> its column slice in the feature matrix, for groups of these widths in order."""
    out, start = {}, 0
    for name, width in widths.items():
        out[name] = slice(start, start + width)
        start += width
    return out


FEATURE_GROUPS: dict[str, slice] = feature_slices(FEATURE_WIDTHS)
FEATURE_DIM: int = sum(FEATURE_WIDTHS.values())

POI_COLUMNS = [f"poi_n_{c}" for c in CATEGORIES]
RING_POI_COLUMNS = [f"ring_poi_n_{c}" for c in CATEGORIES]


def poi_counts(pois: pd.DataFrame | None, resolution: int) -> pd.DataFrame:
    """POI counts per (cell, category): index = cell id, columns = POI_COLUMNS."""
    if pois is None or len(pois) == 0:
        return pd.DataFrame(columns=POI_COLUMNS, dtype=np.int64)
    cells = latlon_to_cells(pois["lat"].to_numpy(), pois["lon"].to_numpy(), resolution)
    cat = pd.Categorical(pois["category"].astype(str), categories=list(CATEGORIES))
    table = pd.crosstab(pd.Series(cells, name="cell"), pd.Series(cat, name="category"), dropna=False)
    table = table.reindex(columns=list(CATEGORIES), fill_value=0)
    table.columns = POI_COLUMNS
    return table.astype(np.int64)


def build_cell_table(
    cells: np.ndarray | list[str],
    *,
    pois: pd.DataFrame | None,
    centre: tuple[float, float],
    resolution: int,
) -> pd.DataFrame:
    """The static part of ``cells.parquet`` for the given candidate cells (in that order).

    Columns: ``cell, lat, lon, x_km, y_km``, ``poi_n_<category>``, ``ring_poi_n_<category>`` and
    ``poi_known`` (the city has POI data at all; False masks the POI groups).
    """
    cells = list(cells)
    counts = poi_counts(pois, resolution)
    latlng = cell_centres(cells)
    xy = project_km(latlng[:, 0], latlng[:, 1], centre)
    own = counts.reindex(cells, fill_value=0).to_numpy(dtype=np.int64)
    ring = np.zeros_like(own)
    if len(counts):
        lookup = {c: i for i, c in enumerate(counts.index)}
        values = counts.to_numpy(dtype=np.int64)
        for i, cell in enumerate(cells):
            rows = [lookup[n] for n in h3.grid_disk(cell, 1) if n in lookup]
            if rows:
                ring[i] = values[rows].sum(axis=0)
    table = pd.DataFrame({"cell": pd.Series(cells, dtype=str), "lat": latlng[:, 0], "lon": latlng[:, 1],
                          "x_km": xy[:, 0], "y_km": xy[:, 1]})
    table[POI_COLUMNS] = own
    table[RING_POI_COLUMNS] = ring
    table["poi_known"] = pois is not None and len(pois) > 0
    return table


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts, dtype=np.float64), where=total > 0)


def visit_profile(
    n_cells: int,
    cell_idx: np.ndarray,
    hour: np.ndarray,
    weekday: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell visit counts, hour-of-day counts (N, 24) and weekday counts (N, 7).

    ``cell_idx`` < 0 (visits outside the candidates) are ignored; weekday values outside 0..6
    (unknown) are not counted in the weekday profile.
    """
    keep = cell_idx >= 0
    ci, hr, wd = cell_idx[keep], hour[keep], weekday[keep]
    visits = np.bincount(ci, minlength=n_cells).astype(np.float64)
    hours = np.bincount(ci * 24 + hr, minlength=n_cells * 24).reshape(n_cells, 24).astype(np.float64)
    ok = (wd >= 0) & (wd < 7)
    days = np.bincount(ci[ok] * 7 + wd[ok], minlength=n_cells * 7).reshape(n_cells, 7).astype(np.float64)
    return visits, hours, days


def log_popularity(visits: np.ndarray) -> np.ndarray:
    """log(1 + visits / mean visits per cell): a cell's popularity relative to the city's mean cell.

    Raw log(1 + count) grows with the amount of data behind it (at 100% of a city's visits a cell
    has 20x the count it has at 5%), so head weights fitted on a 5% run would over-rate popular
    places when the model is later given all of the city's visits. Relative to the mean cell the
    value of a cell is about the same at any fraction; unvisited cells stay 0.
    """
    visits = np.asarray(visits, dtype=np.float64)
    total = visits.sum()
    if total <= 0:
        return np.zeros_like(visits)
    return np.log1p(visits * (len(visits) / total))


HOUR_BAND = 1  # the at-time hour share counts visits within +-1 h of the target hour
HOUR_SHARE_PRIOR = 4.0  # pseudo-visits spread evenly over the day, per cell (shrinks rare cells' shares)


def hour_log_share(cell_idx: np.ndarray, hour: np.ndarray, n_cells: int) -> np.ndarray:
    """(24, N) log of each cell's share of its visits at each hour, relative to a flat day.

    ``out[h, c] = log(share of c's visits within +-HOUR_BAND h of h / the flat share)``, with
    :data:`HOUR_SHARE_PRIOR` pseudo-visits spread over the day, so a cell with few visits stays
    near 0 (no information) and a cell never visited is exactly 0. The candidate's city-wide share
    at the target hour: the ``at-time`` task's popularity term (and the ``epr-time`` baseline's).
    """
    cell_idx, hour = np.asarray(cell_idx, dtype=np.int64), np.asarray(hour, dtype=np.int64)
    keep = cell_idx >= 0
    counts = np.zeros((24, n_cells))
    np.add.at(counts, (hour[keep], cell_idx[keep]), 1.0)
    band = sum(np.roll(counts, shift, axis=0) for shift in range(-HOUR_BAND, HOUR_BAND + 1))  # (24, N)
    flat = (2 * HOUR_BAND + 1) / 24
    share = (band + HOUR_SHARE_PRIOR * flat) / (counts.sum(0, keepdims=True) + HOUR_SHARE_PRIOR)
    return np.log(share / flat).astype(np.float32)


def popularity_bucket(visits: np.ndarray) -> np.ndarray:
    """Rank decile of each cell among visited cells (0 = most visited); N_POP_BUCKETS if never visited."""
    bucket = np.full(len(visits), N_POP_BUCKETS, dtype=np.int64)
    visited = np.flatnonzero(visits > 0)
    if len(visited):
        order = visited[np.argsort(-visits[visited], kind="stable")]
        rank_pct = np.arange(len(order)) / len(order)
        bucket[order] = np.minimum((rank_pct * N_POP_BUCKETS).astype(np.int64), N_POP_BUCKETS - 1)
    return bucket


def cell_feature_matrix(
    cells: pd.DataFrame,
    *,
    train_cell_idx: np.ndarray,
    train_hour: np.ndarray,
    train_weekday: np.ndarray,
    weekday_reliable: bool = True,
    use_poi: bool = True,
) -> np.ndarray:
    """The (N, FEATURE_DIM) float32 feature matrix of a city's candidate cells.

    Parameters
    ----------
    cells
        ``cells.parquet`` of the city (static POI part, see :func:`build_cell_table`).
    train_cell_idx, train_hour, train_weekday
        The training visits THIS run may see (cell row, local hour, weekday 0..6).
    weekday_reliable
        False for datasets whose weekday is unknown: the weekday profile is zeroed and masked.
    use_poi
        False zeroes and masks the POI groups (the "without POI features" ablation).
    """
    n = len(cells)
    out = np.zeros((n, FEATURE_DIM), dtype=np.float32)
    g = FEATURE_GROUPS
    poi_known = bool(use_poi and n and bool(cells["poi_known"].iloc[0]))
    if poi_known:
        own = cells[POI_COLUMNS].to_numpy(dtype=np.float64)
        ring = cells[RING_POI_COLUMNS].to_numpy(dtype=np.float64)
        out[:, g["poi_share"]] = _shares(own)
        out[:, g["poi_log_count"]] = np.log1p(own)
        out[:, g["ring_poi_share"]] = _shares(ring)
        out[:, g["ring_poi_log_count"]] = np.log1p(ring)
        out[:, g["poi_total"]] = np.log1p(np.column_stack([own.sum(1), ring.sum(1)]))
    visits, hours, days = visit_profile(n, train_cell_idx, train_hour, train_weekday)
    out[:, g["visit_hour"]] = _shares(hours)
    if weekday_reliable:
        out[:, g["visit_weekday"]] = _shares(days)
    out[np.arange(n), g["popularity"].start + popularity_bucket(visits)] = 1.0
    out[:, g["log_visits"]] = log_popularity(visits)[:, None] / 10.0
    xy = cells[["x_km", "y_km"]].to_numpy(dtype=np.float64)
    out[:, g["coords"]] = np.column_stack([xy / 10.0, np.log1p(np.hypot(xy[:, 0], xy[:, 1]))])
    out[:, g["mask"]] = np.column_stack([
        np.full(n, float(poi_known)), (visits > 0).astype(np.float64), np.full(n, float(weekday_reliable)),
    ])
    return out


def poi_share_matrix(cells: pd.DataFrame, *, use_poi: bool = True) -> np.ndarray:
    """(N, C) POI category shares of each cell: the router's spatial prior (zeros without POIs)."""
    if not use_poi or len(cells) == 0 or not bool(cells["poi_known"].iloc[0]):
        return np.zeros((len(cells), len(CATEGORIES)), dtype=np.float32)
    return _shares(cells[POI_COLUMNS].to_numpy(dtype=np.float64)).astype(np.float32)
