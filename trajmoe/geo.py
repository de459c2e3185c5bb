"""Coordinates and H3 cells: the few geometric helpers every stage shares.

In: WGS84 degrees or H3 cell ids. Out: cell ids, cell centres, local km coordinates, distances.
"""

from __future__ import annotations

from collections.abc import Iterable

import h3
import numpy as np
import pandas as pd

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius: the one Earth constant of the repository
KM_PER_DEGREE = float(np.radians(EARTH_RADIUS_KM))  # 111.195 km: a degree of latitude (of longitude at the equator)


def latlon_to_cells(lat: np.ndarray, lon: np.ndarray, resolution: int) -> np.ndarray:
    """Map coordinates to H3 cell ids (str). Unique coordinate pairs are resolved once."""
    lat = np.asarray(lat, dtype=np.float64)
    if len(lat) == 0:
        return np.array([], dtype=object)
    # One hash pass over exact (lat, lon) pairs packed as complex numbers: much faster than
    # np.unique(axis=0), and check-ins / POIs repeat the same venue coordinates a lot.
    codes, uniq = pd.factorize(lat + 1j * np.asarray(lon, dtype=np.float64))
    cells = np.array([h3.latlng_to_cell(z.real, z.imag, resolution) for z in uniq], dtype=object)
    return cells[codes]


def cell_centres(cells: Iterable[str]) -> np.ndarray:
    """(n, 2) latitude, longitude of each H3 cell's centre (an empty (0, 2) array for no cells)."""
    return np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)


def project_km(lat: np.ndarray, lon: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Local equirectangular projection (km east, km north of ``centre``); exact enough in a city.

    The repository's one local projection (the app's map shapes use it in metres): ``lat`` and
    ``lon`` of any one shape give ``(*shape, 2)``; :func:`unproject_km` is its inverse."""
    lat0 = np.radians(centre[0])
    dlon = (np.asarray(lon, dtype=np.float64) - centre[1] + 180.0) % 360.0 - 180.0  # across the antimeridian
    x = np.radians(dlon) * np.cos(lat0) * EARTH_RADIUS_KM
    y = (np.radians(np.asarray(lat, dtype=np.float64)) - lat0) * EARTH_RADIUS_KM
    return np.stack([x, y], axis=-1)


def unproject_km(xy: np.ndarray, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude of local km coordinates ``xy`` (``(..., 2)``, east and north of ``centre``)."""
    xy = np.asarray(xy, dtype=np.float64)
    lat = centre[0] + xy[..., 1] / KM_PER_DEGREE
    lon = centre[1] + xy[..., 0] / (KM_PER_DEGREE * np.cos(np.radians(centre[0])))
    return lat, lon


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in km between paired points (element-wise)."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(np.asarray(lat2, dtype=np.float64))
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    hav = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))
