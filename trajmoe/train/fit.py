"""Pretraining and fine-tuning loop shared by TrajMoE and the neural baselines.

:func:`fit` runs four phases: :func:`trajmoe.train.plan.plan` (each city's run subset, the cities skipped for want
of a training window, the step sampler and count), the optimiser steps, keep (the best validated
state, or the starting one) and head calibration. It returns what it decided
(:class:`TrainResult`: the kinds and tasks the weights are now trained for, the cities skipped)
and never writes into the model's config; a checkpoint's training record carries them.

* Multi-city pretraining: every step draws ONE city (probability proportional to its number of
  training windows ** temperature, 0.5 by default, so the largest city does not drown the rest)
  and a batch of that city's windows.
* Fine-tuning: the same loop on one city's few-shot windows; ``mode="light"`` trains only the
  city's domain expert, the routers and the output heads.
* Cross-fitting: each person fold of a city's windows trains against cell features, popularity and
  transitions counted from the other fold (``RunSubset.cross_fit``): no target is in its own features.
* Early stopping on the validation targets (the same few-shot share of them), best state restored;
  the state before training, or the calibrated hand-made head alone, is kept instead when the
  trained one is worse than it beyond noise on that share (:mod:`trajmoe.train.keep`), and head
  calibration is undone on the same test.
* Device: the model's own (:func:`trajmoe.train.device.model_device`); the caller moves the model
  once (``model.to(device)``), fit moves each batch and its city tensors before the forward pass,
  which runs under ``cfg.precision`` (``bf16``: autocast on CUDA; the loss is summed in float32).
* Scale-out: unchanged under ``torchrun`` (DistributedDataParallel, gloo on CPU, NCCL on CUDA with
  one GPU per rank, ``distributed.rank_device``). Every rank draws
  the same city and the same batch at each step and takes its own shard of it; the loss is the
  token-summed cross-entropy divided by the GLOBAL token count, so the 2-rank update equals the
  1-rank update (``tests/test_train.py`` checks it under ``torchrun``).

Evaluation is in ``evaluate.py``, the process group in ``distributed.py``, the head calibration
that ends a run with validation targets in ``calibration.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from trajmoe.city.batch import TASKS, Batch, CityTensors, check_task
from trajmoe.city.data import DEFAULT_MAX_LEN, CityData
from trajmoe.city.subset import RunSubset, check_fraction
from trajmoe.errors import TrajMoEError
from trajmoe.model.loss import next_cell_loss
from trajmoe.train.calibration import CALIBRATION_PRIOR_TARGETS, calibrate_head
from trajmoe.train.device import PRECISIONS, autocast, check_precision, model_device
from trajmoe.train.distributed import dist_info, shard
from trajmoe.train.keep import (
    Best,
    Verdict,
    keep_among_states,
    keep_state,
    worse_beyond_noise,
)
from trajmoe.train.metrics import metrics_from_ranks
from trajmoe.train.models import check_model_task, trainable_parameters
from trajmoe.train.plan import Plan, Validation, plan, validation
from trajmoe.train.recipe import FINETUNE, PRETRAIN

log = logging.getLogger(__name__)

# (step, total_steps, loss) -> None, or (step, total_steps, loss, seconds_left) -> None: a callback
# with a fourth parameter also gets the seconds left of cfg.max_seconds (None without a budget). With
# a budget, total_steps is the steps expected to fit in it (the planned steps when fewer), so
# step / total_steps is the share of the run done either way.
Progress = Callable[..., None]


def _takes_seconds_left(progress: Progress) -> bool:
    try:
        params = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):
        return False
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 4 or any(
        p.kind == p.VAR_POSITIONAL for p in params)


@dataclass
class TrainConfig:
    """One run's training settings; the defaults are :data:`trajmoe.train.recipe.FINETUNE`'s."""

    # Passes over the training windows; an epoch is also the validation period. None: no epoch
    # limit, max_steps decides. With both, the run stops at whichever comes first, and fit says so
    # (a warning, TrainResult.epoch_capped) when the epochs end it before max_steps.
    epochs: int | None = FINETUNE.epochs
    max_steps: int | None = FINETUNE.max_steps  # stop after this many optimiser steps (None = epochs decide)
    # Wall-clock budget of the training loop (its steps and each epoch's validation): the run stops
    # when it is used, and on one rank the learning-rate schedule follows whichever of steps and time
    # is further along (so a run cut by time still ends its cosine decay). None: no budget.
    max_seconds: float | None = None
    batch_size: int = FINETUNE.batch_size  # windows per step
    lr: float = FINETUNE.lr
    weight_decay: float = 0.01
    warmup_steps: int = FINETUNE.warmup_steps
    grad_clip: float = 1.0
    max_len: int = DEFAULT_MAX_LEN  # L, window and context length
    fraction: float = 1.0  # few-shot share of training windows (and of validation targets)
    seed: int = 0
    temperature: float = 0.5  # city sampling probability ~ n_windows ** temperature
    mode: str = "full"  # "full" or "light" (domain expert + routers + heads only)
    patience: int = 2  # epochs without validation improvement before stopping
    eval_batch_size: int = 256
    use_poi: bool = True  # False: POI features masked (ablation)
    calibrate: bool = True  # after training, fit the head's prior weights on the validation targets
    calibration_prior: float = CALIBRATION_PRIOR_TARGETS  # pull toward the trained weights, in targets
    precision: str = "fp32"  # "fp32", or "bf16" (autocast of the training forward pass, CUDA only)
    # Cross-fitting (RunSubset.cross_fit): train each person fold's windows against cell features,
    # popularity and transitions counted from the other fold, never from the target visits
    # themselves; evaluation then uses features from all of the run's windows (twice the data: the
    # features are shares and ranks, so their scale does not depend on it). False: the run's own.
    cross_fit: bool = True
    # Tasks trained (batch.TASKS): steps take them in turn; validation, the keep rule and head
    # calibration cover each. Models without a task switch (GRU, count models) train "next" only.
    tasks: tuple[str, ...] = FINETUNE.tasks

    def __post_init__(self):
        self.tasks = tuple(check_task(t) for t in self.tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise TrajMoEError(f"tasks must be distinct and at least one, got {self.tasks}")
        if self.mode not in ("full", "light"):
            raise TrajMoEError(f"mode must be 'full' or 'light', got {self.mode!r}")
        if self.epochs is None and self.max_steps is None:
            raise TrajMoEError("give epochs or max_steps (or both): without either a run has no end")
        if self.epochs is not None and self.epochs < 1:
            raise TrajMoEError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrajMoEError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.warmup_steps < 0 or not self.lr > 0:
            raise TrajMoEError(f"lr must be > 0 and warmup_steps >= 0, got lr={self.lr}, warmup_steps={self.warmup_steps}")
        if self.batch_size < 1:
            raise TrajMoEError(f"batch size must be >= 1, got {self.batch_size}")
        check_fraction(self.fraction)
        if self.precision not in PRECISIONS:
            raise TrajMoEError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def pretrain_config(**overrides) -> TrainConfig:
    """The one pretraining recipe (:data:`trajmoe.train.recipe.PRETRAIN`: the shipped checkpoint's,
    ``trajmoe pretrain``'s defaults) as a TrainConfig; ``overrides`` set other fields."""
    return TrainConfig(**{**dataclasses.asdict(PRETRAIN), **overrides})

FINAL_LOSS_STEPS = 50  # TrainResult.final_loss: the mean of this many last steps (one step's CE is noisy)


@dataclass
class TrainResult:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    calibration: dict = field(default_factory=dict)
    # Which state the run ended with (train.keep.choose_state): "fine-tuned" (the best trained epoch
    # on the validation share), "starting" (the state before training), "baseline" (the calibrated
    # hand-made head alone: both learned states were worse than it beyond noise), or "" (no
    # validation targets). A state is set aside only when worse beyond noise than another
    # (worse_beyond_noise): fine-tuning never leaves a model measurably worse than where it started,
    # nor than the simple baseline. ``start_val``: the starting state's validation metrics.
    kept: str = ""
    start_val: dict = field(default_factory=dict)
    calibration_kept: bool = False  # head calibration ran and the validation share did not show it hurt
    # The keep rule's verdict among the fine-tuned state, the starting one and the calibrated
    # hand-made head alone (train.keep.Verdict); None without validation targets or a starting state.
    verdict: Verdict | None = None
    state_ranks: dict[str, np.ndarray] = field(default_factory=dict)  # the verdict's validation ranks per state
    subsets: list[RunSubset] = field(default_factory=list)  # what each training city gave the run
    val_subset: RunSubset | None = None  # the validation city's subset (its features and val targets)
    skipped: list[CityData] = field(default_factory=list)  # cities given without a training window
    planned_steps: int = 0  # the steps plan() decided (early stopping or max_seconds may end sooner)
    epoch_capped: bool = False  # max_steps asked for more steps than the epochs allowed
    # What the weights are trained for after this run, earlier training included (what fit decided;
    # the model's config is not changed): kinds of data whose head rows training made meaningful,
    # and tasks (batch.TASKS order). A checkpoint's training record carries them.
    trained_kinds: tuple[str, ...] = ()
    trained_tasks: tuple[str, ...] = ()

    @property
    def final_loss(self) -> float | None:
        """Mean training cross-entropy of the last :data:`FINAL_LOSS_STEPS` steps (all, when fewer):
        what a checkpoint's training record calls ``final_loss``; None before any step."""
        tail = self.losses[-FINAL_LOSS_STEPS:]
        return float(np.mean(tail)) if tail else None


# --------------------------------------------------------------------------- helpers
def _lr_at(step: int, total: int, cfg: TrainConfig, *, time_used: float = 0.0) -> float:
    """Linear warm-up, then cosine down to a tenth of ``cfg.lr``; ``time_used``: the share of
    ``cfg.max_seconds`` spent (the decay follows it when it is further along than the steps)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = max((step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps), time_used)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def sequence_loss(model: torch.nn.Module, batch: Batch, city: CityTensors, *, n_global: int,
                  precision: str = "fp32", task: str = TASKS[0]) -> tuple[torch.Tensor, float, int]:
    """Token-summed CE / global token count (+ the model's auxiliary loss), in ``task``.

    ``batch`` and ``city`` must be on the model's device. The forward pass runs under
    ``precision`` (:func:`trajmoe.train.device.autocast`); the loss is computed in float32.
    Returns (loss to backpropagate, summed CE of this rank's tokens, number of those tokens).
    """
    with autocast(batch.cells.device, precision):
        out = model(batch, city, targets=False, task=task)
    ce_sum = next_cell_loss(out.logits.float(), batch.targets, reduction="sum")  # logits (B, T, N)
    valid = batch.targets >= 0  # IGNORE and MISS are not trainable
    _, world = dist_info()
    loss = ce_sum * world / max(n_global, 1)
    aux = getattr(out, "aux_loss", None)
    if aux is not None:
        loss = loss + aux.float()
    return loss, float(ce_sum.detach()), int(valid.sum())


# --------------------------------------------------------------------------- steps
def _steps(model: torch.nn.Module, p: Plan, cfg: TrainConfig, result: TrainResult, *, val: Validation | None,
           progress: Progress | None) -> tuple[Best, Best | None]:
    """The optimiser steps (tasks in turn), validation before the first and at every epoch's end,
    early stopping. Returns the best validated state and the starting one (None without validation)."""
    rank, world = dist_info()
    for c in p.cities:  # a city new to the model gets its (empty) domain expert before optimisation
        if hasattr(model, "add_domain_expert"):
            model.add_domain_expert(c.name)
    device = model_device(model)
    check_precision(device, cfg.precision)  # refuse bf16 off CUDA before any work
    windows = [w for _, w, _ in p.entries]
    tensors = [t.to(device) for _, _, t in p.entries]  # each entry's cell table, moved once
    params = trainable_parameters(model, cfg.mode)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    groups = model.param_groups(params) if hasattr(model, "param_groups") else [{"params": params, "lr_scale": 1.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)  # identical on every rank: same city, same batch per step
    orders = [rng.permutation(len(w)) for w in windows]
    cursors = [0] * len(windows)
    start = None
    if val is not None:  # the starting state is kept when every trained epoch is worse beyond noise (keep_state)
        start_ranks = val.ranks(model, cfg)
        result.start_val = metrics_from_ranks(start_ranks)
        start = Best(copy.deepcopy(model.state_dict()), start_ranks)
    best, bad_epochs = Best(), 0
    timed = progress is not None and _takes_seconds_left(progress)
    t0 = time.perf_counter()
    model.train()
    for step in range(p.steps):
        ci = int(rng.choice(len(p.entries), p=p.probs))
        if cursors[ci] + cfg.batch_size > len(orders[ci]):
            orders[ci], cursors[ci] = rng.permutation(len(windows[ci])), 0
        picked = orders[ci][cursors[ci] : cursors[ci] + cfg.batch_size]
        cursors[ci] += cfg.batch_size
        batch_windows = [windows[ci][k] for k in picked]
        n_global = sum(len(w) - 1 for w in batch_windows)
        mine = shard(batch_windows, rank=rank, world=world)
        task = cfg.tasks[step % len(cfg.tasks)]  # tasks in turn, on the same windows
        # the share of the time budget used (one rank only: ranks' clocks differ, their learning rates must not)
        used = (time.perf_counter() - t0) / cfg.max_seconds if cfg.max_seconds and world == 1 else 0.0
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, p.steps, cfg, time_used=used) * g["lr_scale"]
        if mine:
            loss, ce_sum, n_tok = sequence_loss(train_model, p.cities[p.entries[ci][0]].window_batch(mine).to(device),
                                                tensors[ci], n_global=n_global, precision=cfg.precision, task=task)
        else:  # more ranks than windows: contribute a zero gradient so all-reduce stays in step
            loss, ce_sum, n_tok = sum(p_.sum() * 0.0 for p_ in params), 0.0, 0
        if world > 1:  # log the global mean CE, identical on every rank
            stats = torch.tensor([ce_sum, float(n_tok)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(stats)
            ce_sum, n_tok = float(stats[0]), int(stats[1])
        ce = ce_sum / max(n_tok, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        result.losses.append(ce)
        result.steps = step + 1
        elapsed = time.perf_counter() - t0
        if progress is not None and rank == 0:
            total, left = p.steps, None
            if cfg.max_seconds:  # the steps the budget allows at this pace, and the seconds it has left
                left = max(0.0, cfg.max_seconds - elapsed)
                total = min(p.steps, max(step + 1, int((step + 1) * cfg.max_seconds / max(elapsed, 1e-9))))
            progress(step + 1, total, ce, left) if timed else progress(step + 1, total, ce)
        out_of_time = cfg.max_seconds is not None and elapsed > cfg.max_seconds
        if world > 1:  # every rank stops at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            torch.distributed.all_reduce(flag)
            out_of_time = bool(flag.item())
        epoch_end = (step + 1) % p.steps_per_epoch == 0 or step + 1 == p.steps or out_of_time
        if epoch_end and val is not None:
            ranks = val.ranks(model, cfg)
            m = metrics_from_ranks(ranks)
            result.val.append(m)
            score = m["acc@1"] + m["mrr"]
            if score > best.score:
                best, bad_epochs = Best(copy.deepcopy(model.state_dict()), ranks, score), 0
                result.best_epoch = len(result.val) - 1
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    log.info("early stop after %d epochs without validation improvement", bad_epochs)
                    break
        if out_of_time:
            log.info("stopping after %d steps: time budget of %.0f s used", step + 1, cfg.max_seconds)
            break
    result.seconds = time.perf_counter() - t0
    return best, start


# --------------------------------------------------------------------------- calibrate
def _calibrate(model: torch.nn.Module, val: Validation, cfg: TrainConfig, result: TrainResult, *,
               kinds_before: tuple[str, ...], kept_ranks: np.ndarray | None) -> np.ndarray | None:
    """Fit the head's prior weights of every task on the validation share (train.calibration), and
    undo it when the same share shows it worse beyond noise. Returns the kept state's validation ranks."""
    prior = _calibration_prior(val, cfg, kinds_before)
    # calibrate_head is looked up in this module's namespace: tests patch it on trajmoe.train.fit.
    head = getattr(model, "head", None)
    saved = copy.deepcopy(head.state_dict()) if head is not None else None
    for task in cfg.tasks:  # each task's own prior row and trust scalars
        fitted = calibrate_head(model, val.data, val.subset.city, val.targets, task=task, prior_targets=prior)
        if fitted and (not result.calibration or task == cfg.tasks[0]):
            result.calibration = {**fitted, "task": task}
    if result.calibration and saved is not None:  # undone only if the validation share shows it hurts
        after = val.ranks(model, cfg)
        result.calibration_kept = not worse_beyond_noise(1.0 / after, 1.0 / kept_ranks)
        if not result.calibration_kept:
            head.load_state_dict(saved)
        log.info("head calibration %s: validation acc@1 %.4f", "kept" if result.calibration_kept else "undone",
                 metrics_from_ranks(after)["acc@1"])
        return after if result.calibration_kept else kept_ranks
    return kept_ranks


def _calibration_prior(val: Validation, cfg: TrainConfig, kinds_before: tuple[str, ...]) -> float:
    """Calibration pulls toward the weights only a kind's earlier training made meaningful."""
    return cfg.calibration_prior if val.data.kind in kinds_before else 0.0


# --------------------------------------------------------------------------- training
def fit(
    model: torch.nn.Module,
    cities: list[CityData],
    cfg: TrainConfig,
    *,
    val_city: CityData | None = None,
    progress: Progress | None = None,
    kinds_before: Iterable[str] | None = None,
) -> TrainResult:
    """Train ``model`` on the training windows of ``cities`` (few-shot share ``cfg.fraction``).

    Four phases: :func:`trajmoe.train.plan.plan` (run subsets, cities skipped for want of windows, step count), the
    optimiser steps (tasks in turn), keep (with ``val_city``: validation Acc@1/MRR on its
    few-shot validation targets after every epoch, early stopping after ``cfg.patience`` epochs
    without improvement, the best state restored, or the starting state when every epoch was
    worse beyond noise), and head calibration on the same targets.

    ``kinds_before``: the kinds of data whose head rows earlier training made meaningful
    (calibration pulls only those toward their weights); default the model's
    ``config.pretrained_kinds`` (a loaded checkpoint's record). The model's config is never
    changed: the returned :attr:`TrainResult.trained_kinds` and :attr:`TrainResult.trained_tasks` are
    what the weights are now trained for, for the checkpoint's training record
    (:func:`trajmoe.train.record.training_record`).
    """
    for task in cfg.tasks:  # a model that cannot score a task refuses before any work
        check_model_task(model, task)
    config = getattr(model, "config", None)
    if kinds_before is None:
        kinds_before = getattr(config, "pretrained_kinds", ())
    kinds_before = tuple(kinds_before)
    p = plan(cities, cfg)
    val = validation(val_city, p, cfg)
    result = TrainResult(subsets=p.subsets, val_subset=val.subset if val else None, skipped=p.skipped,
                         planned_steps=p.steps, epoch_capped=p.epoch_capped)
    validate = val is not None and len(val.targets) > 0
    best, start = _steps(model, p, cfg, result, val=val if validate else None, progress=progress)
    steps_done = time.perf_counter()
    kept_ranks = keep_state(model, result, best, start)
    if cfg.calibrate and validate:
        kept_ranks = _calibrate(model, val, cfg, result, kinds_before=kinds_before, kept_ranks=kept_ranks)
    if start is not None and kept_ranks is not None:
        keep_among_states(model, val, cfg, result, best=best, start=start, kept_ranks=kept_ranks,
                          calibration_prior=_calibration_prior(val, cfg, kinds_before), calibrate=calibrate_head)
    result.trained_kinds = tuple(sorted(set(kinds_before) | {c.kind for c in p.cities}))
    result.trained_tasks = tuple(t for t in TASKS if t in set(getattr(config, "tasks", ())) | set(cfg.tasks))
    model.eval()
    result.seconds += time.perf_counter() - steps_done  # from the first step to the end of calibration
    return result
