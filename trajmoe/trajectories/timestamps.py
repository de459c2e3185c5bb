"""Timestamp columns of any common form to naive local wall-clock (datetime64[ns]).

Time (README.md § Data format): ``2012-04-07T13:42:00-04:00`` is read as the wall-clock it states,
13:42 (the offset is dropped, not converted to UTC); a timestamp without an offset is taken as
local. Known-UTC values (Unix seconds or milliseconds, and ISO strings ending in ``Z``/``UTC``)
are converted to ``timezone`` when one is given, else kept as UTC with a note.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trajmoe.errors import InputDataError
from trajmoe.trajectories.report import ReadState

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


def check_timezone(timezone: str | None) -> None:
    """Refuse a ``timezone`` that is not an IANA name, in one line, before any file is read: it is a
    wrong setting, not a problem of the file (every row would fail the same way)."""
    if timezone is None:
        return
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        shown = repr(timezone) if len(str(timezone)) <= 60 else f"{str(timezone)[:60]!r}..."
        raise InputDataError(f"Unknown timezone {shown}: give an IANA time zone name such as 'America/New_York', "
                             "'Europe/Helsinki' or 'UTC'.") from None


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
