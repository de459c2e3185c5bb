"""Exceptions a user can cause. Each message names the problem (file, row, column) and the fix.

Like osmnx, our exceptions subclass ValueError so callers that already catch bad input keep
working; the CLI and the app catch :class:`TrajMoEError` and show its message, never a traceback.
A message names a file by its file name: :func:`explain` words another library's exception (which
often quotes the whole path) for one.
"""

import re


class TrajMoEError(ValueError):
    """Base class: an error the user can fix; its message says how."""


class InputDataError(TrajMoEError):
    """A trajectory, POI or zone file cannot be used as given."""


class POIError(TrajMoEError):
    """POIs could not be fetched or read (no network, unknown place, unreadable OSM file)."""


class CheckpointError(TrajMoEError):
    """A checkpoint is missing, truncated, foreign, unsafe (pickle) or of another schema."""


class PreparedDataError(TrajMoEError):
    """A prepared city folder is missing files or was written by an incompatible version."""


# An absolute POSIX path of two parts or more, not inside a URL ("https://host/a") or a relative
# path ("America/New_York"): a message names a file by its name, never by the folders it lies in
# (on a server they name other people's sessions).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/<>|:;,()\[\]]+/)+[^\s'\"/<>|:;,()\[\]]*")


def without_paths(text: str) -> str:
    """``text`` with every absolute path in it cut to its last part (the file name)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group().rstrip("/").rsplit("/", 1)[-1], str(text))


def explain(exc: BaseException) -> str:
    """Another library's exception as a clause of our message: its first line, without paths."""
    text = str(exc).strip()
    return without_paths(text.splitlines()[0]) if text else type(exc).__name__
