"""Stream a sniffed table in chunks through a converter and the row checks.

:func:`collect` reads ``CHUNK_ROWS`` rows at a time (CSV chunks or Parquet batches) with exact
1-based row numbers, so memory stays bounded for files of millions of rows and grows with the
kept columns only; rows with too many fields and blank lines are dropped and counted.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from trajmoe.trajectories.columns import empty_frame
from trajmoe.trajectories.files import READ_ERRORS, Table, explain, parquet_file
from trajmoe.trajectories.report import ReadState, ValidationReport
from trajmoe.trajectories.rows import check_rows, finish

CHUNK_ROWS = 500_000  # rows per CSV chunk / Parquet batch: ~100 MB of text columns at most
_SURPLUS = " surplus"  # spare column: rows with too many fields (names never start with a space)


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
        for batch in parquet_file(table).iter_batches(batch_size=CHUNK_ROWS, columns=usecols):
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
