"""Where the work runs: ``--device auto|cpu|cuda|mps`` and bf16 autocast, decided in one place.

Modules never store a device (STYLE.md): the caller moves the model once with ``model.to(device)``
and every batch and city tensor with ``.to(device)`` as it is used. The loops (fit, evaluate,
calibration, predict) take the device from the model's own parameters (:func:`model_device`),
so a model moved to a GPU is evaluated there without another argument.

torch is imported inside the functions: the CLI reads :data:`DEVICES` and :data:`PRECISIONS` for
its ``--help`` without paying ``import torch`` (~2 s).
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from trajmoe.errors import TrajMoEError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` is CUDA when available, else CPU.

    Raises a one-line :class:`TrajMoEError` naming the fix when the device is not there.
    """
    import torch

    if name not in DEVICES:
        raise TrajMoEError(f"Unknown device {name!r}: use one of {', '.join(DEVICES)} (default auto).")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrajMoEError("--device cuda: this machine has no CUDA GPU that torch can use (or torch is the CPU "
                           "build): use --device cpu, or install a CUDA build of torch on a GPU machine.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrajMoEError("--device mps: Apple's Metal backend is not available here: use --device cpu.")
    return torch.device(name)


def resolve_device_or_exit(name: str = "auto") -> torch.device:
    """:func:`resolve_device` for scripts (the benchmarks): its one-line error on stderr, exit status 2."""
    try:
        return resolve_device(name)
    except TrajMoEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def model_device(model) -> torch.device:
    """The device of a model's parameters (CPU for parameter-free models such as the count baselines)."""
    import torch

    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse, in one line naming the fix, a precision this device cannot run (bf16 off CUDA)."""
    if precision not in PRECISIONS:
        raise TrajMoEError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision == "bf16" and device.type != "cuda":
        raise TrajMoEError("bf16 autocast is offered on CUDA only: use --precision fp32 on this device.")


def autocast(device: torch.device, precision: str = "fp32"):
    """A context that runs the forward pass in ``precision`` (bf16 autocast on CUDA only)."""
    import torch

    check_precision(device, precision)
    if precision == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
