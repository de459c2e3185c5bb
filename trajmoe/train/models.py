"""The one model factory: new models by architecture name, and rebuilding them from checkpoints.

Architectures (the ``arch`` string a checkpoint sidecar stores):

* ``trajmoe``     :class:`~trajmoe.model.trajmoe.TrajMoE` (SAMoE feed-forward);
* ``transformer`` the dense Transformer baseline: the same TrajMoE of the same width and depth
  with ``moe=False`` (a dense FFN with SAMoE's active parameter count), so the comparison changes
  exactly one thing;
* ``gru``         :class:`~trajmoe.train.gru.GRUNextLocation` (DeepMove-style).

The config returned next to a model is the dataclass :func:`trajmoe.train.checkpoint.save_checkpoint`
serialises; :func:`build_model` turns that JSON back into the same module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from trajmoe.city.batch import check_task
from trajmoe.errors import CheckpointError, TrajMoEError
from trajmoe.model.config import TrajMoEConfig
from trajmoe.model.trajmoe import TrajMoE
from trajmoe.train.gru import GRUConfig, GRUNextLocation
from trajmoe.trajectories.kinds import KINDS

ARCHS = ("trajmoe", "transformer", "gru")


def config_class(arch: str) -> type:
    """The config dataclass of an architecture (:data:`ARCHS`)."""
    if arch not in ARCHS:
        raise TrajMoEError(f"Unknown model architecture {arch!r}: use one of {', '.join(ARCHS)}.")
    return GRUConfig if arch == "gru" else TrajMoEConfig


def _make(arch: str, config) -> nn.Module:
    return GRUNextLocation(config) if arch == "gru" else TrajMoE(config)


def build_model(arch: str, config: dict, *, cities: Iterable[str] = ()) -> nn.Module:
    """Rebuild a model from a checkpoint sidecar's ``arch`` and ``config``.

    Parameters
    ----------
    arch
        ``trajmoe``, ``transformer`` or ``gru``.
    config
        The serialised config dataclass (``dataclasses.asdict``), e.g. a sidecar's ``config``.
    cities
        Cities whose domain experts the weights contain (sidecar ``domain_experts``); they are
        added so that ``load_state_dict(strict=True)`` matches. Ignored by the GRU, which has none.

    Returns
    -------
    nn.Module
        A freshly initialised model of exactly that shape (load the weights next).
    """
    cls = config_class(arch)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CheckpointError(
            f"model config for {arch!r} has fields this trajmoe version does not know ({', '.join(unknown)}): "
            "load the checkpoint with the trajmoe version that wrote it, or retrain."
        )
    if arch != "gru" and "pretrained_kinds" not in config:
        # Sidecars written before the field existed: their head rows are trusted as trained.
        config = {**config, "pretrained_kinds": KINDS}
    cfg = cls(**config)
    if arch == "transformer" and cfg.moe:
        raise CheckpointError("a 'transformer' checkpoint must have moe=False in its config: the sidecar is inconsistent.")
    model = _make(arch, cfg)
    if hasattr(model, "add_domain_expert"):
        for city in cities:
            model.add_domain_expert(city)
    return model


def new_model(arch: str, *, seed: int = 0, **overrides) -> tuple[nn.Module, object]:
    """A new model of ``arch`` with its config dataclass; ``overrides`` set config fields.

    The weights are initialised from ``torch.manual_seed(seed)``, so the same seed gives the same
    model. ``transformer`` forces ``moe=False``; everything else (width, depth, heads, head terms)
    is TrajMoE's default unless overridden, so it matches a TrajMoE built with the same overrides.
    """
    cls = config_class(arch)
    if arch == "transformer":
        if overrides.get("moe", False):
            raise TrajMoEError("the dense Transformer baseline has moe=False; use arch='trajmoe' for SAMoE.")
        overrides = {**overrides, "moe": False}
    try:
        config = cls(**overrides)
    except TypeError as exc:  # an unknown keyword: name the valid ones
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise TrajMoEError(f"{exc}; {cls.__name__} fields are: {names}") from exc
    torch.manual_seed(seed)
    model = _make(arch, config)
    return model, model.config


def new_trajmoe(*, d_model: int = 128, n_layers: int = 2, seed: int = 0, **overrides) -> tuple[TrajMoE, TrajMoEConfig]:
    """A new TrajMoE (``d_model`` wide, ``n_layers`` SAMoE blocks) and its config."""
    return new_model("trajmoe", seed=seed, d_model=d_model, n_layers=n_layers, **overrides)


def check_model_task(model: torch.nn.Module, task: str) -> str:
    """``task`` when ``model`` can score it (its ``scored_tasks``), else an error naming what can:
    the TrajMoE family and the count models (time-blind: the same scores in both) score both tasks,
    epr-time at-time only, the GRU next only. Nothing about the model changes."""
    check_task(task)
    scored = getattr(model, "scored_tasks", ("next",))
    if task in scored:
        return task
    if task == "at-time":
        raise TrajMoEError(f"{type(model).__name__} cannot use the target's time: only the TrajMoE family "
                           "(trajmoe, transformer) and the epr-time baseline predict --task at-time.")
    raise TrajMoEError(f"{type(model).__name__} scores the task(s) {', '.join(scored)} only, not {task!r}: use it "
                       f"with --task {scored[0]} (epr-time scores a visit given its time; for --task next use epr or epr+).")


def trained_tasks(model: torch.nn.Module) -> tuple[str, ...]:
    """The tasks ``model`` was trained for (``config.tasks``, recorded in its checkpoint's config by
    save_checkpoint from the training record); empty when unknown (e.g. an untrained model)."""
    return tuple(getattr(getattr(model, "config", None), "tasks", ()) or ())


def require_task(model: torch.nn.Module, task: str, *, checkpoint: str = "this checkpoint") -> str:
    """``task``, after checking the checkpoint was trained for it (:func:`trained_tasks`; an empty
    record is not checked); the model is not changed: pass the task to each scoring call."""
    check_model_task(model, task)
    trained = trained_tasks(model)
    if trained and task not in trained:
        raise CheckpointError(
            f"{checkpoint} was trained for the task(s) {', '.join(trained)}, not {task!r}: fine-tune it for that "
            f"task first (`trajmoe finetune --task {task} ...`), or use --task {trained[0]}.")
    return task


def trainable_parameters(model: torch.nn.Module, mode: str) -> list[torch.nn.Parameter]:
    """All parameters, or for ``light`` mode only domain experts, routers and output heads."""
    if mode == "full":
        return [p for p in model.parameters() if p.requires_grad]
    light_keys = getattr(model, "light_parameter_keys", ("domain", "gate", "head"))
    chosen = []
    for name, p in model.named_parameters():
        keep = any(k in name for k in light_keys)
        p.requires_grad_(keep)
        if keep:
            chosen.append(p)
    if not chosen:
        raise TrajMoEError("light fine-tuning found no domain expert, router or head parameters: use --mode full")
    return chosen
