"""Prepare a city folder from one trajectory file (+ optional POIs), exactly as README.md § Protocol states it.

``prepare`` writes:

* ``visits.parquet`` every kept visit with its H3 cell, candidate row (``cell_idx``, -1 outside the
  candidates), split and order within its user;
* ``cells.parquet`` the candidate cells with their static POI features (features.py);
* ``meta.json`` city, kind, resolution, centre, counts, the validation report, the schema id.

Protocol (the same for every method):

* users with >= 3 visits after collapsing consecutive repeats, split per user chronologically by
  visit order 70/10/20 with >= 1 test visit; trip datasets (one origin -> destination per "user")
  are split by time across trips instead, and consecutive repeats are not collapsed there;
* candidates = cells of training visits + cells with POIs (near the visits); a target outside the
  candidates is a miss, never dropped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from trajmoe import __version__
from trajmoe.city.data import SPLITS
from trajmoe.city.features import SCHEMA_ID, build_cell_table, poi_counts
from trajmoe.errors import InputDataError
from trajmoe.geo import latlon_to_cells, project_km
from trajmoe.pois.geocheck import coordinate_check
from trajmoe.pois.offline import read_pois
from trajmoe.trajectories.kinds import KINDS, detect_kind, to_visits
from trajmoe.trajectories.reader import read_trajectories
from trajmoe.trajectories.report import plural

log = logging.getLogger(__name__)

TRAIN_SHARE, VAL_SHARE = 0.7, 0.1
MIN_VISITS = 3  # users with fewer visits (after collapsing repeats) cannot be evaluated
STATION_RESOLUTION = 10  # bike stations are ~300 m apart: res 8 (edge ~0.5 km) merges them
# Automatic resolution for data covering a small area (a district, a campus): at res 8 a
# 2 km-wide sample falls into a handful of cells and nothing is left to predict.
AUTO_RESOLUTION_KM = ((5.0, 10), (15.0, 9))  # extent below X km -> resolution R; else 8
POI_MARGIN_DEG = 0.02  # POIs farther than ~2 km outside the visits' bounding box are not candidates


def default_resolution(kind: str, lat: np.ndarray, lon: np.ndarray) -> tuple[int, str]:
    """H3 resolution when the caller gives none, and why in plain words.

    8 (cells ~0.7 km²) for a city; 10 for bike-share stations; 9 or 10 when the visits cover a
    small area (5th-95th percentile extent under 15 or 5 km), so a district still has cells.
    """
    if kind == "stations":
        return STATION_RESOLUTION, "bike-share stations are a few hundred metres apart"
    if len(lat) == 0:
        return 8, "the default"
    lo = np.percentile(np.column_stack([lat, lon]), 5, axis=0)
    hi = np.percentile(np.column_stack([lat, lon]), 95, axis=0)
    extent = float(np.hypot(*project_km(np.array([hi[0]]), np.array([hi[1]]), (lo[0], lo[1]))[0]))
    for limit, res in AUTO_RESOLUTION_KM:
        if extent < limit:
            return res, f"the visits cover only about {extent:.1f} km across"
    return 8, "the default for a city"


def _sorted_by_user_time(visits: pd.DataFrame) -> bool:
    user = visits["user_id"].to_numpy()
    if len(user) < 2:
        return True
    same = user[1:] == user[:-1]
    ts = visits["timestamp"].to_numpy()
    return bool((user[1:] >= user[:-1]).all() and (ts[1:][same] >= ts[:-1][same]).all())


def _collapse_repeats(visits: pd.DataFrame) -> pd.DataFrame:
    same_user = visits["user_id"].to_numpy()[1:] == visits["user_id"].to_numpy()[:-1]
    same_cell = visits["cell"].to_numpy()[1:] == visits["cell"].to_numpy()[:-1]
    keep = np.concatenate([[True], ~(same_user & same_cell)])[: len(visits)]  # 0 visits: none
    return visits[keep]


def _split_per_user(sizes: np.ndarray) -> np.ndarray:
    """Chronological 70/10/20 split by visit order within each user (>= 1 test visit)."""
    n_test = np.maximum(1, np.floor(sizes * (1 - TRAIN_SHARE - VAL_SHARE) + 0.5)).astype(np.int64)
    n_val = np.floor(sizes * VAL_SHARE + 0.5).astype(np.int64)
    n_val = np.minimum(n_val, sizes - n_test - 1)
    n_train = sizes - n_test - n_val
    codes = [np.repeat(np.array([0, 1, 2]), [a, b, c]) for a, b, c in zip(n_train, n_val, n_test)]
    return np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)


def _split_trips_by_time(visits: pd.DataFrame) -> np.ndarray:
    """Trips (one origin -> destination per user_id) split 70/10/20 by their start time."""
    start = visits.groupby("user_id", sort=False)["timestamp"].transform("min")
    trip_order = start.rank(method="dense").to_numpy()
    n_trips = int(trip_order.max()) if len(trip_order) else 0
    q = trip_order / max(n_trips, 1)
    return np.where(q <= TRAIN_SHARE, 0, np.where(q <= TRAIN_SHARE + VAL_SHARE, 1, 2))


def prepare(
    trajectories,
    *,
    city: str,
    out: str | Path,
    pois: str | Path | pd.DataFrame | None = None,
    resolution: int | None = None,
    kind: str = "auto",
    timezone: str | None = None,
    weekday_reliable: bool = True,
    name: str | None = None,
    max_rows: int | None = None,
):
    """Validate, reduce and split one city's trajectories; write a prepared folder.

    Parameters
    ----------
    trajectories
        A path (CSV/Parquet/raw formats, see trajectories.py) or bytes of an upload.
    city
        Name of the city (used for domain experts and in reports).
    out
        Folder to write ``cells.parquet``, ``visits.parquet`` and ``meta.json`` into.
    pois
        Optional POI file (any format ``pois.read_pois`` reads) or POI frame.
    resolution
        H3 resolution; None = chosen by :func:`default_resolution`: 8 for a city, 10 for bike-share
        stations, 9 or 10 when the visits cover a small area (the report says which and why).
    kind
        ``auto`` (detect), ``checkins``, ``gps``, ``trips`` or ``stations``.
    timezone
        IANA zone for Unix-second timestamps (:mod:`trajmoe.trajectories.timestamps`).
    weekday_reliable
        False when the source's weekday is not trustworthy (sf/la Gowalla): weekday features
        fall back to "unknown".
    max_rows
        Refuse files with more rows than this (the app's bound on memory); None = no limit.

    Returns
    -------
    (meta, report)
        The ``meta.json`` content and the validation report (trajectories.ValidationReport).
    """
    if not city or not str(city).strip():
        raise InputDataError("No city name given: pass --city NAME (e.g. --city 'New York').")
    if kind != "auto" and kind not in KINDS:
        raise InputDataError(f"Unknown kind {kind!r}: use auto or one of {', '.join(KINDS)}.")
    frame, report = read_trajectories(trajectories, timezone=timezone, name=name, max_rows=max_rows)
    if not report.ok:
        err = InputDataError(report.to_text())
        err.report = report
        raise err
    if kind == "auto":
        kind = detect_kind(frame)
        report.note(f"Detected kind: {kind}.")
    visits, kind = to_visits(frame, kind, report)
    report.kind = kind
    warning = coordinate_check(visits["lat"].to_numpy(), visits["lon"].to_numpy())  # swapped/sign-flipped
    if warning:
        report.note(warning)
    if resolution is None:
        resolution, why = default_resolution(kind, visits["lat"].to_numpy(), visits["lon"].to_numpy())
        report.note(f"H3 resolution {resolution} chosen automatically ({why}); a different resolution (map detail) can be chosen.")
    resolution = int(resolution)
    if not 0 <= resolution <= 15:
        raise InputDataError(f"H3 resolution {resolution} is out of range: use 0..15 (default 8).")
    if not _sorted_by_user_time(visits):  # the reader already sorts; re-sort only if needed
        visits = visits.sort_values(["user_id", "timestamp"], kind="stable")
    visits = visits.reset_index(drop=True)
    visits["cell"] = latlon_to_cells(visits["lat"].to_numpy(), visits["lon"].to_numpy(), resolution)

    if kind != "trips":
        before = len(visits)
        visits = _collapse_repeats(visits)
        if before - len(visits):
            report.reduce("consecutive visits in the same H3 cell collapsed", before - len(visits))
        sizes = visits.groupby("user_id", sort=False).size()
        short = sizes.index[sizes < MIN_VISITS]
        if len(short):
            gone = visits["user_id"].isin(short)
            rows = visits.loc[gone, "row"].tolist() if "row" in visits else []
            report.drop(
                "user too short to evaluate",
                rows,
                f"{plural(len(short), 'user')} {'has' if len(short) == 1 else 'have'} fewer than "
                f"{MIN_VISITS} visits after collapsing repeats ({plural(int(gone.sum()), 'visit')}); "
                "a next-location model needs a past and a test visit.",
            )
            visits = visits[~gone]
            report.drop_users(f"fewer than {MIN_VISITS} visits after collapsing repeats", len(short))
        visits = visits.reset_index(drop=True)
        sizes = visits.groupby("user_id", sort=False).size().to_numpy()
        split_code = _split_per_user(sizes)
    else:
        visits = visits.reset_index(drop=True)
        split_code = _split_trips_by_time(visits)
    n_units = int(visits["user_id"].nunique())
    # trips: nothing is dropped here and a taxi's units (trips) are not its people (cabs)
    report.set_kept(len(visits), n_units, report.n_users_kept if kind == "trips" else n_units)
    if len(visits) == 0:
        err = InputDataError(
            f"Nothing left to use in {name or trajectories}: every user was dropped "
            "(see the report). Each user needs at least 3 visits at different places.\n" + report.to_text()
        )
        err.report = report
        raise err
    visits["split"] = pd.Categorical.from_codes(split_code, categories=list(SPLITS))
    visits["seq"] = visits.groupby("user_id", sort=False).cumcount().astype(np.int64)

    train = visits[visits["split"] == "train"]
    centre = (float(train["lat"].median()), float(train["lon"].median()))
    poi_frame = _load_pois(pois)
    if poi_frame is not None and len(poi_frame):
        lat, lon = visits["lat"], visits["lon"]
        near = poi_frame["lat"].between(lat.min() - POI_MARGIN_DEG, lat.max() + POI_MARGIN_DEG) & poi_frame[
            "lon"
        ].between(lon.min() - POI_MARGIN_DEG, lon.max() + POI_MARGIN_DEG)
        if (~near).sum():
            report.note(f"{int((~near).sum())} POIs lie far outside the trajectories' area and were not used.")
        poi_frame = poi_frame[near]
        if len(poi_frame) == 0:
            report.note("No POI lies near the trajectories: the POI features are masked for this city.")
    train_cells = set(train["cell"].unique())
    poi_cells = set(poi_counts(poi_frame, resolution).index) if poi_frame is not None else set()
    candidates = sorted(train_cells | poi_cells)
    cells = build_cell_table(candidates, pois=poi_frame, centre=centre, resolution=resolution)
    cells["in_train"] = cells["cell"].isin(train_cells)
    index = pd.Series(np.arange(len(cells), dtype=np.int64), index=cells["cell"])
    visits["cell_idx"] = visits["cell"].map(index).fillna(-1).astype(np.int64)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells.to_parquet(out / "cells.parquet", index=False)
    visits.to_parquet(out / "visits.parquet", index=False)
    counts = visits["split"].value_counts()
    meta = {
        "schema": SCHEMA_ID,
        "trajmoe_version": __version__,
        "city": str(city),
        "kind": kind,
        "resolution": resolution,
        "centre": list(centre),
        "weekday_reliable": bool(weekday_reliable),
        "timezone": timezone,
        "n_users": int(visits["user_id"].nunique()),
        "n_visits": {s: int(counts.get(s, 0)) for s in SPLITS},
        "n_cells": len(cells),
        "n_cells_with_pois": len(poi_cells & set(candidates)),
        "n_pois": 0 if poi_frame is None else len(poi_frame),
        "test_outside_candidates": float((visits.loc[visits["split"] == "test", "cell_idx"] < 0).mean()),
        # the source's file name only: a prepared folder (and the checkpoints and downloads made from it)
        # must not carry the absolute path of the user's machine
        "report": {**report.to_dict(), "source": Path(str(report.source)).name},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    log.info("prepared %s: %d users, %d visits, %d cells", city, meta["n_users"], len(visits), len(cells))
    return meta, report


def _load_pois(pois):
    if pois is None:
        return None
    if isinstance(pois, pd.DataFrame):
        return pois
    return read_pois(pois)
