"""The project file: a session's settings for the planner to keep, share and load again.

It names which POIs and which trajectory file (file name + content digest, never a path), the
city name, map detail, privacy k and the fine-tuning settings; no label the app shows (labels are
made from the file name, or this session's own, when it loads).

A project file comes from outside (a colleague, a download edited by hand), so :func:`load_project`
reads it as hostile input: at most :data:`MAX_BYTES`, its nesting measured before ``json`` parses
it, every field checked for its type and range (whole numbers are whole, booleans are ``true`` or
``false``, the city a short line of plain text), the first problem said in one message, and
nothing applied unless every field is good.

Dependencies: ``session`` <- ``inputs`` <- ``project``; the sidebar (app/streamlit_app.py) offers
the download and calls :func:`load_project` from its uploader's callback.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import streamlit as st

from state import inputs
from state.session import PRIVACY_K, FinetuneSettings, Source, session
from trajmoe.analysis.privacy import DEFAULT_K, K_CHOICES
from trajmoe.errors import InputDataError

PROJECT_FORMAT = "trajmoe-app-project"
VERSION = 1
MAX_BYTES = 1_000_000  # a project file is ~500 bytes; bigger is not one (and costs the server memory)
MAX_DEPTH = 4  # the format nests 2 deep (project -> trajectories/pois/finetune -> values)
MAX_CONTAINERS = 16  # lists and objects: the format has 4 (project, trajectories, pois, finetune)
MAX_FILE_NAME = 255  # characters of a file name (most file systems' limit)
RESOLUTIONS = (5, 12)  # H3 resolutions a planner's map detail may be
FIELDS = ("format", "version", "trajectories", "pois", "city", "resolution", "weekday_unreliable", "privacy_k",
          "finetune")
_DIGEST = re.compile(r"[0-9a-f]{20}")  # inputs.digest()
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string (its brackets do not nest anything)
_PAGES = (("trajectories", "Trajectories"), ("pois", "City & POIs"))  # what -> the page it is uploaded on


# --------------------------------------------------------------------------- download
def _entry(source: Source | None) -> dict | None:
    """A file as the project names it: its file name and content digest (no path, no label)."""
    if source == inputs.NO_POIS:
        return {"none": True}
    return None if source is None else {"file": Path(source.path).name, "digest": source.key}


def project_file() -> bytes:
    """The session's settings as a JSON file to download."""
    sess = session()
    return json.dumps({
        "format": PROJECT_FORMAT, "version": VERSION,
        "trajectories": _entry(sess.trajectories), "pois": _entry(sess.pois), "city": sess.city and inputs.city_name(),
        "resolution": sess.resolution, "weekday_unreliable": sess.weekday_unreliable,
        "privacy_k": int(st.session_state.get(PRIVACY_K, DEFAULT_K)),
        "finetune": sess.finetune_settings.to_dict(),
    }, indent=2).encode()


# --------------------------------------------------------------------------- reading
class _Bad(ValueError):
    """One problem of a project file, in words (load_project makes it the one message)."""


def _seen(value) -> str:
    """A value as the message quotes it: short, whatever its size."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object {...}"
    if isinstance(value, list):
        return "a list [...]"
    if isinstance(value, str) and len(value) > 40:
        return f"a text of {len(value):,} characters"
    text = json.dumps(value)
    return text if len(text) <= 40 else f"a number of {len(text):,} digits"


def _containers(text: str) -> tuple[int, int]:
    """(deepest nesting, number) of the lists and objects of a JSON text, read without parsing it:
    a 200,000-deep file would overflow the parser's recursion, 300,000 small lists take it a second.
    Brackets inside strings do not count; every other byte is looked at once (numpy)."""
    codes = np.frombuffer(_STRING.sub('""', text).encode(), dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    depth = np.cumsum(opens.astype(np.int64) - closes)
    return int(depth.max(initial=0)), int(opens.sum())


def _parse(data: bytes) -> dict:
    if len(data) > MAX_BYTES:
        raise _Bad(f"it is {len(data) / 1e6:.1f} MB; a project file is a few hundred bytes (at most "
                   f"{MAX_BYTES // 1_000_000} MB are read)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("it is not UTF-8 text") from None
    depth, count = _containers(text)
    if depth > MAX_DEPTH:
        raise _Bad(f"it nests lists or objects more than {MAX_DEPTH} deep; a project file nests 2 deep")
    if count > MAX_CONTAINERS:
        raise _Bad(f"it holds {count:,} lists or objects; a project file holds 4")

    def no_constant(name: str):
        raise _Bad(f"it holds {name}, which is not a number JSON allows")

    try:
        project = json.loads(text, parse_constant=no_constant)
    except _Bad:
        raise
    except ValueError as exc:  # JSONDecodeError; an integer of over 4,300 digits
        raise _Bad(f"it is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(project, dict) or project.get("format") != PROJECT_FORMAT:
        raise _Bad(f"it has no \"format\": \"{PROJECT_FORMAT}\"")
    unknown = [name for name in project if name not in FIELDS]
    if unknown:
        raise _Bad(f"it has the field {_seen(unknown[0])}, which a project file does not have")
    version = project.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise _Bad(f"its version is {_seen(version)}; this app reads version {VERSION}")
    return project


def _whole(project: dict, name: str, lo: int, hi: int, default: int | None) -> int | None:
    """A whole number from lo to hi (not 19.99, not 1e999, not true); ``default`` when absent."""
    value = project.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _Bad(f"{name} must be a whole number from {lo} to {hi}, got {_seen(value)}")
    return value


def _city(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(f"city must be a name in quotes (e.g. \"Riverside\"), got {_seen(value)}")
    name = " ".join(value.split())
    if not name or len(value) > inputs.MAX_CITY or not value.isprintable():
        raise _Bad(f"city must be a name of 1 to {inputs.MAX_CITY} characters on one line with no control "
                   f"characters, got {_seen(value)}")
    if inputs.plain_city(name) != name:
        raise _Bad(f"city must be a plain name: letters, digits, spaces and . , ' ( ) & / - (e.g. \"Riverside\"), "
                   f"got {_seen(value)}")
    return name


def _file_entry(what: str, entry) -> dict | None:
    """A project's file entry: null, {"none": true} (POIs only), or its file name and digest."""
    if entry is None:
        return None
    if what == "pois" and isinstance(entry, dict) and list(entry) == ["none"] and entry["none"] is True:
        return entry
    if not isinstance(entry, dict) or entry.get("none") is not None:
        allowed = "null (the Helsinki sample)" if what == "trajectories" else \
            "null (the bundled Helsinki POIs), {\"none\": true} (no POIs)"
        raise _Bad(f"{what} must be {allowed} or a file entry {{\"file\": NAME, \"digest\": DIGEST}}, "
                   f"got {_seen(entry)}")
    unknown = [key for key in entry if key not in ("file", "digest", "label")]  # label: older files (not read)
    name, digest = entry.get("file"), entry.get("digest")
    if unknown:
        raise _Bad(f"the {what} entry has the field {_seen(unknown[0])}; it has only \"file\" and \"digest\"")
    if (not isinstance(name, str) or not 0 < len(name) <= MAX_FILE_NAME or not name.isprintable()
            or any(c in name for c in "/\\")):
        raise _Bad(f"the {what} entry's \"file\" must be a file name (no folder), got {_seen(name)}")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise _Bad(f"the {what} entry's \"digest\" must be 20 hexadecimal digits, got {_seen(digest)}")
    return {"file": name, "digest": digest}


def _finetune(value) -> FinetuneSettings:
    if value is None:
        return FinetuneSettings()
    if not isinstance(value, dict):
        raise _Bad(f"finetune must be an object of share, epochs, max_steps and light, got {_seen(value)}")
    unknown = [key for key in value if key not in {f.name for f in fields(FinetuneSettings)}]
    if unknown:
        raise _Bad(f"finetune has the field {_seen(unknown[0])}; it has share, epochs, max_steps and light")
    try:
        return FinetuneSettings(**value)
    except ValueError as exc:  # its own checks: whole numbers in range, light true or false
        raise _Bad(_shorten(str(exc))) from None


def _shorten(text: str) -> str:
    """A message that quotes a value: the value cut short (FinetuneSettings quotes what it got)."""
    head, sep, value = text.partition(", got ")
    return head + sep + (value if len(value) <= 40 else f"a value of {len(value):,} characters")


def _find(entry: dict) -> Source | None:
    """The file a project names, when this session holds it (same digest); labelled as this session
    labels it, else by its file name."""
    if entry.get("none"):
        return inputs.NO_POIS
    sess, digest = session(), entry["digest"]
    for known in (sess.trajectories, sess.pois, *sess.uploads.values()):
        if known is not None and known.key == digest and Path(known.path).is_file():
            return known
    for path in sorted((inputs.session_dir() / "uploads" / digest).glob("*")):
        return Source(label=f"{path.name} (uploaded)", path=str(path), key=digest)
    for path in sorted((inputs.session_dir() / "pois").glob("*/*.parquet")):
        if inputs.digest(path.read_bytes()) == digest:
            return Source(label="POIs fetched from OpenStreetMap under this link", path=str(path), key=digest)
    return None


def read_project(data: bytes) -> dict:
    """Every setting of a project file, checked; an InputDataError (one message) at its first problem."""
    try:
        project = _parse(data)
        return {"trajectories": _file_entry("trajectories", project.get("trajectories")),
                "pois": _file_entry("pois", project.get("pois")),
                "city": _city(project.get("city")),
                "resolution": _whole(project, "resolution", *RESOLUTIONS, default=None),
                "weekday_unreliable": _boolean(project, "weekday_unreliable"),
                "privacy_k": _whole(project, "privacy_k", *K_CHOICES, default=DEFAULT_K),
                "finetune": _finetune(project.get("finetune"))}
    except _Bad as exc:
        raise InputDataError(f"This is not a project file the app can read: {exc}. Load a file made with "
                             "'Download the project file', or correct that field.") from None


def _boolean(project: dict, name: str) -> bool:
    value = project.get(name, False)
    if not isinstance(value, bool):
        raise _Bad(f"{name} must be true or false, got {_seen(value)}")
    return value


def load_project(data: bytes) -> list[str]:
    """Apply a project file's settings to this session; what the planner still has to do, in plain
    words (they quote the file: show them with state.text.error). Nothing is applied when any
    setting is bad.

    Call it from a widget callback (before the sidebar's slider is drawn: it sets k). A file the
    project names but this session does not hold is not guessed: the planner is asked to upload it.
    """
    settings = read_project(data)
    found = {what: None if settings[what] is None else _find(settings[what]) for what, _ in _PAGES}
    sess, todo = session(), []
    for what, page in _PAGES:
        entry = settings[what]
        if entry is not None and found[what] is None:
            todo.append(f"Upload {entry['file']} again on the {page} page (this link does not hold it; "
                        f"the project expects the file with digest {entry['digest']}).")
            continue
        setattr(sess, what, found[what])
        if what == "trajectories":
            sess.city = settings["city"]
    sess.resolution = settings["resolution"]
    sess.weekday_unreliable = settings["weekday_unreliable"]
    sess.finetune_settings = settings["finetune"]
    st.session_state[PRIVACY_K] = settings["privacy_k"]
    return todo
