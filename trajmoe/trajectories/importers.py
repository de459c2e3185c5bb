"""Turn files on disk (or uploaded bytes) into tables, including the datasets' original layouts.

Two jobs, both about bytes rather than mobility:

* :func:`open_table` sniffs a source once (compression by magic bytes, Parquet, encoding, BOM,
  delimiter, header) and refuses binary garbage, JSON, XML and spreadsheets with a message that
  says what to do; :func:`collect` then streams it in chunks of ``CHUNK_ROWS`` rows through the
  checks of :mod:`trajmoe.trajectories.reader`, so memory stays bounded for files of millions of rows.
* Readers for the original layouts researchers download, each returning the canonical frame and
  a :class:`~trajmoe.trajectories.reader.ValidationReport`: Geolife (``NNN/Trajectory/*.plt``, UTC),
  SNAP Gowalla (``loc-gowalla_totalCheckins.txt``: tab-separated, no header, UTC, newest first)
  and Foursquare TSMC2014 (Yang et al.; original headerless TSV, the Kaggle CSV, or the
  ``UserId,PoiId,...,UTCTime,LocalTime`` tables of later releases).
  :func:`~trajmoe.trajectories.reader.read_trajectories` dispatches to them on its own.

Geolife is parsed here rather than with ``trackintel.io.read_geolife``: trackintel turns the
user folder "000" into the integer 0 (our city files keep "000") and builds a shapely point per
fix that the reader does not need; ``tests/test_importers.py`` checks both agree fix for fix.
"""

from __future__ import annotations

import bz2
import codecs
import copy
import csv
import gzip
import io
import lzma
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trajmoe.trajectories.reader import (
    ReadState,
    Source,
    ValidationReport,
    check_rows,
    check_timezone,
    drop_bad_timestamps,
    empty_frame,
    finish,
    parse_timestamps,
    source_label,
)

CHUNK_ROWS = 500_000  # rows per CSV chunk / Parquet batch: ~100 MB of text columns at most
SAMPLE_BYTES = 64 * 1024  # decompressed bytes sniffed for encoding, delimiter and header
GEOLIFE_TIMEZONE = "Asia/Shanghai"  # Geolife was recorded mostly in Beijing; its times are UTC
GOWALLA_COLUMNS = ("user_id", "timestamp", "lat", "lon", "location_id")
TSMC_COLUMNS = ("userId", "venueId", "venueCategoryId", "venueCategory", "latitude",
                "longitude", "timezoneOffset", "utcTimestamp")  # the original headerless TSV

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip"}
_BINARY = {  # magic bytes of things people upload by mistake -> what to do instead
    b"SQLite format 3": "an SQLite database: export the table as CSV",
    b"%PDF": "a PDF document, not a table",
    b"\x89PNG": "a PNG image, not a table",
    b"\xff\xd8\xff": "a JPEG image, not a table",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) workbook: save the sheet as CSV",
    b"\x28\xb5\x2f\xfd": "zstd-compressed: decompress it, or use gzip",
}
_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d?:\d\d")
_TSMC_TIME_RE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d [+-]\d{4} \d{4}$")
_SURPLUS = " surplus"  # spare column: rows with too many fields (names never start with a space)
_NUMBER_RE = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")

# What pandas, pyarrow and the decompressors raise on bad bytes; shown to the user in words.
READ_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, zlib.error,
               lzma.LZMAError, zipfile.BadZipFile, pa.ArrowException, csv.Error)


@dataclass
class Table:
    """A sniffed tabular source: how to reopen it and how it is laid out."""

    label: str
    fmt: str  # "csv" or "parquet"
    data: Path | bytes
    compression: str | None = None
    encoding: str = "utf-8"
    delimiter: str = ","
    decimal: str = "."
    skip_lines: int = 0  # blank or '#' lines above the first line
    columns: list[str] = field(default_factory=list)  # header (or first data row if none)
    first_rows: list[list[str]] = field(default_factory=list)  # a few rows after it
    notes: list[str] = field(default_factory=list)  # found while sniffing, for the report

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A fresh binary stream of the decompressed content, from the start."""
        raw = open(self.data, "rb") if isinstance(self.data, Path) else io.BytesIO(self.data)
        stream: BinaryIO = raw
        try:
            if self.compression == "gzip":
                stream = gzip.GzipFile(fileobj=raw)
            elif self.compression == "bz2":
                stream = bz2.BZ2File(raw)
            elif self.compression == "xz":
                stream = lzma.LZMAFile(raw)
            elif self.compression == "zip":
                archive = zipfile.ZipFile(raw)
                stream = archive.open(_zip_members(archive)[0])
            yield stream
        finally:
            stream.close()
            raw.close()


def _zip_members(archive: zipfile.ZipFile) -> list[str]:
    return [m for m in archive.namelist() if not m.endswith("/") and "__MACOSX" not in m]


def open_table(source: Source, *, name: str | None, report: ValidationReport) -> Table | None:
    """Sniff ``source``; return a :class:`Table`, or None after failing ``report``."""
    label = source_label(source, name)
    try:
        data = _load(source)
        with open(data, "rb") if isinstance(data, Path) else io.BytesIO(data) as raw:
            head = raw.read(16)
    except FileNotFoundError:
        report.fail(f"File not found: {label}. Check the path.")
        return None
    except OSError as exc:
        report.fail(f"{label} could not be opened: {exc.strerror or exc}.")
        return None
    compression = next((c for magic, c in _MAGIC.items() if head.startswith(magic)), None)
    table = Table(label=label, fmt="csv", data=data, compression=compression)
    if head.startswith(b"PAR1"):
        return _open_parquet(table, report)
    try:
        if compression == "zip" and not _check_zip(table, report):
            return None
        with table.open() as stream:
            sample = stream.read(SAMPLE_BYTES + 1)
    except READ_ERRORS as exc:
        report.fail(f"{label} looks {compression}-compressed but could not be decompressed "
                    f"({explain(exc)}): the file is truncated or corrupt.")
        return None
    complete = len(sample) <= SAMPLE_BYTES
    return table if _sniff_text(table, sample[:SAMPLE_BYTES], complete, report) else None


def _load(source: Source) -> Path | bytes:
    """A path stays a path (read lazily, in chunks); a file object or bytes becomes bytes."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(path)
        return path
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if hasattr(source, "seek"):
        source.seek(0)
    content = source.read()
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


def _check_zip(table: Table, report: ValidationReport) -> bool:
    with io.BytesIO(table.data) if isinstance(table.data, bytes) else open(table.data, "rb") as f:
        archive = zipfile.ZipFile(f)
        names, members = archive.namelist(), _zip_members(archive)
    if "[Content_Types].xml" in names:
        report.fail(f"{table.label} is an Excel workbook: save the sheet as CSV (UTF-8) and "
                    "upload that.")
        return False
    if len(members) != 1:
        report.fail(f"{table.label} is a zip archive with {len(members)} files; it must hold "
                    "exactly one CSV. Unzip it and pass the CSV.")
        return False
    return True


def _open_parquet(table: Table, report: ValidationReport) -> Table | None:
    table.fmt = "parquet"
    try:
        table.columns = list(_parquet_file(table).schema_arrow.names)
    except READ_ERRORS as exc:
        report.fail(f"{table.label} starts like Parquet but could not be read ({explain(exc)}).")
        return None
    twice = sorted({c for c in table.columns if table.columns.count(c) > 1})
    if twice:
        report.fail(f"{table.label} has several columns with the same name ({twice}): rename them "
                    "so that each name appears once.")
        return None
    return table


def _parquet_file(table: Table) -> pq.ParquetFile:
    data = table.data
    return pq.ParquetFile(data if isinstance(data, Path) else io.BytesIO(data))


def _sniff_text(table: Table, sample: bytes, complete: bool, report: ValidationReport) -> bool:
    """Encoding, delimiter and first rows from the sample; False (report failed) if not a CSV."""
    label = table.label
    if not sample:
        report.fail(f"{label} is empty (0 bytes).")
        return False
    if sample.startswith(codecs.BOM_UTF8):
        table.encoding = "utf-8-sig"
    elif sample[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        table.encoding = "utf-16"
    else:
        what = _binary_kind(sample)
        if what:
            report.fail(f"{label} is not a text CSV file: it is {what}.")
            return False
    try:
        text = codecs.getincrementaldecoder(table.encoding)().decode(sample, final=complete)
    except UnicodeDecodeError:
        table.encoding = "latin-1"
        table.notes.append("The file is not valid UTF-8; it was read as Latin-1 (check accented "
                           "names).")
        text = sample.decode("latin-1")
    text = text.lstrip("\ufeff")
    stripped = text.lstrip()
    if not stripped:
        report.fail(f"{label} holds no data (only blank lines).")
        return False
    if stripped[0] in "{[":
        report.fail(f"{label} is JSON, not CSV. Convert it to a CSV with the columns "
                    "user_id,timestamp,lat,lon (one row per visit or GPS fix).")
        return False
    if stripped.startswith("Geolife trajectory"):
        report.fail(f"{label} is a single Geolife .plt file: pass the Geolife folder (the one "
                    "holding the NNN/Trajectory/*.plt user folders) instead.")
        return False
    if stripped[0] == "<":
        kind = "GPX" if "<gpx" in stripped[:2000] else "XML/HTML"
        report.fail(f"{label} is {kind}, not CSV. Convert it to a CSV with the columns "
                    "user_id,timestamp,lat,lon.")
        return False
    lines = text.splitlines()
    if not complete:
        lines = lines[:-1]  # the sample may end inside a line
    skip = 0
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].startswith("#")):
        skip += 1
    head = lines[skip: skip + 51]
    if not head:  # only comments, or a first line longer than the whole sample
        report.fail(f"No column names were found in the first {SAMPLE_BYTES // 1024} KB of {label} "
                    "(only blank or '#' lines, or one very long line): the file needs a header "
                    "line such as user_id,timestamp,lat,lon.")
        return False
    table.skip_lines = skip
    table.delimiter = _sniff_delimiter(head)
    rows = list(csv.reader(head, delimiter=table.delimiter))
    if len(rows[0]) < 2:
        report.fail(f"Only one column was found in the first line ({head[0][:60]!r}): the file "
                    "needs the columns user_id,timestamp,lat,lon separated by commas (or ; TAB |).")
        return False
    table.columns = _unique_names(rows[0], table)
    table.first_rows = rows[1:]
    if table.delimiter == ";" and any(re.fullmatch(r"-?\d+,\d+", v.strip())
                                      for row in rows[1:] for v in row):
        table.decimal = ","
        table.notes.append("Numbers use a decimal comma (40,7); they were read as such.")
    return True


def _binary_kind(sample: bytes) -> str | None:
    for magic, what in _BINARY.items():
        if sample.startswith(magic):
            return what
    controls = sum(sample.count(bytes([b])) for b in (*range(0, 9), *range(14, 27),
                                                        *range(28, 32)))
    if b"\x00" in sample or controls > 0.01 * len(sample):
        return "binary data"
    return None


def _sniff_delimiter(lines: list[str]) -> str:
    """The delimiter that splits the first line into the most fields, consistently below it."""
    best, best_score = ",", (0.0, 1)
    for delimiter in (",", "\t", ";", "|"):
        counts = [len(r) for r in csv.reader(lines, delimiter=delimiter) if r]
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _unique_names(names: list[str], table: Table) -> list[str]:
    out: list[str] = []
    for i, name in enumerate(names):
        name = name.strip().lstrip("\ufeff") or f"_unnamed_{i + 1}"
        if name == "row":  # the reader's own column: the source row number
            table.notes.append(f"The column 'row' was read as 'row_{i + 1}': the report numbers "
                               "rows itself.")
            name = f"row_{i + 1}"
        if name in out:
            table.notes.append(f"Column name {name!r} appears twice; the second is "
                               f"'{name}_{i + 1}'.")
            name = f"{name}_{i + 1}"
        out.append(name)
    return out


def looks_like_header(fields: list[str]) -> bool:
    """False when the first line holds data: two numbers or a date-time in it."""
    numbers = sum(bool(_NUMBER_RE.match(f.strip())) for f in fields)
    return numbers < 2 and not any(_ISO_RE.match(f.strip()) for f in fields)


def explain(exc: BaseException) -> str:
    """An exception from pandas/pyarrow/gzip in words a user can act on."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "EOF inside string" in text:
        return f"a quote (\") is opened and never closed ({text})"
    if "end-of-stream" in text or "Compressed file ended" in text:
        return "the compressed data is cut short"
    return text


def iter_chunks(table: Table, report: ValidationReport, *, has_header: bool, names: list[str],
                dtype: dict[str, str], usecols: list[str] | None = None
                ) -> Iterator[pd.DataFrame]:
    """Yield chunks of the table with a 1-based ``row`` column (data rows, header not counted).

    Rows with more fields than the header are dropped in ``report`` with their row numbers
    (pandas skips most of them; with ``index_col=False`` it silently cuts the surplus off when the
    first data row has it, so one spare column catches those); blank lines are counted as dropped
    too, so row numbers stay exact.
    """
    if table.fmt == "parquet":
        offset = 0
        for batch in _parquet_file(table).iter_batches(batch_size=CHUNK_ROWS, columns=usecols):
            chunk = batch.to_pandas()
            chunk.insert(0, "row", np.arange(offset + 1, offset + len(chunk) + 1))
            offset += len(chunk)
            report.n_rows += len(chunk)
            yield chunk
        return
    skip = table.skip_lines + int(has_header)
    message = ("The row has more fields than the header (e.g. row {row}: {why}); often a delimiter "
               "inside an unquoted value. Quote such values or remove the extra delimiters.")
    with table.open() as stream:
        try:
            reader = pd.read_csv(
                stream, sep=table.delimiter, header=None, names=[*names, _SURPLUS], skiprows=skip,
                dtype={**dtype, _SURPLUS: "str"},
                encoding=table.encoding, decimal=table.decimal, skip_blank_lines=False,
                index_col=False, chunksize=CHUNK_ROWS, on_bad_lines="warn", low_memory=False)
        except pd.errors.EmptyDataError:
            return
        skipped: list[int] = []
        parsed = 0
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                chunk = next(reader, None)
            new = [(int(line) - skip, re.sub(r"expected \d+", f"expected {len(names)}", why))
                   for w in caught if issubclass(w.category, pd.errors.ParserWarning)
                   for line, why in re.findall(r"line (\d+): (.*)", str(w.message))]
            if new:
                skipped = sorted(skipped + [r for r, _ in new])
                report.drop("wrong number of fields", [r for r, _ in new],
                            message.format(row=new[0][0], why=new[0][1]))
                report.n_rows += len(new)
            if chunk is None:
                return
            # The k-th parsed row is the (k+1)-th data row not skipped above it.
            k = np.arange(parsed + 1, parsed + len(chunk) + 1)
            gaps = np.asarray(skipped, dtype=np.int64) - np.arange(len(skipped))
            chunk.insert(0, "row", k + np.searchsorted(gaps, k, side="right"))
            parsed += len(chunk)
            report.n_rows += len(chunk)
            surplus = chunk.pop(_SURPLUS).notna()
            if surplus.any():
                row = int(chunk.loc[surplus, "row"].iloc[0])
                report.drop("wrong number of fields", chunk.loc[surplus, "row"], message.format(
                    row=row, why=f"expected {len(names)} fields, saw {len(names) + 1}"))
                chunk = chunk[~surplus]
            blank = chunk[names].isna().all(axis=1)
            if blank.any():
                report.drop("blank line", chunk.loc[blank, "row"], "The line is empty.")
                chunk = chunk[~blank]
            yield chunk if usecols is None else chunk[["row", *usecols]]


def collect(table: Table, report: ValidationReport,
            convert: Callable[[pd.DataFrame], pd.DataFrame], *, state: ReadState,
            has_header: bool, names: list[str], dtype: dict[str, str],
            usecols: list[str] | None = None, known_utc: bool = False,
            max_rows: int | None = None) -> pd.DataFrame:
    """Stream ``table`` through ``convert`` and the row checks, then finish the frame.

    A file that stops being UTF-8 after the sniffed sample is read again as Latin-1; a file
    pandas cannot parse fails the report with the reason in words. With ``max_rows``, a file
    with more data rows fails as soon as the limit is passed (bounded memory for uploads,
    whose compressed size says little about their row count).
    """
    for text in table.notes:
        report.note(text)
    fresh = copy.deepcopy(report)
    while True:
        try:
            parts, n_read = [], 0
            for chunk in iter_chunks(table, report, has_header=has_header, names=names, dtype=dtype,
                                     usecols=usecols):
                n_read += len(chunk)
                if max_rows is not None and n_read > max_rows:
                    report.fail(f"{table.label} has more than {max_rows:,} rows, the most this tool takes "
                                "at once. Split the file (e.g. by month or by user), or prepare it with the "
                                "command line: `trajmoe prepare --trajectories FILE ...`.")
                    return empty_frame()
                parts.append(check_rows(convert(chunk), report, state))
            return finish(parts, report, state, known_utc=known_utc)
        except UnicodeDecodeError:
            if table.encoding == "latin-1":  # latin-1 decodes any byte: cannot happen twice
                raise
            report.__dict__.update(copy.deepcopy(fresh.__dict__))
            state.__dict__.update(ReadState().__dict__)
            table.encoding = "latin-1"
            report.note("The file is not valid UTF-8; it was read as Latin-1 (check accented "
                        "names).")
        except READ_ERRORS as exc:
            report.fail(f"{table.label} could not be read: {explain(exc)}.")
            return empty_frame()


# --- original dataset layouts -------------------------------------------------------------

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
    if len(cols) == 5 and _ISO_RE.match(cols[1]) and all(_NUMBER_RE.match(v) for v in cols[2:4]):
        return "gowalla_snap"
    if (len(cols) == 8 and all(_NUMBER_RE.match(v) for v in cols[4:7])
            and _TSMC_TIME_RE.match(cols[7])):
        return "foursquare_tsmc"
    return None


def _start(path: Source | Table, name: str | None, timezone: str | None
           ) -> tuple[Table | None, ValidationReport]:
    if isinstance(path, Table):
        return path, ValidationReport(source=path.label)
    report = ValidationReport(source=source_label(path, name))
    if not check_timezone(timezone, report):
        return None, report
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
        return drop_bad_timestamps(chunk, raw, report)

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
        return drop_bad_timestamps(out, chunk[cols["utc"]], report)

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
    label = str(folder)
    report = ValidationReport(source=label)
    if not check_timezone(timezone, report):
        return empty_frame(), report
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
        parts.append(check_rows(drop_bad_timestamps(out, raw, report), report, state))
    report.n_rows = offset
    report.note(f"Read with the Geolife importer: {len(users)} user folders; row numbers count "
                "fixes across the .plt files in user and file-name order.")
    if unreadable:
        report.note(f"{len(unreadable)} .plt files could not be read and were skipped: "
                    f"{unreadable[:10]}.")
    frame = finish(parts, report, state, known_utc=True)
    _utc_note(report, timezone, "Geolife")
    return frame, report
