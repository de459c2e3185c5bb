"""What the Scenario page shows: the model asked again about the same held-out moves with POIs
added or removed (:mod:`trajmoe.analysis.scenario`), and the places that may be shown.

The pretrained model's scenarios are cached for every session (``st.cache_data``); a fine-tuned
model's stay in its session (``Session.scenarios``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from state.inputs import city_data
from state.models import base_checkpoint, load_model
from state.predictions import Shown, run_subset
from state.session import session


def _scenario(model, data, fraction: float, edits: tuple, hours: tuple | None = None):
    from trajmoe.analysis.scenario import POIEdit, run_scenario

    bar = st.progress(0.0, text="Asking the model again with the changed POIs...")
    result = run_scenario(model, data, [POIEdit(*e) for e in edits], windows=run_subset(data, fraction).windows,
                          arrival_hours=hours, progress=lambda d, t: bar.progress(
        d / max(t, 1), text=f"Predicting next places before and after the change: {d:,} of {t:,}"))
    bar.empty()
    return result


@st.cache_data(show_spinner=False, max_entries=32)
def _base_scenario(path: str, mtime: float, folder: str, fraction: float, edits: tuple, hours: tuple | None = None):
    model, _ = load_model(path, mtime)
    return _scenario(model, city_data(folder), fraction, edits, hours)


def scenario(shown: Shown, data, edits: tuple, *, hours: tuple | None = None):
    """The scenario result of the shown model (cached per model, city, edits and arrival hours;
    ``hours``: only arrivals then, asked in the at-time task)."""
    hours = tuple(hours) if hours is not None else None
    if not shown.finetuned:
        path = base_checkpoint()
        return _base_scenario(str(path), path.stat().st_mtime, str(data.folder), shown.fraction, edits, hours)
    memo = session().scenarios
    if (shown.key, edits, hours) not in memo:
        memo[(shown.key, edits, hours)] = _scenario(shown.model, data, shown.fraction, edits, hours)
    return memo[(shown.key, edits, hours)]


@dataclass
class ScenarioView:
    """A scenario's cells that may be shown (>= k persons) and the numbers the page states."""

    cells: pd.DataFrame  # ScenarioResult.cells of the shown cells
    hidden: int  # cells left out by the privacy rule
    here: float  # change of expected arrivals in the edited (shown) places
    elsewhere: float  # change in the other shown places, together
    share: float  # ``here`` relative to the edited places' arrivals before

    def top(self, names: pd.Series, n: int = 12) -> pd.DataFrame:
        """The ``n`` places that change most, named."""
        top = self.cells.reindex(self.cells["change"].abs().sort_values(ascending=False).index).head(n)
        return pd.DataFrame({"place": top["cell"].map(names), "before": top["inflow_before"],
                             "after": top["inflow_after"], "change": top["change"], "change %": top["change_pct"]})


def scenario_view(result, k: int) -> ScenarioView:
    cells, hidden = result.private(k)
    edited = cells[cells["edited"]]
    here = float(edited["change"].sum())
    return ScenarioView(cells=cells, hidden=hidden, here=here, elsewhere=float(cells["change"].sum()) - here,
                        share=here / max(float(edited["inflow_before"].sum()), 1e-9))
