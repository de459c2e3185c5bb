"""What the pages show of the visits themselves (no model), the privacy rule applied.

Counts of distinct persons per cell and the ">= k persons" test come from
trajmoe.analysis.privacy; every summary here is cached per prepared city (and k).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from state.inputs import city_data, pois, pois_source
from trajmoe.analysis.privacy import allowed, persons_per, pooled_histogram


@st.cache_data(show_spinner=False, max_entries=16)
def cell_counts(folder: str) -> pd.DataFrame:
    """Per visited cell (sorted by cell id): ``visits`` and distinct persons ``people``."""
    v = city_data(folder).visits
    people = persons_per(v["cell"], v["user_id"])
    visits = v["cell"].value_counts().reindex(people.index)
    return pd.DataFrame({"cell": people.index, "visits": visits.to_numpy(), "people": people.to_numpy()})


def _people_of_candidates(folder: str) -> pd.DataFrame:
    """The candidate cells (cells.parquet order) with their visits and persons (0 when unvisited)."""
    counts = cell_counts(folder).set_index("cell")
    cells = city_data(folder).cells[["cell"]]
    return cells.assign(people=cells["cell"].map(counts["people"]).fillna(0),
                        visits=cells["cell"].map(counts["visits"]).fillna(0))


@st.cache_data(show_spinner=False, max_entries=32)
def context_cells(folder: str, k: int) -> list[str]:
    """The grey background cells of the maps: cells with POIs (public places) or visited by at
    least k persons. A candidate cell only a few people went to is not drawn at all, so the
    background never shows where they went."""
    from trajmoe.city.features import POI_COLUMNS

    data = city_data(folder)
    has_poi = data.cells[POI_COLUMNS].sum(axis=1).to_numpy() > 0
    busy = allowed(_people_of_candidates(folder)["people"], k)
    return data.cells.loc[has_poi | busy, "cell"].tolist()


@st.cache_data(show_spinner=False, max_entries=32)
def visited_cells(folder: str, k: int) -> tuple[pd.DataFrame, int]:
    """The visited cells with at least k persons (cell, visits, people) and how many were hidden."""
    counts = cell_counts(folder)
    ok = allowed(counts["people"], k)
    return counts[ok].reset_index(drop=True), int((~ok).sum())


def scenario_places(folder: str, k: int) -> dict[str, str]:
    """The places a scenario may change: candidate cells with at least k persons, busiest first,
    each labelled 'near <POI> (N visits)'."""
    cells = _people_of_candidates(folder)
    cells = cells[allowed(cells["people"], k)].sort_values("visits", ascending=False)
    names = cell_names(folder)
    return {c: f"{names.get(c, c)} ({int(v):,} visits)" for c, v in cells[["cell", "visits"]].itertuples(index=False)}


# --------------------------------------------------------------------------- the Trajectories page
@st.cache_data(show_spinner=False, max_entries=16)
def visits_per_hour(folder: str) -> pd.DataFrame:
    """Visits per local hour of the day (columns hour, visits; all 24 hours)."""
    hour = pd.to_datetime(city_data(folder).visits["timestamp"]).dt.hour
    return hour.value_counts().reindex(range(24), fill_value=0).rename_axis("hour").reset_index(name="visits")


@st.cache_data(show_spinner=False, max_entries=16)
def move_lengths(folder: str) -> np.ndarray:
    """Great-circle km between each person's consecutive visits, the longest 1% left out."""
    from trajmoe.geo import haversine_km

    v = city_data(folder).visits
    same = v["user_id"].to_numpy()[1:] == v["user_id"].to_numpy()[:-1]
    lat, lon = v["lat"].to_numpy(), v["lon"].to_numpy()
    km = haversine_km(lat[:-1], lon[:-1], lat[1:], lon[1:])[same]
    return km[km <= np.quantile(km, 0.99)] if len(km) else km


@st.cache_data(show_spinner=False, max_entries=32)
def visits_per_person(folder: str, k: int) -> pd.DataFrame:
    """Histogram of visits per person in bars of at least k persons, so the heaviest user is never a bar alone."""
    return pooled_histogram(city_data(folder).visits.groupby("user_id").size(), k=k)


@st.cache_data(show_spinner=False, max_entries=16)
def days_covered(folder: str) -> int:
    ts = pd.to_datetime(city_data(folder).visits["timestamp"])
    return (ts.max() - ts.min()).days + 1


# --------------------------------------------------------------------------- cell names
@st.cache_data(show_spinner=False, max_entries=8)
def _cell_names(folder: str, pois_key: str, _pois: pd.DataFrame) -> pd.Series:
    from trajmoe.geo import cell_centres, latlon_to_cells

    data = city_data(folder)
    res = int(data.meta["resolution"])
    cells = pd.Index(np.unique(np.r_[data.visits["cell"].to_numpy(str), data.cells["cell"].to_numpy(str)]))
    names = pd.Series([f"cell {c[-6:]}" for c in cells], index=cells)
    named = _pois[_pois["name"].astype(str).str.len() > 0]
    if len(named):
        cell = latlon_to_cells(named["lat"].to_numpy(), named["lon"].to_numpy(), res)
        frame = pd.DataFrame({"cell": cell, "name": named["name"].astype(str).to_numpy(),
                              "lat": named["lat"].to_numpy(), "lon": named["lon"].to_numpy()})
        frame = frame[frame["cell"].isin(cells)]
        centre = cell_centres(frame["cell"])
        frame["d"] = np.hypot(frame["lat"] - centre[:, 0], frame["lon"] - centre[:, 1])
        best = frame.sort_values("d").drop_duplicates("cell").set_index("cell")["name"]
        names.loc[best.index] = "near " + best
    return names


def cell_names(folder: str) -> pd.Series:
    """A readable name per H3 cell of the city: 'near <the named POI closest to its centre>'."""
    src = pois_source()
    return _cell_names(folder, src.key, pois())
