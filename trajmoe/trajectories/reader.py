"""Read a trajectory file into the canonical frame and say, in plain words, what was wrong with it.

One reader for everything a planner or researcher brings: CSV (plain or gzip/bz2/xz/zip, any of
``, ; TAB |`` as delimiter, UTF-8/UTF-16 or Latin-1), Parquet, bytes from an upload, and the
original layouts of Geolife, SNAP Gowalla and Foursquare TSMC2014 (sniffed here, read by
:mod:`trajmoe.trajectories.importers`). Rows that cannot be used are dropped and counted, with their row
numbers, in a :class:`ValidationReport`; a file that cannot be used at all gives a report with
``fatal`` messages, never a raw pandas/pyarrow traceback. Files are streamed in chunks
(``importers.CHUNK_ROWS`` rows), so memory grows with the kept columns only.

Time (DESIGN.md §Time): ``2012-04-07T13:42:00-04:00`` is read as the wall-clock it states,
13:42 (the offset is dropped, not converted to UTC); a timestamp without an offset is taken as
local. Known-UTC values (Unix seconds or milliseconds, and ISO strings ending in ``Z``/``UTC``)
are converted to ``timezone`` when one is given, else kept as UTC with a note.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trajmoe.errors import InputDataError

log = logging.getLogger(__name__)

REQUIRED = ("user_id", "timestamp", "lat", "lon")
OPTIONAL = ("location_id", "category", "city", "occupied")
TEXT_COLUMNS = ("user_id", "location_id", "category", "city")
MAX_ROWS_LISTED = 20  # row numbers kept per drop reason; the count is always exact
MIN_ROWS_PER_USER = 3  # DESIGN.md §Protocol: users need >= 3 visits

Source = str | os.PathLike | bytes | BinaryIO

# Column names read as a canonical one (after lower-casing and turning spaces/dashes/dots into
# "_"), renamed with a note. Ordered by preference when a file has several.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "user_id": ("userid", "user", "uid", "user_name", "username", "person_id", "individual_id",
                "agent_id", "device_id", "taxi_id", "cab_id", "vehicle_id", "bike_id", "bikeid"),
    "timestamp": ("datetime", "date_time", "time", "utc_time", "utctime", "checkin_time",
                  "check_in_time", "local_time", "localtime", "tracked_at", "time_stamp", "ts"),
    "lat": ("latitude", "lat_deg", "latitude_deg", "lat_wgs84"),
    "lon": ("lng", "long", "longitude", "lon_deg", "lng_deg", "longitude_deg", "lon_wgs84"),
    "location_id": ("venue_id", "venueid", "poi_id", "poiid", "place_id", "placeid", "loc_id",
                    "locid", "station_id", "spot_id"),
    "category": ("venue_category", "venuecategory", "poi_category", "poicategoryname",
                 "category_name", "venue_category_name"),
    "city": ("city_name",),
    "occupied": ("occupancy", "is_occupied"),
}
# Never renamed automatically (x/y may be projected metres, a date may lack the time), only
# suggested in the fatal message.
HINTS: dict[str, tuple[str, ...]] = {"lat": ("y",), "lon": ("x",), "timestamp": ("date",)}


@dataclass
class ValidationReport:
    """What happened to every row of one trajectory source, for planners and researchers alike.

    ``n_rows`` data rows were read; each is either kept (``n_kept``), dropped (``dropped``:
    reason -> {count, rows (the first row numbers), message}) or merged (``reduced``:
    reason -> count), so ``n_rows == n_kept + sum(dropped counts) + sum(reduced)`` whenever the
    steps that add to the report keep that bookkeeping. ``fatal`` lists why the file cannot be
    used at all. ``dataset.prepare`` keeps adding to the same report.
    """

    source: str
    n_rows: int = 0
    fatal: list[str] = field(default_factory=list)
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)
    reduced: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kind: str | None = None
    n_users: int = 0
    n_kept: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing fatal happened."""
        return not self.fatal

    def drop(self, reason: str, rows: Any, message: str, *, count: int | None = None) -> None:
        """Count dropped rows under ``reason``; ``rows`` are 1-based source row numbers.

        ``count`` overrides ``len(rows)`` when the row numbers are not all known. The first
        message given for a reason is kept.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        n = len(rows) if count is None else int(count)
        if n <= 0:
            return
        entry = self.dropped.setdefault(reason, {"count": 0, "rows": [], "message": message})
        entry["count"] += n
        merged = np.union1d(np.asarray(entry["rows"], dtype=np.int64), rows)
        entry["rows"] = [int(r) for r in merged[:MAX_ROWS_LISTED]]

    def reduce(self, reason: str, n: int) -> None:
        """Count ``n`` rows merged into others (staypoints, collapsed repeats, trip ends)."""
        if n > 0:
            self.reduced[reason] = self.reduced.get(reason, 0) + int(n)

    def note(self, text: str) -> None:
        """Add a plain-words remark (kept once)."""
        if text not in self.notes:
            self.notes.append(text)

    def fail(self, text: str) -> None:
        """Record why the source cannot be used at all."""
        if text not in self.fatal:
            self.fatal.append(text)

    def raise_if_fatal(self) -> None:
        """Raise :class:`InputDataError` with every fatal message, if there is one."""
        if self.fatal:
            raise InputDataError(f"{self.source}: " + " ".join(self.fatal))

    @property
    def n_dropped(self) -> int:
        """Rows dropped for any reason."""
        return sum(entry["count"] for entry in self.dropped.values())

    def to_text(self) -> str:
        """The report in plain words, one fact per line."""
        status = "cannot be used" if self.fatal else "usable"
        lines = [f"{self.source}: {status}"]
        kind = f", kind: {self.kind}" if self.kind else ""
        lines.append(f"  {self.n_rows:,} rows read, {self.n_kept:,} kept "
                     f"({self.n_users:,} users{kind})")
        if self.fatal:
            lines.append("  Why it cannot be used:")
            lines += [f"    - {text}" for text in self.fatal]
        if self.dropped:
            lines.append(f"  Dropped {self.n_dropped:,} rows:")
            for reason, entry in self.dropped.items():
                shown = ", ".join(str(r) for r in entry["rows"])
                more = ", ..." if entry["count"] > len(entry["rows"]) else ""
                where = f" (rows {shown}{more})" if shown else ""
                lines.append(f"    - {reason}: {entry['count']:,}{where}. {entry['message']}")
        if self.reduced:
            lines.append(f"  Merged {sum(self.reduced.values()):,} rows into others:")
            lines += [f"    - {reason}: {n:,}" for reason, n in self.reduced.items()]
        if self.notes:
            lines.append("  Notes:")
            lines += [f"    - {text}" for text in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (plain ints and strings), with ``ok`` added."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


def empty_frame(*, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """A canonical frame with no rows (returned next to a fatal report)."""
    frame = pd.DataFrame({
        "row": pd.Series(dtype="int64"), "user_id": pd.Series(dtype="str"),
        "timestamp": pd.Series(dtype="datetime64[ns]"),
        "lat": pd.Series(dtype="float64"), "lon": pd.Series(dtype="float64"),
    })
    for column in optional:
        frame[column] = pd.Series(dtype="Int8" if column == "occupied" else "str")
    return frame


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
    """
    from trajmoe.trajectories import importers  # importers build on this module's helpers

    label = source_label(source, name)
    report = ValidationReport(source=label)
    if not check_timezone(timezone, report):
        return empty_frame(), report
    if isinstance(source, str | os.PathLike) and Path(source).is_dir():
        if importers.geolife_root(Path(source)) is None:
            report.fail(f"{label} is a folder but not a Geolife dataset (no NNN/Trajectory/*.plt "
                        "inside). Pass a CSV or Parquet file instead.")
            return empty_frame(), report
        frame, report = importers.read_geolife(
            source, timezone=timezone or importers.GEOLIFE_TIMEZONE)
        return frame, report
    table = importers.open_table(source, name=name, report=report)
    if table is None:
        return empty_frame(), report
    importer = importers.sniff_format(table)
    if importer == "gowalla_snap":
        return importers.read_gowalla_snap(table, timezone=timezone)
    if importer == "foursquare_tsmc":
        return importers.read_foursquare_tsmc(table)
    if table.fmt == "csv" and not importers.looks_like_header(table.columns):
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
    frame = importers.collect(table, report, convert, state=state, has_header=True,
                              names=list(table.columns), usecols=list(mapping),
                              dtype={c: "str" for c in text}, max_rows=max_rows)
    return frame, report


def source_label(source: Source, name: str | None) -> str:
    """The file name used in messages."""
    if name:
        return str(name)
    if isinstance(source, str | os.PathLike):
        return str(source)
    return getattr(source, "name", None) or "uploaded data"


def check_timezone(timezone: str | None, report: ValidationReport) -> bool:
    """Fail the report (and return False) when ``timezone`` is not an IANA name."""
    if timezone is None:
        return True
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        report.fail(f"Unknown timezone {timezone!r}: use an IANA name such as 'America/New_York' "
                    "or 'Asia/Shanghai'.")
        return False
    return True


def _norm(column: str) -> str:
    return re.sub(r"[\s\-.]+", "_", str(column).strip().lstrip("\ufeff").lower())


def map_columns(columns: list[str], report: ValidationReport) -> dict[str, str]:
    """Map source column -> canonical name; fail the report when a required column is missing."""
    normed = {column: _norm(column) for column in columns}
    mapping: dict[str, str] = {}
    for canon in REQUIRED + OPTIONAL:
        taken = set(mapping)
        exact = [c for c in columns if c == canon]
        same = [c for c in columns if normed[c] == canon and c not in taken]
        synonyms = [c for syn in SYNONYMS[canon] for c in columns
                    if normed[c] == syn and c not in taken]
        found = (exact or same or synonyms)[:1]
        if not found:
            continue
        mapping[found[0]] = canon
        if found[0] != canon:
            report.note(f"Column '{found[0]}' was read as '{canon}'.")
        others = [c for c in same + synonyms if c != found[0]]
        if others:
            report.note(f"Columns {others} also look like '{canon}' and were ignored; "
                        f"'{found[0]}' was used.")
    for canon in REQUIRED:
        if canon in mapping.values():
            continue
        hints = [c for c in columns if normed[c] in HINTS.get(canon, ()) and c not in mapping]
        if hints:
            what = {"lat": "WGS84 latitude in degrees", "lon": "WGS84 longitude in degrees",
                    "timestamp": "the date AND time of each row"}[canon]
            report.fail(f"Missing required column '{canon}'. If '{hints[0]}' holds {what}, "
                        f"rename '{hints[0]}' to '{canon}'.")
        else:
            report.fail(f"Missing required column '{canon}' (the file has {list(columns)}). "
                        f"Rename the column that holds it to '{canon}'; required columns are "
                        "user_id,timestamp,lat,lon.")
    ignored = [c for c in columns if c not in mapping and not c.startswith("_unnamed_")]
    if ignored and report.ok:
        report.note(f"Columns not used: {ignored}.")
    return mapping


@dataclass
class ReadState:
    """Facts gathered across chunks that become notes once the whole file is read."""

    n_swappable: int = 0  # out of range as given, in range with lat and lon swapped
    n_checked: int = 0
    n_utc: int = 0
    n_unix_ms: int = 0
    utc_converted: bool = False
    guessed_formats: set[str] = field(default_factory=set)


# An offset after a time of day (so that the "-07" of a bare date is never cut), then its form
# told apart on the last 6 characters only: one full-length regex pass per chunk.
_HAS_OFFSET = r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s?(?:[+-]\d\d(?::?\d\d)?|Z|UTC|GMT)$"
_OFFSET_FORMS = (  # (pattern on the tail, characters to cut, marks UTC)
    (r"[+-]\d\d:\d\d$", 6, False), (r"[+-]\d{4}$", 5, False), (r"[+-]\d\d$", 3, False),
    (r"Z$", 1, True), (r"(?:UTC|GMT)$", 3, True),
)
_NUMBER = r"^[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?$"
_UNIX_MIN_S, _UNIX_MAX_S = 1e8, 4.1e9  # 1973-03 .. 2099-12: other numbers are not Unix times
# datetime64[ns] spans 1677-09-21 .. 2262-04-11; numpy wraps values outside it around silently
# (9999-12-31 became 1816-03-30), so they become NaT and are dropped as unreadable.
_TIME_MIN, _TIME_MAX = np.datetime64("1678-01-01"), np.datetime64("2262-01-01")


def parse_timestamps(
    values: pd.Series, *, timezone: str | None, state: ReadState, known_utc: bool = False
) -> pd.Series:
    """Parse one column of timestamps (row by row where formats mix) to naive wall-clock.

    ISO-8601 with an offset keeps the wall-clock it states; without one it is local (or UTC
    when ``known_utc``); numbers are Unix seconds or milliseconds (UTC); other text formats are
    guessed (vectorised) from the first values that fail, and what still fails is parsed value
    by value. Known-UTC values are converted to ``timezone``. Unparsable values become NaT.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):  # Parquet timestamps with a zone
        out = _to_ns(values.dt.tz_localize(None))
        utc = np.full(len(values), str(values.dt.tz) in ("UTC", "Etc/UTC"))
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        out = _to_ns(values)
        utc = np.full(len(values), known_utc)
    elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        out, utc = _from_unix(values.to_numpy("float64", na_value=np.nan), state)
    else:
        out, utc = _parse_text(values, state)
        utc |= known_utc
    utc &= ~np.isnat(out)
    if utc.any():
        state.n_utc += int(utc.sum())
        if timezone is not None:
            local = pd.DatetimeIndex(out[utc]).tz_localize("UTC").tz_convert(timezone)
            out[utc] = local.tz_localize(None).to_numpy("datetime64[ns]")
            state.utc_converted = True
    return pd.Series(out, index=values.index)


def _parse_text(values: pd.Series, state: ReadState) -> tuple[np.ndarray, np.ndarray]:
    text = values.astype("str").str.strip()
    wall, utc = _split_offset(text)
    out = _parse_iso(wall)
    left = np.isnat(out) & text.notna().to_numpy() & (text != "").to_numpy(dtype=bool)
    if left.any():  # Unix time written as text, mixed with ISO rows
        idx = np.flatnonzero(left)
        arrow = pa.array(text.array[idx], type=pa.large_string(), from_pandas=True)
        numeric = np.asarray(pc.fill_null(pc.match_substring_regex(arrow, _NUMBER), False))
        if numeric.any():
            numbers = pd.to_numeric(text.iloc[idx[numeric]]).to_numpy("float64")
            parsed, ok = _from_unix(numbers, state)
            hit = idx[numeric][ok]
            out[hit], utc[hit], left[hit] = parsed[ok], True, False
    if left.any():
        out[left] = _parse_guessed(wall[left], state)
    return out, utc


def _from_unix(x: np.ndarray, state: ReadState) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds, or milliseconds (told apart by magnitude), as naive UTC; NaT if implausible."""
    millis = np.abs(x) >= 1e11  # seconds stay below 1e11 until the year 5138
    seconds = np.where(millis, x / 1000.0, x)
    ok = np.isfinite(seconds) & (seconds >= _UNIX_MIN_S) & (seconds <= _UNIX_MAX_S)
    state.n_unix_ms += int((millis & ok).sum())
    micros = np.where(ok, np.round(seconds * 1e6), 0).astype("int64")
    out = micros.astype("datetime64[us]").astype("datetime64[ns]")
    out[~ok] = np.datetime64("NaT")
    return out, ok


def _split_offset(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Cut a trailing UTC offset (``+02:00``, ``-0500``, ``Z``, `` UTC``) off ISO strings.

    Vectorised with pyarrow's RE2 (pandas' ``str.contains`` falls back to Python's ``re`` row
    by row for these patterns). Returns the wall-clock strings and which rows were marked UTC
    (``Z``, ``UTC``, ``GMT``).
    """
    arrow = pa.array(text.array, type=pa.large_string(), from_pandas=True)
    utc = np.zeros(len(text), dtype=bool)
    has = np.asarray(pc.fill_null(pc.match_substring_regex(arrow, _HAS_OFFSET), False))
    if not has.any():
        return text, utc
    wall, tail = arrow, pc.utf8_slice_codeunits(arrow, -6)
    for pattern, n, is_utc in _OFFSET_FORMS:
        match = np.asarray(pc.fill_null(pc.match_substring_regex(tail, pattern), False)) & has
        if match.any():
            sliced = pc.utf8_rtrim_whitespace(pc.utf8_slice_codeunits(arrow, 0, -n))
            wall = pc.if_else(pa.array(match), sliced, wall)
            has &= ~match
            utc |= match & is_utc
            if not has.any():
                break
    return pd.Series(pd.array(wall, dtype="str"), index=text.index), utc


def _parse_iso(wall: pd.Series) -> np.ndarray:
    """ISO-8601 wall-clock strings to datetime64[ns]; NaT where not ISO."""
    try:
        parsed = pd.to_datetime(wall, format="ISO8601", errors="coerce")
    except ValueError:  # offsets in a form _split_offset does not cut, mixed: row by row
        parsed = wall.map(_parse_one)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    return _to_ns(parsed)


def _to_ns(values: pd.Series | np.ndarray) -> np.ndarray:
    """Datetimes of any unit to datetime64[ns]; NaT outside 1678..2261 instead of a wrap-around."""
    arr = np.asarray(values)
    if arr.dtype.kind != "M":  # objects: Timestamps and NaT
        arr = arr.astype("datetime64[us]")
    inside = (arr >= _TIME_MIN) & (arr < _TIME_MAX)
    return np.where(inside, arr, np.datetime64("NaT")).astype("datetime64[ns]")


def _parse_guessed(text: pd.Series, state: ReadState) -> np.ndarray:
    """Non-ISO text: guess one format from the first values (vectorised), then value by value."""
    from pandas.tseries.api import guess_datetime_format

    out = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[ns]")
    best_fmt, best_n = None, 0
    for sample in text.dropna().unique()[:20]:
        for dayfirst in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Parsing dates in %d/%m/%Y format..."
                fmt = guess_datetime_format(sample, dayfirst=dayfirst)
            if fmt is None or "%z" in fmt or "%d" not in fmt or fmt == best_fmt:
                continue
            parsed = _to_ns(pd.to_datetime(text, format=fmt, errors="coerce"))
            if (~np.isnat(parsed)).sum() > best_n:
                best_fmt, best_n, out = fmt, int((~np.isnat(parsed)).sum()), parsed
        if best_fmt is not None:
            break
    if best_fmt is not None:
        state.guessed_formats.add(best_fmt)
    rest = np.isnat(out) & text.notna().to_numpy()
    if rest.any():  # truly mixed: parse each distinct value once
        values = text[rest]
        parsed = {value: _parse_one(value) for value in values.unique()}
        out[rest] = _to_ns(values.map(parsed))
        if not all(stamp is pd.NaT for stamp in parsed.values()):
            state.guessed_formats.add("mixed, read value by value")
    return out


def _parse_one(value: str) -> pd.Timestamp:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dateutil's "could not infer format" chatter
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError):
            return pd.NaT
    if stamp is pd.NaT or not _TIME_MIN <= stamp.tz_localize(None).to_datetime64() < _TIME_MAX:
        return pd.NaT
    if not _has_date(value):  # "12:00": pandas would fill in today's date
        return pd.NaT
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _has_date(value: str) -> bool:
    """False when the text names no full date: parsing it against two defaults gives two days."""
    from dateutil import parser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = parser.parse(value, default=datetime(2001, 1, 1))
            two = parser.parse(value, default=datetime(2002, 2, 2))
    except (ValueError, OverflowError):  # a form only pandas reads: trust it
        return True
    return one.date() == two.date()


def _generic_converter(
    mapping: dict[str, str], *, timezone: str | None, state: ReadState, report: ValidationReport
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Chunk of source columns -> canonical columns, timestamp failures dropped and counted."""

    def convert(chunk: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({"row": chunk["row"]})
        for src, canon in mapping.items():
            out[canon] = chunk[src]
        out["timestamp"] = parse_timestamps(out["timestamp"], timezone=timezone, state=state)
        return drop_bad_timestamps(out, chunk[_key(mapping, "timestamp")], report)

    return convert


def _key(mapping: dict[str, str], canon: str) -> str:
    return next(src for src, c in mapping.items() if c == canon)


def drop_bad_timestamps(frame: pd.DataFrame, raw: pd.Series, report: ValidationReport
                        ) -> pd.DataFrame:
    """Drop (and count) rows whose timestamp is empty or could not be parsed."""
    bad = frame["timestamp"].isna()
    if not bad.any():
        return frame
    text = raw.astype("str").str.strip()
    missing = bad & (text.isna() | (text == ""))
    report.drop("missing timestamp", frame.loc[missing, "row"], "The timestamp is empty.")
    unparsable = bad & ~missing
    if unparsable.any():
        first = unparsable.idxmax()
        report.drop(
            "unparsable timestamp", frame.loc[unparsable, "row"],
            f"The timestamp could not be read (e.g. row {frame.at[first, 'row']}: "
            f"{text.at[first]!r}). Use ISO-8601 such as 2012-04-07T13:42:00-04:00 (the offset "
            "is optional) or Unix seconds since 1970; dates must lie between 1678 and 2261.")
    return frame[~bad]


def check_rows(frame: pd.DataFrame, report: ValidationReport, state: ReadState) -> pd.DataFrame:
    """Type the canonical columns of one chunk and drop rows without user or usable place."""
    for column in TEXT_COLUMNS:
        if column in frame:
            frame[column] = _as_text(frame[column])
    for column in ("lat", "lon"):
        if not pd.api.types.is_float_dtype(frame[column].dtype):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        frame[column] = frame[column].astype("float64")
    if "occupied" in frame:
        occupied = pd.to_numeric(frame["occupied"], errors="coerce")
        frame["occupied"] = occupied.where(occupied.isin([0, 1])).astype("Int8")
    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    user = frame["user_id"]
    checks = [
        ("missing user_id", (user.isna() | (user == "")).to_numpy(),
         "The user_id is empty: every row needs the id of the person or vehicle it belongs to."),
        ("missing coordinates", ~(np.isfinite(lat) & np.isfinite(lon)),
         "lat or lon is empty or not a number."),
        ("coordinates out of range", (np.abs(lat) > 90) | (np.abs(lon) > 180),
         "lat must lie within -90..90 and lon within -180..180 (WGS84 decimal degrees)."),
        ("null island", (lat == 0) & (lon == 0),
         "lat = lon = 0 ('null island') is a GPS or export error, not a place."),
    ]
    keep = np.ones(len(frame), dtype=bool)
    rows = frame["row"].to_numpy()
    for reason, bad, message in checks:
        bad = bad & keep
        report.drop(reason, rows[bad], message)
        keep &= ~bad
    # Swapped columns are only obvious when latitudes leave -90..90 while longitudes fit it.
    finite = np.isfinite(lat) & np.isfinite(lon)
    state.n_checked += int(finite.sum())
    state.n_swappable += int((finite & (np.abs(lat) > 90) & (np.abs(lat) <= 180)
                              & (np.abs(lon) <= 90)).sum())
    return frame[keep]


def _as_text(values: pd.Series) -> pd.Series:
    """Ids and names as stripped strings; integral floats (1.0 from a column with gaps) as "1"."""
    if pd.api.types.is_float_dtype(values.dtype):
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            values = values.astype("Int64")
    return values.astype("str").str.strip()


def finish(parts: list[pd.DataFrame], report: ValidationReport, state: ReadState, *,
           known_utc: bool = False) -> pd.DataFrame:
    """Concatenate checked chunks, sort, drop exact duplicates, and write the summary notes."""
    optional = tuple(c for c in OPTIONAL if parts and c in parts[0])
    frame = pd.concat(parts, ignore_index=True) if parts else empty_frame(optional=optional)
    frame = frame[["row", *REQUIRED, *(c for c in OPTIONAL if c in frame)]]
    # One factorisation of user_id serves the sort, the user count and the duplicate search.
    codes, users = pd.factorize(frame["user_id"], sort=True)
    stamps = frame["timestamp"].to_numpy("datetime64[ns]").view("int64")
    order = np.lexsort((frame["row"].to_numpy(), stamps, codes))
    frame = frame.iloc[order].reset_index(drop=True)
    codes, stamps = codes[order], stamps[order]
    # Exact duplicates share user and time, so after the sort they sit in runs of equal
    # (user, time): only those runs are compared column by column (earliest row kept).
    same = (codes[1:] == codes[:-1]) & (stamps[1:] == stamps[:-1])
    if same.any():
        candidate = np.r_[same, False] | np.r_[False, same]
        subset = frame[candidate]
        duplicate = np.zeros(len(frame), dtype=bool)
        duplicate[np.flatnonzero(candidate)] = subset.duplicated(
            subset=[c for c in frame.columns if c != "row"]).to_numpy()
        if duplicate.any():
            report.drop("exact duplicate", frame.loc[duplicate, "row"],
                        "The row repeats an earlier row exactly (same user, time and place).")
            frame = frame[~duplicate].reset_index(drop=True)
            codes = codes[~duplicate]
    frame["row"] = frame["row"].astype("int64")
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
    _summary_notes(np.bincount(codes, minlength=len(users)), report, state, known_utc=known_utc)
    report.n_kept = len(frame)
    report.n_users = int((np.bincount(codes, minlength=len(users)) > 0).sum())
    log.info("%s: %d rows read, %d kept, %d dropped", report.source, report.n_rows,
             report.n_kept, report.n_dropped)
    if frame.empty and report.ok:
        reasons = "; ".join(f"{reason} ({e['count']:,})" for reason, e in report.dropped.items())
        report.fail("No usable rows" + (f": every row was dropped ({reasons})." if reasons
                                         else ": the file has a header but no data rows."))
    return frame


def _summary_notes(rows_per_user: np.ndarray, report: ValidationReport, state: ReadState, *,
                   known_utc: bool) -> None:
    if state.n_checked and state.n_swappable > state.n_checked / 2:
        report.note(f"lat and lon look swapped: {state.n_swappable:,} of {state.n_checked:,} rows "
                    "have |lat| > 90 but |lon| <= 90. Swap the two column names (lat <-> lon) "
                    "and read the file again.")
    if state.n_unix_ms:
        report.note(f"{state.n_unix_ms:,} numeric timestamps are large enough to be Unix "
                    "milliseconds and were read as such.")
    if state.n_utc and not known_utc:
        where = ("converted to the given timezone" if state.utc_converted else
                 "kept as UTC wall-clock. Pass --timezone (an IANA name such as "
                 "America/New_York) so that hour-of-week features use local time")
        report.note(f"{state.n_utc:,} timestamps are in UTC (Unix time or ending in 'Z'); they "
                    f"were {where}.")
    for fmt in sorted(state.guessed_formats):
        report.note(f"Some timestamps are not ISO-8601; they were read with format {fmt!r}: "
                    "check that day and month are not swapped.")
    counts = rows_per_user[rows_per_user > 0]
    short = int((counts < MIN_ROWS_PER_USER).sum())
    if short:
        report.note(f"{short:,} of {len(counts):,} users have fewer than {MIN_ROWS_PER_USER} "
                    "rows; they are kept here, and preparing a city dataset drops users with "
                    f"fewer than {MIN_ROWS_PER_USER} visits.")
