"""What survives a browser refresh.

A refresh starts a new Streamlit session with an empty ``st.session_state``. So each session has
a random token in its link (``?s=<token>``, :data:`TOKEN_PARAM`); its files (uploads, prepared
cities, the fine-tuned model) live in its own folder ``WORK_DIR/sessions/<token>`` and its
choices in ``session.json`` there. Opening the same link again brings them back; any other link,
or none, gets a new empty session. Nothing is written for a visit that changed nothing.

One link may be open in several tabs (and served by several processes). A save therefore writes,
under the link's lock, only the fields this tab changed since it last read or wrote the record
(:func:`commit`), over what is on disk now; it deletes the fine-tuned weights only when this tab
dropped that very model. A change of data or model bumps the record's ``revision``: a tab that
read an older one is told its view is stale and offered :func:`reload`. Deleting (or expiry,
:data:`KEEP_DAYS` days after the link was last opened) leaves a tombstone that every later save
refuses (:mod:`state.storage`), and open tabs of the link say so. A damaged record is said in
plain words, never a traceback; a fine-tuning cut off by a server restart is reported on reconnect.

The project file, the settings a planner keeps and loads again, is :mod:`state.project`.

Dependencies: ``session`` <- ``storage`` <- ``inputs`` <- ``saved``; the entry file calls :func:`restore`
before a page runs and :func:`save` after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import shutil
import time
from pathlib import Path

import streamlit as st

from state import inputs, models, storage
from state.session import KEY, PRIVACY_K, Session, session
from trajmoe.analysis.privacy import DEFAULT_K, K_CHOICES, check_k
from trajmoe.errors import InputDataError, TrajMoEError

log = logging.getLogger(__name__)

TOKEN_PARAM = "s"  # the link's query parameter
KEEP_DAYS = storage.KEEP_DAYS  # a session's folder is deleted this many days after it was last opened
RECORD = storage.RECORD
MAX_RECORD_BYTES = 1_000_000  # a session.json is a few KB; a bigger one is not read
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what new_token() makes; anything else is not looked up
# A change of any of these is a new view of the link's work: other tabs are told theirs is stale.
VIEW = ("trajectories", "pois", "city", "resolution", "weekday_unreliable", "base_checkpoint", "finetuned")
SERVER = secrets.token_hex(8)  # this server process: a run recorded by another one was cut off by a restart
_KEEP = object()  # commit(): leave the record's "running" as it is
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError, OSError)
DAMAGED = ("The work saved under this link could not be read (its record on the server is damaged), so this page "
           "starts from the defaults; what you do now is kept under this link. To remove everything this link "
           "holds, use **Delete my data now** under *Your work and this link*.")


@st.cache_resource(show_spinner=False)
def _live_runs() -> dict[str, float]:
    """Token -> start of a fine-tuning running in this server process now (one dict for all its
    sessions; a run recorded by another process, or missing here, was cut off by a restart)."""
    return {}


def _k(value) -> int:
    """A privacy k the sidebar's slider can show."""
    k = check_k(value)
    if not K_CHOICES[0] <= k <= K_CHOICES[1]:
        raise InputDataError(f"the privacy threshold k must be from {K_CHOICES[0]} to {K_CHOICES[1]}, got {k}")
    return k


def _folder(token: str) -> Path:
    return storage.session_folder(inputs.WORK_DIR, token)


# --------------------------------------------------------------------------- refresh
def restore() -> Session:
    """This session's object: the one in ``st.session_state``, else the one the link's token saved
    (when it has not expired), else a new one; the link always carries its token. Each run also
    notices when the link's work was deleted or changed by another tab, and sweeps expired links
    (at most once an hour)."""
    storage.sweep_now(inputs.WORK_DIR)
    if KEY not in st.session_state:
        token = st.query_params.get(TOKEN_PARAM, "")
        st.session_state[KEY], st.session_state[PRIVACY_K] = _open(token) if _TOKEN.fullmatch(token) else _new()
    sess = st.session_state[KEY]
    _check(sess)
    if st.query_params.get(TOKEN_PARAM) != sess.token:  # a page switch drops the link's parameters
        st.query_params[TOKEN_PARAM] = sess.token
    return sess


def _new(token: str | None = None, notice: str | None = None, **kept) -> tuple[Session, int]:
    """A session with the defaults (and privacy k), its record as it would be saved, nothing written yet."""
    sess = Session(**kept) if token is None else Session(token=token, **kept)
    sess.saved = _mine(sess, DEFAULT_K)
    if notice:
        sess.notices.append(notice)
    return sess, DEFAULT_K


def _mine(sess: Session, k: int) -> dict:
    """The record this tab would write now."""
    return {**sess.to_record(), "privacy_k": int(k)}


def _read(path: Path) -> dict:
    """The record at ``path``: ValueError (or OSError) when it is too large, not JSON or not of its shape."""
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise ValueError(f"{RECORD} is over {MAX_RECORD_BYTES:,} bytes")
    record = json.loads(path.read_bytes())
    if not isinstance(record, dict):
        raise ValueError(f"{RECORD} holds a {type(record).__name__}, not an object")
    revision, running = record.get("revision", 0), record.get("running")
    if not isinstance(revision, int) or isinstance(revision, bool):
        raise ValueError("its revision is not a whole number")
    if running is not None and not (isinstance(running, dict) and isinstance(running.get("started"), (int, float))
                                    and 0 <= running["started"] < 4e9 and isinstance(running.get("server"), str)):
        raise ValueError("its running fine-tuning is not of the form {started, server}")
    return record


def _open(token: str) -> tuple[Session, int]:
    """The session a link's token saved; a new one when there is none, with a word when the link's
    work was deleted, expired or cannot be read."""
    root = inputs.WORK_DIR
    stone = storage.tombstone(root, token)
    if stone:
        return _new(notice=gone_words(stone, opened=True))
    record_path = _folder(token) / RECORD
    if not record_path.is_file():
        return _new()
    if storage.expired(record_path):
        storage.bury(root, token, "expired")
        return _new(notice=gone_words(storage.tombstone(root, token), opened=True))
    try:
        with storage.locked(root, token) as folder:  # the record and the weights of one save
            record = _read(record_path)
            sess, k = _from_record(token, record, folder)
            record_path.touch()  # opened now: the KEEP_DAYS start again
    except storage.LinkDeleted:
        return _new(notice=gone_words(storage.tombstone(root, token), opened=True))
    except _UNREADABLE as exc:  # the planner can still delete it all, or go on under this link
        log.warning("session record of a link is unreadable: %s", exc)
        return _new(token=token, notice=DAMAGED)
    running = record.get("running")
    if running:
        started = time.strftime("%H:%M UTC", time.gmtime(running["started"]))
        if running["server"] == SERVER and token in _live_runs():
            sess.notices.append(f"A fine-tuning of this link started at {started} is still running in another tab. "
                                "Reload this link's saved work once it is done to see its model.")
        else:
            why = ": the server restarted" if running["server"] != SERVER else ""
            sess.notices.append(f"Your fine-tuning started at {started} did not finish{why}. "
                                "Start it again on **Fine-tune**.")
            try:  # said once: the record no longer says running
                sess.saved = commit(root, token, {}, sess.saved, running=None)
            except storage.LinkDeleted:
                pass
    return sess, k


def _from_record(token: str, record: dict, folder: Path) -> tuple[Session, int]:
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
    sess, k = Session.from_record(token, record, files), _k(int(record.get("privacy_k", DEFAULT_K)))
    sess.saved = {**_mine(sess, k), "revision": record.get("revision", 0)}
    return sess, k


def _check(sess: Session) -> None:
    """Notice, on each run, that the link's work was deleted, or that another tab changed it since
    this tab last read it (the record's revision moved on)."""
    if sess.gone:
        return
    stone = storage.tombstone(inputs.WORK_DIR, sess.token)
    if stone:
        sess.gone = gone_words(stone, opened=False)
        return
    path = _folder(sess.token) / RECORD
    try:
        revision = _read(path).get("revision", 0) if path.is_file() else None
    except _UNREADABLE:
        return
    sess.stale = revision is not None and revision != sess.saved.get("revision", 0)


def gone_words(stone: dict | None, *, opened: bool) -> str:
    """Why a link's work is gone, in plain words (``opened``: the planner opened the link just now)."""
    try:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float((stone or {}).get("at", 0))))
    except (TypeError, ValueError, OverflowError):
        when = "an earlier day"
    if (stone or {}).get("why") == "expired":
        said = f"The work kept under this link was deleted on {when}: nobody had opened the link for {KEEP_DAYS} days."
    else:
        said = f"The work kept under this link was deleted on {when} (**Delete my data now**)."
    return said + (" This page starts afresh, empty, under a new link." if opened else
                   " Nothing of it is kept on this server any more, and nothing will be saved under this link again.")


def commit(root: Path, token: str, mine: dict, base: dict, *, weights: dict | None = None, running=_KEEP) -> dict:
    """Write what a tab changed since it last read or wrote the link's record (``mine`` against
    ``base``) over what is on disk now, under the link's lock; the tab's new ``base``.

    Fields the tab did not change keep what other tabs wrote. The fine-tuned weights (``weights``:
    "safetensors", "json" -> bytes) are written when the tab's model is new, and deleted only when
    the tab dropped the very model on disk. ``running``: the fine-tuning in progress to record
    ({"started", "server"}) or None. :class:`storage.LinkDeleted` when the link was deleted.
    """
    changed = {name: value for name, value in mine.items() if base.get(name, _KEEP) != value}
    if not changed and running is _KEEP:
        return base
    with storage.locked(root, token) as folder:
        path = folder / RECORD
        try:
            disk = _read(path) if path.is_file() else {}
        except _UNREADABLE:  # damaged: this tab's record replaces it
            disk = {}
        record = {**base, **disk, **changed}
        if "finetuned" in changed:
            target = inputs.finetuned_path(folder)
            if changed["finetuned"] is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.write_atomic(target, weights["safetensors"])
                storage.write_atomic(target.with_suffix(".json"), weights["json"])
            elif _model_key(disk) == _model_key(base):  # the tab dropped the model on disk itself
                shutil.rmtree(target.parent, ignore_errors=True)
            else:  # another tab's newer model: not this tab's to drop
                record["finetuned"] = disk.get("finetuned")
        if running is not _KEEP:
            record["running"] = running
        revision = disk.get("revision", 0)
        record["revision"] = revision + any(record.get(name) != disk.get(name) for name in VIEW)
        storage.write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())
    new_base = {**base, **changed}
    if base.get("revision", 0) == revision:  # up to date until now: still (else it stays stale)
        new_base["revision"] = record["revision"]
    return new_base


def _model_key(record: dict) -> str | None:
    return (record.get("finetuned") or {}).get("key")


def _store(sess: Session, k: int, *, running=_KEEP) -> None:
    """Commit this tab's record (no Streamlit state read: see :func:`save`); a deleted link is noted, not written."""
    if sess.gone:
        return
    ft = sess.finetuned
    try:
        sess.saved = commit(inputs.WORK_DIR, sess.token, _mine(sess, k), sess.saved,
                            weights=ft.files if ft else None, running=running)
    except storage.LinkDeleted:
        sess.gone = gone_words(storage.tombstone(inputs.WORK_DIR, sess.token), opened=False)


def save(sess: Session, k: int) -> None:
    """Write what this tab changed (and a newly fine-tuned model) into the session's folder.

    Takes the session and privacy k as arguments and touches no Streamlit state: after ``st.stop()``
    every read of ``st.session_state`` raises StopException again, and the page's work would be lost."""
    _store(sess, k)


def reload() -> None:
    """The stale-view button's callback: this tab takes the link's saved work as it is on disk now."""
    old = session()
    sess, k = _open(old.token)
    sess.uploads, sess.applied_uploads = dict(old.uploads), dict(old.applied_uploads)
    st.session_state[KEY], st.session_state[PRIVACY_K] = sess, k


def start_afresh(notice: str | None = None) -> None:
    """A new, empty session under a new link (the uploaders still hold their files in the browser:
    marked as applied, they do not come back)."""
    old = session()
    st.session_state[KEY], st.session_state[PRIVACY_K] = _new(notice=notice,
                                                              applied_uploads=dict(old.applied_uploads))
    st.query_params[TOKEN_PARAM] = st.session_state[KEY].token


def delete_my_data() -> None:
    """Delete everything this session keeps on the server, now and for good, and start afresh under a new link."""
    storage.bury(inputs.WORK_DIR, session().token)
    start_afresh("Your data was deleted from this server: uploads, prepared cities, fine-tuned model and "
                 "settings. This page starts afresh under a new link; the old link opens nothing.")


@contextlib.contextmanager
def fine_tuning(sess: Session):
    """Record the block (a fine-tuning) as running in the link's record, with its start time.

    Refused first (:class:`storage.QuotaExceeded`) when its model would take the link or the server
    over the disk quota. Ended, or ended by one of our errors, the record no longer says running
    and the model, if any, is written. Cut off (the server stopped or restarted, the page was left),
    the record still says running: the next visit of the link says the run did not finish. Uses
    no Streamlit state (after a stop every read of it raises again)."""
    path = models.base_checkpoint()
    need = sum(p.stat().st_size for p in (path, path.with_suffix(".json")) if p.is_file()) if path else 0
    storage.check_room(inputs.WORK_DIR, sess.token, need, "the fine-tuned model")
    k = sess.saved.get("privacy_k", DEFAULT_K)  # unchanged here: the end of the page saves a new k
    _live_runs()[sess.token] = time.time()
    _store(sess, k, running={"started": _live_runs()[sess.token], "server": SERVER})
    try:
        yield
    except TrajMoEError:
        _live_runs().pop(sess.token, None)
        _store(sess, k, running=None)
        raise
    except BaseException:
        _live_runs().pop(sess.token, None)
        raise
    _live_runs().pop(sess.token, None)
    _store(sess, k, running=None)


def link_note() -> str:
    return (f"Your uploads, prepared city and fine-tuned model are kept on this server under this page's "
            f"link, for {KEEP_DAYS} days after you last open it: bookmark or copy the link to come back after "
            "a refresh or another day. Anyone with the link sees this work; without it, nobody does. One link "
            f"may keep up to {storage.SESSION_MB:,} MB.")
