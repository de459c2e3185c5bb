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
import math
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from trajmoe import __version__
from trajmoe.city.features import SCHEMA_ID
from trajmoe.errors import CheckpointError
from trajmoe.train.models import ARCHS, build_model, config_class
from trajmoe.train.record import TrainingRecord

if TYPE_CHECKING:
    pass

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
                    record: TrainingRecord | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write weights and sidecar. ``config`` is a dataclass (or dict) that rebuilds ``model``.

    ``record``: the run's :class:`TrainingRecord`, written as the sidecar's ``training`` entry; the
    tasks and kinds it says the weights are trained for become the config's ``tasks`` and
    ``pretrained_kinds`` (what the loaded model checks a task against, and what calibration pulls
    toward). ``info``: the rest of the sidecar (``cities``, ``domain_experts``, ``metrics``, ...).
    ``dtype`` (e.g. ``torch.float16``) stores floating-point weights at lower precision to halve a
    shipped file; loading copies them back into the model's float32 parameters.
    """
    weights, sidecar = checkpoint_paths(path)
    if weights.suffix != ".safetensors":
        raise CheckpointError(f"Checkpoint path {Path(path).name} must end in .safetensors (e.g. model.safetensors).")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    info = dict(info or {})
    if record is not None:
        info["training"] = record.to_json()
        if "tasks" in cfg:  # the TrajMoE family: what the weights are now trained for
            cfg["tasks"], cfg["pretrained_kinds"] = list(record.trained_tasks), list(record.trained_kinds)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trajmoe_version": __version__,
        "arch": arch,
        "feature_schema": SCHEMA_ID,
        "config": cfg,
        "sha256": _sha256(weights),
        **info,
    }
    sidecar.write_text(json.dumps(meta, indent=2, default=str))
    return weights


def _check_safetensors_header(weights: Path) -> dict:
    """Refuse anything that is not a well-formed safetensors file, without deserialising it.

    Returns the header: tensor name -> {dtype, shape, data_offsets} (and ``__metadata__``).
    """
    size = weights.stat().st_size
    if size == 0:
        raise CheckpointError(f"Checkpoint {weights.name} is empty (0 bytes): the download or copy was cut; fetch it again.")
    with weights.open("rb") as f:
        head = f.read(8)
        if head.startswith(_PICKLE_MAGIC):
            raise CheckpointError(
                f"{weights.name} is a pickle/PyTorch file, not safetensors. TrajMoE never loads pickles (they can run code): "
                "ask for the .safetensors + .json pair instead."
            )
        if len(head) < 8:
            raise CheckpointError(f"Checkpoint {weights.name} is truncated ({size} bytes): fetch it again.")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{weights.name} is not a valid safetensors file (bad header length): it may be truncated or another format.")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{weights.name} has a corrupt safetensors header ({exc}): fetch it again.") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights.name} has a corrupt safetensors header: fetch it again.")
    end = 8 + n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets) and end + offsets[1] <= size):
            raise CheckpointError(f"{weights.name} is truncated or lies about tensor {name!r}: fetch it again.")
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
                raise CheckpointError(f"{weights.name} holds {n_tensors} tensors but its sidecar "
                                      "describes a much larger model.")

    hook = torch.nn.modules.module.register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            skeleton = build_model(meta["arch"], meta["config"], cities=meta.get("domain_experts", []))
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        if isinstance(exc, CheckpointError) and weights.name in str(exc):
            raise  # the size guard above
        raise CheckpointError(f"{weights.name} does not fit its sidecar's model description: {exc}") from exc
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
        raise CheckpointError(f"{weights.name} does not fit its sidecar's model description ({details}): "
                              "keep each .safetensors with the .json written next to it.")


# --------------------------------------------------------------------------- sidecar values
# Sane ranges of a sidecar's config values: far beyond any model trajmoe trains (d_model 128, 2
# layers, 64-visit windows), far below what would exhaust memory or time. A sidecar outside them
# was edited or damaged; it is refused with what is wrong before any model is built.
CONFIG_RANGES = {
    "d_model": (1, 8192), "n_layers": (1, 64), "n_heads": (1, 256), "max_len": (1, 65_536),
    "attn_window": (1, 65_536), "return_window": (1, 65_536), "encoder_group_dim": (1, 8192),
    "encoder_cross_layers": (0, 64), "n_poi_categories": (0, 1024), "n_routed_experts": (1, 1024),
    "top_k": (1, 1024), "expert_hidden": (0, 65_536), "domain_expert_rank": (1, 8192), "feature_dim": (1, 65_536),
    "dropout": (0.0, 0.999), "router_prior_init": (-1e3, 1e3), "router_aux_loss_coef": (0.0, 1e3),
    "router_z_loss_coef": (0.0, 1e3),
}
MAX_NAMES = 1024  # domain experts, feature groups, wavelengths: at most this many entries


def _value_problem(name: str, value: Any, default: Any) -> str | None:
    """What is wrong with one config value, judged by its field's default's type and CONFIG_RANGES."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int | float):
        whole = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
            return "must be a whole number" if whole else "must be a number"
        low, high = CONFIG_RANGES.get(name, (-1e6, 1e6))
        if not (math.isfinite(value) and low <= value <= high):
            return f"is outside the sane range {low:g}..{high:g}"
        return None
    if isinstance(default, dict):
        if not isinstance(value, dict) or len(value) > MAX_NAMES or not all(
                isinstance(k, str) and type(v) is int and 1 <= v <= 65_536 for k, v in value.items()):
            return "must map names to whole numbers 1..65536"
        return None
    if isinstance(default, tuple | list):
        if not isinstance(value, list | tuple) or len(value) > MAX_NAMES:
            return f"must be a list of at most {MAX_NAMES} entries"
        kinds = {type(x) for x in default} or {str}
        if name == "coord_scales_km":
            kinds = {int, float}
        if not all(type(x) in kinds and (not isinstance(x, float) or math.isfinite(x)) for x in value):
            return "must list " + ("numbers" if float in kinds else "names")
        return None
    return None


def _check_values(meta: dict, name: str) -> None:
    """Refuse a sidecar whose arch or config is missing, mistyped or outside :data:`CONFIG_RANGES`,
    with one message that says what is wrong and what to do (``name``: the weights' file name)."""
    fix = f"use the .json that trajmoe wrote next to {name}, or retrain."
    arch, config = meta.get("arch"), meta.get("config")
    if arch not in ARCHS:
        raise CheckpointError(f"{name}: Unknown model architecture {str(arch)[:40]!r} in its sidecar (known: "
                              f"{', '.join(ARCHS)}): {fix}")
    if not isinstance(config, dict):
        raise CheckpointError(f"{name}: its sidecar has no model config (the 'config' entry is "
                              f"{'missing' if config is None else 'not a JSON object'}): {fix}")
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(config_class(arch))}
    problems = []
    for key, value in config.items():
        if key in defaults:
            why = _value_problem(key, value, defaults[key])
            if why:
                problems.append(f"{key}={json.dumps(value)[:40]} {why}")
    experts = meta.get("domain_experts", [])
    if not isinstance(experts, list) or len(experts) > MAX_NAMES or not all(isinstance(c, str) for c in experts):
        problems.append(f"domain_experts must list at most {MAX_NAMES} city names")
    if problems:
        raise CheckpointError(f"{name}: its sidecar's model config is not usable ({'; '.join(problems[:4])}"
                              f"{' ...' if len(problems) > 4 else ''}): {fix}")


def read_sidecar(path: str | Path) -> dict:
    """The checkpoint's JSON sidecar, checked for format and feature schema."""
    weights, sidecar = checkpoint_paths(path)
    if not sidecar.is_file():
        raise CheckpointError(f"Checkpoint sidecar {sidecar.name} is missing: keep NAME.json next to {weights.name}.")
    try:
        meta = json.loads(sidecar.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"Checkpoint sidecar {sidecar.name} is not valid JSON ({exc}): use the .json trajmoe "
                              f"wrote next to {weights.name}.") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar.name} is not a TrajMoE checkpoint sidecar (no format={FORMAT!r}).")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{weights.name} is checkpoint format {version}, this TrajMoE reads format {FORMAT_VERSION} "
            "(two tasks, next and at-time, with their own head rows): regenerate it (`python assets/regenerate.py`, "
            f"or `trajmoe pretrain`, then `trajmoe finetune` from a format-{FORMAT_VERSION} checkpoint) with this version."
        )
    if meta.get("feature_schema") != SCHEMA_ID:
        raise CheckpointError(
            f"{weights.name} uses feature schema {meta.get('feature_schema')!r} but this TrajMoE uses {SCHEMA_ID!r}: "
            "retrain or fine-tune it with this version."
        )
    _check_values(meta, weights.name)
    return meta


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights (never unpickles)."""
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(f"Checkpoint {weights.name} not found: pass the path of a NAME.safetensors file.")
    header = _check_safetensors_header(weights)  # first: a pickle is named as such, sidecar or not
    meta = read_sidecar(weights)
    if meta.get("sha256") and meta["sha256"] != _sha256(weights):
        raise CheckpointError(f"{weights.name} does not match its sidecar (checksum differs): the pair was mixed up or modified.")
    _check_shapes(weights, header, meta)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"Cannot read {weights.name}: {exc}") from exc
    try:
        model = build_model(meta["arch"], meta["config"], cities=meta.get("domain_experts", []))
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{weights.name} does not fit its sidecar's model description: {exc}") from exc
    model.eval()
    return model, meta
