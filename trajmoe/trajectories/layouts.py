"""Readers for the original layouts researchers download, each giving the canonical frame.

Each returns the frame and a :class:`~trajmoe.trajectories.report.ValidationReport`: Geolife
(``NNN/Trajectory/*.plt``, UTC), SNAP Gowalla (``loc-gowalla_totalCheckins.txt``: tab-separated,
no header, UTC, newest first) and Foursquare TSMC2014 (Yang et al.; original headerless TSV, the
Kaggle CSV, or the ``UserId,PoiId,...,UTCTime,LocalTime`` tables of later releases).
:func:`sniff_format` tells them apart, and
:func:`~trajmoe.trajectories.reader.read_trajectories` dispatches to them on its own.

Geolife is parsed here rather than with ``trackintel.io.read_geolife``: trackintel turns the
user folder "000" into the integer 0 (our city files keep "000") and builds a shapely point per
fix that the reader does not need; ``tests/test_importers.py`` checks both agree fix for fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from trajmoe.trajectories.chunks import collect
from trajmoe.trajectories.columns import empty_frame
from trajmoe.trajectories.files import (
    ISO_RE,
    NUMBER_RE,
    READ_ERRORS,
    Source,
    Table,
    looks_like_header,
    open_table,
    source_label,
)
from trajmoe.trajectories.report import ReadState, ValidationReport
from trajmoe.trajectories.rows import check_rows, drop_bad_timestamps, finish
from trajmoe.trajectories.timestamps import check_timezone, parse_timestamps

GEOLIFE_TIMEZONE = "Asia/Shanghai"  # Geolife was recorded mostly in Beijing; its times are UTC
GOWALLA_COLUMNS = ("user_id", "timestamp", "lat", "lon", "location_id")
TSMC_COLUMNS = ("userId", "venueId", "venueCategoryId", "venueCategory", "latitude",
                "longitude", "timezoneOffset", "utcTimestamp")  # the original headerless TSV
_TSMC_TIME_RE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d [+-]\d{4} \d{4}$")


def sniff_format(table: Table) -> str | None:
    """Which importer reads ``table``: "gowalla_snap", "foursquare_tsmc" or None (generic)."""
    if table.fmt != "csv":
        return None
    cols = table.columns
    normed = {c.strip().lower() for c in cols}
    if ({"userid", "latitude", "longitude", "timezoneoffset"} <= normed
            and normed & {"utctime", "utctimestamp"}):
        return "foursquare_tsmc"
    if looks_like_header(cols) or table.delimiter != "\t":
        return None
    if len(cols) == 5 and ISO_RE.match(cols[1]) and all(NUMBER_RE.match(v) for v in cols[2:4]):
        return "gowalla_snap"
    if (len(cols) == 8 and all(NUMBER_RE.match(v) for v in cols[4:7])
            and _TSMC_TIME_RE.match(cols[7])):
        return "foursquare_tsmc"
    return None


def _start(path: Source | Table, name: str | None, timezone: str | None
           ) -> tuple[Table | None, ValidationReport]:
    if isinstance(path, Table):
        return path, ValidationReport(source=path.label)
    check_timezone(timezone)
    report = ValidationReport(source=source_label(path, name))
    return open_table(path, name=name, report=report), report


def read_gowalla_snap(path: Source | Table, *, timezone: str | None = None,
                      name: str | None = None) -> tuple[pd.DataFrame, ValidationReport]:
    """Read SNAP Gowalla check-ins (Cho et al. 2011, ``loc-gowalla_totalCheckins.txt``).

    Tab-separated, no header: user, check-in time (ISO, UTC), lat, lon, location id; each user's
    rows newest first (the frame is sorted oldest first). Times are converted to ``timezone``
    (IANA) when given, else kept as UTC with a note. Returns the canonical frame and report.
    """
    table, report = _start(path, name, timezone)
    if table is None:
        return empty_frame(), report
    if table.fmt != "csv" or len(table.columns) != len(GOWALLA_COLUMNS):
        report.fail(f"{table.label} is not in the SNAP Gowalla layout (5 tab-separated columns: "
                    "user, UTC time, lat, lon, location id; no header).")
        return empty_frame(), report
    report.note("Read with the SNAP Gowalla importer (tab-separated user, UTC time, lat, lon, "
                "location id; no header).")
    state = ReadState()

    def convert(chunk: pd.DataFrame) -> pd.DataFrame:
        raw = chunk["timestamp"]
        chunk["timestamp"] = parse_timestamps(raw, timezone=timezone, state=state, known_utc=True)
        return drop_bad_timestamps(chunk, raw, report, state)

    frame = collect(table, report, convert, state=state, has_header=False,
                    names=list(GOWALLA_COLUMNS), known_utc=True,
                    dtype={"user_id": "str", "timestamp": "str", "location_id": "str"})
    _utc_note(report, timezone, "Gowalla")
    return frame, report


def _utc_note(report: ValidationReport, timezone: str | None, what: str) -> None:
    if not report.ok:
        return
    if timezone:
        report.note(f"{what} times are UTC; they were converted to {timezone}.")
    else:
        report.note(f"{what} times are UTC and were kept as UTC wall-clock: pass --timezone (an "
                    "IANA name such as America/New_York) so hour-of-week features use local time.")


def read_foursquare_tsmc(path: Source | Table, *, name: str | None = None
                         ) -> tuple[pd.DataFrame, ValidationReport]:
    """Read Foursquare TSMC2014 check-ins (Yang et al. 2015) in local time.

    Accepts the original headerless TSV (user, venue id, category id, category name, lat, lon,
    offset in minutes, ``Tue Apr 03 18:00:09 +0000 2012``), the Kaggle CSV with those names as
    header, and later tables with ``UserId, PoiId, PoiCategoryName, Latitude, Longitude,
    TimezoneOffset, UTCTime, LocalTime``. Local time = UTC time + the row's offset (falling back
    to ``LocalTime``), so every row carries its own wall-clock. Returns the canonical frame and
    report.
    """
    table, report = _start(path, name, None)
    if table is None:
        return empty_frame(), report
    headerless = not looks_like_header(table.columns)
    names = list(TSMC_COLUMNS) if headerless else list(table.columns)
    by_norm = {c.strip().lower(): c for c in names}

    def pick(*options: str) -> str | None:
        return next((by_norm[o] for o in options if o in by_norm), None)

    cols = {"user_id": pick("userid"), "location_id": pick("poiid", "venueid"),
            "category": pick("poicategoryname", "venuecategory"), "lat": pick("latitude"),
            "lon": pick("longitude"), "offset": pick("timezoneoffset"),
            "utc": pick("utctime", "utctimestamp"), "local": pick("localtime")}
    if (len(names) != len(table.columns) or table.fmt != "csv"
            or None in (cols["user_id"], cols["lat"], cols["lon"], cols["offset"], cols["utc"])):
        report.fail(f"{table.label} is not in a Foursquare TSMC2014 layout (userId, venueId, "
                    "..., latitude, longitude, timezoneOffset, utcTimestamp).")
        return empty_frame(), report
    report.note("Read with the Foursquare TSMC2014 importer; local time = UTC time + each row's "
                "timezone offset.")
    state = ReadState()

    def convert(chunk: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({"row": chunk["row"]})
        for canon in ("user_id", "lat", "lon", "location_id", "category"):
            if cols[canon] is not None:
                out[canon] = chunk[cols[canon]]
        utc = pd.to_datetime(chunk[cols["utc"]], format="%a %b %d %H:%M:%S %z %Y",
                             errors="coerce", utc=True)
        utc = utc.where(utc.dt.year.between(1678, 2261))  # within datetime64[ns], as the reader
        utc = utc.dt.tz_localize(None).astype("datetime64[ns]")
        iso = utc.isna()
        if iso.any():  # later releases write UTCTime as ISO text
            utc[iso] = parse_timestamps(chunk.loc[iso, cols["utc"]], timezone=None, state=state)
        minutes = pd.to_numeric(chunk[cols["offset"]], errors="coerce")
        minutes = minutes.where(minutes.abs() <= 24 * 60)  # UTC offsets lie within -12..+14 h
        out["timestamp"] = utc + pd.to_timedelta(minutes, unit="min")
        if cols["local"] is not None:
            local = parse_timestamps(chunk[cols["local"]], timezone=None, state=state)
            out["timestamp"] = out["timestamp"].fillna(local)
        return drop_bad_timestamps(out, chunk[cols["utc"]], report, state)

    text = [cols[c] for c in ("user_id", "location_id", "category", "utc", "local") if cols[c]]
    frame = collect(table, report, convert, state=state, has_header=not headerless, names=names,
                    dtype={c: "str" for c in text})
    return frame, report


def geolife_root(folder: Path) -> Path | None:
    """The folder holding Geolife's user folders (``NNN/Trajectory/*.plt``), or None."""
    for root in (folder, folder / "Data", folder / "Geolife Trajectories 1.3" / "Data"):
        if root.is_dir() and next(root.glob("*/Trajectory/*.plt"), None) is not None:
            return root
    return None


def read_geolife(folder: str | os.PathLike, *, timezone: str = GEOLIFE_TIMEZONE
                 ) -> tuple[pd.DataFrame, ValidationReport]:
    """Read Geolife GPS trajectories (Zheng et al. 2010) from its own folder layout.

    Each ``NNN/Trajectory/*.plt`` has 6 header lines, then ``lat,lon,0,altitude_ft,days,date,
    time`` with times in UTC, converted here to ``timezone`` (Beijing by default). ``user_id``
    is the folder name ("000"); ``row`` counts fixes across files in user and file-name order.
    """
    check_timezone(timezone)
    label = Path(folder).name or str(folder)
    report = ValidationReport(source=label)
    root = geolife_root(Path(folder))
    if root is None:
        report.fail(f"{label} is not a Geolife folder: no NNN/Trajectory/*.plt inside.")
        return empty_frame(), report
    users = sorted(p for p in root.iterdir() if (p / "Trajectory").is_dir())
    state = ReadState()
    parts, unreadable, offset = [], [], 0
    for user in users:
        frames = []
        for plt in sorted((user / "Trajectory").glob("*.plt")):
            try:
                fixes = pd.read_csv(plt, skiprows=6, header=None, usecols=[0, 1, 5, 6],
                                    names=["lat", "lon", "date", "time"],
                                    dtype={"date": "str", "time": "str"})
            except (*READ_ERRORS, ValueError):
                unreadable.append(f"{user.name}/{plt.name}")
                continue
            fixes.insert(0, "row", np.arange(offset + 1, offset + len(fixes) + 1))
            offset += len(fixes)
            frames.append(fixes)
        if not frames:
            continue
        fixes = pd.concat(frames, ignore_index=True)
        raw = fixes["date"] + "T" + fixes["time"]
        out = pd.DataFrame({"row": fixes["row"], "user_id": user.name,
                            "timestamp": parse_timestamps(raw, timezone=timezone, state=state,
                                                          known_utc=True),
                            "lat": fixes["lat"], "lon": fixes["lon"]})
        parts.append(check_rows(drop_bad_timestamps(out, raw, report, state), report, state))
    report.n_rows = offset
    report.note(f"Read with the Geolife importer: {len(users)} user folders; row numbers count "
                "fixes across the .plt files in user and file-name order.")
    if unreadable:
        report.note(f"{len(unreadable)} .plt files could not be read and were skipped: "
                    f"{unreadable[:10]}.")
    frame = finish(parts, report, state, known_utc=True)
    _utc_note(report, timezone, "Geolife")
    return frame, report
