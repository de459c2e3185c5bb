"""A run's plan, decided before its first step (:func:`trajmoe.train.fit.fit`'s first phase).

:func:`plan` turns the cities and the TrainConfig into each city's run subset
(:func:`trajmoe.city.subset.run_subset`), the cities skipped for want of a training window (named
in a warning, never dropped in silence), the step sampler (one entry per city, or per person fold
when cross-fitting) and the number of steps; :func:`validation` the validation city's subset,
whose ranks every later phase compares.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from trajmoe.city.batch import CityTensors
from trajmoe.city.data import CityData
from trajmoe.city.subset import RunSubset, run_subset
from trajmoe.errors import TrajMoEError
from trajmoe.train.evaluate import rank_targets

if TYPE_CHECKING:
    from trajmoe.train.fit import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a run trains on, decided before its first step (:func:`plan`)."""

    cities: list[CityData]  # the cities with training windows, in the order given
    subsets: list[RunSubset]  # their run subsets, in the same order
    skipped: list[CityData]  # cities given without a training window: reported, never trained on
    # What a step draws: one entry per city, or per (city, person fold) when cross-fitting, each
    # (city index, its windows, the city tensors they are trained against), with its probability.
    entries: list[tuple[int, list[np.ndarray], CityTensors]]
    probs: np.ndarray
    steps_per_epoch: int
    steps: int  # optimiser steps planned (the learning-rate schedule's length)
    epoch_capped: bool  # cfg.max_steps asked for more steps than cfg.epochs allow: the epochs end the run


def plan(cities: list[CityData], cfg: TrainConfig) -> Plan:
    """The run subset of every city, the step sampler and the number of steps.

    A city without a training window (no user with 2 training visits in the run's share) is
    skipped with a warning and listed in :attr:`Plan.skipped`; none with one is an error.
    """
    subsets = [run_subset(c, fraction=cfg.fraction, seed=cfg.seed, max_len=cfg.max_len, use_poi=cfg.use_poi)
               for c in cities]
    skipped = [c for c, s in zip(cities, subsets) if not s.windows]
    for c in skipped:
        log.warning("skipped %s (%s): no training windows at fraction %g (every user has fewer than 2 training "
                    "visits in the run's share)", c.dataset, c.name, cfg.fraction)
    subsets = [s for s in subsets if s.windows]
    if not subsets:
        raise TrajMoEError("No training windows: every city needs users with at least 2 training visits.")
    entries = []
    for i, s in enumerate(subsets):
        folds = s.cross_fit(use_poi=cfg.use_poi) if cfg.cross_fit else [(s.windows, s.city)]
        entries += [(i, w, t) for w, t in folds]
    sizes = np.array([len(s.windows) for s in subsets], dtype=np.float64)
    city_probs = sizes**cfg.temperature / (sizes**cfg.temperature).sum()
    # a city is drawn as before; its folds share its probability in proportion to their windows
    probs = np.array([city_probs[i] * len(w) / sizes[i] for i, w, _ in entries])
    probs /= probs.sum()
    steps_per_epoch = max(1, int(math.ceil(sizes.sum() / cfg.batch_size)))
    by_epochs = None if cfg.epochs is None else steps_per_epoch * cfg.epochs
    steps = min(n for n in (cfg.max_steps, by_epochs) if n is not None)  # TrainConfig requires one of them
    capped = cfg.max_steps is not None and steps < cfg.max_steps
    if capped:
        log.warning("%d steps asked, %d epochs of %d steps allow %d: the run stops after %d steps (give more "
                    "epochs, or none, to run them all)", cfg.max_steps, cfg.epochs, steps_per_epoch, steps, steps)
    return Plan(cities=[s.data for s in subsets], subsets=subsets, skipped=skipped, entries=entries, probs=probs,
                steps_per_epoch=steps_per_epoch, steps=steps, epoch_capped=capped)


@dataclass
class Validation:
    """The validation city's run subset and targets; ranks cover every task in turn."""

    data: CityData
    subset: RunSubset
    tasks: tuple[str, ...]

    @property
    def targets(self) -> np.ndarray:
        return self.subset.val_targets

    def ranks(self, model: torch.nn.Module, cfg: TrainConfig) -> np.ndarray:
        """Validation ranks, every task in turn (one array: the keep rule pairs them target by target)."""
        return np.concatenate([rank_targets(model, self.data, self.subset.city, self.targets, task=task,
                                            max_len=cfg.max_len, batch_size=cfg.eval_batch_size)
                               for task in self.tasks])


def validation(val_city: CityData | None, p: Plan, cfg: TrainConfig) -> Validation | None:
    """The validation city's run subset (the same object as its training subset when it is trained
    on too), or None without a validation city."""
    if val_city is None:
        return None
    j = next((i for i, c in enumerate(p.cities) if c is val_city), None)
    subset = p.subsets[j] if j is not None else run_subset(
        val_city, fraction=cfg.fraction, seed=cfg.seed, max_len=cfg.max_len, use_poi=cfg.use_poi)
    return Validation(val_city, subset, cfg.tasks)
