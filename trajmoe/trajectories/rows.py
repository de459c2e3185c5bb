"""Row checks on canonical chunks, and the finished frame with its summary notes.

Rows without a readable timestamp, a user or a usable place are dropped and counted in the
:class:`~trajmoe.trajectories.report.ValidationReport`; :func:`finish` joins the checked chunks,
sorts them by user then time, drops exact duplicates and writes the notes gathered while reading.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from trajmoe.trajectories.columns import OPTIONAL, REQUIRED, TEXT_COLUMNS, empty_frame
from trajmoe.trajectories.report import ReadState, ValidationReport, plural

log = logging.getLogger(__name__)

MIN_ROWS_PER_USER = 3  # README.md § Protocol: users need >= 3 visits


def drop_bad_timestamps(frame: pd.DataFrame, raw: pd.Series, report: ValidationReport,
                        state: ReadState | None = None) -> pd.DataFrame:
    """Drop (and count) rows whose timestamp is empty or could not be parsed.

    With ``state``, the users of the dropped rows are remembered as read (people whose every
    row is left out still count as people read, see :func:`finish`).
    """
    bad = frame["timestamp"].isna()
    if not bad.any():
        return frame
    if state is not None:
        _remember_users(_as_text(frame.loc[bad, "user_id"]), state)
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
    _remember_users(user, state)
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


def _remember_users(user: pd.Series, state: ReadState) -> None:
    """Add the non-empty user ids of ``user`` (text, as made by :func:`_as_text`) to ``state``."""
    state.users.update(user[~(user.isna() | (user == ""))].unique().tolist())


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
    n_users = int((np.bincount(codes, minlength=len(users)) > 0).sum())
    report.set_kept(len(frame), n_users)
    # People whose every row was left out by the row checks are read but not kept.
    report.n_users_read = max(len(state.users), n_users)
    report.drop_users("every row of the person was left out by the checks",
                      report.n_users_read - n_users)
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
        report.note(f"{short:,} of {plural(len(counts), 'user')} {'has' if short == 1 else 'have'} "
                    f"fewer than {MIN_ROWS_PER_USER} "
                    "rows; they are kept here, and preparing a city dataset drops users with "
                    f"fewer than {MIN_ROWS_PER_USER} visits.")
