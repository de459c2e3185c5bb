"""A map as a PNG file, drawn on the server with matplotlib from the very deck the page shows.

:func:`deck_png` reads the deck's JSON (the layers and camera the browser gets) and draws each
layer kind the app uses: base map polygons, streets and labels, H3 cells, district polygons,
flow arcs (curved, with an arrow head) and place circles. Nothing is fetched.
"""

from __future__ import annotations

import io
import json
import math

import h3
import numpy as np

_DPI = 110
_WIDTH_PX = 560  # the camera was fitted for about this many pixels of width (views.flow_map etc.)


def _rgba(value, row: dict, default=(120, 120, 120, 255)) -> tuple[float, float, float, float]:
    """A deck colour (literal [r, g, b, a] or a ``@@=column`` accessor) as matplotlib RGBA."""
    if isinstance(value, str) and value.startswith("@@="):
        value = row.get(value[3:], default)
    if not isinstance(value, (list, tuple)) or len(value) < 3:
        value = default
    r, g, b, *a = value
    return r / 255, g / 255, b / 255, (a[0] if a else 255) / 255


def _number(value, row: dict, default: float) -> float:
    if isinstance(value, str) and value.startswith("@@="):
        value = row.get(value[3:], default)
    return float(value) if isinstance(value, (int, float)) else default


def _extent(view: dict, aspect: float) -> tuple[float, float, float, float]:
    """(west, east, south, north) the deck's camera shows (Web Mercator, 512-px tiles)."""
    span_lon = 360 * _WIDTH_PX / (512 * 2 ** float(view["zoom"]))
    span_lat = span_lon * aspect * math.cos(math.radians(float(view["latitude"])))
    lon, lat = float(view["longitude"]), float(view["latitude"])
    return lon - span_lon / 2, lon + span_lon / 2, lat - span_lat / 2, lat + span_lat / 2


def _polygons(geometry: dict):
    if geometry.get("type") == "Polygon":
        yield geometry["coordinates"][0]
    elif geometry.get("type") == "MultiPolygon":
        for poly in geometry["coordinates"]:
            yield poly[0]


def _draw(ax, layer: dict, px_per_deg: float) -> None:
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.patches import FancyArrowPatch

    kind, rows = layer["@@type"], layer.get("data")
    opacity = float(layer.get("opacity", 1.0))
    if kind == "GeoJsonLayer":
        shapes = [ring for f in rows.get("features", []) for ring in _polygons(f.get("geometry") or {})]
        ax.add_collection(PolyCollection(shapes, facecolors=[_rgba(layer.get("getFillColor"), {})],
                                         edgecolors=[_rgba(layer.get("getLineColor"), {})], linewidths=0.8))
        return
    if not isinstance(rows, list) or not rows:
        return
    if kind == "PolygonLayer":
        ax.add_collection(PolyCollection([r["polygon"] for r in rows], linewidths=0,
                                         facecolors=[_rgba(layer.get("getFillColor"), r) for r in rows]))
    elif kind == "PathLayer":
        ax.add_collection(LineCollection([r["path"] for r in rows], colors=[_rgba(layer.get("getColor"), r) for r in rows],
                                         linewidths=[0.75 * _number(layer.get("getWidth"), r, 1) for r in rows],
                                         capstyle="round"))
    elif kind == "H3HexagonLayer":
        hexes = [[(lon, lat) for lat, lon in h3.cell_to_boundary(r["hex"])] for r in rows]
        colours = [_rgba(layer.get("getFillColor"), r) for r in rows]
        if layer.get("filled", True) is False:
            ax.add_collection(PolyCollection(hexes, facecolors="none", linewidths=2,
                                             edgecolors=[_rgba(layer.get("getLineColor"), r) for r in rows]))
        else:
            ax.add_collection(PolyCollection(hexes, facecolors=colours, linewidths=0, alpha=opacity))
    elif kind == "ArcLayer":
        for r in rows:
            start = (r["o_lon"], r["o_lat"])
            end = (r["d_lon"], r["d_lat"])
            width = 0.6 * _number(layer.get("getWidth"), r, 1)
            ax.add_patch(FancyArrowPatch(start, end, connectionstyle="arc3,rad=-0.25", arrowstyle="-|>",
                                         mutation_scale=6 + 2 * width, linewidth=width, shrinkA=0, shrinkB=2,
                                         color=_rgba(layer.get("getTargetColor"), r), alpha=0.7, zorder=2.5))
    elif kind == "ScatterplotLayer":
        pos = np.array([(r["lon"], r["lat"]) for r in rows])
        pixels = layer.get("radiusUnits") == "pixels"
        radius = np.array([_number(layer.get("getRadius"), r, 5) for r in rows])
        if not pixels:  # metres -> pixels at this zoom, at least the layer's minimum
            radius = np.maximum(radius / 111_320 * px_per_deg, float(layer.get("radiusMinPixels", 2)))
        ax.scatter(pos[:, 0], pos[:, 1], s=(radius * 0.75) ** 2 * math.pi, linewidths=0.6 if layer.get("stroked") else 0,
                   c=[_rgba(layer.get("getFillColor"), r) for r in rows], edgecolors=(0.2, 0.2, 0.25, 0.9), zorder=3)
    elif kind == "TextLayer":
        for r in rows:
            ax.text(r["x"], r["y"], r["name"], fontsize=7, color=(0.27, 0.27, 0.33), ha="center", va="center", zorder=4)


def _map(ax, deck, title: str, aspect: float) -> None:
    spec = json.loads(deck.to_json())
    west, east, south, north = _extent(spec["initialViewState"], aspect)
    px_per_deg = _WIDTH_PX / (east - west)
    for layer in spec["layers"]:
        _draw(ax, layer, px_per_deg)
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect(1 / math.cos(math.radians((south + north) / 2)))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    ax.text(0.995, 0.005, "Map data © OpenStreetMap contributors", transform=ax.transAxes, fontsize=6, ha="right",
            va="bottom", color=(0.4, 0.4, 0.4))


def deck_png(deck, *, title: str = "", height_px: int = 520) -> bytes:
    """PNG bytes of a pydeck ``Deck`` as the page shows it (its layers in order, its camera)."""
    return decks_png([(deck, title)], height_px=height_px)


def decks_png(decks: list[tuple], *, height_px: int = 520) -> bytes:
    """PNG bytes of several ``(deck, title)`` maps side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aspect = height_px / _WIDTH_PX
    fig, axes = plt.subplots(1, len(decks), figsize=(len(decks) * _WIDTH_PX * 1.6 / _DPI, height_px * 1.6 / _DPI),
                             dpi=_DPI, squeeze=False)
    for ax, (deck, title) in zip(axes[0], decks):
        _map(ax, deck, title, aspect)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
