"""What survives a browser refresh.

A refresh starts a new Streamlit session with an empty ``st.session_state``. So each session has
a random token in its link (``?s=<token>``, :data:`TOKEN_PARAM`); its files (uploads, prepared
cities, the fine-tuned model) live in its own folder ``WORK_DIR/sessions/<token>`` and its
choices in ``session.json`` there. Opening the same link again brings them back; any other link,
or none, gets a new empty session. A folder not used for :data:`KEEP_DAYS` days is deleted, and
:func:`delete_my_data` deletes it at once.

The project file, the settings a planner keeps and loads again, is :mod:`state.project`.

Dependencies: ``session`` <- ``inputs`` <- ``saved``; the entry file calls :func:`restore` before
a page runs and :func:`save` after it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import streamlit as st

from state import inputs
from state.session import KEY, PRIVACY_K, Session, session
from trajmoe.analysis.privacy import DEFAULT_K, K_CHOICES, check_k
from trajmoe.errors import InputDataError

TOKEN_PARAM = "s"  # the link's query parameter
KEEP_DAYS = 7  # a session's folder is deleted this many days after it was last opened
RECORD = "session.json"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what new_token() makes; anything else is not looked up


def _k(value) -> int:
    """A privacy k the sidebar's slider can show."""
    k = check_k(value)
    if not K_CHOICES[0] <= k <= K_CHOICES[1]:
        raise InputDataError(f"the privacy threshold k must be from {K_CHOICES[0]} to {K_CHOICES[1]}, got {k}")
    return k


def _folder(token: str) -> Path:
    return inputs.WORK_DIR / "sessions" / token


# --------------------------------------------------------------------------- refresh
def restore() -> Session:
    """This session's object: the one in ``st.session_state``, else the one the link's token saved
    (when it has not expired), else a new one; the link always carries its token."""
    if KEY not in st.session_state:
        token = st.query_params.get(TOKEN_PARAM, "")
        found = _load(token) if _TOKEN.fullmatch(token) else None
        if found is None:
            _delete_expired()
            found = Session(), DEFAULT_K
        st.session_state[KEY], st.session_state[PRIVACY_K] = found
    sess = st.session_state[KEY]
    if st.query_params.get(TOKEN_PARAM) != sess.token:  # a page switch drops the link's parameters
        st.query_params[TOKEN_PARAM] = sess.token
    return sess


def _load(token: str) -> tuple[Session, int] | None:
    folder = _folder(token)
    record_path = folder / RECORD
    if not record_path.is_file():
        return None
    if time.time() - record_path.stat().st_mtime > KEEP_DAYS * 86400:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    record = json.loads(record_path.read_text())
    for what in ("trajectories", "pois"):  # a file that is gone: back to the default
        entry = record.get(what)
        if entry and entry["key"] != inputs.NO_POIS.key and not Path(entry["path"]).is_file():
            record[what] = None
    if record.get("base_checkpoint") and not Path(record["base_checkpoint"]).is_file():
        record["base_checkpoint"] = None
    weights = inputs.finetuned_path(folder)
    files = None
    if weights.is_file() and weights.with_suffix(".json").is_file():
        files = {"safetensors": weights.read_bytes(), "json": weights.with_suffix(".json").read_bytes()}
    record_path.touch()  # opened now: the KEEP_DAYS start again
    return Session.from_record(token, record, files), _k(int(record.get("privacy_k", DEFAULT_K)))


def _delete_expired() -> None:
    root = inputs.WORK_DIR / "sessions"
    if not root.is_dir():
        return
    cutoff = time.time() - KEEP_DAYS * 86400
    for folder in root.iterdir():
        record = folder / RECORD
        if (record.stat().st_mtime if record.is_file() else folder.stat().st_mtime) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def save() -> None:
    """Write the session's choices (and a newly fine-tuned model) into its folder."""
    sess = session()
    folder = _folder(sess.token)
    record = {**sess.to_record(), "privacy_k": int(st.session_state.get(PRIVACY_K, DEFAULT_K))}
    text = json.dumps(record, indent=1, sort_keys=True)
    path = folder / RECORD
    if path.is_file() and path.read_text() == text:
        return
    weights = inputs.finetuned_path(folder)
    ft = sess.finetuned
    old = json.loads(path.read_text()).get("finetuned") if path.is_file() else None
    if ft is None:
        shutil.rmtree(weights.parent, ignore_errors=True)
    elif old is None or old.get("key") != ft.key:
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_bytes(ft.files["safetensors"])
        weights.with_suffix(".json").write_bytes(ft.files["json"])
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / f".{RECORD}.tmp"
    scratch.write_text(text)
    scratch.replace(path)  # atomic: a refresh never reads half a record


def delete_my_data() -> None:
    """Delete everything this session keeps on the server, now, and start afresh under a new link."""
    old = session()
    shutil.rmtree(_folder(old.token), ignore_errors=True)
    # The uploaders still hold their files in the browser: marked as applied, they do not come back.
    st.session_state[KEY] = Session(applied_uploads=dict(old.applied_uploads))
    st.query_params[TOKEN_PARAM] = st.session_state[KEY].token


def link_note() -> str:
    return (f"Your uploads, prepared city and fine-tuned model are kept on this server under this page's "
            f"link, for {KEEP_DAYS} days after you last open it: bookmark or copy the link to come back after "
            "a refresh or another day. Anyone with the link sees this work; without it, nobody does.")
