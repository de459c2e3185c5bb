"""Turn a file on disk (or uploaded bytes) into a sniffed :class:`Table`: bytes, not mobility yet.

:func:`open_table` sniffs a source once (compression by magic bytes, Parquet, encoding, BOM,
delimiter, header) and refuses binary garbage, JSON, XML and spreadsheets with a message that
says what to do; :mod:`trajmoe.trajectories.chunks` then streams the table in chunks.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trajmoe import errors
from trajmoe.trajectories.report import ValidationReport

Source = str | os.PathLike | bytes | BinaryIO

SAMPLE_BYTES = 64 * 1024  # decompressed bytes sniffed for encoding, delimiter and header

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip"}
_BINARY = {  # magic bytes of things people upload by mistake -> what to do instead
    b"SQLite format 3": "an SQLite database: export the table as CSV",
    b"%PDF": "a PDF document, not a table",
    b"\x89PNG": "a PNG image, not a table",
    b"\xff\xd8\xff": "a JPEG image, not a table",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) workbook: save the sheet as CSV",
    b"\x28\xb5\x2f\xfd": "zstd-compressed: decompress it, or use gzip",
}
# A field starting with a date-time, and a field that is a number: data, not a column name
# (looks_like_header here, layouts.sniff_format to recognise headerless dataset files).
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d?:\d\d")
NUMBER_RE = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")

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


def source_label(source: Source, name: str | None) -> str:
    """The file name used in messages (never the folders it is in: on a server they name sessions)."""
    if name:
        return Path(str(name)).name
    if isinstance(source, str | os.PathLike):
        return Path(source).name or str(source)
    return Path(str(getattr(source, "name", None) or "uploaded data")).name


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
        report.fail(f"{label} could not be opened: {exc.strerror or explain(exc)}.")
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
        table.columns = list(parquet_file(table).schema_arrow.names)
    except READ_ERRORS as exc:
        report.fail(f"{table.label} starts like Parquet but could not be read ({explain(exc)}).")
        return None
    twice = sorted({c for c in table.columns if table.columns.count(c) > 1})
    if twice:
        report.fail(f"{table.label} has several columns with the same name ({twice}): rename them "
                    "so that each name appears once.")
        return None
    return table


def parquet_file(table: Table) -> pq.ParquetFile:
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
    numbers = sum(bool(NUMBER_RE.match(f.strip())) for f in fields)
    return numbers < 2 and not any(ISO_RE.match(f.strip()) for f in fields)


def explain(exc: BaseException) -> str:
    """An exception from pandas/pyarrow/gzip in words a user can act on (no paths in it)."""
    text = errors.explain(exc)
    if "EOF inside string" in text:
        return f"a quote (\") is opened and never closed ({text})"
    if "end-of-stream" in text or "Compressed file ended" in text:
        return "the compressed data is cut short"
    return text
