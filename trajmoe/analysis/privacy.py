"""The privacy rule, in one place: nothing is shown or exported that fewer than ``k`` persons make up.

A cell, district or flow is shown (and exported) only when at least ``k`` distinct persons
contribute to it, predicted flows and the scenario's cells included; charts of one number per
person pool persons into bars of at least ``k`` (:func:`pooled_histogram`). "Persons" are the
``user_id`` values of the data: people for check-ins and GPS, trips for trip data, bikes for
bike-share stations (:func:`counted_unit`). Every function that applies the rule also says how many
things it hid, so pages can tell the planner.

**Differencing.** A rule applied to each filter setting alone leaks: hours 0-24 minus hours
0-23 is the hour-23 part of every flow, however few persons made it. The defence is to fix the
smallest pieces any setting is made of: the hour filter moves in :data:`HOUR_BAND` steps, the day
filter picks weekday / weekend / unknown, and flows are shown as sums of whole *slices* (one
origin -> destination pair in one band on one day type), each slice only when >= k persons make it
up. Any difference of two settings is then a sum of such slices. Parent H3 cells also hide a
slice whose moves not shown one level finer come from 1 to k - 1 persons, level by level, so
that no two levels differ by fewer than k persons. Districts (the user's own polygons, which
could be drawn around one person) add up only slices the map of cells or larger cells shows, so
they show nothing that map does not. Person counts shown beside a flow are of
its shown slices.

The app and the library import ``DEFAULT_K``, :func:`check_k` and the filters from here; nothing
else writes the threshold or the comparison.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from trajmoe.errors import InputDataError

DEFAULT_K = 5  # at least this many distinct persons behind anything shown (a common k-anonymity floor)
K_CHOICES = (2, 20)  # the range a planner may pick in the app
# Filters cut the day only at multiples of this many hours, and the rule is applied to each
# (flow, band, day type) slice: two settings never differ by less than a whole slice of >= k
# persons (the differencing defence, trajmoe.analysis.flows.summarize_flows).
HOUR_BAND = 6  # night, morning, afternoon, evening: 3-hour bands hid twice as many moves
_UNITS = {"trips": ("trip", "trips"), "stations": ("bike", "bikes")}  # kind -> (one, many); else people
_PERSON = "__person__"  # the person column of persons_per's frame (a name no key column has)


def check_k(k: int) -> int:
    """``k`` as an int, or a plain error when it cannot be a privacy threshold."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputDataError(f"the privacy threshold k must be a whole number >= 1, got {k!r} (default {DEFAULT_K}).")
    return int(k)


def counted_unit(kind: str) -> str:
    """What the privacy rule counts for a data kind, plural: people, trips or bikes."""
    return _UNITS.get(kind, ("person", "people"))[1]


def counted_unit_one(kind: str) -> str:
    """The same, singular: person, trip or bike."""
    return _UNITS.get(kind, ("person", "people"))[0]


def _column(values: Iterable) -> np.ndarray | list:
    """Values by position: a Series' index is dropped, so keys and persons never align by label."""
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy()
    return values if isinstance(values, np.ndarray) else list(values)


def persons_per(keys: Iterable | pd.DataFrame, persons: Iterable) -> pd.Series:
    """Distinct persons per key, sorted by key.

    Parameters
    ----------
    keys
        One key per row: a cell or district, or a frame of key columns (``origin`` and
        ``destination`` for flows; the result then has one index level per column).
    persons
        The person (``user_id``) of each row, in the same order as ``keys``.
    """
    person = _column(persons)
    if isinstance(keys, pd.DataFrame):
        by = list(keys.columns)
        frame = keys.reset_index(drop=True).assign(**{_PERSON: person})
    else:
        by = "key"
        frame = pd.DataFrame({"key": _column(keys), _PERSON: person})
    # Distinct pairs, then a count: much faster than groupby().nunique() on millions of rows.
    return frame.drop_duplicates().groupby(by).size()


def allowed(counts: pd.Series | np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the counts of distinct persons that may be shown (>= k)."""
    return np.asarray(counts) >= check_k(k)


def shown_keys(keys: Iterable, persons: Iterable, k: int) -> tuple[pd.Index, int]:
    """The keys with at least ``k`` distinct persons, and how many keys were hidden."""
    counts = persons_per(keys, persons)
    ok = allowed(counts.to_numpy(), k)
    return counts.index[ok], int((~ok).sum())


def hidden_note(what: str, *, places: int, flows: int | None, kind: str, k: int) -> str:
    """A plain sentence saying what the rule hid from ``what`` (a map, a table) and its downloads."""
    flow_text = f" and {flows:,} flows" if flows is not None else ""
    place_word = "cell" if places == 1 else "cells"
    return (f"Privacy: {places:,} {place_word}{flow_text} with fewer than {check_k(k)} {counted_unit(kind)} "
            f"are hidden from {what} and its downloads.")


def pooled_histogram(values: Iterable[int], *, k: int = DEFAULT_K) -> pd.DataFrame:
    """Histogram of one number per person (e.g. visits per person) in which every bar holds at
    least ``k`` persons, so no bar singles anyone out (a plain 40-bin histogram shows the one
    heaviest user on their own). Persons are sorted by value and cut into bars of >= k; persons
    with the same value share a bar; a remainder under k joins the last bar. Columns ``low``,
    ``high`` (the bar covers low..high; the last bar is open-ended, so the largest
    value is never shown: high is <NA>), ``label`` ("3-5", "61+"), ``persons``.
    """
    k = check_k(k)
    v = np.sort(np.asarray(list(values), dtype=np.int64))
    n = len(v)
    if n < k:
        return pd.DataFrame(columns=["low", "high", "label", "persons"])
    n_bars = min(40, n // k)
    rows, start = [], 0  # (lowest value, persons) per bar
    for i in range(1, n_bars + 1):
        end = max(start + k, round(n * i / n_bars))  # about equal bars, never under k
        end = int(np.searchsorted(v, v[min(end, n) - 1], side="right"))  # equal values share a bar
        if n - end < k:  # a remainder under k joins this bar
            end = n
        rows.append((int(v[start]), end - start))
        start = end
        if start == n:
            break
    low = [r[0] for r in rows]
    high = [nxt - 1 for nxt in low[1:]] + [None]  # up to the next bar: no bar shows anyone's exact maximum
    label = [f"{a}+" if b is None else (f"{a}" if a == b else f"{a}-{b}") for a, b in zip(low, high)]
    return pd.DataFrame({"low": low, "high": pd.array(high, dtype="Int64"), "label": label,
                         "persons": [r[1] for r in rows]})
