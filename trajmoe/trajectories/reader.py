"""Read a trajectory file into the canonical frame and say, in plain words, what was wrong with it.

One reader for everything a planner or researcher brings: CSV (plain or gzip/bz2/xz/zip, any of
``, ; TAB |`` as delimiter, UTF-8/UTF-16 or Latin-1), Parquet, bytes from an upload, and the
original layouts of Geolife, SNAP Gowalla and Foursquare TSMC2014 (sniffed and read by
:mod:`trajmoe.trajectories.layouts`). Rows that cannot be used are dropped and counted, with their
row numbers, in a :class:`~trajmoe.trajectories.report.ValidationReport`; a file that cannot be
used at all gives a report with ``fatal`` messages, never a raw pandas/pyarrow traceback. Files are
streamed in chunks (``chunks.CHUNK_ROWS`` rows), so memory grows with the kept columns only.

Time (README.md § Data format, :mod:`trajmoe.trajectories.timestamps`): ``2012-04-07T13:42:00-04:00`` is
read as the wall-clock it states, 13:42 (the offset is dropped, not converted to UTC); a timestamp
without an offset is taken as local. Known-UTC values (Unix seconds or milliseconds, and ISO
strings ending in ``Z``/``UTC``) are converted to ``timezone`` when one is given, else kept as UTC
with a note.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from trajmoe.trajectories.chunks import collect
from trajmoe.trajectories.columns import TEXT_COLUMNS, empty_frame, map_columns
from trajmoe.trajectories.files import Source, looks_like_header, open_table, source_label
from trajmoe.trajectories.layouts import (
    GEOLIFE_TIMEZONE,
    geolife_root,
    read_foursquare_tsmc,
    read_geolife,
    read_gowalla_snap,
    sniff_format,
)
from trajmoe.trajectories.report import ReadState, ValidationReport
from trajmoe.trajectories.rows import drop_bad_timestamps
from trajmoe.trajectories.timestamps import check_timezone, parse_timestamps


def read_trajectories(
    source: Source, *, timezone: str | None = None, name: str | None = None,
    max_rows: int | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Read trajectories into the canonical frame and a report of every dropped row.

    Parameters
    ----------
    source
        A CSV (``.csv``, compressed or not; delimiter, encoding and compression are sniffed),
        a Parquet file, a Geolife folder (``NNN/Trajectory/*.plt``), a SNAP Gowalla check-in
        file, a Foursquare TSMC2014 file, or the bytes / file object of an upload.
    timezone
        IANA name (e.g. ``"America/New_York"``) for known-UTC timestamps: Unix seconds or
        milliseconds and ISO strings ending in ``Z``. Timestamps with another offset keep the
        wall-clock they state; naive ones are taken as local.
    name
        File name used in messages when ``source`` is bytes or a file object.
    max_rows
        Refuse (fatal report) a CSV/Parquet with more data rows than this (the app's limit).

    Returns
    -------
    frame, report
        ``frame`` has ``row`` (1-based data row in the source), ``user_id``, ``timestamp``
        (naive local wall-clock, datetime64[ns]), ``lat``, ``lon`` and, when present,
        ``location_id``, ``category``, ``city``, ``occupied``; sorted by user then time.
        When ``report.ok`` is False the frame is empty and ``report.fatal`` says why.

    Raises
    ------
    InputDataError
        ``timezone`` is not an IANA name (before the file is read: a setting, not the file, is wrong).
    """
    check_timezone(timezone)
    label = source_label(source, name)
    report = ValidationReport(source=label)
    if isinstance(source, str | os.PathLike) and Path(source).is_dir():
        if geolife_root(Path(source)) is None:
            report.fail(f"{label} is a folder but not a Geolife dataset (no NNN/Trajectory/*.plt "
                        "inside). Pass a CSV or Parquet file instead.")
            return empty_frame(), report
        return read_geolife(source, timezone=timezone or GEOLIFE_TIMEZONE)
    table = open_table(source, name=name, report=report)
    if table is None:
        return empty_frame(), report
    importer = sniff_format(table)
    if importer == "gowalla_snap":
        return read_gowalla_snap(table, timezone=timezone)
    if importer == "foursquare_tsmc":
        return read_foursquare_tsmc(table)
    if table.fmt == "csv" and not looks_like_header(table.columns):
        shown = table.delimiter.join(table.columns[:6])
        report.fail(f"The first line holds data, not column names ({shown!r}). Add a header line "
                    "naming your columns, e.g. 'user_id,timestamp,lat,lon'.")
        return empty_frame(), report
    mapping = map_columns(table.columns, report)
    if not report.ok:
        return empty_frame(), report
    state = ReadState()
    convert = _generic_converter(mapping, timezone=timezone, state=state, report=report)
    text = [c for c, canon in mapping.items() if canon in TEXT_COLUMNS]
    frame = collect(table, report, convert, state=state, has_header=True,
                    names=list(table.columns), usecols=list(mapping),
                    dtype={c: "str" for c in text}, max_rows=max_rows)
    return frame, report


def _generic_converter(
    mapping: dict[str, str], *, timezone: str | None, state: ReadState, report: ValidationReport
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Chunk of source columns -> canonical columns, timestamp failures dropped and counted."""

    def convert(chunk: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({"row": chunk["row"]})
        for src, canon in mapping.items():
            out[canon] = chunk[src]
        out["timestamp"] = parse_timestamps(out["timestamp"], timezone=timezone, state=state)
        return drop_bad_timestamps(out, chunk[_key(mapping, "timestamp")], report, state)

    return convert


def _key(mapping: dict[str, str], canon: str) -> str:
    return next(src for src, c in mapping.items() if c == canon)
