"""Baseline runs of the protocol (README.md § Protocol): train one baseline on a few-shot share of a city, score the test targets.

:data:`BASELINES` names them: the count models and the return + gravity scorer (``baselines.py``),
the GRU (``gru.py``) and the dense Transformer (TrajMoE with ``moe=False``, ``models.py``); the
neural ones are trained by :func:`trajmoe.train.fit.fit` with :func:`default_train_config`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from trajmoe.city.batch import check_task
from trajmoe.city.data import CityData
from trajmoe.city.subset import run_subset
from trajmoe.errors import TrajMoEError
from trajmoe.train.baselines import Markov, MostPopular, ReturnGravity
from trajmoe.train.evaluate import evaluate
from trajmoe.train.fit import Progress, TrainConfig, fit
from trajmoe.train.models import new_model

log = logging.getLogger(__name__)

BASELINES = ("popular", "markov", "epr", "epr+", "epr-time", "gru", "transformer")

# Neural baselines train from scratch for up to NEURAL_EPOCHS epochs, stopping early after
# NEURAL_PATIENCE epochs without validation gain (on the run's few-shot share of validation
# targets); the rest is fit.py's TrainConfig default (32 windows of up to 64 visits per step,
# AdamW lr 3e-3, cosine schedule). On nyc_foursquare at 100% (1,623 windows, 51 steps per epoch)
# the GRU's validation Acc@1 still rises until ~epoch 20 (10 epochs: test 0.258, 25: 0.299), so
# 20 epochs is the cap. Measured there with OMP_NUM_THREADS=1 on the shared 2-core CPU, validation
# included: GRU 20 epochs in 4 min (test Acc@1 0.297), dense Transformer early-stopped after 13
# epochs in 11 min (0.349). Two torch threads on a busy 2-core machine ran 4-5x slower.
NEURAL_EPOCHS = 20
NEURAL_PATIENCE = 3


def default_train_config(*, fraction: float = 1.0, seed: int = 0) -> TrainConfig:
    """The TrainConfig neural baselines use unless the caller passes one."""
    # A model trained from scratch has no pretrained kind weights (config.pretrained_kinds is empty),
    # so train.fit calibrates its head by plain maximum likelihood, like the return + gravity baseline.
    return TrainConfig(epochs=NEURAL_EPOCHS, patience=NEURAL_PATIENCE, fraction=fraction, seed=seed)


def run_baseline(name: str, data: CityData, *, fraction: float = 1.0, seed: int = 0,
                 progress: Progress | None = None, train_config: TrainConfig | None = None,
                 device: torch.device | str = "cpu", task: str = "next") -> dict:
    """Train baseline ``name`` on a few-shot share of ``data`` and return its test metrics.

    Parameters
    ----------
    name
        One of :data:`BASELINES`.
    data
        A prepared city.
    fraction, seed
        Few-shot share of training windows and validation targets (:func:`trajmoe.city.subset.run_subset`); the same
        subset every method sees for this (fraction, seed).
    progress
        Optional ``(step, total, loss)`` callback (training steps, or Newton iterations for ``epr``).
    train_config
        TrainConfig for the neural baselines (default :func:`default_train_config`); ``fraction``
        and ``seed`` replace its own, and its ``max_len``, ``use_poi`` and ``eval_batch_size``
        apply to every baseline.
    device
        Where the neural baselines (``gru``, ``transformer``) train and are evaluated (default CPU).
        The count models and return + gravity stay on CPU whatever it is: they have no parameters
        (``popular``, ``markov``: count buffers) or eight (ten) weights fitted by Newton passes
        over CPU batches (``epr``, ``epr+``, ``epr-time``).
    task
        ``next`` or ``at-time`` (batch.TASKS): the neural baselines train and are scored for it;
        ``popular``, ``markov``, ``epr`` and ``epr+`` ignore the target's time (the same scores in
        both); ``epr-time`` is at-time only, the GRU next only.

    Returns
    -------
    dict
        ``metrics.metrics_from_ranks`` keys (``acc@1``, ``acc@5``, ``acc@10``, ``mrr``,
        ``ndcg@10``, ``n``) on the test targets, plus ``seconds`` (fit + evaluation wall time) and
        ``steps`` (optimiser steps; passes over the validation targets for ``epr`` and ``epr+``; 0 for count models).
    """
    if name not in BASELINES:
        raise TrajMoEError(f"Unknown baseline {name!r}: use one of {', '.join(BASELINES)}.")
    check_task(task)
    if name == "epr-time" and task != "at-time":
        raise TrajMoEError("epr-time scores a visit given its time: run it with --task at-time (for next: epr, epr+).")
    if name == "gru" and task != "next":
        raise TrajMoEError("the GRU baseline predicts --task next only; for at-time use transformer or epr-time.")
    if train_config is None:
        cfg = default_train_config(fraction=fraction, seed=seed)
    else:
        cfg = dataclasses.replace(train_config, fraction=fraction, seed=seed)
    cfg = dataclasses.replace(cfg, tasks=(task,))
    start = time.perf_counter()
    subset = run_subset(data, fraction=cfg.fraction, seed=cfg.seed, max_len=cfg.max_len, use_poi=cfg.use_poi)
    if not subset.windows:
        raise TrajMoEError(f"{data.folder} has no training windows: every user needs at least 2 training visits.")
    steps = 0
    if name == "popular":
        model = MostPopular()
    elif name == "markov":
        model = Markov().fit(data, subset.windows)
    elif name in ("epr", "epr+", "epr-time"):
        model = ReturnGravity(plus=name == "epr+", time=name == "epr-time")
        steps = model.fit(data, subset.city, subset.val_targets, max_len=cfg.max_len, progress=progress)["evaluations"]
    else:
        overrides = {} if name == "gru" else {"max_len": cfg.max_len, "use_poi_features": cfg.use_poi}
        model, _ = new_model(name, seed=cfg.seed, **overrides)
        model.to(device)  # initialised on CPU (same weights on every device), then moved
        steps = fit(model, [data], cfg, val_city=data, progress=progress).steps
    metrics = evaluate(model, data, split="test", subset=subset, max_len=cfg.max_len, batch_size=cfg.eval_batch_size,
                       task=task)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    metrics["steps"] = steps
    log.info("%s on %s (fraction %.3g, seed %d): %s", name, data.name, cfg.fraction, cfg.seed, metrics)
    return metrics
