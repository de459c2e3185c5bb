"""Maps (pydeck) and charts (plotly) the pages draw. Display only: the numbers come from trajmoe.

Every map is ``pdk.Deck(map_provider=None)`` with no ``map_style``: no tile server, no request
leaves the machine. Under the data, a vector base map drawn from the OSM data the app has for the
area (streets, water, parks, place labels: :mod:`trajmoe.pois.basemap`; deck layer ids start with
``basemap``) and a light grey layer of the city's cells give the planner their bearings. Online,
a page may switch on map tiles (:func:`tiles_toggle`), said to be an external request.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import pydeck as pdk
import shapes
import streamlit as st
from pydeck.bindings.json_tools import default_serialize

from trajmoe.geo import cell_centres
from trajmoe.pois.categories import CATEGORIES, CATEGORY_LABELS

# D3 category20: one colour per POI category (order of CATEGORIES).
_CAT20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
          "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
          "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"]
CATEGORY_COLOURS = dict(zip(CATEGORIES, _CAT20))
# Expert colours (ColorBrewer Dark2 + Set1), readable side by side.
EXPERT_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
                  "#377eb8", "#666666", "#e41a1c", "#4daf4a", "#984ea3"]
MAP_HEIGHT = 520
PLOTLY_CONFIG = {"displaylogo": False}


def rgb(hex_colour: str, alpha: int = 220) -> list[int]:
    h = hex_colour.lstrip("#")
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)] + [alpha]


def expert_colour(e: int) -> str:
    """Colour of expert ``e`` (1-based)."""
    return EXPERT_COLOURS[(e - 1) % len(EXPERT_COLOURS)]


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


# Hover text: the markup lives in this trusted template; each pickable layer's rows carry plain-text
# ``tip_title`` and ``tip_body`` (lines separated by "\n"), which Streamlit HTML-escapes into it.
# A field missing from a hovered row would show literally ("{tip_body}"), so every pickable layer
# must have both (see :func:`with_tip`). deck.gl draws the tooltip's top-left corner at the pointer
# and never flips it, and the chart's boxes clip it: near a map's right edge it was cut off. So the box
# is narrow and wraps, and :data:`_UNCLIP_TOOLTIP` lets it run past the map's edge instead of being cut.
TOOLTIP = {"html": "<b>{tip_title}</b><br/>{tip_body}",
           "style": {"fontSize": "13px", "lineHeight": "1.35", "maxWidth": "min(260px, 45vw)", "whiteSpace": "pre-line",
                     "overflowWrap": "anywhere", "padding": "6px 8px", "borderRadius": "4px", "zIndex": "20"}}
# The hovered chart is lifted above its neighbours so that a map to its right does not cover the box.
# Style-only st.html goes to Streamlit's event container: it takes no room on the page.
_CHART = "[data-testid=stDeckGlJsonChart]"
_UNCLIP_TOOLTIP = (f"<style>{_CHART} div:has(.deck-tooltip) {{ overflow: visible !important; }}"
                   f" {_CHART}:hover, [data-testid=stColumn]:has({_CHART}:hover),"
                   f" [data-testid=stElementContainer]:has({_CHART}:hover) {{ position: relative; z-index: 20; }}</style>")


def with_tip(frame: pd.DataFrame, titles, bodies) -> pd.DataFrame:
    """``frame`` with the plain-text hover fields of :data:`TOOLTIP` (bodies: one string or lines per row)."""
    frame["tip_title"] = [str(t) for t in titles]
    frame["tip_body"] = [b if isinstance(b, str) else "\n".join(map(str, b)) for b in bodies]
    return frame


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
    if tiles:
        return CompactDeck(layers=layers, initial_view_state=view, map_provider="carto",
                           map_style=pdk.map_styles.CARTO_LIGHT, height=height, tooltip=TOOLTIP)
    return CompactDeck(layers=layers, initial_view_state=view, map_provider=None, height=height, tooltip=TOOLTIP)


TILES_HELP = ("Draws CARTO / OpenStreetMap map tiles under the maps. This sends requests to basemaps.cartocdn.com "
              "(an external server sees which area you look at); off, the maps use only the OSM data on this machine.")


def tiles_toggle(key: str, where=st) -> bool:
    """The page's switch for online map tiles (off by default: an external request), in ``where``."""
    return where.toggle("Online map tiles (external request)", value=False, key=key, help=TILES_HELP)


# Base map styling: OSM-like, muted so that the data stays the figure.
_WATER, _PARK = [170, 205, 225, 255], [205, 228, 196, 255]
_STREET = {1: ([140, 140, 152, 255], 3.5), 2: ([160, 160, 170, 255], 2.4), 3: ([185, 185, 195, 255], 1.3)}
_LABEL_KINDS = ("town", "borough", "suburb", "quarter", "neighbourhood", "village")  # squares crowd the centre
_AREA_KINDS = {"water": "Water", "park": "Park or green area"}
_STREET_KINDS = {1: "Main road", 2: "Street", 3: "Minor street"}
_VIEW_SPAN_DEG = 360 * 1400 / 512  # degrees of longitude a 1400-px-wide view spans at zoom 0


def basemap_layers(base, view: pdk.ViewState) -> list[pdk.Layer]:
    """Water and parks, streets (wider for main roads) and place labels of ``base`` near ``view``.

    Ids start with ``basemap`` (tests find them); on hover they say what they are (a street's or
    park's OSM name, else its kind: :func:`polygon_layer` says why). Clipped to about three
    view widths around the camera so that a big extract does not travel to the browser whole.
    Streets are polygons as wide as their pixel width at the view's zoom (:mod:`shapes`)."""
    if base is None:
        return []
    half = _VIEW_SPAN_DEG / 2 ** float(view.zoom) * 1.5
    lat, lon = float(view.latitude), float(view.longitude)
    base = base.clip(lat - half / 2, lon - half, lat + half / 2, lon + half)
    layers = []
    if len(base.areas):
        areas = base.areas.assign(colour=[_WATER if k == "water" else _PARK for k in base.areas["kind"]])
        named = areas["name"].fillna("").astype(str).str.strip().to_numpy()
        kind = np.array([_AREA_KINDS.get(k, _AREA_KINDS["park"]) for k in areas["kind"]])
        with_tip(areas, np.where(named != "", named, kind), np.where(named != "", kind, ""))
        layers.append(polygon_layer(areas[["polygon", "colour", "tip_title", "tip_body"]], "basemap-areas"))
    streets, letters, halos = _shaped(base, view)
    if len(streets):
        layers.append(polygon_layer(streets, "basemap-streets"))
    if len(letters):
        layers.append(polygon_layer(halos, "basemap-labels-halo"))
        layers.append(polygon_layer(letters, "basemap-labels"))
    return layers


_LABEL_PX, _HALO_PX = 13, 2.0  # place names' size and white halo, in pixels at the map's starting zoom
_LABEL_COLOUR, _HALO_COLOUR = [60, 60, 75, 225], [255, 255, 255, 215]
_SHAPED: dict[tuple, tuple] = {}  # a page's maps keep their camera: shaped again only when it moves


def _shaped(base, view: pdk.ViewState) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The streets (main roads last, on top), place names and their halos of (clipped) ``base`` as
    polygons sized for ``view``'s zoom (:mod:`shapes`)."""
    lat, lon, zoom = float(view.latitude), float(view.longitude), float(view.zoom)
    key = (base.source, len(base.streets), len(base.labels), round(zoom, 3), round(lat, 5), round(lon, 5))
    if key not in _SHAPED:
        mpp, local = shapes.metres_per_pixel(lat, zoom), shapes.Local(lat, lon)
        streets = base.streets.sort_values("rank", ascending=False).reset_index(drop=True)
        half = np.array([_STREET[r][1] for r in streets["rank"]]) / 2 * mpp
        polygons, source = shapes.buffered_lines(list(streets["path"]), half, local)
        rank = streets["rank"].to_numpy()[source]
        street_names = streets["name"].fillna("").astype(str).str.strip().to_numpy()[source]
        kinds = np.array([_STREET_KINDS[r] for r in rank], dtype=str)
        named = street_names != ""
        names = base.labels[base.labels["kind"].isin(_LABEL_KINDS)].reset_index(drop=True)
        letters, halos, which, halo_of = shapes.labels(names["name"], names["lat"], names["lon"], _LABEL_PX * mpp,
                                                       _HALO_PX * mpp, local)
        text = names["name"].astype(str).to_numpy()
        kind = names["kind"].astype(str).str.capitalize().to_numpy()

        def label_frame(polygons, of, colour):
            return with_tip(pd.DataFrame({"polygon": polygons, "colour": [colour] * len(polygons)}), text[of], kind[of])

        if len(_SHAPED) >= 16:
            _SHAPED.pop(next(iter(_SHAPED)))
        _SHAPED[key] = (with_tip(pd.DataFrame({"polygon": polygons, "colour": [_STREET[r][0] for r in rank]}),
                                 np.where(named, street_names, kinds), np.where(named, kinds, "")),
                        label_frame(letters, which, _LABEL_COLOUR), label_frame(halos, halo_of, _HALO_COLOUR))
    return _SHAPED[key]


def show(d: pdk.Deck, key: str | None = None, *, height: int = MAP_HEIGHT) -> None:
    st.html(_UNCLIP_TOOLTIP)
    st.pydeck_chart(d, height=height, key=key)


# --------------------------------------------------------------------------- the analysis pages' map
# Streamlit makes a page's elements anew on every page switch: each map a new WebGL context, in
# which a browser without a graphics card builds the map's drawing pipeline again (0.25-0.55 s).
# Elements that the entry file writes outside the page are kept instead; so Flows, Experts and
# Scenario hand their one map to :class:`MapLayout`, which the entry file draws after the page at
# the same place on all three: the browser keeps that map and only redraws its layers (and keeps
# the planner's zoom while its starting view stays the same). Page switches among them went from a
# median 1.14 s to 0.70 s in an A/B on this machine (bench/app_speed.py measures it).
MAP_PAGES = ("Flows", "Experts", "Scenario")
_LAYOUT = "_map_layout"  # st.session_state: this script run's MapLayout (None on other pages)


class MapLayout:
    """This run's page, in order: ``above`` (the page runs in it), the map slot, ``below``
    (:func:`below_map`: what follows the map)."""

    def __init__(self) -> None:
        self.above, self.slot, self.below = st.container(), st.container(), st.container()
        self.deck: pdk.Deck | None = None
        st.session_state[_LAYOUT] = self

    @staticmethod
    def start(page_title: str) -> MapLayout | None:
        """A layout for an analysis page (:data:`MAP_PAGES`), else None (the page draws its maps itself)."""
        st.session_state.pop(_LAYOUT, None)
        return MapLayout() if page_title in MAP_PAGES else None

    def draw(self) -> None:
        """After the page (also after st.stop): its map, with one key on every page."""
        st.session_state.pop(_LAYOUT, None)
        if self.deck is not None:
            with self.slot:
                show(self.deck, key="page_map")


def page_map(d: pdk.Deck) -> None:
    """The page's one map, drawn under what the page wrote so far. Everything after it on the page
    goes ``with below_map():``. Outside a :class:`MapLayout` (a page run on its own) drawn here."""
    layout = st.session_state.get(_LAYOUT)
    if layout is None:
        show(d, key="page_map")
        return
    layout.deck = d


class PageDone(Exception):
    """Raised by :func:`end_page`; the entry file catches it."""


def end_page() -> None:
    """``st.stop()`` for a page that has handed over its map: Streamlit draws nothing after
    st.stop(), so this ends the page and lets the entry file draw the map."""
    if st.session_state.get(_LAYOUT) is None:
        st.stop()
    raise PageDone


def below_map():
    """The container under the page's map (:func:`page_map`); a new one in place without a layout."""
    layout = st.session_state.get(_LAYOUT)
    return layout.below if layout is not None else st.container()


POLYGON_COLUMNS = ("polygon", "colour", "tip_title", "tip_body")


def polygon_layer(frame: pd.DataFrame, layer_id: str, *, highlight: bool = False, opacity: float = 1.0) -> pdk.Layer:
    """Filled polygons: per row ``polygon`` (a ring, or rings with holes), ``colour`` ([r, g, b, a])
    and the hover text ``tip_title`` / ``tip_body`` (:data:`TOOLTIP`, :func:`with_tip`).
    ``highlight``: the data (not the base map): the hovered polygon lights up, and :func:`deck`
    puts the streets under it.

    Every layer of an offline map but the City page's POI dots is this one kind, so a browser
    without a GPU builds its drawing pipeline once per map (app/shapes.py says why). And every one
    is pickable: deck.gl gives a layer that is not another vertex layout (one constant picking
    colour instead of a buffer of them), and the software GPU (SwiftShader) built a second pipeline
    for it in each new map. With every layer pickable, its time to finish drawing three page
    switches went from 974-1270 ms to 611-716 ms (Chrome traces, ``ContextVk::finishImpl``). So the
    streets, names, grey cells and rims say what they are on hover too."""
    missing = [c for c in POLYGON_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"polygon layer {layer_id!r} has no {', '.join(missing)} column")
    return pdk.Layer("SolidPolygonLayer", frame, id=layer_id, get_polygon="polygon", get_fill_color="colour",
                     filled=True, extruded=False, pickable=True, auto_highlight=highlight, opacity=opacity)


CONTEXT_COLOUR = [228, 230, 235, 140]  # the grey cells under the data, half transparent over the streets


# The same words on every grey cell: whether a cell had no visits or too few people is not told.
CONTEXT_TIP = ("Nothing shown here", "No visits here for these settings, or too few people to show them safely.")


def context_layer(cells) -> pdk.Layer:
    """Light grey hexagons of the city's cells under the data, half transparent so that the base
    map's streets show through (drawn like :func:`hex_layer`)."""
    cells = list(cells)
    frame = pd.DataFrame({"polygon": shapes.hexagons(cells, coverage=0.92), "colour": [CONTEXT_COLOUR] * len(cells)})
    return polygon_layer(with_tip(frame, [CONTEXT_TIP[0]] * len(cells), [CONTEXT_TIP[1]] * len(cells)), "cells-context")


def hex_layer(frame: pd.DataFrame, *, colour_col: str = "colour", opacity: float = 0.85) -> pdk.Layer:
    """Hexagons of the ``hex`` column coloured by a ``[r, g, b, a]`` column; hover shows ``tip_title`` /
    ``tip_body``. Scaled to 92% (thin gaps between cells instead of outlines)."""
    frame = frame.assign(polygon=shapes.hexagons(frame["hex"], coverage=0.92), colour=frame[colour_col])
    return polygon_layer(frame, "cells", highlight=True, opacity=opacity)


def outline_layer(cells, colour: list[int], *, names: pd.Series, body: str) -> pdk.Layer:
    """A rim around each of ``cells`` (the edited places of a scenario), named on hover."""
    cells = list(cells)
    frame = pd.DataFrame({"hex": cells, "polygon": shapes.hexagon_rims(cells), "colour": [colour] * len(cells)})
    return polygon_layer(with_tip(frame, [names.get(c, c) for c in cells], [body] * len(cells)), "cells-edited")


def diverging(values: np.ndarray, *, pos: str = "#2166ac", neg: str = "#d6604d", scale: float | None = None) -> list[list[int]]:
    """Blue for positive, red for negative, white near zero; full colour at ``scale`` (default:
    the largest magnitude)."""
    values = np.asarray(values, dtype=float)
    if scale is None:
        scale = np.nanmax(np.abs(values)) if len(values) and np.nanmax(np.abs(values)) > 0 else 1.0
    p, n = np.array(rgb(pos)[:3]), np.array(rgb(neg)[:3])
    out = []
    for v in np.nan_to_num(values / scale):
        base = p if v >= 0 else n
        t = min(1.0, abs(float(v))) ** 0.6
        out.append([int(round(255 + (c - 255) * t)) for c in base] + [230])
    return out


def sequential(values: np.ndarray, *, high: str = "#54278f") -> list[list[int]]:
    """Light-to-``high`` ramp from the smallest to the largest value (the smallest still visible)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return []
    lo, hi = np.nanmin(values), np.nanmax(values)
    t = (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)
    t = 0.12 + 0.88 * t
    h = np.array(rgb(high)[:3])
    return [[int(round(245 + (c - 245) * x)) for c in h] + [235] for x in t]


def legend(items: list[tuple[str, str]]) -> None:
    """A row of coloured squares with labels."""
    chips = " ".join(
        f'<span style="white-space:nowrap;margin-right:12px"><span style="display:inline-block;width:11px;'
        f'height:11px;background:{colour};border-radius:2px;margin-right:4px"></span>{label}</span>'
        for label, colour in items
    )
    st.markdown(f'<div style="font-size:0.85rem;line-height:1.8">{chips}</div>', unsafe_allow_html=True)


# --------------------------------------------------------------------------- POIs
def poi_map(pois: pd.DataFrame, *, base=None, tiles: bool = False) -> pdk.Deck:
    frame = pois[["lat", "lon", "category", "name"]].copy()
    frame["colour"] = [rgb(CATEGORY_COLOURS.get(c, "#7f7f7f")) for c in frame["category"]]
    label = frame["category"].map(CATEGORY_LABELS).fillna(frame["category"])
    named = frame["name"].fillna("").astype(str).str.strip()
    with_tip(frame, np.where(named.str.len() > 0, named, label), np.where(named.str.len() > 0, label, ""))
    layer = pdk.Layer("ScatterplotLayer", frame, get_position=["lon", "lat"], get_fill_color="colour",
                      get_radius=12, radius_min_pixels=2.5, radius_max_pixels=8, pickable=True,
                      stroked=False, auto_highlight=True)
    return deck([layer], view_of(frame["lat"], frame["lon"]), base=base, tiles=tiles)


def poi_legend(pois: pd.DataFrame) -> None:
    """The colours of the kinds of place present, in the order of CATEGORIES."""
    present = set(pois["category"])
    legend([(CATEGORY_LABELS[cat], colour) for cat, colour in CATEGORY_COLOURS.items() if cat in present])


def category_bar(pois: pd.DataFrame) -> go.Figure:
    """POIs per category, one bar trace (much lighter to build and draw than one trace per colour)."""
    counts = pois["category"].value_counts(ascending=True)
    fig = go.Figure(go.Bar(x=counts.to_numpy(), y=[CATEGORY_LABELS.get(c, c) for c in counts.index], orientation="h",
                           marker_color=[CATEGORY_COLOURS.get(c, "#7f7f7f") for c in counts.index],
                           hovertemplate="%{y}: %{x:,} POIs<extra></extra>"))
    fig.update_layout(height=max(260, 24 * len(counts)), xaxis_title="POIs", margin={"l": 0, "r": 10, "t": 10, "b": 0})
    return fig


# --------------------------------------------------------------------------- trajectories
def _small(fig: go.Figure, **layout) -> go.Figure:
    fig.update_layout(margin={"l": 0, "r": 0, "t": 40, "b": 0}, **layout)
    return fig


def hour_bar(per_hour: pd.DataFrame) -> go.Figure:
    return _small(px.bar(per_hour, x="hour", y="visits", title="Visits per hour of the day", height=300))


def move_length_histogram(km: np.ndarray) -> go.Figure:
    fig = px.histogram(pd.DataFrame({"km": km}), x="km", nbins=40, title="Length of moves (km)", height=300)
    return _small(fig, yaxis_title="moves")


def per_person_bar(bars: pd.DataFrame, *, one: str, many: str) -> go.Figure:
    """Pooled bars (trajmoe.analysis.privacy.pooled_histogram): persons per range of visits."""
    fig = px.bar(bars, x="label", y="persons", title=f"Visits per {one}", height=300)
    return _small(fig, xaxis_title="visits", yaxis_title=many, xaxis_type="category")


def visits_map(cells: pd.DataFrame, *, context, unit: str, base=None, tiles: bool = False) -> pdk.Deck:
    """Visited cells (cell, visits, people) shaded by visits on a log scale."""
    frame = cells.assign(hex=cells["cell"], colour=sequential(np.log1p(cells["visits"].to_numpy())))
    with_tip(frame, [f"{n:,} visits" for n in frame["visits"]], [f"by {p:,} {unit}" for p in frame["people"]])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=1000), base=base, tiles=tiles)


# --------------------------------------------------------------------------- fine-tuning
def metrics_chart(table: pd.DataFrame) -> go.Figure:
    """Grouped bars of the first-guess and top-5 hit rates per model."""
    long = table.melt(id_vars="Model", value_vars=["First guess right", "Right place in top 5"], var_name="measure")
    fig = px.bar(long, x="measure", y="value", color="Model", barmode="group", height=320)
    fig.update_layout(yaxis_tickformat=".0%", xaxis_title=None, yaxis_title=None,
                      margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig


# --------------------------------------------------------------------------- flows
FLOW_COLOUR = "#5a28a0"
MAX_ARC_PX = 9  # width of the largest flow drawn, in pixels at the map's starting zoom
PLACE_RIM_PX = 1.2


def flow_width_px(flow: np.ndarray, top: float) -> np.ndarray:
    """Pixels at the starting zoom: area-like (square root) scaling, 1 px for the smallest."""
    return 1 + (MAX_ARC_PX - 1) * np.sqrt(np.asarray(flow, dtype=float) / max(top, 1e-12))


def flow_map(summary, *, context, names: pd.Series | None, unit: str, zones=None, max_arcs: int = 400,
             base=None, tiles: bool = False, top: float | None = None) -> pdk.Deck:
    """Flows the way flowmap.blue draws them: curved arrows as wide as their flow
    (:func:`flow_width_legend`), narrow where they leave their origin, with a head where they
    arrive; places as circles sized by all the moves through them, filled by net flow (blue: more
    arrivals), with arrivals, departures and net on hover. Arrows bend to the right of their
    direction, so A -> B and B -> A lie side by side instead of on top of each other. ``top``: the
    flow drawn widest (give both maps of a page the same, so that widths compare)."""
    layers = []
    places = summary.places.copy()
    label = (lambda p: names.get(p, p)) if names is not None else (lambda p: p)
    if zones is not None:
        frame = zone_bounds(zones)
    else:
        frame = pd.DataFrame(cell_centres(context), columns=["lat", "lon"])
    view = view_of(frame["lat"], frame["lon"], width_px=560, share=1.0 if zones is not None else FIT_SHARE)
    mpp = shapes.metres_per_pixel(float(view.latitude), float(view.zoom))
    local = shapes.Local(float(view.latitude), float(view.longitude))
    if zones is not None:
        named = [(str((f.get("properties") or {}).get("zone", "")), part) for f in zones.geojson.get("features", [])
                 for part in shapes.polygon_parts(f.get("geometry") or {})]
        zone, parts = [z for z, _ in named], [p for _, p in named]
        layers.append(polygon_layer(with_tip(pd.DataFrame({"polygon": parts, "colour": [[228, 230, 235, 110]] * len(parts)}),
                                             zone, ["District"] * len(parts)), "districts"))
        borders, of = shapes.outlines(parts, 1.0 * mpp, local)
        layers.append(polygon_layer(with_tip(pd.DataFrame({"polygon": borders, "colour": [[120, 120, 120, 255]] * len(borders)}),
                                             [zone[i] for i in of], ["District border"] * len(borders)), "districts-outline"))
    else:
        layers.append(context_layer(context))
    through = (places["inflow"] + places["outflow"]).to_numpy()
    radius_px = 4 + 14 * np.sqrt(through / max(through.max(), 1e-12)) if len(places) else np.zeros(0)
    places["radius"] = radius_px
    places["colour"] = diverging(places["net"].to_numpy())
    places["polygon"] = shapes.circles(places["lat"], places["lon"], radius_px * mpp)
    rows = list(places[["place", "inflow", "outflow", "net", "n_users"]].itertuples(index=False))
    with_tip(places, [label(p) for p, *_ in rows],
             [(f"arrivals {i:,.1f} · departures {o:,.1f}", f"net {n:+,.1f} · {u:,} {unit}") for _, i, o, n, u in rows])
    flows = summary.flows.head(max_arcs).copy()
    if len(flows):
        flows["width"] = flow_width_px(flows["flow"], top or flows["flow"].max())
        radius_m = pd.Series(radius_px * mpp, index=places["place"].to_numpy()) if len(places) else pd.Series(dtype=float)
        gap = lambda col: radius_m.reindex(flows[col].to_numpy()).fillna(0.0).to_numpy()  # noqa: E731
        flows["polygon"] = shapes.flow_arrows(flows[["o_lon", "o_lat"]].to_numpy(), flows[["d_lon", "d_lat"]].to_numpy(),
                                              flows["width"].to_numpy() * mpp, local, start_gap_m=gap("origin"),
                                              end_gap_m=gap("destination") + PLACE_RIM_PX * mpp)
        flows["colour"] = [rgb(FLOW_COLOUR, 170)] * len(flows)
        rows = list(flows[["origin", "destination", "flow", "n_users"]].itertuples(index=False))
        with_tip(flows, [f"{label(o)} → {label(d)}" for o, d, *_ in rows], [f"{f:,.1f} moves by {u:,} {unit}" for *_, f, u in rows])
        layers.append(polygon_layer(flows.iloc[::-1], "flow-arcs", highlight=True))  # the largest on top
    rims = shapes.circles(places["lat"], places["lon"], (radius_px + PLACE_RIM_PX) * mpp)
    layers.append(polygon_layer(pd.DataFrame({"polygon": rims, "colour": [[50, 50, 60, 230]] * len(rims),
                                              "tip_title": places["tip_title"].to_numpy(),
                                              "tip_body": places["tip_body"].to_numpy()}), "flow-places-rim"))
    layers.append(polygon_layer(places, "flow-places", highlight=True))
    return deck(layers, view, base=base, tiles=tiles)


def zone_bounds(zones) -> pd.DataFrame:
    """Every vertex of the districts (lat, lon): the camera fits whole districts, not their centres."""
    coords = []

    def walk(c):
        if isinstance(c, (list, tuple)) and len(c) and isinstance(c[0], (int, float)):
            coords.append((c[1], c[0]))
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)

    for f in zones.geojson.get("features", []):
        walk((f.get("geometry") or {}).get("coordinates", []))
    return pd.DataFrame(coords or list(zip(zones.position["lat"], zones.position["lon"])), columns=["lat", "lon"])


def flow_width_legend(top: float) -> None:
    """What an arrow's width means: three sample widths with their number of moves (at the maps'
    starting zoom; zoomed in, the arrows grow with the map)."""
    if top <= 0:
        return
    samples = [top, top / 4, top / 25]
    items = " ".join(
        f'<span style="white-space:nowrap;margin-right:14px"><span style="display:inline-block;width:34px;'
        f'height:{w:.0f}px;background:{FLOW_COLOUR};opacity:0.7;vertical-align:middle;'
        f'border-radius:2px;margin-right:5px"></span>{v:,.1f} moves</span>'
        for v, w in zip(samples, flow_width_px(np.array(samples), top)))
    st.markdown(f'<div style="font-size:0.85rem;line-height:2">Arrow width (as first shown): {items}</div>',
                unsafe_allow_html=True)


# --------------------------------------------------------------------------- experts
def dominant_map(by_cell: pd.DataFrame, *, names: pd.Series, context, unit: str, base=None,
                 tiles: bool = False) -> pdk.Deck:
    frame = by_cell.copy()
    frame["hex"] = frame["cell"]
    frame["colour"] = [rgb(expert_colour(int(e)), 225) for e in frame["dominant"]]
    rows = list(frame[["cell", "dominant", "dominant_share", "n_visits", "n_users"]].itertuples(index=False))
    with_tip(frame, [names.get(c, c) for c, *_ in rows],
             [(f"mostly expert {e} ({s:.0%})", f"{v:,} visits by {u} {unit}") for _, e, s, v, u in rows])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=560), base=base, tiles=tiles)


def share_map(by_cell: pd.DataFrame, expert: int, *, names: pd.Series, context, unit: str, base=None,
              tiles: bool = False) -> pdk.Deck:
    frame = by_cell.copy()
    col = f"expert_{expert}"
    frame["hex"] = frame["cell"]
    frame["colour"] = sequential(frame[col].to_numpy(), high=expert_colour(expert))
    rows = list(frame[["cell", col, "n_users"]].itertuples(index=False))
    with_tip(frame, [names.get(c, c) for c, *_ in rows], [(f"expert {expert}: {s:.0%} of routing", f"{u} {unit}") for _, s, u in rows])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=560), base=base, tiles=tiles)


def share_legend(shares, expert: int) -> None:
    """The colour ramp of :func:`share_map`: from the smallest share shown to the largest."""
    shares = np.asarray(shares, dtype=float)
    if len(shares) == 0:
        return
    ticks = np.linspace(np.nanmin(shares), np.nanmax(shares), 5)
    stops = ",".join(f"rgb({c[0]},{c[1]},{c[2]})" for c in sequential(ticks, high=expert_colour(expert)))
    labels = "".join(f'<span style="flex:1;text-align:center">{t:.0%}</span>' for t in ticks)
    st.markdown(
        f'<div style="font-size:0.8rem;max-width:420px">Share of the place\'s routing that goes to expert {expert}'
        f'<div style="height:12px;border-radius:3px;background:linear-gradient(90deg,{stops})"></div>'
        f'<div style="display:flex">{labels}</div></div>', unsafe_allow_html=True)


def view_of_cells(cells, *, width_px: int = 620) -> pdk.ViewState:
    lat_lon = cell_centres(cells)
    return view_of(lat_lon[:, 0], lat_lon[:, 1], width_px=width_px)


def _hover_values(z: np.ndarray, unit: str) -> np.ndarray:
    """Hover text per square: the value with its unit, or "too few visits to say" for a blank one (never "NaN")."""
    return np.where(np.isnan(z), "too few visits to say", np.char.add(np.char.mod("%.2f", np.nan_to_num(z)), unit))


def heatmap(matrix: pd.DataFrame, *, title: str, colour_label: str, scale="Purples", midpoint=None,
            height: int = 340) -> go.Figure:
    z = matrix.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(z=z, x=list(matrix.columns), y=list(matrix.index), colorscale=scale,
                               zmid=midpoint, colorbar={"title": colour_label}, text=_hover_values(z, f" {colour_label}"),
                               hovertemplate="%{y}, %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin={"l": 0, "r": 0, "t": 40, "b": 0}, yaxis_autorange="reversed")
    return fig


def hour_heatmap(matrix: pd.DataFrame, *, title: str) -> go.Figure:
    """Experts x hours of the week: ticks every 6 hours, the day's name under its noon, a line between days."""
    z = matrix.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(z=z, x=list(range(matrix.shape[1])), y=list(matrix.index),
                               customdata=np.tile(np.array(matrix.columns), (len(matrix), 1)),
                               text=_hover_values(z, "× usual"),
                               colorscale="RdBu_r", zmid=1.0, colorbar={"title": "× usual"},
                               hovertemplate="%{y}, %{customdata}: %{text}<extra></extra>"))
    if matrix.shape[1] == 168:
        days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        fig.update_xaxes(tickvals=list(range(0, 168, 6)), tickangle=0, tickfont={"size": 10},
                         ticktext=[f"{h % 24}h<br><b>{days[h // 24]}</b>" if h % 24 == 12 else f"{h % 24}h"
                                   for h in range(0, 168, 6)])
        for day in range(24, 168, 24):
            fig.add_vline(x=day - 0.5, line_width=1, line_color="white")
    else:
        fig.update_xaxes(tickvals=list(range(0, 24, 3)), ticktext=[f"{h:02d}h" for h in range(0, 24, 3)])
    fig.update_layout(title=title, height=340, margin={"l": 0, "r": 0, "t": 40, "b": 50}, yaxis_autorange="reversed")
    return fig


# --------------------------------------------------------------------------- scenario
CHANGE_SCALE_FLOOR = 2.0  # %: a change this large is drawn in full colour at least (small ones stay pale)


def change_scale(change_pct: np.ndarray) -> float:
    """The change in % of arrivals drawn in full colour: the largest shown, but never under
    :data:`CHANGE_SCALE_FLOOR`, so a +0.19% change is not painted like a doubling."""
    finite = np.abs(np.asarray(change_pct, dtype=float))
    finite = finite[np.isfinite(finite)]
    return max(float(finite.max()) if len(finite) else 0.0, CHANGE_SCALE_FLOOR)


def change_map(cells: pd.DataFrame, *, edited, names: pd.Series, context, base=None, tiles: bool = False) -> pdk.Deck:
    """Places coloured by the change of their expected arrivals in % (:func:`change_legend`);
    the edited places outlined in black over everything."""
    frame = cells.copy()
    frame["hex"] = frame["cell"]
    frame["colour"] = diverging(frame["change_pct"].to_numpy(), scale=change_scale(frame["change_pct"]))
    rows = list(frame[["cell", "inflow_before", "inflow_after", "change", "change_pct", "edited"]].itertuples(index=False))
    with_tip(frame, [names.get(c, c) for c, *_ in rows],
             [(f"expected arrivals {b:,.1f} → {a:,.1f}", f"change {d:+,.2f} ({pct:+.2f}%)" + (" · edited place" if e else ""))
              for _, b, a, d, pct, e in rows])
    layers = [context_layer(context), hex_layer(frame),
              outline_layer(edited, [20, 20, 20, 255], names=names, body="A place you changed")]
    return deck(layers, view_of_cells(context, width_px=700), base=base, tiles=tiles)


def change_legend(scale: float) -> None:
    """The numeric colour scale of :func:`change_map`: red (fewer arrivals) - white - blue (more)."""
    ticks = [-scale, -scale / 2, 0.0, scale / 2, scale]
    colours = diverging(np.array(ticks), scale=scale)
    stops = ",".join(f"rgb({c[0]},{c[1]},{c[2]})" for c in colours)
    labels = "".join(f'<span style="flex:1;text-align:center">{f"{t:+.2g}%" if t else "0%"}</span>' for t in ticks)
    st.markdown(
        f'<div style="font-size:0.8rem;max-width:420px">Change in expected arrivals (% of before)'
        f'<div style="height:12px;border-radius:3px;background:linear-gradient(90deg,{stops})"></div>'
        f'<div style="display:flex">{labels}</div>'
        f'<div>beyond ±{scale:.2g}%: full colour · black outline: a changed place</div></div>', unsafe_allow_html=True)


def plotly(fig: go.Figure, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key)
