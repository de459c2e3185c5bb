"""The checkpoints a session can start from and the models they load: uploaded, named by
$TRAJMOE_CHECKPOINT (``inputs.CHECKPOINT_ENV``), or shipped; the shared pretrained model is loaded
once per process (``st.cache_resource``) and never modified."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import streamlit as st

from state import storage
from state.inputs import CHECKPOINT_ENV, SHIPPED_CHECKPOINT, WORK_DIR, digest, session_dir
from state.session import session
from trajmoe.errors import CheckpointError, TrajMoEError


def base_checkpoint() -> Path | None:
    """The checkpoint this session starts from: uploaded, $TRAJMOE_CHECKPOINT, or the shipped one."""
    uploaded = session().base_checkpoint
    if uploaded:
        return Path(uploaded)
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Path(env)
    return SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.is_file() else None


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def load_model(path: str, mtime: float):
    """(model, sidecar) of a checkpoint, shared by all sessions and never modified."""
    import torch

    from trajmoe.train.checkpoint import load_checkpoint

    # The app's batches are small: one thread is faster than several that wait on each other,
    # and much faster on a busy machine (measured 1.6 s vs 27 s for the sample's predictions).
    torch.set_num_threads(1)
    return load_checkpoint(path)


def base_model():
    """(model, sidecar, path) of the starting checkpoint, or None when there is none."""
    path = base_checkpoint()
    if path is None or not path.is_file():
        return None
    model, meta = load_model(str(path), path.stat().st_mtime)
    return model, meta, path


def checkpoint_from_upload(files) -> Path:
    """Write an uploaded .safetensors + .json pair into the session's folder and return the weights path."""
    by_ext = {Path(f.name).suffix.lower(): f for f in files}
    if set(by_ext) != {".safetensors", ".json"}:
        raise CheckpointError("Upload both files of the checkpoint: NAME.safetensors and NAME.json.")
    weights, sidecar = by_ext[".safetensors"].getvalue(), by_ext[".json"].getvalue()
    folder = session_dir() / "checkpoints" / digest(weights + sidecar)
    # The planner's own file name, in messages and the model's name; characters other than letters,
    # digits, _ . - (and a "www.") become "-", so that no label shown as Markdown links anywhere.
    name = re.sub(r"(?i)www\.", "www-", re.sub(r"[^\w.-]+", "-", Path(by_ext[".safetensors"].name).name))
    path = folder / name
    if not path.with_suffix(".json").is_file():  # written last: once there, both are (the uploader reruns this)
        storage.check_room(WORK_DIR, session().token, len(weights) + len(sidecar), "the checkpoint")
        folder.mkdir(parents=True, exist_ok=True)
        storage.write_atomic(path, weights)
        storage.write_atomic(path.with_suffix(".json"), sidecar)  # the sidecar must sit next to it, same stem
    return path


def start_from_upload(files) -> None:
    """Start this session from an uploaded checkpoint once it loads (a TrajMoEError says why it does not)."""
    path = checkpoint_from_upload(files)
    try:
        load_model(str(path), path.stat().st_mtime)
    except TrajMoEError:
        shutil.rmtree(path.parent, ignore_errors=True)  # a refused checkpoint is not kept
        raise
    session().start_from(str(path))
