"""What the pages show of the visits themselves (no model), the privacy rule applied.

Counts of distinct persons per cell and the ">= k persons" test come from
trajmoe.analysis.privacy; every summary here is cached per prepared city (and k).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from state.inputs import city_data, pois, pois_source, prepared
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


def scenario_places(folder: str, k: int, names: pd.Series) -> dict[str, str]:
    """The places a scenario may change: candidate cells with at least k persons, busiest first,
    each labelled with its name (:func:`cell_names`) and visits."""
    cells = _people_of_candidates(folder)
    cells = cells[allowed(cells["people"], k)].sort_values("visits", ascending=False)
    return {c: f"{names.get(c, c)} ({int(v):,} visits)" for c, v in cells[["cell", "visits"]].itertuples(index=False)}


# --------------------------------------------------------------------------- the Trajectories page
@st.cache_data(show_spinner=False, max_entries=16)
def visits_per_hour(folder: str) -> pd.DataFrame:
    """Visits per local hour of the day (columns hour, visits; all 24 hours)."""
    hour = city_data(folder).times.dt.hour
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
    ts = city_data(folder).times
    return (ts.max() - ts.min()).days + 1


# --------------------------------------------------------------------------- base map and cell names
OSM_SUFFIXES = (".osm", ".osm.bz2", ".osm.xml", ".osm.pbf", ".pbf")
COARSER = 2  # the Flows page may group cells up to this many H3 resolutions coarser


@st.cache_data(show_spinner=False, max_entries=8)
def _basemap(key: str, path: str):
    from trajmoe.pois.basemap import read_basemap, read_basemap_geojson

    return read_basemap_geojson(path) if path.endswith(".geojson") else read_basemap(path)


@dataclass(frozen=True)
class BasemapFile:
    """Where the base map under every map comes from (:func:`basemap_file`)."""

    key: str  # cache key
    path: str
    where: str  # in words, for the City & POIs page


def basemap_file() -> BasemapFile | None:
    """The base map under every map, in this order of choice: the one fetched online for the
    trajectories' area; the shipped Helsinki base map for the bundled POIs; the uploaded OSM file
    the POIs come from; the one fetched with online POIs; else None (POIs from a table or none,
    nothing fetched: no streets are known offline). A page asks once and hands the answer to
    :func:`basemap` and :func:`cell_names`."""
    from state.inputs import BASEMAP_NEXT_TO_POIS, SAMPLE_BASEMAP, SAMPLE_POIS, area_basemap_path

    area = area_basemap_path()
    if area.is_file():
        return BasemapFile(f"{area.name}:{area.stat().st_mtime_ns}", str(area),
                           "OpenStreetMap (fetched for the trajectories' area)")
    src = pois_source()
    if src.path == str(SAMPLE_POIS):
        return BasemapFile(src.key, str(SAMPLE_BASEMAP), "the bundled Helsinki centre extract (OpenStreetMap)")
    if src.path.lower().endswith(OSM_SUFFIXES):
        return BasemapFile(src.key, src.path, f"the POIs' file {Path(src.path).name}")
    fetched = Path(src.path).parent / BASEMAP_NEXT_TO_POIS if src.path else None
    if fetched is not None and fetched.is_file():
        return BasemapFile(f"{src.key}:basemap", str(fetched), f"OpenStreetMap (fetched with the POIs of {src.label})")
    return None


@st.cache_resource(show_spinner=False, max_entries=8)  # read only: shared, not copied on every page run
def _over_world(key: str, path: str, folder: str):
    from trajmoe.pois.world import visits_box, with_world

    visits = city_data(folder).visits
    return with_world(_basemap(key, path) if path else None, *visits_box(visits["lat"], visits["lon"]))


def basemap(found: BasemapFile | None):
    """The :class:`trajmoe.pois.basemap.Basemap` under every map: the city's own OSM data (``found``,
    :func:`basemap_file`: streets, water, parks, names) on top of the offline world layer of the
    trajectories' box (trajmoe/pois/world.py: shorelines and lakes, GeoNames places), so that every
    city has its geography, an upload without OSM data too; the box comes from the visits, so a file
    with sign-flipped coordinates shows the ocean it falls in. Without a prepared city: ``found``
    alone, or None."""
    folder = prepared().folder
    if folder is None:
        return None if found is None else _basemap(found.key, found.path)
    return _over_world(found.key if found else "", found.path if found else "", folder)


def osm_basemap(found: BasemapFile | None):
    """Only the city's own OSM base map of ``found`` (no world layer), or None."""
    return None if found is None else _basemap(found.key, found.path)


@st.cache_data(show_spinner=False, max_entries=8)
def _cell_names(folder: str, pois_key: str, _pois: pd.DataFrame, _basemap) -> pd.Series:
    from trajmoe.analysis.flows import parent_cells
    from trajmoe.pois.placenames import place_names

    data = city_data(folder)
    res = int(data.meta["resolution"])
    cells = np.unique(np.r_[data.visits["cell"].to_numpy(str), data.cells["cell"].to_numpy(str)])
    # Names are unique within one resolution (one map or table never mixes them).
    levels = [cells] + [np.unique(parent_cells(cells, r)) for r in range(res - 1, max(res - COARSER, 0) - 1, -1)]
    return pd.concat([place_names(level, pois=_pois, basemap=_basemap) for level in levels])


def cell_names(folder: str, found: BasemapFile | None) -> pd.Series:
    """A unique readable name per H3 cell of the city and of its coarser parents: the nearest named
    street near its neighbourhood or POI, else rounded coordinates (trajmoe.pois.placenames), with
    the base map ``found`` (:func:`basemap_file`)."""
    return _cell_names(folder, f"{pois_source().key}|{found.key if found else ''}", pois(), osm_basemap(found))
