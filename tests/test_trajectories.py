"""read_trajectories: canonical frame, time semantics, and reports that name the problem and rows."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from trajmoe.errors import InputDataError
from trajmoe.trajectories import chunks, files
from trajmoe.trajectories.reader import read_trajectories
from trajmoe.trajectories.report import ValidationReport

HEADER = "user_id,timestamp,lat,lon"


def read(text: str | bytes, name: str = "t.csv", **kwargs):
    data = text.encode() if isinstance(text, str) else text
    return read_trajectories(data, name=name, **kwargs)


def balanced(report: ValidationReport) -> bool:
    rows = report.n_rows == report.n_kept + report.n_dropped + sum(report.reduced.values())
    people = report.n_users_read == report.n_users_kept + sum(report.users_dropped.values())
    return rows and people and report.counts_add_up()


def test_canonical_frame_columns_dtypes_sorted_and_row_numbers():
    frame, report = read("city,category,lat,lon,timestamp,user_id,location_id\n"
                         "NYC,Cafe,40.7,-73.9,2012-04-07T15:00:00,b,v1\n"
                         "NYC,Bar,40.8,-73.9,2012-04-07T13:00:00,b,v2\n"
                         "NYC,,40.6,-73.8,2012-04-07T14:00:00,a,007\n")
    assert report.ok and balanced(report)
    assert list(frame.columns) == ["row", "user_id", "timestamp", "lat", "lon", "location_id",
                                   "category", "city"]
    assert frame["row"].tolist() == [3, 2, 1]  # sorted by user then time, source rows kept
    assert frame["user_id"].tolist() == ["a", "b", "b"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns]"
    assert frame["lat"].dtype == np.float64 and frame["lon"].dtype == np.float64
    assert frame.loc[0, "location_id"] == "007"  # ids stay text: leading zeros survive
    assert pd.isna(frame.loc[0, "category"])
    assert (report.n_rows, report.n_kept, report.n_users) == (3, 3, 2)


def test_offset_keeps_the_wall_clock_it_states_even_when_offsets_mix():
    frame, report = read(f"{HEADER}\n"
                         "u,2012-03-10T23:30:00-05:00,40.7,-73.9\n"  # before the DST change
                         "u,2012-03-11T23:30:00-04:00,40.7,-73.9\n"  # after it
                         "u,2012-03-12T08:00:00+0900,40.7,-73.9\n"
                         "u,2012-03-13 07:15:30.5 -03,40.7,-73.9\n",
                         timezone="Europe/Helsinki")  # ignored: offsets are not UTC markers
    assert report.ok
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2012-03-10 23:30"), pd.Timestamp("2012-03-11 23:30"),
        pd.Timestamp("2012-03-12 08:00"), pd.Timestamp("2012-03-13 07:15:30.5")]
    assert not any("UTC" in n for n in report.notes)


def test_naive_timestamps_are_local_and_untouched_by_timezone():
    frame, _ = read(f"{HEADER}\nu,2012-04-07 13:42:00,40.7,-73.9\n", timezone="Asia/Tokyo")
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2012-04-07 13:42")


def test_unix_seconds_are_utc_converted_to_the_timezone():
    csv = f"{HEADER}\nu,1333806120,40.7,-73.9\nu,1333806120000,40.7,-73.8\n"  # 13:42:00 UTC
    frame, report = read(csv, timezone="America/New_York")
    assert frame["timestamp"].tolist() == [pd.Timestamp("2012-04-07 09:42")] * 2
    assert any("milliseconds" in n for n in report.notes)
    frame, report = read(csv)  # no timezone: kept as UTC, with a note saying what to do
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2012-04-07 13:42")
    assert any("--timezone" in n for n in report.notes)


def test_z_suffix_is_known_utc():
    frame, report = read(f"{HEADER}\nu,2012-04-07T13:42:00Z,40.7,-73.9\n", timezone="Asia/Tokyo")
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2012-04-07 22:42")
    assert any("converted" in n for n in report.notes)


def test_mixed_formats_are_parsed_row_by_row():
    frame, report = read(f"{HEADER}\n"
                         "u,2012-04-07T13:42:00+02:00,40.7,-73.9\n"
                         "u,1333893720,40.7,-73.9\n"
                         "u,04/09/2012 13:42,40.7,-73.9\n"
                         "u,2012-04-10,40.7,-73.9\n", timezone="Europe/Berlin")
    assert report.ok and report.n_kept == 4
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2012-04-07 13:42"), pd.Timestamp("2012-04-08 16:02"),
        pd.Timestamp("2012-04-09 13:42"), pd.Timestamp("2012-04-10")]
    assert any("%m/%d/%Y" in n for n in report.notes)


def test_day_first_format_is_chosen_when_month_first_fails():
    frame, _ = read(f"{HEADER}\nu,25/12/2012 10:00,40.7,-73.9\nu,03/01/2013 10:00,40.7,-73.9\n")
    assert frame["timestamp"].tolist() == [pd.Timestamp("2012-12-25 10:00"),
                                           pd.Timestamp("2013-01-03 10:00")]


MESSY = (f"{HEADER}\n"
         "u1,2012-04-07 13:42,40.7,-73.9\n"          # 1 ok
         ",2012-04-07 13:42,40.7,-73.9\n"            # 2 missing user
         "u1,notatime,40.7,-73.9\n"                  # 3 bad time
         "u1,2012-04-07 13:43,abc,-73.9\n"           # 4 not a number
         "u1,2012-04-07 13:44,95,-73.9\n"            # 5 out of range
         "u1,2012-04-07 13:45,0,0\n"                 # 6 null island
         "u1,2012-04-07 13:42,40.7,-73.9\n"          # 7 duplicate of 1
         "u1,2012-04-07 13:46,40.7,-73.9,extra\n"    # 8 too many fields
         "\n"                                        # 9 blank
         "u2,,40.7,-73.9\n"                          # 10 missing time
         "u2,1e3,40.7,-73.9\n"                       # 11 number, but not a Unix time
         "u2,2012-04-07 13:50,40.7,-73.9\n")         # 12 ok


def test_malformed_rows_are_dropped_with_their_row_numbers_and_reasons():
    frame, report = read(MESSY)
    assert report.ok and balanced(report)
    assert frame["row"].tolist() == [1, 12]
    rows = {reason: entry["rows"] for reason, entry in report.dropped.items()}
    assert rows == {
        "missing user_id": [2], "unparsable timestamp": [3, 11], "missing coordinates": [4],
        "coordinates out of range": [5], "null island": [6], "exact duplicate": [7],
        "wrong number of fields": [8], "blank line": [9], "missing timestamp": [10]}
    assert "notatime" in report.dropped["unparsable timestamp"]["message"]
    assert "expected 4 fields, saw 5" in report.dropped["wrong number of fields"]["message"]
    text = report.to_text()
    assert "Left out 10 rows" in text and "(rows 3, 11)" in text and "(row 2)" in text
    assert any("fewer than 3 rows" in n for n in report.notes)
    json.dumps(report.to_dict())  # JSON-safe


def test_row_numbers_survive_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_ROWS", 3)
    lines = [f"u{i % 4},2012-04-07 10:{i:02d},40.7,-73.9" for i in range(20)]
    lines[4] += ",x,y"       # row 5: skipped by the parser inside a chunk
    lines[9] += ",x"         # row 10
    lines[12] = lines[2]     # row 13 repeats row 3, two chunks later
    frame, report = read(HEADER + "\n" + "\n".join(lines) + "\n")
    assert report.dropped["wrong number of fields"]["rows"] == [5, 10]
    assert report.dropped["exact duplicate"]["rows"] == [13]
    assert sorted(frame["row"]) == [r for r in range(1, 21) if r not in (5, 10, 13)]
    by_row = frame.set_index("row")
    assert by_row.loc[14, "timestamp"] == pd.Timestamp("2012-04-07 10:13")
    assert balanced(report)


def test_misnamed_columns_are_renamed_with_a_note():
    frame, report = read("UID;Time;Latitude;lng;venue_id\nu;2012-04-07 13:42;40,7;-73,9;v\n")
    assert report.ok and frame["lat"].iloc[0] == pytest.approx(40.7)
    assert frame["location_id"].iloc[0] == "v"
    assert "Column 'Latitude' was read as 'lat'." in report.notes
    assert any("decimal comma" in n for n in report.notes)


@pytest.mark.parametrize(("header", "expected"), [
    ("user_id,timestamp,x,y", "rename 'y' to 'lat'"),
    ("user_id,date,lat,lon", "rename 'date' to 'timestamp'"),
    ("person,timestamp,lat,lon", "Missing required column 'user_id'"),
])
def test_missing_required_column_is_fatal_with_a_suggestion(header, expected):
    frame, report = read(f"{header}\nu,2012-04-07 13:42,40.7,-73.9\n")
    assert not report.ok and frame.empty
    assert any(expected in text for text in report.fatal)
    with pytest.raises(InputDataError, match="Missing required column"):
        report.raise_if_fatal()


def test_swapped_lat_lon_gets_a_note_not_a_silent_fix():
    frame, report = read(f"{HEADER}\nu,2012-04-07 13:42,-122.4,37.7\nu,2012-04-07 14:00,-122.5,"
                         "37.8\n")
    assert frame.empty and not report.ok
    assert any("look swapped" in n for n in report.notes)


XLSX = io.BytesIO()
with zipfile.ZipFile(XLSX, "w") as _z:
    _z.writestr("[Content_Types].xml", "<Types/>")
    _z.writestr("xl/workbook.xml", "<workbook/>")


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "empty (0 bytes)"),
    (b"\n \n", "no data"),
    (f"{HEADER}\n".encode(), "no data rows"),
    (bytes(range(256)) * 4, "binary"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
    (b'[{"user_id": 1}]', "JSON"),
    (b'<?xml version="1.0"?><gpx></gpx>', "GPX"),
    (XLSX.getvalue(), "Excel"),
    (gzip.compress(f"{HEADER}\n".encode() + b"u,2012-04-07,1,2\n" * 500)[:60], "truncated"),
    (b"u,2012-04-07 13:42,40.7,-73.9\n", "holds data, not column names"),
    (b"user_id timestamp lat lon\nu 2012 1 2\n", "Only one column"),
    (f'{HEADER}\nu,"2012-04-07,40.7,-73.9\n'.encode(), "never closed"),
])
def test_unusable_files_are_fatal_with_a_clear_message(data, expected):
    frame, report = read(data)
    assert not report.ok and frame.empty
    assert expected in " ".join(report.fatal), report.fatal


def test_bad_paths_are_reported_and_a_bad_timezone_refused_at_once(tmp_path):
    _, report = read_trajectories(tmp_path / "nope.csv")
    assert "File not found" in report.fatal[0]
    _, report = read_trajectories(tmp_path)
    assert "not a Geolife dataset" in report.fatal[0]
    # A wrong setting, not the file (issue 27, item 6): one line before the file is read.
    with pytest.raises(InputDataError, match=r"^Unknown timezone 'Mars/Olympus': .*'America/New_York'"):
        read_trajectories(tmp_path / "nope.csv", timezone="Mars/Olympus")


ROWS = ["u1,2012-04-07 13:42,40.7,-73.9,Café", "u1,2012-04-07 14:42,40.8,-73.95,Bar"]


@pytest.mark.parametrize(("encode", "name"), [
    (lambda t: gzip.compress(t.encode()), "gz_named.csv"),  # gzip with a .csv name
    (lambda t: bz2.compress(t.encode()), "t.csv.bz2"),
    (lambda t: _zip(t.encode()), "t.zip"),
    (lambda t: t.encode("utf-8-sig"), "bom.csv"),
    (lambda t: t.encode("utf-16"), "utf16.csv"),
    (lambda t: t.encode("latin-1"), "latin1.csv"),
    (lambda t: t.replace(",", ";").encode(), "semicolon.csv"),
    (lambda t: t.replace(",", "\t").encode(), "tab.tsv"),
    (lambda t: t.replace(",", "|").encode(), "pipe.txt"),
])
def test_compressions_encodings_and_delimiters(encode, name):
    text = "user_id,timestamp,lat,lon,category\n" + "\n".join(ROWS) + "\n"
    frame, report = read(encode(text), name=name)
    assert report.ok, report.fatal
    assert frame["category"].tolist() == ["Café", "Bar"]
    assert frame["lon"].tolist() == [-73.9, -73.95]
    assert ("Latin-1" in " ".join(report.notes)) == (name == "latin1.csv")


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trajectories.csv", data)
    return buffer.getvalue()


def test_latin1_after_the_sniffed_sample_is_read_again(tmp_path):
    rows = [f"u{i % 50},2012-04-07 10:{i % 60:02d}:{i % 59:02d},40.7,-73.9,x" for i in range(3000)]
    text = "user_id,timestamp,lat,lon,category\n" + "\n".join(rows) + "\nu,2013-01-01,1,1,Caf\xe9\n"
    path = tmp_path / "late.csv"
    path.write_bytes(text.encode("latin-1"))
    assert path.stat().st_size > files.SAMPLE_BYTES
    frame, report = read_trajectories(path)
    assert report.ok and report.n_rows == 3001 and balanced(report)
    assert "Café" in set(frame["category"])
    assert any("Latin-1" in n for n in report.notes)


def test_parquet_with_typed_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({
        "user_id": [7, 7, 8],
        "timestamp": pd.to_datetime(["2012-04-07 13:42", "2012-04-07 14:00", "2012-04-08 09:00"]
                                    ).tz_localize("UTC"),
        "latitude": [40.7, 40.8, 95.0], "lon": [-73.9, -73.9, -73.9],
    }).to_parquet(path)
    frame, report = read_trajectories(path, timezone="America/New_York")
    assert report.ok and frame["user_id"].tolist() == ["7", "7"]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2012-04-07 09:42")
    assert report.dropped["coordinates out of range"]["rows"] == [3]


def test_file_like_upload_uses_the_given_name():
    frame, report = read_trajectories(io.BytesIO(f"{HEADER}\nu,2012-04-07,1.5,2.5\n".encode()),
                                      name="upload.csv")
    assert report.source == "upload.csv" and len(frame) == 1
    assert report.to_text().startswith("upload.csv: usable")


def test_report_methods_accumulate():
    report = ValidationReport(source="x")
    report.drop("r", [5, 3], "m1")
    report.drop("r", np.arange(100, 130), "m2")
    report.reduce("merged", 4)
    report.note("n")
    report.note("n")
    assert report.dropped["r"]["count"] == 32 and report.dropped["r"]["message"] == "m1"
    assert report.dropped["r"]["rows"] == [3, 5, *range(100, 118)]
    assert report.reduced == {"merged": 4} and report.notes == ["n"] and report.ok
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_a_source_column_named_row_does_not_clash_with_row_numbers():
    frame, report = read(f"row,{HEADER}\n7,u,2012-04-07 13:42,40.7,-73.9\n")
    assert report.ok and frame["row"].tolist() == [1]
    assert any("'row'" in n for n in report.notes)


def test_no_header_in_the_sniffed_sample_is_fatal():
    _, report = read("# comment\n" * 8000 + f"{HEADER}\nu,2012-04-07,1,2\n")
    assert "No column names were found" in report.fatal[0]


def test_max_rows_refuses_big_files_with_a_clear_message(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("user_id,timestamp,lat,lon\n" + "".join(
        f"u{i % 7},2024-01-01T{i % 24:02d}:00:00,60.1,24.9\n" for i in range(50)))
    frame, report = read_trajectories(path, max_rows=20)
    assert not report.ok and len(frame) == 0
    assert "more than 20 rows" in report.to_text() and "trajmoe prepare" in report.to_text()
    frame, report = read_trajectories(path, max_rows=50)
    assert report.ok
