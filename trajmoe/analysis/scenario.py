"""What-if scenarios: add or remove POIs of a category in chosen cells and ask the model again.

The edit changes the city's POI counts (each edited cell's own counts and the ring-1 counts of
its neighbours, exactly as :func:`trajmoe.city.features.build_cell_table` defines them), the cell
features and the router's spatial prior are recomputed from the edited table
(:func:`trajmoe.city.features.cell_feature_matrix` through :meth:`CityData.city_tensors`, from the same
training visits), and the model is run again on the SAME contexts (every target visit of a
split). The change in predicted inflow of a cell is the change in the expected number of arrivals
there: the sum over target visits of the model's next-cell probability. Everything comes from the
model's forward pass; nothing is extrapolated by hand.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd
import torch

from trajmoe.analysis.predict import Progress, iter_next_scores, target_visits
from trajmoe.analysis.privacy import DEFAULT_K, allowed, persons_per
from trajmoe.city.data import CityData
from trajmoe.city.features import POI_COLUMNS, RING_POI_COLUMNS
from trajmoe.errors import InputDataError, POIError
from trajmoe.pois.categories import CATEGORIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class POIEdit:
    """Add (``change`` > 0) or remove (``change`` < 0) POIs of ``category`` in H3 ``cell``."""

    cell: str
    category: str
    change: int


@dataclass
class ScenarioResult:
    """Per candidate cell: expected arrivals before and after the edit."""

    cells: pd.DataFrame  # cell, lat, lon, inflow_before, inflow_after, change, change_pct, edited, n_users
    n_targets: int  # visits whose next location was predicted
    applied: list[POIEdit]  # the edits as applied (removals capped at the POIs a cell has)
    arrival_hours: tuple[int, int] | None = None  # at-time: only arrivals in these whole hour bands

    def private(self, k: int = DEFAULT_K) -> tuple[pd.DataFrame, int]:
        """The cells that may be shown (visited by >= k distinct persons) and how many are hidden."""
        shown = allowed(self.cells["n_users"], k)
        return self.cells[shown].reset_index(drop=True), int((~shown).sum())


def edit_cells(cells: pd.DataFrame, edits: Sequence[POIEdit]) -> tuple[pd.DataFrame, list[POIEdit]]:
    """A copy of ``cells.parquet`` with the edits applied to the own and ring-1 POI counts.

    Removals are capped at the POIs of that category the cell has. Returns the edited table and
    the edits as applied.
    """
    if len(cells) == 0 or not bool(cells["poi_known"].iloc[0]):
        raise POIError(
            "This city has no POI data, so adding or removing POIs has nothing to change: load POIs "
            "for the city (City & POIs page, or `trajmoe prepare --pois FILE`) and prepare it again."
        )
    out = cells.copy()
    row_of = pd.Series(np.arange(len(cells)), index=cells["cell"].to_numpy())
    own = out[POI_COLUMNS].to_numpy(dtype=np.int64, copy=True)
    ring = out[RING_POI_COLUMNS].to_numpy(dtype=np.int64, copy=True)
    applied = []
    for edit in edits:
        if edit.category not in CATEGORIES:
            raise InputDataError(f"Unknown POI category {edit.category!r}: use one of {', '.join(CATEGORIES)}.")
        if edit.cell not in row_of.index:
            raise InputDataError(
                f"Cell {edit.cell} is not one of the city's candidate cells (cells with visits or POIs): "
                "choose a cell on the map."
            )
        i, c = int(row_of[edit.cell]), CATEGORIES.index(edit.category)
        change = max(int(edit.change), -int(own[i, c]))
        if change == 0:
            continue
        own[i, c] += change
        # Ring counts of a cell sum its own and its 6 neighbours' counts (features.build_cell_table).
        for neighbour in h3.grid_disk(edit.cell, 1):
            if neighbour in row_of.index:
                ring[int(row_of[neighbour]), c] += change
        applied.append(POIEdit(edit.cell, edit.category, change))
    out[POI_COLUMNS] = own
    out[RING_POI_COLUMNS] = ring
    return out, applied


def _with_cells(data: CityData, cells: pd.DataFrame) -> CityData:
    """The same city with another cell table (a shallow copy: visits and arrays are shared)."""
    edited = copy.copy(data)
    edited.cells = cells
    return edited


def expected_inflow(model, data: CityData, targets: np.ndarray, *, windows: list[np.ndarray] | None = None,
                    task: str = "next", progress: Progress | None = None) -> np.ndarray:
    """(N,) expected arrivals per candidate cell: the sum of next-cell probabilities in ``task``
    over targets (cell features from the training visits in ``windows``, all of them when None)."""
    total = torch.zeros(data.n_cells, dtype=torch.float64)
    city = data.city_tensors(windows)
    for _, scores, _ in iter_next_scores(model, data, targets, city=city, task=task, router=False, progress=progress):
        total += scores.softmax(dim=-1).double().sum(dim=0)
    return total.numpy()


def run_scenario(model, data: CityData, edits: Sequence[POIEdit], *, split: str = "test",
                 windows: list[np.ndarray] | None = None, arrival_hours: tuple[int, int] | None = None,
                 progress: Progress | None = None) -> ScenarioResult:
    """Expected arrivals per cell before and after ``edits``, on the same target visits.

    Apply the privacy rule with :meth:`ScenarioResult.private` before showing or exporting.

    Parameters
    ----------
    model
        A TrajMoE (or any model with ``score_last``) in eval mode; it is not modified.
    data
        The prepared city.
    edits
        POIs to add or remove.
    split
        Whose next locations are predicted: ``test`` (held-out visits), ``val`` or ``all``.
    windows
        The training windows whose visits give the cell features (the few-shot share a model was
        fine-tuned on); None = all training visits.
    arrival_hours
        ``(start, end)``: only the target visits that begin in these hours of the local day,
        widened to whole privacy bands (``analysis.flows.snap_hours``), asked of the model in the
        ``at-time`` task (told when each visit happens). The model must have been trained for
        at-time. None: every target visit, task ``next``.
    progress
        Optional ``(done, total)`` callback over both passes.
    """
    if not edits:
        raise InputDataError("No POI change given: add or remove at least one POI in a cell.")
    cells, applied = edit_cells(data.cells, edits)
    targets = target_visits(data, split)
    task = "next"
    if arrival_hours is not None:
        from trajmoe.analysis.flows import snap_hours
        from trajmoe.train.models import require_task

        arrival_hours = snap_hours(arrival_hours)
        task = require_task(model, "at-time")
        hour = data.hour[targets]
        targets = targets[(hour >= arrival_hours[0]) & (hour < arrival_hours[1])]
        if not len(targets):
            raise InputDataError(f"No visit begins between {arrival_hours[0]:02d}:00 and {arrival_hours[1]:02d}:00: "
                                 "choose other hours.")
    n = len(targets)

    def half(offset: int):
        return None if progress is None else (lambda done, _total: progress(offset + done, 2 * n))

    before = expected_inflow(model, data, targets, windows=windows, task=task, progress=half(0))
    after = expected_inflow(model, _with_cells(data, cells), targets, windows=windows, task=task,
                            progress=half(n))
    users = persons_per(data.visits["cell"], data.visits["user_id"])  # the count ScenarioResult.private reads
    n_users = users.reindex(data.cells["cell"], fill_value=0).to_numpy()
    edited = {e.cell for e in applied}
    table = pd.DataFrame({
        "cell": data.cells["cell"].to_numpy(), "lat": data.cells["lat"].to_numpy(), "lon": data.cells["lon"].to_numpy(),
        "inflow_before": before, "inflow_after": after, "change": after - before,
    })
    table["change_pct"] = np.divide(100 * table["change"], before, out=np.zeros(len(table)), where=before > 1e-9)
    table["edited"] = table["cell"].isin(edited)
    table["n_users"] = n_users
    log.info("scenario %s: %d targets, total change %.3f", applied, n, float(table["change"].abs().sum()))
    return ScenarioResult(cells=table, n_targets=n, applied=applied, arrival_hours=arrival_hours)
