"""What the Flows page shows: observed and predicted flows (or arrivals) of the same moves after
the filters and the privacy rule (:mod:`trajmoe.analysis.flows`), districts, the per-place table.

Cached per model, city, filters, k and places (``st.cache_data``): switching back to the page
does not redo the work.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from state.inputs import city_data
from state.predictions import Shown, task_outputs


@st.cache_data(show_spinner=False, max_entries=8)
def zones(key: str, path: str, folder: str):
    """Districts from an uploaded GeoJSON, with each of the city's cells placed in one."""
    from pathlib import Path

    from trajmoe.analysis.zones import read_zones

    data = city_data(folder)
    cells = set(data.visits["cell"].astype(str)) | set(data.cells["cell"].astype(str))
    return read_zones(path, cells=cells, name=Path(path).name)


@st.cache_data(show_spinner=False, max_entries=64)
def _side_by_side(what: str, model_key: str, folder: str, hours: tuple, day: str, top_n: int, k: int,
                  zones_key: str | None, resolution: int | None, _predictions, _zones):
    """Observed and predicted ``flows`` (moves timed at their start) or ``arrivals`` (timed at
    the visit they arrive at), of the same moves: each observed one, and the model's guesses for it."""
    from trajmoe.analysis import flows

    data = city_data(folder)
    if what == "flows":
        observe, guess = flows.observed_transitions, flows.model_transitions

        def summarize(moves):
            return flows.summarize_flows(moves, k=k, zones=_zones, resolution=resolution)
    else:
        observe, guess = flows.observed_arrivals, flows.model_arrivals

        def summarize(moves):
            return flows.summarize_arrivals(moves, k=k, resolution=resolution)
    observed = flows.filter_transitions(observe(data, split="all"), hours=hours, day=day)
    predicted = flows.filter_transitions(guess(data, _predictions, top_n=top_n), hours=hours, day=day)
    return summarize(observed), summarize(predicted)


def flow_summaries(shown: Shown, data, *, hours: tuple, day: str, top_n: int, k: int, zones, zones_key: str | None,
                   resolution: int | None = None):
    """Observed and predicted flows of the same moves after the filters and the privacy rule, over
    cells, their parents at a coarser ``resolution``, or districts (cached per model, city, filters
    and places: switching back to a page does not redo the work)."""
    return _side_by_side("flows", shown.key, str(data.folder), tuple(hours), day, top_n, k, zones_key, resolution,
                         shown.outputs, zones)


def arrival_summaries(shown: Shown, data, *, hours: tuple, day: str, top_n: int, k: int,
                      resolution: int | None = None):
    """Observed arrivals per place in the arrival hours, and the at-time task's for the same moves,
    after the privacy rule; None when the shown model was not trained for the at-time task."""
    at_time = task_outputs(shown, data, "at-time")
    if at_time is None:
        return None
    return _side_by_side("arrivals", shown.key, str(data.folder), tuple(hours), day, top_n, k, None, resolution,
                         at_time, None)


def per_place_table(observed, predicted, names: pd.Series | None) -> pd.DataFrame:
    """Arrivals, departures and net flow per shown place, observed next to predicted, busiest first;
    cells get their readable (unique) name, districts keep theirs. Cell ids are in the downloads only."""
    cols = ["place", "inflow", "outflow", "net"]
    table = observed.places[cols].merge(predicted.places[cols], on="place", how="outer",
                                        suffixes=(" (observed)", " (predicted)")).fillna(0.0)  # absent: no flow shown
    if names is not None:
        table["place"] = table["place"].map(names)
    table = table.rename(columns=lambda c: c.replace("inflow", "arrivals").replace("outflow", "departures"))
    return table.sort_values(["arrivals (observed)", "arrivals (predicted)"], ascending=False)
