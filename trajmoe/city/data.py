"""A prepared city folder as the arrays and tensors models read (README.md § Protocol).

:class:`CityData` loads a folder written by :func:`trajmoe.city.prepare.prepare` and gives the
protocol's pieces: every training window, the targets of a split with their contexts, cell
features from a chosen set of training visits, and the :class:`~trajmoe.city.batch.Batch`
tensors. Which windows and validation targets one run may use is :mod:`trajmoe.city.subset`'s job.

* every val/test visit with an earlier visit is a target once; context = up to L earlier visits of
  the same user from any split;
* a window = up to L consecutive training visits of one user (consecutive windows share one visit
  so no transition is lost); visit features come from the training visits a run sees only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trajmoe.city.batch import IGNORE, UNKNOWN_WEEKDAY, Batch, CityTensors, log_km_table
from trajmoe.city.features import (
    SCHEMA_ID,
    cell_feature_matrix,
    hour_log_share,
    log_popularity,
    poi_share_matrix,
)
from trajmoe.city.transitions import count_transitions
from trajmoe.errors import PreparedDataError
from trajmoe.geo import project_km

SPLITS = ("train", "val", "test")
DEFAULT_MAX_LEN = 64  # L: context / window length in visits
GAP_EDGES_H = np.array([0.5, 1, 2, 4, 8, 24, 72])
DIST_EDGES_KM = np.array([0.5, 1, 2, 5, 10, 20])
PREPARED_FILES = ("cells.parquet", "visits.parquet", "meta.json")


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
        self.times: pd.Series = ts  # each visit's local time, parsed once (callers read it, never parse again)
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
    def dataset(self) -> str:
        """The prepared data's name: its trajectory file's name without extensions
        (``nyc_foursquare`` for nyc_foursquare.csv.gz), else the folder's name. A checkpoint's
        training record keys what it was trained on by it (two datasets may share a city)."""
        report = self.meta.get("report") if isinstance(self.meta.get("report"), dict) else {}
        return Path(str(report.get("source") or "")).name.split(".")[0] or self.folder.name

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def poi_known(self) -> bool:
        """Whether the city was prepared with POI data (False: the model works from the visits alone
        and its POI features are masked; a scenario has no POIs to change)."""
        return bool(len(self.cells)) and bool(self.cells["poi_known"].iloc[0])

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

    def targets(self, split: str = "test") -> np.ndarray:
        """Visit indices that are targets of ``split`` (every one; a run's share of the validation
        targets is :func:`trajmoe.city.subset.run_subset`'s)."""
        code = SPLITS.index(split)
        return np.flatnonzero((self.split == code) & (self.seq > 0))

    def context(self, target: int, *, max_len: int = DEFAULT_MAX_LEN) -> np.ndarray:
        """Up to ``max_len`` visits of the same user before ``target`` (any split)."""
        start = self.user_start[self.user_of_visit[target]]
        return np.arange(max(start, target - max_len), target)

    def is_return(self, targets: np.ndarray, *, window: int = DEFAULT_MAX_LEN) -> np.ndarray:
        """Which targets are returns: their cell is among the same user's previous ``window`` visits.

        Parameters
        ----------
        targets
            (n,) visit indices.
        window
            How many earlier visits of the same user (any split) count; 64 = L for every method.

        Returns
        -------
        (n,) bool: True for a return, False for an exploration. Cells are compared by their H3 id,
        so a target outside the candidates (MISS) is classified like any other.
        """
        targets = np.asarray(targets, dtype=np.int64)
        if not hasattr(self, "_cell_code"):  # one integer per H3 cell, candidate or not
            self._cell_code = pd.factorize(self.visits["cell"])[0].astype(np.int64)
        code = self._cell_code
        first = self.user_start[self.user_of_visit[targets]] if len(targets) else targets
        hit = np.zeros(len(targets), dtype=bool)
        for lag in range(1, window + 1):  # window vector comparisons: fast on any number of targets
            earlier = targets - lag
            hit |= (earlier >= first) & (code[np.maximum(earlier, 0)] == code[targets])
        return hit

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
        moves = count_transitions(self.cell_idx, self.all_train_windows() if windows is None else windows,
                                  self.n_cells)
        return CityTensors(
            name=self.name,
            features=torch.from_numpy(feats),
            xy_km=self.xy_km,
            poi_share=torch.from_numpy(poi_share_matrix(self.cells, use_poi=use_poi)),
            log_pop=torch.from_numpy(log_popularity(pop).astype(np.float32)),
            kind=self.kind,
            log_km=self.log_km,
            trans_ptr=moves.ptr,
            trans_dst=moves.dst,
            trans_share=moves.shares(),
            hour_share=torch.from_numpy(hour_log_share(self.cell_idx[seen], self.hour[seen], self.n_cells)),
        )

    @property
    def log_km(self) -> torch.Tensor | None:
        """The city's (N, N) log(1 + km) table (batch.log_km_table), computed once and shared."""
        if not hasattr(self, "_log_km"):
            self._log_km = log_km_table(self.xy_km)
        return self._log_km

    # ------------------------------------------------------------------ tensors
    def _pack(self, seqs: list[np.ndarray], targets: list[np.ndarray]) -> Batch:
        B, T = len(seqs), max(len(s) for s in seqs)
        names = ("cells", "hour", "weekday", "gap_bucket", "dist_bucket", "next_hour", "next_weekday", "next_gap_bucket")
        out = {k: np.zeros((B, T), dtype=np.int64) for k in names}
        mask = np.zeros((B, T), dtype=bool)
        tgt = np.full((B, T), IGNORE, dtype=np.int64)
        n_visits = len(self.cell_idx)
        for b, (s, t) in enumerate(zip(seqs, targets)):
            n = len(s)
            out["cells"][b, :n] = np.maximum(self.cell_idx[s], 0)
            out["hour"][b, :n] = self.hour[s]
            out["weekday"][b, :n] = self.weekday[s]
            out["gap_bucket"][b, :n] = self.gap_bucket[s]
            out["dist_bucket"][b, :n] = self.dist_bucket[s]
            # The time (never the place) of the visit after each one: the at-time task's query.
            # Read at pack time from the arrays, so it is always the stored visit's own time.
            after = np.minimum(s + 1, n_visits - 1)
            same = (after == s + 1) & (self.user_of_visit[after] == self.user_of_visit[s])
            out["next_hour"][b, :n] = np.where(same, self.hour[after], 0)
            out["next_weekday"][b, :n] = np.where(same, self.weekday[after], UNKNOWN_WEEKDAY)
            out["next_gap_bucket"][b, :n] = np.where(same, self.gap_bucket[after], 0)
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


def iter_batches(items: list | np.ndarray, batch_size: int):
    """Yield consecutive chunks of ``items`` of at most ``batch_size``."""
    for i in range(0, len(items), batch_size):
        yield items[i : i + batch_size]
