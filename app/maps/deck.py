"""A map: the camera, the deck over the base map, its hover box, and drawing it on the page.

Every map is ``pdk.Deck(map_provider=None)`` with no ``map_style``: no tile server, no request
leaves the machine. Under the data, a vector base map drawn from the OSM data the app has for the
area (:mod:`maps.basemap`; deck layer ids start with ``basemap``) and a light grey layer of the
city's cells (:func:`maps.layers.context_layer`) give the planner their bearings. Online, a page
may switch on map tiles (:func:`tiles_toggle`), said to be an external request.
"""

from __future__ import annotations

import json
import math
from types import MappingProxyType

import numpy as np
import pydeck as pdk
import streamlit as st
from pydeck.bindings.json_tools import default_serialize

from maps.basemap import basemap_layers
from trajmoe.geo import cell_centres

MAP_HEIGHT = 520
FIT_SHARE = 0.96  # the camera fits this share of the points: one stray POI does not set the zoom


def bounds(lat: np.ndarray, lon: np.ndarray, *, share: float = FIT_SHARE) -> tuple[float, float, float, float]:
    """(south, west, north, east) of the central ``share`` of the points in each direction (all of
    them when there are fewer than 50: a few points are all meant to be seen)."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    q = (1 - share) / 2 if len(lat) >= 50 else 0.0
    return (float(np.quantile(lat, q)), float(np.quantile(lon, q)), float(np.quantile(lat, 1 - q)),
            float(np.quantile(lon, 1 - q)))


def view_of(lat: np.ndarray, lon: np.ndarray, *, width_px: int = 620, height_px: int = MAP_HEIGHT,
            share: float = FIT_SHARE) -> pdk.ViewState:
    """A top-down camera that shows (nearly) all the given points with a margin (see :func:`bounds`)."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if len(lat) == 0:
        return pdk.ViewState(latitude=0, longitude=0, zoom=1)
    lo_lat, lo_lon, hi_lat, hi_lon = bounds(lat, lon, share=share)
    mid = (lo_lat + hi_lat) / 2
    # deck.gl's Web Mercator: 512 * 2**zoom pixels per 360 degrees of longitude (512-px tiles);
    # latitude is stretched by 1/cos(lat).
    span_lon = max(hi_lon - lo_lon, 2e-3) * 1.3
    span_lat = max(hi_lat - lo_lat, 1e-3) * 1.3 / max(math.cos(math.radians(mid)), 0.1)
    zoom = min(math.log2(360 * width_px / (512 * span_lon)), math.log2(360 * height_px / (512 * span_lat)))
    return pdk.ViewState(latitude=float(mid), longitude=float((lo_lon + hi_lon) / 2),
                         zoom=float(np.clip(zoom, 1, 17)), pitch=0, bearing=0)


def view_of_cells(cells, *, width_px: int = 620) -> pdk.ViewState:
    lat_lon = cell_centres(cells)
    return view_of(lat_lon[:, 0], lat_lon[:, 1], width_px=width_px)


# Hover text: the markup lives in this trusted template; each pickable layer's rows carry plain-text
# ``tip_title`` and ``tip_body`` (lines separated by "\n"), which Streamlit HTML-escapes into it.
# A field missing from a hovered row would show literally ("{tip_body}"), so every pickable layer
# must have both (see :func:`maps.layers.with_tip`). deck.gl draws the tooltip's top-left corner at the pointer
# and never flips it, and the chart's boxes clip it: near a map's right edge it was cut off. So the box
# is narrow and wraps, and :data:`_UNCLIP_TOOLTIP` lets it run past the map's edge instead of being cut.
TOOLTIP_HTML = "<b>{tip_title}</b><br/>{tip_body}"
TOOLTIP_STYLE = MappingProxyType({
    "fontSize": "13px", "lineHeight": "1.35", "maxWidth": "min(260px, 45vw)", "whiteSpace": "pre-line",
    "overflowWrap": "anywhere", "padding": "6px 8px", "borderRadius": "4px", "zIndex": "20"})
# The hovered chart is lifted above its neighbours so that a map to its right does not cover the box.
# Style-only st.html goes to Streamlit's event container: it takes no room on the page.
_CHART = "[data-testid=stDeckGlJsonChart]"
_UNCLIP_TOOLTIP = (f"<style>{_CHART} div:has(.deck-tooltip) {{ overflow: visible !important; }}"
                   f" {_CHART}:hover, [data-testid=stColumn]:has({_CHART}:hover),"
                   f" [data-testid=stElementContainer]:has({_CHART}:hover) {{ position: relative; z-index: 20; }}</style>")


class CompactDeck(pdk.Deck):
    """A ``pdk.Deck`` whose JSON has no whitespace.

    pydeck writes its JSON with ``indent=2``: every coordinate of every polygon on its own
    indented line, 3.6 times the bytes of the data (1.4 MB for one Flows map of the embedded
    default, 0.39 MB compact). Streamlit's browser side parses that JSON with JSON5, a JavaScript
    parser that reads it character by character on the page's main thread: in a CPU profile of
    page switches it was the largest cost after WebGL itself."""

    def to_json(self) -> str:
        return json.dumps(self, sort_keys=True, default=default_serialize, separators=(",", ":"))


def deck(layers: list, view: pdk.ViewState, *, height: int = MAP_HEIGHT, base=None, tiles: bool = False) -> pdk.Deck:
    """A deck over the base map ``base`` (a :class:`trajmoe.pois.basemap.Basemap`, or None).

    Offline (``tiles=False``, the default): no basemap provider, no map style. ``tiles``: CARTO's
    light raster tiles under everything, fetched from the internet (the page says so)."""
    # Water and parks at the bottom, then the grey cells / districts (the leading layers nobody
    # hovers), then the streets over them, the data, and the place names on top.
    base_layers = {layer.id: layer for layer in basemap_layers(base, view)}
    n_under = next((i for i, layer in enumerate(layers) if getattr(layer, "auto_highlight", False)), len(layers))
    layers = ([base_layers[i] for i in ("basemap-areas",) if i in base_layers] + layers[:n_under]
              + [base_layers[i] for i in ("basemap-streets",) if i in base_layers] + layers[n_under:]
              + [base_layers[i] for i in ("basemap-labels-halo", "basemap-labels") if i in base_layers])
    tooltip = {"html": TOOLTIP_HTML, "style": dict(TOOLTIP_STYLE)}  # a plain dict: Streamlit writes it as JSON
    if tiles:
        return CompactDeck(layers=layers, initial_view_state=view, map_provider="carto",
                           map_style=pdk.map_styles.CARTO_LIGHT, height=height, tooltip=tooltip)
    return CompactDeck(layers=layers, initial_view_state=view, map_provider=None, height=height, tooltip=tooltip)


TILES_HELP = ("Draws CARTO / OpenStreetMap map tiles under the maps. This sends requests to basemaps.cartocdn.com "
              "(an external server sees which area you look at); off, the maps use only the OSM data on this machine.")


def tiles_toggle(key: str, where=st) -> bool:
    """The page's switch for online map tiles (off by default: an external request), in ``where``."""
    return where.toggle("Online map tiles (external request)", value=False, key=key, help=TILES_HELP)


def show(d: pdk.Deck, key: str | None = None, *, height: int = MAP_HEIGHT) -> None:
    """Draw ``d`` on the page here (the tooltip let out of the map's box: :data:`_UNCLIP_TOOLTIP`)."""
    st.html(_UNCLIP_TOOLTIP)
    st.pydeck_chart(d, height=height, key=key)
