"""A map as a PNG file, drawn on the server with matplotlib from the very deck the page shows.

:func:`deck_png` reads the deck's JSON (the layers and camera the browser gets) and draws each
layer kind the app uses: the filled polygons every map is made of (base map, cells, districts,
flow arrows, place circles: app/shapes.py), place names as letters, and POI dots. Nothing is fetched.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from trajmoe.geo import KM_PER_DEGREE

_DPI = 110
_WIDTH_PX = 560  # the camera was fitted for about this many pixels of width (maps.flows.flow_map etc.)


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


def _path(polygon):
    """A matplotlib path of a deck polygon: one ring, or an outer ring and its holes (even-odd fill)."""
    from matplotlib.path import Path

    rings = polygon if polygon and isinstance(polygon[0][0], (list, tuple)) else [polygon]
    rings = [np.asarray(r, dtype=float)[:, :2] for r in rings if len(r) > 2]
    if not rings:
        return Path(np.zeros((1, 2)))
    # Holes wound against the outer ring, so the default non-zero fill leaves them empty.
    area = lambda r: float(np.sum(r[:-1, 0] * r[1:, 1] - r[1:, 0] * r[:-1, 1]))  # noqa: E731
    outer = area(rings[0]) >= 0
    rings = [rings[0]] + [r if (area(r) >= 0) != outer else r[::-1] for r in rings[1:]]
    return Path.make_compound_path(*[Path(np.vstack([r, r[:1]]), closed=True) for r in rings])


def _draw(ax, layer: dict, px_per_deg: float) -> None:
    from matplotlib.collections import PathCollection

    kind, rows = layer["@@type"], layer.get("data")
    opacity = float(layer.get("opacity", 1.0))
    if not isinstance(rows, list) or not rows:
        return
    if kind == "SolidPolygonLayer":
        ax.add_collection(PathCollection([_path(r["polygon"]) for r in rows], linewidths=0, alpha=opacity,
                                         facecolors=[_rgba(layer.get("getFillColor"), r) for r in rows]))
    elif kind == "ScatterplotLayer":
        pos = np.array([(r["lon"], r["lat"]) for r in rows])
        pixels = layer.get("radiusUnits") == "pixels"
        radius = np.array([_number(layer.get("getRadius"), r, 5) for r in rows])
        if not pixels:  # metres -> pixels at this zoom, at least the layer's minimum
            radius = np.maximum(radius / (1000 * KM_PER_DEGREE) * px_per_deg, float(layer.get("radiusMinPixels", 2)))
        ax.scatter(pos[:, 0], pos[:, 1], s=(radius * 0.75) ** 2 * math.pi, linewidths=0.6 if layer.get("stroked") else 0,
                   c=[_rgba(layer.get("getFillColor"), r) for r in rows], edgecolors=(0.2, 0.2, 0.25, 0.9), zorder=3)


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
