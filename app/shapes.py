"""Everything the maps draw, as filled polygons in degrees: hexagons, streets, districts, circles, flow arrows.

Why polygons: without a GPU (office thin clients, remote desktops, this project's test machines)
the browser draws WebGL in software, and there each kind of layer costs a shader pipeline built
anew for every map: ~0.15 s for filled polygons, ~0.45 s for deck.gl's path layer, ~0.3 s for arcs,
~0.2 s for circles, measured per map in a throwaway trace of headless Chromium (bench/app_speed.py
measures the page switch they add up to). A map made of one kind of layer is built once. So the shapes are computed here, on the server, in metres around the map's centre, and the
widths the planner sees in pixels at the map's starting zoom (:func:`metres_per_pixel`) become
metres: zooming in, a street or a flow grows with the map, as on a printed map.

Rings are lists of ``[lon, lat]`` (deck.gl's ``SolidPolygonLayer`` and matplotlib both take
them); a polygon with holes is a list of rings, the outer one first.
"""

from __future__ import annotations

import math

import h3
import numpy as np

from trajmoe.geo import KM_PER_DEGREE, project_km, unproject_km

M_PER_DEG = 1000.0 * KM_PER_DEGREE  # metres per degree of latitude (and of longitude at the equator)
_EARTH_M = 40_075_016.686  # Web Mercator's equator (2 pi x WGS84's 6,378,137 m): deck.gl's zoom scale, not geo's sphere
_DIGITS = 6  # ~0.1 m: rounding keeps the maps' JSON small


def metres_per_pixel(latitude: float, zoom: float) -> float:
    """Ground metres per screen pixel of deck.gl's Web Mercator view (512-px tiles) at ``zoom``."""
    return _EARTH_M * math.cos(math.radians(latitude)) / (512 * 2**zoom)


class Local:
    """The library's local plane (:func:`trajmoe.geo.project_km`) around (lat0, lon0), in metres."""

    def __init__(self, lat0: float, lon0: float):
        self.centre = (float(lat0), float(lon0))

    def to_xy(self, lonlat: np.ndarray) -> np.ndarray:
        lonlat = np.asarray(lonlat, dtype=float)
        return 1000.0 * project_km(lonlat[..., 1], lonlat[..., 0], self.centre)

    def to_lonlat(self, xy: np.ndarray) -> np.ndarray:
        lat, lon = unproject_km(np.asarray(xy, dtype=float) / 1000.0, self.centre)
        return np.stack([lon, lat], axis=-1)


def _rings(lonlat: np.ndarray) -> list:
    return np.round(lonlat, _DIGITS).tolist()


def _polygons(shape, local: Local) -> list:
    """The polygons of a shapely geometry in ``local`` metres, each as rings in degrees (outer first)."""
    return [[_rings(local.to_lonlat(np.asarray(part.exterior.coords)))]
            + [_rings(local.to_lonlat(np.asarray(h.coords))) for h in part.interiors]
            for part in getattr(shape, "geoms", [shape]) if part.geom_type == "Polygon" and not part.is_empty]


def hexagons(cells, *, coverage: float = 1.0) -> list:
    """One ring per H3 cell, scaled about its centre by ``coverage`` (0.92: thin gaps between cells)."""
    out = []
    for cell in cells:
        ring = np.asarray(h3.cell_to_boundary(str(cell)), dtype=float)[:, ::-1]  # (lat, lon) -> (lon, lat)
        centre = ring.mean(axis=0)
        out.append(_rings(centre + (ring - centre) * coverage))
    return out


def hexagon_rims(cells, *, inner: float = 0.8) -> list:
    """An outline per cell: the hexagon with a hole of ``inner`` times its size."""
    return [[outer, hole[::-1]] for outer, hole in zip(hexagons(cells), hexagons(cells, coverage=inner))]


def circles(lat, lon, radius_m, *, sides: int = 20) -> list:
    """A ring per centre, ``radius_m`` metres (one value or one per centre)."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if len(lat) == 0:
        return []
    r = np.broadcast_to(np.asarray(radius_m, dtype=float), lat.shape)
    t = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    kx = M_PER_DEG * np.maximum(np.cos(np.radians(lat)), 1e-6)
    ring_lon = lon[:, None] + r[:, None] * np.cos(t)[None] / kx[:, None]
    ring_lat = lat[:, None] + r[:, None] * np.sin(t)[None] / M_PER_DEG
    return _rings(np.stack([ring_lon, ring_lat], axis=-1))


def buffered_lines(paths, half_width_m, local: Local) -> tuple[list, list[int]]:
    """Each path (``[[lon, lat], ...]``) as a polygon ``half_width_m`` metres to each side (flat ends,
    mitred joints), and the index of the path each polygon comes from (a path that buffers into
    several parts gives several)."""
    import shapely

    if len(paths) == 0:
        return [], []
    arrays = [np.asarray(p, dtype=float)[:, :2] for p in paths]
    keep = [i for i, a in enumerate(arrays) if len(a) >= 2]
    if not keep:
        return [], []
    lines = shapely.linestrings(local.to_xy(np.concatenate([arrays[i] for i in keep])),
                                indices=np.repeat(np.arange(len(keep)), [len(arrays[i]) for i in keep]))
    half_width_m = np.broadcast_to(np.asarray(half_width_m, dtype=float), (len(arrays),))[keep]
    shapes = shapely.buffer(lines, half_width_m, quad_segs=1, cap_style="flat", join_style="mitre")
    shapes = shapely.simplify(shapes, 0.25)
    out, source = [], []
    for i, shape in zip(keep, shapes):
        polygons = _polygons(shape, local)
        out += polygons
        source += [i] * len(polygons)
    return out, source


def polygon_parts(geometry: dict) -> list:
    """The polygons of a GeoJSON Polygon / MultiPolygon geometry, each a list of rings."""
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    if kind == "Polygon":
        return [coords]
    if kind == "MultiPolygon":
        return list(coords)
    return []


def outlines(parts: list, width_m: float, local: Local) -> tuple[list, list[int]]:
    """A band ``width_m`` wide along every ring of ``parts`` (a list of polygons): district borders;
    and the index of the part each band belongs to."""
    rings = [(i, ring) for i, part in enumerate(parts) for ring in part if len(ring) > 2]
    bands, source = buffered_lines([ring for _, ring in rings], width_m / 2, local)
    return bands, [rings[j][0] for j in source]


def flow_arrows(o_lonlat: np.ndarray, d_lonlat: np.ndarray, width_m: np.ndarray, local: Local, *,
                start_gap_m=0.0, end_gap_m=0.0, bend: float = 0.25, steps: int = 20) -> list:
    """One curved, tapered arrow per flow, from origin to destination, as a ring.

    The curve bends to the right of its direction by ``bend`` times its length (A -> B and B -> A
    lie side by side); the band narrows from the full ``width_m`` at the head to a third of it at
    the origin (tapered lines read as direction best: Holten & van Wijk 2009), and ends in an arrow
    head. ``start_gap_m`` / ``end_gap_m``: how far from the places' centres it starts and stops (the
    circles drawn there)."""
    o, d = local.to_xy(o_lonlat), local.to_xy(d_lonlat)
    n = len(o)
    width = np.broadcast_to(np.asarray(width_m, dtype=float), (n,))
    start_gap = np.broadcast_to(np.asarray(start_gap_m, dtype=float), (n,))
    end_gap = np.broadcast_to(np.asarray(end_gap_m, dtype=float), (n,))
    out = []
    t = np.linspace(0.0, 1.0, 64)
    for i in range(n):
        chord = d[i] - o[i]
        length = float(np.hypot(*chord))
        if length <= 0:
            out.append([])
            continue
        right = np.array([chord[1], -chord[0]]) / length
        ctrl = (o[i] + d[i]) / 2 + right * bend * length
        curve = ((1 - t) ** 2)[:, None] * o[i] + (2 * (1 - t) * t)[:, None] * ctrl + (t**2)[:, None] * d[i]
        along = np.r_[0.0, np.cumsum(np.hypot(*np.diff(curve, axis=0).T))]
        total = along[-1]
        w = width[i]
        head = min(max(2.2 * w, 0.12 * total), 0.45 * total)
        a = min(start_gap[i], 0.3 * total)
        z = max(total - min(end_gap[i], 0.3 * total), a + head * 1.05)
        s = np.linspace(a, z - head, steps)
        pts = np.stack([np.interp(s, along, curve[:, 0]), np.interp(s, along, curve[:, 1])], axis=1)
        tip = np.array([np.interp(z, along, curve[:, 0]), np.interp(z, along, curve[:, 1])])
        tangent = np.gradient(pts, axis=0)
        tangent /= np.maximum(np.hypot(*tangent.T), 1e-9)[:, None]
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)  # to the left of the direction
        half = (w / 2) * np.linspace(1 / 3, 1.0, steps)[:, None]
        left, right_side = pts + normal * half, pts - normal * half
        barb = max(1.1 * w, w / 2 + 0.3 * head)
        ring = np.vstack([left, pts[-1:] + normal[-1:] * barb, tip[None], pts[-1:] - normal[-1:] * barb, right_side[::-1]])
        out.append(_rings(local.to_lonlat(ring)))
    return out


def _glyphs(text: str):
    """``text`` as shapely geometry in em units (DejaVu Sans Bold, shipped with matplotlib), centred on (0, 0)."""
    import shapely
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), text, size=1.0, prop=FontProperties(family="DejaVu Sans", weight="bold"))
    shape = None
    for ring in path.to_polygons(closed_only=True):
        if len(ring) >= 4:
            part = shapely.Polygon(ring).buffer(0)
            shape = part if shape is None else shape.symmetric_difference(part)  # even-odd: holes of "o", "a"
    if shape is None or shape.is_empty:
        return None
    x0, y0, x1, y1 = shape.bounds
    return shapely.affinity.translate(shape.simplify(0.01), -(x0 + x1) / 2, -(y0 + y1) / 2)


def labels(texts, lat, lon, size_m: float, halo_m: float, local: Local) -> tuple[list, list, list[int], list[int]]:
    """Place names as filled letters ``size_m`` tall (the font's em) centred on their points, and a
    halo ``halo_m`` around them: (letters, halos, and the index of the text each letter and each
    halo polygon belongs to).

    Drawn as polygons like the rest of the map, they grow when the planner zooms in, as the names
    painted on a printed map do."""
    import shapely

    letters, halos, source, halo_source = [], [], [], []
    for i, (text, la, lo) in enumerate(zip(texts, lat, lon)):
        shape = _glyphs(str(text))
        if shape is None:
            continue
        x, y = local.to_xy(np.array([lo, la], dtype=float))
        shape = shapely.affinity.translate(shapely.affinity.scale(shape, size_m, size_m, origin=(0, 0)), x, y)
        drawn = _polygons(shape, local)
        letters += drawn
        source += [i] * len(drawn)
        halo = _polygons(shape.buffer(halo_m, quad_segs=2).simplify(halo_m / 4), local)
        halos += halo
        halo_source += [i] * len(halo)
    return letters, halos, source, halo_source
