"""The report of what happened to every row of one trajectory source, in plain words.

:class:`ValidationReport` counts each row as kept, dropped (with a reason and the first row
numbers) or merged, and holds the fatal messages that make a source unusable; every later step
(the row checks, :mod:`trajmoe.trajectories.kinds`, ``dataset.prepare``) keeps adding to it.
:class:`ReadState` gathers the facts found across chunks that become notes at the end.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trajmoe.errors import InputDataError

MAX_ROWS_LISTED = 20  # row numbers kept per drop reason; the count is always exact
# 2: rows read = used + merged + left out and people read = kept + dropped on every path. A
# prepared folder stores its report: caches of prepared folders key on this (app/state/inputs.py).
REPORT_VERSION = 2


def plural(n: int, one: str, many: str | None = None) -> str:
    """``"1 row"``, ``"2 rows"``, ``"1,234 rows"`` (``many`` defaults to ``one + "s"``)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


@dataclass
class ValidationReport:
    """What happened to every row of one trajectory source, for planners and researchers alike.

    ``n_rows`` data rows were read; each is either used (``n_kept``), left out (``dropped``:
    reason -> {count, rows (the first row numbers), message}) or merged into another row
    (``reduced``: reason -> count), so ``n_rows == n_used + n_reduced + n_left_out`` after every
    step (:meth:`counts_add_up`). People (or vehicles) are counted the same way:
    ``n_users_read`` distinct non-empty ``user_id`` values were read, ``n_users_kept`` of them
    still have rows and ``users_dropped`` (reason -> count) says why the others have none, so
    ``n_users_read == n_users_kept + n_users_dropped``. ``n_users`` counts the units the
    visits belong to (the same as ``n_users_kept`` except for taxi GPS, whose units are trips).
    ``fatal`` lists why the file cannot be used at all. ``dataset.prepare`` keeps adding to the
    same report; the app and the CLI print the numbers of :meth:`count_lines`.
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
    n_users_read: int = 0
    n_users_kept: int = 0
    users_dropped: dict[str, int] = field(default_factory=dict)
    people: list[str] = field(default_factory=lambda: ["person", "people"])  # what a user_id is

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict` (unknown keys, such as ``ok``, are ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in names})

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

    def drop_users(self, reason: str, n: int) -> None:
        """Count ``n`` people (vehicles) left without any row, under ``reason``."""
        if n > 0:
            self.users_dropped[reason] = self.users_dropped.get(reason, 0) + int(n)

    def set_kept(self, n_rows: int, n_users: int, n_users_kept: int | None = None) -> None:
        """Record what is left after a step: rows used and units (people, or trips)."""
        self.n_kept = int(n_rows)
        self.n_users = int(n_users)
        self.n_users_kept = int(n_users if n_users_kept is None else n_users_kept)

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

    @property
    def n_used(self) -> int:
        """Rows that became visits (kept)."""
        return self.n_kept

    @property
    def n_reduced(self) -> int:
        """Rows merged into other rows (staypoints, collapsed repeats, trip ends)."""
        return sum(self.reduced.values())

    @property
    def n_left_out(self) -> int:
        """Rows left out for any reason (the same as :attr:`n_dropped`)."""
        return self.n_dropped

    @property
    def n_users_dropped(self) -> int:
        """People (vehicles) left without any row, for any reason."""
        return sum(self.users_dropped.values())

    def counts_add_up(self) -> bool:
        """rows read = used + merged + left out, and people read = kept + dropped."""
        return (self.n_rows == self.n_used + self.n_reduced + self.n_left_out
                and self.n_users_read == self.n_users_kept + self.n_users_dropped)

    def count_lines(self) -> list[str]:
        """The row and people counts in plain words (the same numbers the app shows)."""
        if self.fatal and not self.n_rows:
            return ["No row could be read."]
        lines = [f"{plural(self.n_rows, 'row')} read: {self.n_used:,} used, "
                 f"{self.n_reduced:,} merged into other rows, {self.n_left_out:,} left out."]
        if self.n_users_read:
            lines.append(f"{plural(self.n_users_read, *self.people)} read: "
                         f"{self.n_users_kept:,} kept, {self.n_users_dropped:,} dropped.")
        if self.kind == "trips" and self.n_users != self.n_users_kept:  # taxi: cabs -> trips
            lines.append(f"The kept {self.people[1]} made {plural(self.n_users, 'trip')}.")
        return lines

    def headline(self) -> str:
        """One sentence: whether every row could be used (only said when it is true)."""
        if self.fatal:
            return "The file cannot be used (see why above); no row was used."
        if self.n_rows and self.n_used == self.n_rows:
            return "Every row could be used."
        if not self.n_rows:
            return "The file has no data rows."
        return (f"{plural(self.n_used, 'row')} of {self.n_rows:,} could be used "
                "(see below for the others).")

    def to_text(self) -> str:
        """The report in plain words, one fact per line."""
        status = "cannot be used" if self.fatal else "usable"
        lines = [f"{self.source}: {status}"]
        lines += [f"  {text}" for text in self.count_lines()]
        if self.kind:
            unit = ["trip", "trips"] if self.kind == "trips" else self.people
            lines.append(f"  Kind: {self.kind}; the visits belong to {plural(self.n_users, *unit)}.")
        if self.fatal:
            lines.append("  Why it cannot be used:")
            lines += [f"    - {text}" for text in self.fatal]
        else:
            lines.append(f"  {self.headline()}")
        if self.dropped:
            lines.append(f"  Left out {plural(self.n_dropped, 'row')}:")
            for reason, entry in self.dropped.items():
                shown = ", ".join(str(r) for r in entry["rows"])
                more = ", ..." if entry["count"] > len(entry["rows"]) else ""
                label = "row" if entry["count"] == 1 and not more else "rows"
                where = f" ({label} {shown}{more})" if shown else ""
                lines.append(f"    - {reason}: {entry['count']:,}{where}. {entry['message']}")
        if self.reduced:
            lines.append(f"  Merged {plural(self.n_reduced, 'row')} into others:")
            lines += [f"    - {reason}: {n:,}" for reason, n in self.reduced.items()]
        if self.users_dropped:
            lines.append(f"  Dropped {plural(self.n_users_dropped, 'person', 'people')}:")
            lines += [f"    - {reason}: {n:,}" for reason, n in self.users_dropped.items()]
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
    users: set[str] = field(default_factory=set)  # every non-empty user_id seen
