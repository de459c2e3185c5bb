"""The report of what happened to every row of one trajectory source, in plain words.

:class:`ValidationReport` counts each row as kept, dropped (with a reason and the first row
numbers) or merged, and holds the fatal messages that make a source unusable; every later step
(the row checks, :mod:`trajmoe.trajectories.kinds`, ``dataset.prepare``) keeps adding to it.
:class:`ReadState` gathers the facts found across chunks that become notes at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trajmoe.errors import InputDataError

MAX_ROWS_LISTED = 20  # row numbers kept per drop reason; the count is always exact


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


@dataclass
class ReadState:
    """Facts gathered across chunks that become notes once the whole file is read."""

    n_swappable: int = 0  # out of range as given, in range with lat and lon swapped
    n_checked: int = 0
    n_utc: int = 0
    n_unix_ms: int = 0
    utc_converted: bool = False
    guessed_formats: set[str] = field(default_factory=set)
