"""Exceptions a user can cause. Each message names the problem (file, row, column) and the fix.

Like osmnx, our exceptions subclass ValueError so callers that already catch bad input keep
working; the CLI and the app catch :class:`TrajMoEError` and show its message, never a traceback.
"""


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
