"""Safe checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (config, schema, cities, metrics).

Loading never unpickles anything: weights are read only through ``safetensors`` after the file's
header has been checked by hand, so a pickle (``.pt``/``.bin``, even renamed), an empty,
truncated, random or lying-header file is refused with a :class:`CheckpointError` that names the
file, before any deserialiser sees it. The model the sidecar describes is compared with the
header's tensor shapes on torch's "meta" device first, so a foreign or hostile sidecar cannot make
the loader allocate a huge model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trajmoe import __version__
from trajmoe.city.features import SCHEMA_ID
from trajmoe.errors import CheckpointError
from trajmoe.train.models import build_model

log = logging.getLogger(__name__)

FORMAT = "trajmoe-checkpoint"
# 2: rotary (relative) positions with sliding-window attention, no absolute position table; a
# format-1 checkpoint's model scored each target from its own 64-visit window and cannot be loaded.
# 3: the head's successor and transition terms, its learned return scorer, and popularity relative to
# the mean cell; a format-2 head has 8 prior weights and was fitted on raw log counts.
# 4: two tasks (next, at-time): target-time embeddings and router-prior columns, per-task head rows
# and trust scalars, at-time head terms; config.tasks records what the checkpoint was trained for.
FORMAT_VERSION = 4
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``X.safetensors`` (or ``X``) -> (weights path, JSON sidecar path)."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors") if path.suffix == "" else path
    return path, path.with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, arch: str, config: Any, info: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write weights and sidecar. ``config`` is a dataclass (or dict) that rebuilds ``model``.

    ``dtype`` (e.g. ``torch.float16``) stores floating-point weights at lower precision to halve a
    shipped file; loading copies them back into the model's float32 parameters.
    """
    weights, sidecar = checkpoint_paths(path)
    if weights.suffix != ".safetensors":
        raise CheckpointError(f"Checkpoint path {path} must end in .safetensors (e.g. model.safetensors).")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trajmoe_version": __version__,
        "arch": arch,
        "feature_schema": SCHEMA_ID,
        "config": cfg,
        "sha256": _sha256(weights),
        **(info or {}),
    }
    sidecar.write_text(json.dumps(meta, indent=2, default=str))
    return weights


def _check_safetensors_header(weights: Path) -> dict:
    """Refuse anything that is not a well-formed safetensors file, without deserialising it.

    Returns the header: tensor name -> {dtype, shape, data_offsets} (and ``__metadata__``).
    """
    size = weights.stat().st_size
    if size == 0:
        raise CheckpointError(f"Checkpoint {weights} is empty (0 bytes): the download or copy was cut; fetch it again.")
    with weights.open("rb") as f:
        head = f.read(8)
        if head.startswith(_PICKLE_MAGIC):
            raise CheckpointError(
                f"{weights} is a pickle/PyTorch file, not safetensors. TrajMoE never loads pickles (they can run code): "
                "ask for the .safetensors + .json pair instead."
            )
        if len(head) < 8:
            raise CheckpointError(f"Checkpoint {weights} is truncated ({size} bytes): fetch it again.")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{weights} is not a valid safetensors file (bad header length): it may be truncated or another format.")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{weights} has a corrupt safetensors header ({exc}): fetch it again.") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights} has a corrupt safetensors header: fetch it again.")
    end = 8 + n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets) and end + offsets[1] <= size):
            raise CheckpointError(f"{weights} is truncated or lies about tensor {name!r}: fetch it again.")
    return header


def _check_shapes(weights: Path, header: dict, meta: dict) -> None:
    """Refuse weights whose tensors differ from the model the sidecar describes.

    The model is built on torch's "meta" device (shapes only, no memory), so a sidecar that
    describes a huge model costs nothing instead of allocating it before the mismatch shows.
    """
    n_tensors = sum(name != "__metadata__" for name in header)
    builder = threading.get_ident()
    registered = 0

    def count(module, name, param):  # even on "meta", 1000 layers take minutes: stop early
        nonlocal registered
        if threading.get_ident() == builder:
            registered += 1
            if registered > 2 * n_tensors + 64:
                raise CheckpointError(f"{weights} holds {n_tensors} tensors but its sidecar "
                                      "describes a much larger model.")

    hook = torch.nn.modules.module.register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            skeleton = build_model(meta["arch"], meta["config"], cities=meta.get("domain_experts", []))
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        if isinstance(exc, CheckpointError) and str(weights) in str(exc):
            raise  # the size guard above
        raise CheckpointError(f"{weights} does not fit its sidecar's model description: {exc}") from exc
    finally:
        hook.remove()
    wanted = {name: list(t.shape) for name, t in skeleton.state_dict().items()}
    found = {name: e.get("shape") for name, e in header.items() if name != "__metadata__"}
    missing, extra = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    wrong = [f"{n} {found[n]} (the sidecar's config needs {wanted[n]})"
             for n in sorted(set(wanted) & set(found)) if found[n] != wanted[n]]
    if missing or extra or wrong:
        details = "; ".join(f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                            for what, names in (("missing tensors", missing),
                                                ("unexpected tensors", extra),
                                                ("wrong shapes", wrong)) if names)
        raise CheckpointError(f"{weights} does not fit its sidecar's model description ({details}): "
                              "keep each .safetensors with the .json written next to it.")


def read_sidecar(path: str | Path) -> dict:
    """The checkpoint's JSON sidecar, checked for format and feature schema."""
    weights, sidecar = checkpoint_paths(path)
    if not sidecar.is_file():
        raise CheckpointError(f"Checkpoint sidecar {sidecar} is missing: keep NAME.json next to {weights.name}.")
    try:
        meta = json.loads(sidecar.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"Checkpoint sidecar {sidecar} is not valid JSON ({exc}).") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not a TrajMoE checkpoint sidecar (no format={FORMAT!r}).")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{weights.name} is checkpoint format {version}, this TrajMoE reads format {FORMAT_VERSION} "
            "(trained for two tasks, next and at-time): regenerate it (`python assets/regenerate.py`, "
            f"or `trajmoe pretrain`, then `trajmoe finetune` from a format-{FORMAT_VERSION} checkpoint) with this version."
        )
    if meta.get("feature_schema") != SCHEMA_ID:
        raise CheckpointError(
            f"{weights} uses feature schema {meta.get('feature_schema')!r} but this TrajMoE uses {SCHEMA_ID!r}: "
            "retrain or fine-tune it with this version."
        )
    return meta


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights (never unpickles)."""
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(f"Checkpoint {weights} not found: pass the path of a NAME.safetensors file.")
    header = _check_safetensors_header(weights)  # first: a pickle is named as such, sidecar or not
    meta = read_sidecar(weights)
    if meta.get("sha256") and meta["sha256"] != _sha256(weights):
        raise CheckpointError(f"{weights} does not match its sidecar (checksum differs): the pair was mixed up or modified.")
    _check_shapes(weights, header, meta)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"Cannot read {weights}: {exc}") from exc
    try:
        model = build_model(meta["arch"], meta["config"], cities=meta.get("domain_experts", []))
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{weights} does not fit its sidecar's model description: {exc}") from exc
    model.eval()
    return model, meta
