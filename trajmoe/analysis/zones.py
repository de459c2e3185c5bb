"""Districts (a planner's GeoJSON of polygons) to add flows up to instead of H3 cells.

:func:`read_zones` places each cell centre in the district it lies in; pass the :class:`Zones`
to :func:`trajmoe.analysis.flows.summarize_flows`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trajmoe.errors import InputDataError, explain
from trajmoe.geo import cell_centres


@dataclass
class Zones:
    """Districts to add flows up to: which district each cell centre lies in, and where they are."""

    of_cell: pd.Series  # cell -> district name (cells outside every district are absent)
    position: pd.DataFrame  # index district name -> lat, lon (a point inside it)
    geojson: dict  # the district polygons, for drawing


def read_zones(source, *, cells: Iterable[str], name: str = "districts.geojson", levels_up: int = 2) -> Zones:
    """Read a GeoJSON of districts (path or bytes) and place each cell centre in one of them,
    and the centres of their H3 parents up to ``levels_up`` resolutions coarser (districts add up
    the flows of a coarser map: :func:`trajmoe.analysis.flows.summarize_flows`)."""
    import io

    import geopandas as gpd
    import h3

    try:
        frame = gpd.read_file(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputDataError(f"Cannot read {name} as GeoJSON ({explain(exc)}): upload a .geojson file of district "
                             "polygons.") from exc
    frame = frame[frame.geometry.notna() & frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise InputDataError(f"{name} has no polygons: upload a GeoJSON whose features are district polygons.")
    frame = frame.to_crs(4326) if frame.crs is not None else frame.set_crs(4326)
    label = next((c for c in ("name", "NAME", "Name", "district", "zone", "id") if c in frame.columns), None)
    names = frame[label].astype(str) if label else pd.Series([f"district {i + 1}" for i in range(len(frame))])
    frame = frame.assign(zone=names.to_numpy()).dissolve(by="zone").reset_index()
    cells = pd.unique(np.asarray(list(cells), dtype=object))
    parents = [h3.cell_to_parent(c, h3.get_resolution(c) - up) for c in cells for up in range(1, levels_up + 1)
               if h3.get_resolution(c) - up >= 0]
    cells = pd.Index(pd.unique(np.asarray([*cells, *parents], dtype=object)))
    latlng = cell_centres(cells)
    points = gpd.GeoDataFrame({"cell": cells}, geometry=gpd.points_from_xy(latlng[:, 1], latlng[:, 0]), crs=4326)
    hit = gpd.sjoin(points, frame[["zone", "geometry"]], predicate="within", how="inner").drop_duplicates("cell")
    inside = frame.representative_point()
    position = pd.DataFrame({"lat": inside.y.to_numpy(), "lon": inside.x.to_numpy()}, index=frame["zone"])
    return Zones(of_cell=hit.set_index("cell")["zone"], position=position,
                 geojson=json.loads(frame[["zone", "geometry"]].to_json()))
