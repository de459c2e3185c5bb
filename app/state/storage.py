"""The app's disk, shared by every session of a server: locks, whole-file writes, tombstones, quotas, expiry.

Several tabs of one link, and several server processes, may write the same session folder at
once. So:

* a link's writes hold its lock (:func:`locked`: ``fcntl.flock`` on ``.lock`` in its folder; a lock
  between threads and processes alike, since each holder opens the file itself);
* a file is written whole or not at all (:func:`write_atomic`: a uniquely named temporary file in
  the same folder, then ``os.replace``): a reader never sees half a file, two writers never share
  a temporary name;
* a deleted or expired link leaves a tombstone ``deleted/<sha256 of the token>`` (the token itself
  is not kept) that every later write refuses (:class:`LinkDeleted`), so an open tab cannot bring
  deleted work back;
* disk use is bounded: :data:`SESSION_MB` per link and :data:`TOTAL_MB` for the whole work folder,
  checked before anything is stored (:func:`check_room`, :class:`QuotaExceeded`);
* :func:`sweep` deletes links not opened for :data:`KEEP_DAYS` days, scratch folders left by a
  crash, and old tombstones; it runs at most once an hour, on any page run (:func:`sweep_now`).

Nothing here knows Streamlit: callers pass the work folder ``root`` and the link's token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from trajmoe.errors import TrajMoEError

KEEP_DAYS = 7  # a link's folder is deleted this many days after it was last opened
SESSION_MB = 1_000  # one link's uploads, prepared cities, checkpoints and fine-tuned model
TOTAL_MB = 20_000  # everything under the work folder (every link, the shared default city, scratch)
TOMBSTONE_DAYS = 90  # how long a deleted or expired link still says so when opened
SWEEP_EVERY_S = 3600  # the expiry sweep runs at most this often
SCRATCH_HOURS = 6  # a scratch folder older than this was left by a crash or a restart
RECORD = "session.json"
LOCK = ".lock"
_MB = 1_000_000


class LinkDeleted(TrajMoEError):
    """The link's work was deleted (or expired): nothing may be written under it again."""


class QuotaExceeded(TrajMoEError):
    """Storing a file would take a link, or the server, over its disk quota."""


def session_folder(root: Path, token: str) -> Path:
    return root / "sessions" / token


def _tombstone(root: Path, token: str) -> Path:
    return root / "deleted" / hashlib.sha256(token.encode()).hexdigest()


def tombstone(root: Path, token: str) -> dict | None:
    """Why and when the link's work was deleted (``{"why": "deleted" | "expired", "at": epoch s}``), or None."""
    path = _tombstone(root, token)
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {"why": "deleted", "at": path.stat().st_mtime}
    except (OSError, ValueError):  # a tombstone is never damaged into "not deleted"
        return {"why": "deleted", "at": time.time()}


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole: a unique temporary file next to it, then an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(root: Path, token: str):
    """Hold the link's lock, yielding its folder (made when missing); :class:`LinkDeleted` when the
    link has a tombstone (then whatever a late writer put in the folder is removed)."""
    folder = session_folder(root, token)
    for _ in range(5):  # a deletion may remove the folder between the mkdir and the open
        if tombstone(root, token):
            raise LinkDeleted("The work kept under this link was deleted.")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(folder / LOCK, "a")  # noqa: SIM115 (closed below, after the unlock)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if tombstone(root, token):  # deleted while we waited
                shutil.rmtree(folder, ignore_errors=True)
                raise LinkDeleted("The work kept under this link was deleted.")
            try:  # the folder removed (and made again) meanwhile: lock the file that is there now
                if os.stat(folder / LOCK).st_ino != os.fstat(handle.fileno()).st_ino:
                    continue
            except FileNotFoundError:
                continue
            yield folder
            return
        finally:
            handle.close()  # closing releases the lock
    raise LinkDeleted("The work kept under this link was deleted.")


def bury(root: Path, token: str, why: str = "deleted") -> None:
    """Delete the link's folder for good: its tombstone first (every later write refuses), then the files."""
    stone = _tombstone(root, token)
    stone.parent.mkdir(parents=True, exist_ok=True)
    folder = session_folder(root, token)
    handle = None
    with contextlib.suppress(FileNotFoundError):
        handle = open(folder / LOCK, "a")  # noqa: SIM115
        fcntl.flock(handle, fcntl.LOCK_EX)  # let a save in progress finish its write first
    try:
        write_atomic(stone, json.dumps({"why": why, "at": time.time()}).encode())
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        if handle is not None:
            handle.close()


# --------------------------------------------------------------------------- quotas
def usage(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def check_room(root: Path, token: str, need: int, what: str) -> None:
    """Refuse (:class:`QuotaExceeded`, in plain words) to store ``need`` more bytes of ``what`` when
    the link or the server would go over its quota."""
    mine = usage(session_folder(root, token))
    if mine + need > SESSION_MB * _MB:
        raise QuotaExceeded(
            f"No room for {what} ({need / _MB:,.0f} MB): this link already keeps {mine / _MB:,.0f} MB of the "
            f"{SESSION_MB:,} MB one link may keep on this server. Delete your data (sidebar: Your work and this "
            "link) and start again, or use a smaller file.")
    everyone = usage(root)
    if everyone + need > TOTAL_MB * _MB:
        raise QuotaExceeded(
            f"No room for {what} ({need / _MB:,.0f} MB): this server's space for planners' work "
            f"({TOTAL_MB:,} MB) is full. Try again later, when older work has expired, or ask whoever runs it.")


# --------------------------------------------------------------------------- expiry
def expired(record: Path) -> bool:
    return time.time() - record.stat().st_mtime > KEEP_DAYS * 86400


def sweep_now(root: Path) -> bool:
    """Run :func:`sweep` when the last one (by any server process) is over :data:`SWEEP_EVERY_S` old."""
    stamp = root / ".last_sweep"
    try:
        if time.time() - stamp.stat().st_mtime < SWEEP_EVERY_S:
            return False
    except FileNotFoundError:
        if not root.is_dir():
            return False
    stamp.touch()
    sweep(root)
    return True


def sweep(root: Path) -> None:
    """Delete expired links (leaving an "expired" tombstone), scratch folders left by a crash and old tombstones."""
    now = time.time()
    sessions = root / "sessions"
    for folder in sessions.iterdir() if sessions.is_dir() else ():
        record = folder / RECORD
        with contextlib.suppress(FileNotFoundError):
            last = record.stat().st_mtime if record.is_file() else folder.stat().st_mtime
            if now - last > KEEP_DAYS * 86400:
                bury(root, folder.name, "expired")
    for parent, age in ((root / "scratch", SCRATCH_HOURS * 3600), (root / "deleted", TOMBSTONE_DAYS * 86400)):
        for path in parent.iterdir() if parent.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > age:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
