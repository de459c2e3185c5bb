"""Names a planner recognises for places (H3 cells): "Mannerheimintie near Kamppi", never a cell id.

:func:`place_names` names each cell after the nearest named street of the base map
(:mod:`trajmoe.pois.basemap`), qualified by the neighbourhood it lies in (the nearest OSM place
label) or, failing that, the nearest named POI; a cell with none of these nearby is named after
the nearest GeoNames populated place within 2 km (:mod:`trajmoe.pois.world`: "near Evanston", or
"1.3 km NE of Evanston" where several cells share that place), and only a cell with nothing
within 2 km gets its rounded centre coordinates ("34.0522°N, 118.2437°W"). Names are made unique
(a repeated name gets its nearest POI, then its coordinates), so a table never shows two rows
under one name. Cell ids stay in the downloads only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from trajmoe.geo import cell_centres, project_km

STREET_KM = 0.12  # a street this close names the cell (about an H3 res-9 edge)
POI_KM = 0.15  # the same for a named POI
HOOD_KM = 1.5  # a neighbourhood label this close qualifies the name
GEONAMES_KM = 2.0  # a GeoNames place this close names a cell OSM names nothing near
_COMPASS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")


def coordinates_name(lat: float, lon: float) -> str:
    """Rounded coordinates as words: 4 decimals (~10 m) tell neighbouring cells apart."""
    return f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}"


def _nearest_points(xy: np.ndarray, pts: np.ndarray, names: np.ndarray, km: float) -> np.ndarray:
    """Name of the nearest point within ``km`` of each row of ``xy`` ("" when none)."""
    out = np.full(len(xy), "", dtype=object)
    if len(pts) == 0 or len(xy) == 0:
        return out
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(pts).query(xy, k=1, distance_upper_bound=km)
    hit = np.isfinite(dist)
    out[hit] = names[idx[hit]]
    return out


def _nearest_streets(xy: np.ndarray, streets: pd.DataFrame, centre, km: float) -> np.ndarray:
    out = np.full(len(xy), "", dtype=object)
    named = streets[streets["name"].astype(str).str.len() > 0] if len(streets) else streets
    if len(named) == 0 or len(xy) == 0:
        return out
    import shapely

    lines = [shapely.LineString(project_km(np.asarray(p)[:, 1], np.asarray(p)[:, 0], centre)) for p in named["path"]]
    tree = shapely.STRtree(lines)
    points = shapely.points(xy)
    (pi, li), dist = tree.query_nearest(points, max_distance=km, return_distance=True, all_matches=False)
    out[pi] = named["name"].to_numpy()[li]
    return out


def _geonames(latlon: np.ndarray, xy: np.ndarray, centre) -> tuple[np.ndarray, np.ndarray]:
    """(nearest GeoNames place within :data:`GEONAMES_KM` of each cell or "", its offset as
    "1.3 km NE of " or "" when the place lies within the cell's own 0.5 km)."""
    from trajmoe.pois.world import places_in

    lat, lon = latlon[:, 0], latlon[:, 1]
    pad = GEONAMES_KM / 100  # degrees of latitude (111 km each), generously
    pad_lon = pad / max(float(np.cos(np.radians(np.abs(lat).max()))), 0.05)
    places = places_in(lat.min() - pad, lon.min() - pad_lon, lat.max() + pad, lon.max() + pad_lon)
    name, offset = np.full(len(xy), "", dtype=object), np.full(len(xy), "", dtype=object)
    if len(places) == 0:
        return name, offset
    from scipy.spatial import cKDTree

    pxy = project_km(places["lat"].to_numpy(), places["lon"].to_numpy(), centre)
    dist, idx = cKDTree(pxy).query(xy, k=1, distance_upper_bound=GEONAMES_KM)
    for i in np.flatnonzero(np.isfinite(dist)):
        name[i] = places["name"].iloc[idx[i]]
        dx, dy = xy[i] - pxy[idx[i]]
        if dist[i] >= 0.5:
            offset[i] = f"{dist[i]:.1f} km {_COMPASS[int(np.round(np.arctan2(dy, dx) / (np.pi / 4))) % 8]} of "
    return name, offset


def place_names(cells: Iterable[str], *, pois: pd.DataFrame | None = None, basemap=None,
                geonames: bool = True) -> pd.Series:
    """A unique readable name per cell (index: the cells, in the order given, duplicates dropped).

    Parameters
    ----------
    cells
        H3 cell ids.
    pois
        The POI frame (``lat``, ``lon``, ``name``); unnamed POIs are ignored.
    basemap
        A :class:`trajmoe.pois.basemap.Basemap` for streets and neighbourhoods, or None.
    geonames
        Name cells that OSM names nothing near after the nearest GeoNames place within 2 km.
    """
    cells = pd.Index(pd.unique(np.asarray(list(cells), dtype=object)))
    if len(cells) == 0:
        return pd.Series([], dtype=object)
    latlon = cell_centres(cells)
    centre = (float(latlon[:, 0].mean()), float(latlon[:, 1].mean()))
    xy = project_km(latlon[:, 0], latlon[:, 1], centre)

    def points(frame):
        if frame is None or len(frame) == 0:
            return np.zeros((0, 2)), np.zeros(0, dtype=object)
        frame = frame[frame["name"].astype(str).str.strip().str.len() > 0]
        return project_km(frame["lat"].to_numpy(), frame["lon"].to_numpy(), centre), frame["name"].astype(str).str.strip().to_numpy()

    poi = _nearest_points(xy, *points(pois), POI_KM)
    street = hood = np.full(len(cells), "", dtype=object)
    if basemap is not None:
        street = _nearest_streets(xy, basemap.streets, centre, STREET_KM)
        labels = basemap.labels[~basemap.labels["kind"].isin(["city", "town", "square"])]
        hood = _nearest_points(xy, *points(labels), HOOD_KM)
    coords = np.array([coordinates_name(a, b) for a, b in latlon], dtype=object)

    def compose(primary, qualifier):
        if not primary:
            return f"near {qualifier}" if qualifier else ""
        return f"{primary} near {qualifier}" if qualifier and qualifier != primary else primary

    first = [compose(s, h) if s else compose("", p) for s, h, p in zip(street, hood, poi)]
    town = offset = np.full(len(cells), "", dtype=object)
    if geonames and not all(first):
        town, offset = _geonames(latlon, xy, centre)
        town[np.array([bool(f) for f in first])] = ""  # only where OSM names nothing
        first = [f or (f"near {t}" if t else "") for f, t in zip(first, town)]
    names = pd.Series([f or c for f, c in zip(first, coords)], index=cells, dtype=object)
    # Several cells near one GeoNames place (and nothing else): told apart by distance and direction.
    repeated = names.duplicated(keep=False).to_numpy() & (town != "")
    names[repeated] = [f"{o}{t}" if o else n for o, t, n in zip(offset[repeated], town[repeated], names[repeated])]
    repeated = names.duplicated(keep=False).to_numpy()
    # A repeated street name: tell the cells apart by their nearest POI, then by coordinates.
    second = [compose(s, p) if s and p else n for s, p, n in zip(street, poi, names)]
    names[repeated] = np.array(second, dtype=object)[repeated]
    repeated = names.duplicated(keep=False).to_numpy()
    names[repeated] = [f"{n} ({c})" if n != c else c for n, c in zip(names[repeated], coords[repeated])]
    return names
