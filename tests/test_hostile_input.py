"""Hostile trajectory files: whatever a planner uploads, the reader and the CLI answer in words.

Property-based (hypothesis) with an oracle: files are generated row by row from values whose
correct reading is known (ISO with and without offsets, ``Z``, milliseconds, Unix seconds and
milliseconds, timezones; valid, missing, infinite, out-of-range, swapped and null-island
coordinates; renamed and extra columns; quoted delimiters and newlines; ragged rows; blank lines;
four delimiters, four encodings, gzip/bz2 under a ``.csv`` name), then read back. Every case must
give a report, never an exception other than our own; every kept row must be exactly what was
written (the contract's time semantics); every row read is kept, dropped or merged, and counted.
Random bytes and random mutations of valid files check the same invariants without an oracle.
The CLI verbs run on the same inputs in-process (many cases) and in a subprocess (a few).
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajmoe import cli
from trajmoe.errors import TrajMoEError
from trajmoe.trajectories.columns import REQUIRED
from trajmoe.trajectories.reader import read_trajectories
from trajmoe.trajectories.report import ValidationReport

REPO = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TIME_MIN, TIME_MAX = pd.Timestamp("1678-01-01"), pd.Timestamp("2262-01-01")

HEADERS = {  # canonical column -> names a planner's file may use for it (all read as that column)
    "user_id": ["user_id", "UserID", "user", "Person ID"],
    "timestamp": ["timestamp", "time", "datetime", "Check-in Time"],
    "lat": ["lat", "Latitude", "LAT"],
    "lon": ["lon", "lng", "Longitude"],
}
USERS = ["u1", "u2", "007", "Ülla K", "5", "a,b", 'say "hi"']
GARBAGE_TIMES = ["", "not a time", "2020-13-45T10:00:00", "9999-12-31T23:59:59", "0000-01-01",
                 "-1", "1e400", "inf", "True", "12:00", "2020-02-30 25:61:00"]
BAD_COORDS = ["", "nan", "inf", "-inf", "1e400", "abc", "1e6", "N 60.1"]


# --------------------------------------------------------------------------- the oracle
@dataclass
class Row:
    """One written data record and what the reader must make of it."""

    fields: dict[str, str]  # source column -> text written
    user: str | None  # expected user_id, None when the row cannot be kept
    time: pd.Timestamp | None
    lat: float | None
    lon: float | None
    ragged: bool = False  # written with a wrong number of fields

    @property
    def keepable(self) -> bool:
        return (not self.ragged and bool(self.user) and self.time is not None
                and self.lat is not None and self.lon is not None
                and not (self.lat == 0 and self.lon == 0))


@st.composite
def timestamps(draw, timezone: str | None):
    """(text, expected naive wall-clock or None) for one timestamp, per :mod:`trajmoe.trajectories.timestamps`."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(GARBAGE_TIMES)), None
    wall = pd.Timestamp(draw(st.datetimes(min_value=pd.Timestamp("1975-01-01").to_pydatetime(),
                                          max_value=pd.Timestamp("2095-12-31").to_pydatetime())))
    wall = wall.floor("s")
    form = draw(st.sampled_from(["iso", "space", "offset", "z", "millis", "unix", "unix_ms"]))

    def from_utc(stamp: pd.Timestamp) -> pd.Timestamp:  # known-UTC -> local when a zone is given
        if timezone is None:
            return stamp
        return stamp.tz_localize("UTC").tz_convert(ZoneInfo(timezone)).tz_localize(None)

    if form == "iso":
        return wall.strftime("%Y-%m-%dT%H:%M:%S"), wall
    if form == "space":
        return wall.strftime("%Y-%m-%d %H:%M:%S"), wall
    if form == "offset":  # the wall-clock it states, whatever the offset
        hours = draw(st.integers(-11, 13))
        return wall.strftime("%Y-%m-%dT%H:%M:%S") + f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00", wall
    if form == "z":
        return wall.strftime("%Y-%m-%dT%H:%M:%SZ"), from_utc(wall)
    if form == "millis":
        ms = draw(st.integers(0, 999))
        return wall.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}", wall + pd.Timedelta(milliseconds=ms)
    seconds = int((wall - pd.Timestamp("1970-01-01")).total_seconds())
    if form == "unix":
        return str(seconds), from_utc(wall)
    return str(seconds * 1000), from_utc(wall)


@st.composite
def coordinates(draw, limit: float):
    """(text, expected float or None) for one latitude (limit 90) or longitude (limit 180)."""
    if draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from([*BAD_COORDS, str(limit + 0.0001), str(-limit - 1)])), None
    if draw(st.integers(0, 9)) == 0:
        value = draw(st.sampled_from([0.0, limit, -limit, 1e-9]))
    else:
        value = draw(st.floats(-limit, limit, allow_nan=False, allow_infinity=False))
    expected = None if abs(float(repr(value))) > limit else float(repr(value))
    return repr(value), expected


@st.composite
def csv_uploads(draw, *, max_rows: int = 25):
    """A CSV upload (bytes), its rows with the expected reading, and the timezone to read it in."""
    timezone = draw(st.sampled_from([None, "Asia/Tokyo", "America/New_York"]))
    names = {canon: draw(st.sampled_from(options)) for canon, options in HEADERS.items()}
    extra = draw(st.lists(st.sampled_from(["note", "speed", "_id"]), unique=True, max_size=2))
    columns = draw(st.permutations([*names.values(), *extra]))
    rows: list[Row] = []
    for _ in range(draw(st.integers(0, max_rows))):
        user = draw(st.sampled_from([*USERS, ""]))
        ts_text, ts = draw(timestamps(timezone))
        lat_text, lat = draw(coordinates(90.0))
        lon_text, lon = draw(coordinates(180.0))
        fields = {names["user_id"]: user, names["timestamp"]: ts_text,
                  names["lat"]: lat_text, names["lon"]: lon_text}
        for column in extra:  # free text: quotes, delimiters, newlines, accents
            fields[column] = draw(st.sampled_from(["", "ok", 'a "quoted" word', "x;y|z\tw",
                                                   "two\nlines", "café", "1.5"]))
        rows.append(Row(fields, user.strip() or None, ts, lat, lon))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(columns)
    blank_at = draw(st.sets(st.integers(0, max(len(rows) - 1, 0)), max_size=2)) if rows else set()
    written: list[Row] = []
    for i, row in enumerate(rows):
        if i in blank_at:  # an empty line is a (dropped) data row too
            buffer.write("\n")
            written.append(Row({}, None, None, None, None))
        values = [row.fields[c] for c in columns]
        shape = draw(st.integers(0, 19))
        if shape == 0:  # more fields than the header: skipped by the parser, counted
            values, row.ragged = [*values, "surplus"], True
        elif shape == 1:  # fewer fields: a required one is missing
            values, row.ragged = values[:2], True
        writer.writerow(values)
        written.append(row)
    text = buffer.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding)
    compression = draw(st.sampled_from([None, None, "gzip", "bz2"]))
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "bz2":
        data = bz2.compress(data)
    return data, written, timezone


def check_report(frame: pd.DataFrame, report: ValidationReport) -> None:
    """Contract invariants that hold for ANY input, usable or not."""
    assert isinstance(report, ValidationReport)
    text = report.to_text()
    assert text and "Traceback" not in text
    json.dumps(report.to_dict())  # JSON-safe
    assert report.n_rows == report.n_kept + report.n_dropped + sum(report.reduced.values())
    assert report.counts_add_up(), text  # rows and people (issue 12, items 5-6)
    assert report.n_kept == len(frame)
    for entry in report.dropped.values():
        assert entry["count"] >= len(entry["rows"]) > 0 and entry["message"]
        assert all(1 <= r <= report.n_rows for r in entry["rows"])
    if not report.ok:
        assert frame.empty and all(isinstance(m, str) and m for m in report.fatal)
        assert "Every row could be used" not in text
        return
    assert list(frame.columns[:5]) == ["row", *REQUIRED]
    assert frame["row"].dtype == np.int64 and str(frame["timestamp"].dtype) == "datetime64[ns]"
    assert frame["lat"].dtype == np.float64 and frame["lon"].dtype == np.float64
    assert frame["row"].is_unique and frame["row"].between(1, report.n_rows).all()
    assert np.isfinite(frame[["lat", "lon"]].to_numpy()).all()
    assert frame["lat"].between(-90, 90).all() and frame["lon"].between(-180, 180).all()
    assert not ((frame["lat"] == 0) & (frame["lon"] == 0)).any()
    assert frame["timestamp"].notna().all()
    assert frame["timestamp"].between(TIME_MIN, TIME_MAX).all()
    assert frame["user_id"].notna().all() and (frame["user_id"].str.len() > 0).all()
    order = frame.sort_values(["user_id", "timestamp", "row"], kind="stable")
    assert order.index.equals(frame.index)  # sorted by user then time
    assert report.n_users == frame["user_id"].nunique()


def read_safely(data: bytes, **kwargs) -> tuple[pd.DataFrame, ValidationReport]:
    """read_trajectories, allowing no exception but our own (which then must explain itself)."""
    try:
        return read_trajectories(data, name="upload.csv", **kwargs)
    except TrajMoEError as exc:  # allowed by the contract, but it must say something
        assert str(exc)
        pytest.skip(f"raised our own error: {exc}")


# --------------------------------------------------------------------------- properties
@FAST
@given(csv_uploads())
def test_every_kept_row_is_exactly_what_was_written_and_every_row_is_counted(upload):
    data, rows, timezone = upload
    frame, report = read_safely(data, timezone=timezone)
    check_report(frame, report)
    assert report.n_rows == len(rows)
    keepable = {i + 1: row for i, row in enumerate(rows) if row.keepable}
    if not keepable:
        assert not report.ok or frame.empty
        return
    assert report.ok, report.to_text()
    for r in frame.itertuples(index=False):
        row = keepable.get(r.row)
        assert row is not None, f"row {r.row} should have been dropped: {rows[r.row - 1]}"
        assert (r.user_id, r.timestamp, r.lat, r.lon) == (row.user, row.time, row.lat, row.lon), (
            f"row {r.row} written as {row.fields}, read as {r}")
    kept = set(frame["row"])
    seen = {(r.user_id, r.timestamp, r.lat, r.lon) for r in frame.itertuples(index=False)}
    for number, row in keepable.items():  # a usable row is kept, or it repeats a kept one
        assert number in kept or (row.user, row.time, row.lat, row.lon) in seen, (
            f"usable row {number} {row.fields} was dropped: {report.to_text()}")


@FAST
@given(st.binary(max_size=3000), st.sampled_from(["upload.csv", "upload.csv.gz", "x.parquet"]))
def test_random_bytes_give_a_report_never_a_traceback(data, name):
    try:
        frame, report = read_trajectories(data, name=name)
    except TrajMoEError as exc:
        assert str(exc)
        return
    check_report(frame, report)


@st.composite
def mutated_uploads(draw):
    """A valid upload with a few bytes flipped, inserted, deleted or the file cut short."""
    data, _, _ = draw(csv_uploads(max_rows=10))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)


@FAST
@given(mutated_uploads())
def test_corrupted_uploads_give_a_report_never_a_traceback(data):
    frame, report = read_safely(data)
    check_report(frame, report)


# --------------------------------------------------------------------------- named cases
H = "user_id,timestamp,lat,lon\n"
OK_ROWS = "".join(f"u{i % 3},2020-01-0{1 + i % 5}T1{i % 10}:00:00,60.1{i},24.9{i}\n" for i in range(12))
NAMED = {  # name -> (bytes, substring of the report's text, rows kept)
    "empty": (b"", "empty (0 bytes)", 0),
    "blank lines only": (b"\n\r\n\n", "only blank lines", 0),
    "header only": (H.encode(), "no data rows", 0),
    "json named csv": (json.dumps([{"user_id": "a", "lat": 1}]).encode(), "is JSON, not CSV", 0),
    "gpx named csv": (b'<?xml version="1.0"?><gpx version="1.1"></gpx>', "GPX", 0),
    "random bytes": (bytes(range(256)) * 8, "not a text CSV", 0),
    "gzip named csv": (gzip.compress((H + OK_ROWS).encode()), "12 used", 12),
    "truncated gzip": (gzip.compress((H + OK_ROWS * 400).encode())[:300], "truncated or corrupt", 0),
    "latin-1": ((H + OK_ROWS + "Jos\xe9,2020-01-01,60,24\n").encode("latin-1"), "Latin-1", 13),
    "utf-8 BOM": (b"\xef\xbb\xbf" + (H + OK_ROWS).encode(), "12 used", 12),
    "utf-16": ((H + OK_ROWS).encode("utf-16"), "12 used", 12),
    "semicolons, decimal commas": ((H + OK_ROWS).replace(",", ";").replace(".", ",").encode(),
                                   "decimal comma", 12),
    "missing lat": (b"user_id,timestamp,latitud,lon\na,2020-01-01,60,24\n", "Missing required column 'lat'", 0),
    "x/y instead of lon/lat": (b"user_id,timestamp,y,x\na,2020-01-01,60,24\n", "rename 'y' to 'lat'", 0),
    "only NaN and infinite coordinates": ((H + "a,2020-01-01,nan,1\na,2020-01-02,inf,1\na,2020-01-03,-inf,1e400\n").encode(),
                                          "missing coordinates (3)", 0),
    "null island": ((H + OK_ROWS + "a,2020-01-01,0,0\n").encode(), "null island: 1", 12),
    "swapped lat/lon": ((H + "".join(f"a,2020-01-0{i + 1},{24.9 + 100},{60.1}\n" for i in range(5))).encode(),
                        "look swapped", 0),
    "far future and far past": ((H + OK_ROWS + "a,9999-12-31T23:59:59,60,24\na,1200-01-01,60,24\n").encode(),
                                "between 1678 and 2261", 12),
    "negative unix time": ((H + OK_ROWS + "a,-86400,60,24\n").encode(), "unparsable timestamp: 1", 12),
    "huge field": ((H + "a" * 3_000_000 + ",2020-01-01,60,24\n" + OK_ROWS).encode(), "13 used", 13),
    "header past 64 KB": (("x" * 70_000 + "," + H + OK_ROWS).encode(), "No column names", 0),
    "unclosed quote": ((H + 'a,"2020-01-01,60,24\n' + OK_ROWS).encode(), "never closed", 0),
    "ragged rows": ((H + OK_ROWS + "a,2020-01-01,60,24,extra\nb\n").encode(), "wrong number of fields: 1", 12),
    "quoted newline in an id": ((H + OK_ROWS + '"x\ny",2020-01-01,60,24\n').encode(), "13 used", 13),
    "column named row": (("row," + H).encode() + b"".join(
        f"{i},{line}\n".encode() for i, line in enumerate(OK_ROWS.splitlines())), "12 used", 12),
    "antimeridian": ((H + "".join(f"a,2020-01-0{i + 1},-17.8,{179.99 if i % 2 else -179.99}\n"
                                  for i in range(6))).encode(), "6 used", 6),
}


@pytest.mark.parametrize("case", list(NAMED), ids=list(NAMED))
def test_named_hostile_files_are_explained(case):
    data, expected, kept = NAMED[case]
    frame, report = read_trajectories(data, name="upload.csv")
    check_report(frame, report)
    assert expected in report.to_text(), report.to_text()
    assert report.n_kept == kept


# --------------------------------------------------------------------------- the CLI
def run_cli(argv: list[str]) -> tuple[int, str]:
    """cli.main in-process; (exit status, stdout + stderr). Any escaping exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return code, text


@SLOW
@given(st.one_of(csv_uploads(max_rows=12).map(lambda u: u[0]), mutated_uploads(), st.binary(max_size=500)))
def test_cli_validate_answers_in_words(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("validate") / "upload.csv"
    path.write_bytes(data)
    code, text = run_cli(["validate", str(path)])
    assert code in (0, 1) and "upload.csv" in text


@st.composite
def city_uploads(draw):
    """A mostly usable city file (3-6 people, 4-12 visits each) with a few hostile rows."""
    timezone = draw(st.sampled_from([None, "Europe/Helsinki"]))
    lines = [H.strip()]
    for u in range(draw(st.integers(3, 6))):
        for v in range(draw(st.integers(4, 12))):
            if draw(st.integers(0, 5)) == 0:
                ts, _ = draw(timestamps(timezone))
                lat, _ = draw(coordinates(90.0))
                lon, _ = draw(coordinates(180.0))
            else:
                ts = f"2021-0{1 + v % 9}-1{v % 10}T{8 + v % 12:02d}:{7 * u % 60:02d}:00"
                lat = repr(60.15 + draw(st.floats(0, 0.05)))
                lon = repr(24.9 + draw(st.floats(0, 0.1)) + (155.1 if draw(st.booleans()) and u == 0 else 0))
            lines.append(f"p{u},{ts},{lat},{lon}")
    return ("\n".join(lines) + "\n").encode(), timezone


@SLOW
@given(city_uploads(), st.sampled_from(["auto", "checkins", "gps", "trips", "stations"]))
def test_cli_prepare_answers_in_words(tmp_path_factory, upload, kind):
    data, timezone = upload
    folder = tmp_path_factory.mktemp("prepare")
    (folder / "upload.csv").write_bytes(data)
    argv = ["prepare", "--trajectories", str(folder / "upload.csv"), "--city", "Testville",
            "--out", str(folder / "city"), "--kind", kind]
    code, text = run_cli(argv + (["--timezone", timezone] if timezone else []))
    assert code in (0, 2)
    if code == 2:
        assert text.startswith("error: ") and "upload.csv" in text
        return
    visits = pd.read_parquet(folder / "city" / "visits.parquet")
    assert visits["lat"].between(-90, 90).all() and visits["lon"].between(-180, 180).all()
    assert visits["timestamp"].between(TIME_MIN, TIME_MAX).all()
    assert set(visits["split"]) <= {"train", "val", "test"}


SUBPROCESS_CASES = ["empty", "json named csv", "random bytes", "gzip named csv", "far future and far past"]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=SUBPROCESS_CASES)
def test_cli_validate_in_a_subprocess_prints_no_traceback(tmp_path, case):
    path = tmp_path / "upload.csv"
    path.write_bytes(NAMED[case][0])
    proc = subprocess.run([sys.executable, "-m", "trajmoe", "validate", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode in (0, 1)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert NAMED[case][1] in proc.stdout


@pytest.mark.parametrize(("case", "kind"), [("json named csv", "auto"), ("gzip named csv", "trips")])
def test_cli_prepare_in_a_subprocess_prints_one_error_line(tmp_path, case, kind):
    path = tmp_path / "upload.csv"
    path.write_bytes(NAMED[case][0])
    proc = subprocess.run([sys.executable, "-m", "trajmoe", "prepare", "--trajectories", str(path),
                           "--city", "X", "--out", str(tmp_path / "out"), "--kind", kind],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")


def test_a_city_across_the_antimeridian_stays_a_city(tmp_path):
    rows = [f"p{u},2021-01-{1 + v:02d}T{8 + v % 10:02d}:00:00,{-17.8 + 0.01 * ((u * v) % 7)},"
            f"{(179.95 + 0.02 * ((u + v) % 5) + 180) % 360 - 180:.5f}" for u in range(6) for v in range(10)]
    path = tmp_path / "fiji.csv"
    path.write_text(H + "\n".join(rows) + "\n")
    code, text = run_cli(["prepare", "--trajectories", str(path), "--city", "Fiji", "--out", str(tmp_path / "c")])
    assert code == 0, text
    cells = pd.read_parquet(tmp_path / "c" / "cells.parquet")
    assert cells["lon"].min() < -179.9 and cells["lon"].max() > 179.9  # both sides of the line
    assert cells["x_km"].abs().max() < 50  # the ~10 km wide area stays ~10 km wide


def test_cli_output_paths_that_cannot_be_written_give_one_line(tmp_path):
    path = tmp_path / "upload.csv"
    path.write_bytes((H + OK_ROWS * 3).encode())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, text = run_cli(["prepare", "--trajectories", str(path), "--city", "X", "--out", str(blocker)])
    assert code == 2 and text.startswith("error: ") and "a_file" in text and text.count("\n") == 1
