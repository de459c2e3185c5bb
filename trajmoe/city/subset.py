"""The run subset: what ONE run may see of a city (README.md § Protocol, few-shot fraction).

A run (pretraining, fine-tuning, a baseline, a benchmark cell, the app's views) is defined on a
city by ``(fraction, seed, max_len)``. :func:`run_subset` turns that into the three things every
method uses, the same for every method and seed-paired across them:

* the training windows: a seeded random ``fraction`` of the city's windows of up to ``max_len``
  consecutive training visits;
* the city tensors: cell features from exactly the training visits in those windows (never
  validation or test visits, never 100% of training when the run saw 5%);
* the validation targets: the same ``fraction`` of them (early stopping, fitting head weights).

This module is the only place a :class:`FewShot` is made; everything else asks for a
:class:`RunSubset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajmoe.city.batch import CityTensors
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData
from trajmoe.errors import InputDataError

# Separate random streams: the windows never decide the validation share or the cross-fit folds.
WINDOW_STREAM, VAL_STREAM, CROSS_FIT_STREAM = 0, 1, 2


def check_fraction(fraction: float) -> None:
    """Raise a plain error unless ``fraction`` is a share in (0, 1]."""
    if not 0 < fraction <= 1:
        raise InputDataError(f"fraction must be in (0, 1], got {fraction}: e.g. --fraction 0.05")


@dataclass(frozen=True)
class FewShot:
    """Which share of a city's training windows and validation targets a run may use."""

    fraction: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_fraction(self.fraction)

    def pick(self, n: int, stream: int) -> np.ndarray:
        """Seeded subset of range(n); ``stream`` separates windows (0) from validation (1)."""
        if self.fraction >= 1 or n == 0:
            return np.arange(n)
        k = max(1, int(round(self.fraction * n)))
        rng = np.random.default_rng([self.seed, stream])
        return np.sort(rng.choice(n, size=k, replace=False))


@dataclass(frozen=True)
class RunSubset:
    """One run's share of one city: its training windows, cell features and validation targets."""

    data: CityData
    few_shot: FewShot
    max_len: int  # L: window length in visits
    windows: list[np.ndarray]  # visit indices of each training window
    city: CityTensors  # cell features from exactly the training visits in ``windows``
    val_targets: np.ndarray  # the run's share of the validation targets (visit indices)
    n_train_visits: int  # distinct training visits behind the visit features

    @property
    def fraction(self) -> float:
        return self.few_shot.fraction

    @property
    def seed(self) -> int:
        return self.few_shot.seed

    def cross_fit(self, *, use_poi: bool = True) -> list[tuple[list[np.ndarray], CityTensors]]:
        """Two person folds of the run's windows, each with city tensors from the OTHER fold.

        Visit features, popularity and the transition table are counted from training visits, and
        a training target is itself a training visit: trained on features that include its own
        visit, a model learns that a cell no one visited is never the answer and that a move in the
        transition table is the move to predict, and ranks the new places and new moves of
        validation and test far too low (on sf_gowalla's validation split, pretrained with such
        features, the prior terms alone fell from 0.213 to 0.165 Acc@1 next to return + gravity).
        Training fold k's windows against fold 1 - k's tensors (split by person, seeded) shows the
        model targets that are not in its features, as validation and test targets never are.
        Returns ``[(windows, city)]``: two entries, or one (the run's own) when a fold is empty.
        """
        users = np.array([self.data.user_of_visit[w[0]] for w in self.windows], dtype=np.int64)
        distinct = np.unique(users)
        fold_of = np.random.default_rng([self.seed, CROSS_FIT_STREAM]).integers(0, 2, len(distinct))
        fold = fold_of[np.searchsorted(distinct, users)]
        parts = [[w for w, f in zip(self.windows, fold) if f == k] for k in (0, 1)]
        if not all(parts):
            return [(self.windows, self.city)]
        return [(parts[k], self.data.city_tensors(parts[1 - k], use_poi=use_poi)) for k in (0, 1)]

    def describe(self) -> dict:
        """What a checkpoint sidecar records about the subset (JSON-ready)."""
        return {"fraction": self.fraction, "seed": self.seed, "max_len": self.max_len,
                "train_windows": len(self.windows), "train_visits": self.n_train_visits,
                "val_targets": int(len(self.val_targets))}


def run_subset(data: CityData, *, fraction: float = 1.0, seed: int = 0, max_len: int = DEFAULT_MAX_LEN,
               use_poi: bool = True) -> RunSubset:
    """The training windows, city tensors and validation targets of a ``(fraction, seed)`` run.

    Parameters
    ----------
    data
        The prepared city.
    fraction, seed
        Few-shot share of training windows and validation targets, and its seed; 1.0 = all.
    max_len
        Window length L in visits.
    use_poi
        False masks the POI features (the no-POI ablation).
    """
    few = FewShot(fraction, seed)
    every = data.all_train_windows(max_len=max_len)
    windows = [every[i] for i in few.pick(len(every), WINDOW_STREAM)]
    val = data.targets("val")
    val = val[few.pick(len(val), VAL_STREAM)]
    return RunSubset(data=data, few_shot=few, max_len=max_len, windows=windows,
                     city=data.city_tensors(windows, use_poi=use_poi), val_targets=val,
                     n_train_visits=len(data.train_visits(windows)))
