"""Prepare a city folder and serve it to models exactly as DESIGN.md §Protocol defines.

``prepare`` turns one trajectory file (+ optional POIs) into a folder:

* ``visits.parquet`` every kept visit with its H3 cell, candidate row (``cell_idx``, -1 outside the
  candidates), split and order within its user;
* ``cells.parquet`` the candidate cells with their static POI features (features.py);
* ``meta.json`` city, kind, resolution, centre, counts, the validation report, the schema id.

:class:`CityData` loads such a folder and produces training windows, few-shot subsets, evaluation
targets with their contexts, per-run cell features and the :class:`~trajmoe.city.batch.Batch` tensors.

Protocol (the same for every method):

* users with >= 3 visits after collapsing consecutive repeats, split per user chronologically by
  visit order 70/10/20 with >= 1 test visit; trip datasets (one origin -> destination per "user")
  are split by time across trips instead, and consecutive repeats are not collapsed there;
* candidates = cells of training visits + cells with POIs (near the visits); a target outside the
  candidates is a miss, never dropped;
* every val/test visit with an earlier visit is a target once; context = up to L earlier visits of
  the same user from any split;
* a window = up to L consecutive training visits of one user (consecutive windows share one visit
  so no transition is lost); few-shot fraction f = a seeded random f of the windows, the same for
  every method; visit features come from the training visits of the chosen windows only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trajmoe import __version__
from trajmoe.city.batch import IGNORE, UNKNOWN_WEEKDAY, Batch, CityTensors
from trajmoe.city.features import (
    SCHEMA_ID,
    build_cell_table,
    cell_feature_matrix,
    poi_counts,
    poi_share_matrix,
)
from trajmoe.errors import InputDataError, PreparedDataError
from trajmoe.geo import latlon_to_cells, project_km

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TRAIN_SHARE, VAL_SHARE = 0.7, 0.1
MIN_VISITS = 3  # users with fewer visits (after collapsing repeats) cannot be evaluated
DEFAULT_MAX_LEN = 64  # L: context / window length in visits
STATION_RESOLUTION = 10  # bike stations are ~300 m apart: res 8 (edge ~0.5 km) merges them
# Automatic resolution for data covering a small area (a district, a campus): at res 8 a
# 2 km-wide sample falls into a handful of cells and nothing is left to predict.
AUTO_RESOLUTION_KM = ((5.0, 10), (15.0, 9))  # extent below X km -> resolution R; else 8
GAP_EDGES_H = np.array([0.5, 1, 2, 4, 8, 24, 72])
DIST_EDGES_KM = np.array([0.5, 1, 2, 5, 10, 20])
POI_MARGIN_DEG = 0.02  # POIs farther than ~2 km outside the visits' bounding box are not candidates
PREPARED_FILES = ("cells.parquet", "visits.parquet", "meta.json")


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
        H3 resolution; None = 8, or 10 for bike-share station data.
    kind
        ``auto`` (detect), ``checkins``, ``gps``, ``trips`` or ``stations``.
    timezone
        IANA zone for Unix-second timestamps (see DESIGN.md §Time).
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
    from trajmoe.trajectories.kinds import KINDS, detect_kind, to_visits
    from trajmoe.trajectories.reader import read_trajectories

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
                f"{len(short)} users have fewer than {MIN_VISITS} visits after collapsing repeats "
                f"({int(gone.sum())} visits); a next-location model needs a past and a test visit.",
            )
            visits = visits[~gone]
        visits = visits.reset_index(drop=True)
        sizes = visits.groupby("user_id", sort=False).size().to_numpy()
        split_code = _split_per_user(sizes)
    else:
        visits = visits.reset_index(drop=True)
        split_code = _split_trips_by_time(visits)
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
        "report": report.to_dict(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    log.info("prepared %s: %d users, %d visits, %d cells", city, meta["n_users"], len(visits), len(cells))
    return meta, report


def _load_pois(pois):
    if pois is None:
        return None
    if isinstance(pois, pd.DataFrame):
        return pois
    from trajmoe.pois.osm import read_pois

    return read_pois(pois)


@dataclass(frozen=True)
class FewShot:
    """Which share of a city's training windows and validation targets a run may use."""

    fraction: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise InputDataError(f"fraction must be in (0, 1], got {self.fraction}: e.g. --fraction 0.05")

    def pick(self, n: int, stream: int) -> np.ndarray:
        """Seeded subset of range(n); ``stream`` separates windows (0) from validation (1)."""
        if self.fraction >= 1 or n == 0:
            return np.arange(n)
        k = max(1, int(round(self.fraction * n)))
        rng = np.random.default_rng([self.seed, stream])
        return np.sort(rng.choice(n, size=k, replace=False))


class CityData:
    """A prepared city folder, with the per-visit arrays models need.

    Visits are sorted by user then time; ``user_start[u]:user_start[u+1]`` are user u's visits.
    """

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        missing = [f for f in PREPARED_FILES if not (folder / f).is_file()]
        if missing:
            raise PreparedDataError(
                f"{folder} is not a prepared city folder (missing {', '.join(missing)}): "
                "create it with `trajmoe prepare --trajectories FILE --city NAME --out DIR`."
            )
        try:
            self.meta = json.loads((folder / "meta.json").read_text())
            self.cells = pd.read_parquet(folder / "cells.parquet")
            self.visits = pd.read_parquet(folder / "visits.parquet")
        except Exception as exc:  # corrupt files: say which folder to re-create
            raise PreparedDataError(f"Cannot read the prepared folder {folder}: {exc}. Run `trajmoe prepare` again.") from exc
        if self.meta.get("schema") != SCHEMA_ID:
            raise PreparedDataError(
                f"{folder} was prepared with feature schema {self.meta.get('schema')!r}, this version uses "
                f"{SCHEMA_ID!r}: run `trajmoe prepare` again."
            )
        self.folder = folder
        self.name: str = self.meta["city"]
        self.kind: str = self.meta["kind"]
        self.weekday_reliable: bool = bool(self.meta.get("weekday_reliable", True))
        v = self.visits
        ts = pd.to_datetime(v["timestamp"])
        self.cell_idx = v["cell_idx"].to_numpy(np.int64)
        self.split = pd.Categorical(v["split"], categories=list(SPLITS)).codes.astype(np.int64)
        self.seq = v["seq"].to_numpy(np.int64)
        self.hour = ts.dt.hour.to_numpy(np.int64)
        weekday = ts.dt.day_of_week.to_numpy(np.int64)
        self.weekday = weekday if self.weekday_reliable else np.full_like(weekday, UNKNOWN_WEEKDAY)
        first = self.seq == 0
        gap_h = np.r_[0.0, np.diff(ts.to_numpy().astype("datetime64[s]").astype(np.int64)) / 3600.0]
        self.gap_bucket = np.where(first, 0, 1 + np.searchsorted(GAP_EDGES_H, gap_h, side="right"))
        xy = project_km(v["lat"].to_numpy(), v["lon"].to_numpy(), tuple(self.meta["centre"]))
        jump = np.r_[0.0, np.hypot(*np.diff(xy, axis=0).T)]
        self.dist_bucket = np.where(first, 0, 1 + np.searchsorted(DIST_EDGES_KM, jump, side="right"))
        self.user_start = np.flatnonzero(np.r_[True, ~(v["user_id"].to_numpy()[1:] == v["user_id"].to_numpy()[:-1])])
        self.user_of_visit = np.repeat(np.arange(len(self.user_start)), np.diff(np.r_[self.user_start, len(v)]))
        self.xy_km = torch.tensor(self.cells[["x_km", "y_km"]].to_numpy(np.float32))

    # ------------------------------------------------------------------ protocol
    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def all_train_windows(self, *, max_len: int = DEFAULT_MAX_LEN) -> list[np.ndarray]:
        """Every training window (>= 2 visits) in a fixed order; consecutive windows share a visit."""
        train = np.flatnonzero(self.split == 0)
        if len(train) == 0:
            return []
        user = self.user_of_visit[train]
        bounds = np.flatnonzero(np.r_[True, user[1:] != user[:-1], True])
        windows = []
        step = max_len - 1
        for a, b in zip(bounds[:-1], bounds[1:]):
            for s in range(a, b - 1, step):
                windows.append(train[s : min(s + max_len, b)])
        return windows

    def train_windows(self, few_shot: FewShot = FewShot(), *, max_len: int = DEFAULT_MAX_LEN) -> list[np.ndarray]:
        """The run's training windows: a seeded few-shot subset of :meth:`all_train_windows`."""
        windows = self.all_train_windows(max_len=max_len)
        return [windows[i] for i in few_shot.pick(len(windows), stream=0)]

    def targets(self, split: str = "test", few_shot: FewShot | None = None) -> np.ndarray:
        """Visit indices that are targets of ``split`` (val targets take the few-shot share)."""
        code = SPLITS.index(split)
        idx = np.flatnonzero((self.split == code) & (self.seq > 0))
        if few_shot is not None and split == "val":
            idx = idx[few_shot.pick(len(idx), stream=1)]
        return idx

    def context(self, target: int, *, max_len: int = DEFAULT_MAX_LEN) -> np.ndarray:
        """Up to ``max_len`` visits of the same user before ``target`` (any split)."""
        start = self.user_start[self.user_of_visit[target]]
        return np.arange(max(start, target - max_len), target)

    def train_visits(self, windows: list[np.ndarray] | None) -> np.ndarray:
        """Training visits a run sees: those in its windows (all training visits when None)."""
        if windows is None:
            return np.flatnonzero(self.split == 0)
        if not windows:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(windows))

    def city_tensors(self, windows: list[np.ndarray] | None = None, *, use_poi: bool = True) -> CityTensors:
        """Cell features from exactly the training visits in ``windows`` (never val/test)."""
        seen = self.train_visits(windows)
        feats = cell_feature_matrix(
            self.cells,
            train_cell_idx=self.cell_idx[seen],
            train_hour=self.hour[seen],
            train_weekday=self.weekday[seen],
            weekday_reliable=self.weekday_reliable,
            use_poi=use_poi,
        )
        pop = np.bincount(self.cell_idx[seen][self.cell_idx[seen] >= 0], minlength=self.n_cells)
        return CityTensors(
            name=self.name,
            features=torch.from_numpy(feats),
            xy_km=self.xy_km,
            poi_share=torch.from_numpy(poi_share_matrix(self.cells, use_poi=use_poi)),
            log_pop=torch.from_numpy(np.log1p(pop).astype(np.float32)),
            has_poi=bool(use_poi and len(self.cells) and bool(self.cells["poi_known"].iloc[0])),
            kind=self.kind,
        )

    # ------------------------------------------------------------------ tensors
    def _pack(self, seqs: list[np.ndarray], targets: list[np.ndarray]) -> Batch:
        B, T = len(seqs), max(len(s) for s in seqs)
        out = {k: np.zeros((B, T), dtype=np.int64) for k in ("cells", "hour", "weekday", "gap_bucket", "dist_bucket")}
        mask = np.zeros((B, T), dtype=bool)
        tgt = np.full((B, T), IGNORE, dtype=np.int64)
        for b, (s, t) in enumerate(zip(seqs, targets)):
            n = len(s)
            out["cells"][b, :n] = np.maximum(self.cell_idx[s], 0)
            out["hour"][b, :n] = self.hour[s]
            out["weekday"][b, :n] = self.weekday[s]
            out["gap_bucket"][b, :n] = self.gap_bucket[s]
            out["dist_bucket"][b, :n] = self.dist_bucket[s]
            mask[b, :n] = True
            tgt[b, :n] = t
        return Batch(**{k: torch.from_numpy(a) for k, a in out.items()}, mask=torch.from_numpy(mask), targets=torch.from_numpy(tgt))

    def window_batch(self, windows: list[np.ndarray]) -> Batch:
        """Teacher-forced training batch: position t predicts visit t+1 of the window."""
        targets = [np.r_[self.cell_idx[w[1:]], IGNORE] for w in windows]
        return self._pack(windows, targets)

    def eval_batch(self, targets: np.ndarray, *, max_len: int = DEFAULT_MAX_LEN) -> Batch:
        """Each row: the target's context; only its last position carries the target (or MISS)."""
        seqs, tg = [], []
        for t in targets:
            ctx = self.context(int(t), max_len=max_len)
            seqs.append(ctx)
            row = np.full(len(ctx), IGNORE, dtype=np.int64)
            row[-1] = self.cell_idx[t]
            tg.append(row)
        return self._pack(seqs, tg)


def iter_batches(items: list | np.ndarray, batch_size: int, *, shuffle: bool = False, seed: int = 0):
    """Yield consecutive chunks of ``items`` (optionally in a seeded random order)."""
    order = np.random.default_rng(seed).permutation(len(items)) if shuffle else np.arange(len(items))
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        yield [items[j] for j in chunk] if isinstance(items, list) else items[chunk]
