"""Maps (pydeck) and charts (plotly) the pages draw. Display only: the numbers come from trajmoe.

Every map is ``pdk.Deck(map_provider=None)`` with no ``map_style``: no basemap, no request leaves
the machine. A light grey layer of the city's cells stands in for the basemap so that the shape
of the area stays readable.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import pydeck as pdk
import streamlit as st

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


def view_of(lat: np.ndarray, lon: np.ndarray, *, width_px: int = 620, height_px: int = MAP_HEIGHT) -> pdk.ViewState:
    """A top-down camera that shows all the given points with a margin."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if len(lat) == 0:
        return pdk.ViewState(latitude=0, longitude=0, zoom=1)
    lo_lat, hi_lat, lo_lon, hi_lon = lat.min(), lat.max(), lon.min(), lon.max()
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


def deck(layers: list, view: pdk.ViewState, *, height: int = MAP_HEIGHT) -> pdk.Deck:
    """An offline deck: no basemap provider, no map style. Hover text: :data:`TOOLTIP`."""
    return pdk.Deck(layers=layers, initial_view_state=view, map_provider=None, height=height, tooltip=TOOLTIP)


def show(d: pdk.Deck, key: str | None = None, *, height: int = MAP_HEIGHT) -> None:
    st.html(_UNCLIP_TOOLTIP)
    st.pydeck_chart(d, height=height, key=key)


def context_layer(cells) -> pdk.Layer:
    """Light grey hexagons of the city's cells, in place of a basemap (drawn like :func:`hex_layer`)."""
    frame = pd.DataFrame({"hex": list(cells)})
    return pdk.Layer("H3HexagonLayer", frame, get_hexagon="hex", get_fill_color=[228, 230, 235, 255],
                     coverage=0.92, stroked=False, filled=True, extruded=False, pickable=False, high_precision=False)


def hex_layer(frame: pd.DataFrame, *, colour_col: str = "colour", opacity: float = 0.85) -> pdk.Layer:
    """Hexagons coloured by a ``[r, g, b, a]`` column; hover shows ``tip_title`` / ``tip_body``.

    Instanced hexagons scaled to 92% (gaps instead of outline paths): several times less geometry,
    which matters where the browser draws WebGL in software."""
    return pdk.Layer("H3HexagonLayer", frame, get_hexagon="hex", get_fill_color=colour_col, coverage=0.92,
                     stroked=False, filled=True, extruded=False, pickable=True, opacity=opacity, auto_highlight=True,
                     high_precision=False)


def outline_layer(cells, colour: list[int]) -> pdk.Layer:
    frame = pd.DataFrame({"hex": list(cells)})
    return pdk.Layer("H3HexagonLayer", frame, get_hexagon="hex", filled=False, stroked=True,
                     get_line_color=colour, line_width_min_pixels=3, extruded=False, pickable=False)


def diverging(values: np.ndarray, *, pos: str = "#2166ac", neg: str = "#d6604d") -> list[list[int]]:
    """Blue for positive, red for negative, white near zero (scaled by the largest magnitude)."""
    values = np.asarray(values, dtype=float)
    scale = np.nanmax(np.abs(values)) if len(values) and np.nanmax(np.abs(values)) > 0 else 1.0
    p, n = np.array(rgb(pos)[:3]), np.array(rgb(neg)[:3])
    out = []
    for v in values / scale:
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
def poi_map(pois: pd.DataFrame) -> pdk.Deck:
    frame = pois[["lat", "lon", "category", "name"]].copy()
    frame["colour"] = [rgb(CATEGORY_COLOURS.get(c, "#7f7f7f")) for c in frame["category"]]
    label = frame["category"].map(CATEGORY_LABELS).fillna(frame["category"])
    named = frame["name"].fillna("").astype(str).str.strip()
    with_tip(frame, np.where(named.str.len() > 0, named, label), np.where(named.str.len() > 0, label, ""))
    layer = pdk.Layer("ScatterplotLayer", frame, get_position=["lon", "lat"], get_fill_color="colour",
                      get_radius=12, radius_min_pixels=2.5, radius_max_pixels=8, pickable=True,
                      stroked=False, auto_highlight=True)
    return deck([layer], view_of(frame["lat"], frame["lon"]))


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


def visits_map(cells: pd.DataFrame, *, context, unit: str) -> pdk.Deck:
    """Visited cells (cell, visits, people) shaded by visits on a log scale."""
    frame = cells.assign(hex=cells["cell"], colour=sequential(np.log1p(cells["visits"].to_numpy())))
    with_tip(frame, [f"{n:,} visits" for n in frame["visits"]], [f"by {p:,} {unit}" for p in frame["people"]])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=1000))


# --------------------------------------------------------------------------- fine-tuning
def metrics_chart(table: pd.DataFrame) -> go.Figure:
    """Grouped bars of the first-guess and top-5 hit rates per model."""
    long = table.melt(id_vars="Model", value_vars=["First guess right", "Right place in top 5"], var_name="measure")
    fig = px.bar(long, x="measure", y="value", color="Model", barmode="group", height=320)
    fig.update_layout(yaxis_tickformat=".0%", xaxis_title=None, yaxis_title=None,
                      margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig


# --------------------------------------------------------------------------- flows
def flow_map(summary, *, context, names: pd.Series | None, unit: str, zones=None, max_arcs: int = 400) -> pdk.Deck:
    """Arcs of the shown flows over places coloured by net flow (blue: more arrivals)."""
    layers = []
    places = summary.places.copy()
    label = (lambda p: names.get(p, p)) if names is not None else (lambda p: p)
    if zones is not None:
        layers.append(pdk.Layer("GeoJsonLayer", zones.geojson, stroked=True, filled=True,
                                get_fill_color=[228, 230, 235, 160], get_line_color=[120, 120, 120, 255],
                                line_width_min_pixels=1, pickable=False))
        places["colour"] = diverging(places["net"].to_numpy())
        rows = list(places[["place", "inflow", "outflow", "net", "n_users"]].itertuples(index=False))
        with_tip(places, [p for p, *_ in rows],
                 [(f"in {i:,.1f} · out {o:,.1f} · net {n:+,.1f}", f"{u} {unit}") for _, i, o, n, u in rows])
        layers.append(pdk.Layer("ScatterplotLayer", places, get_position=["lon", "lat"], get_fill_color="colour",
                                get_radius=60, radius_min_pixels=6, pickable=True, stroked=True,
                                get_line_color=[60, 60, 60, 255], line_width_min_pixels=1))
    else:
        layers.append(context_layer(context))
        places["hex"] = places["place"]
        places["colour"] = diverging(places["net"].to_numpy())
        rows = list(places[["place", "inflow", "outflow", "net", "n_users"]].itertuples(index=False))
        with_tip(places, [label(p) for p, *_ in rows],
                 [(f"arrivals {i:,.1f} · departures {o:,.1f} · net {n:+,.1f}", f"{u} {unit}") for _, i, o, n, u in rows])
        layers.append(hex_layer(places, opacity=0.7))
    flows = summary.flows.head(max_arcs).copy()
    if len(flows):
        top = flows["flow"].max()
        flows["width"] = 1 + 9 * np.sqrt(flows["flow"] / top)
        rows = list(flows[["origin", "destination", "flow", "n_users"]].itertuples(index=False))
        with_tip(flows, [f"{label(o)} → {label(d)}" for o, d, *_ in rows], [f"{f:,.1f} moves by {u} {unit}" for *_, f, u in rows])
        # Low arcs: seen from straight above, tall arcs come close to the camera and fan out.
        # A quoted string is a literal for pydeck (a bare one becomes a data accessor).
        layers.append(pdk.Layer("ArcLayer", flows, get_source_position=["o_lon", "o_lat"],
                                get_target_position=["d_lon", "d_lat"], get_width="width", get_height=0.15,
                                get_source_color=[230, 120, 20, 210], get_target_color=[90, 40, 160, 210],
                                width_units="'pixels'", great_circle=False, pickable=True, auto_highlight=True))
    frame = zones.position if zones is not None else pd.DataFrame(cell_centres(context), columns=["lat", "lon"])
    return deck(layers, view_of(frame["lat"], frame["lon"], width_px=560))


# --------------------------------------------------------------------------- experts
def dominant_map(by_cell: pd.DataFrame, *, names: pd.Series, context, unit: str) -> pdk.Deck:
    frame = by_cell.copy()
    frame["hex"] = frame["cell"]
    frame["colour"] = [rgb(expert_colour(int(e)), 225) for e in frame["dominant"]]
    rows = list(frame[["cell", "dominant", "dominant_share", "n_visits", "n_users"]].itertuples(index=False))
    with_tip(frame, [names.get(c, c) for c, *_ in rows],
             [(f"mostly expert {e} ({s:.0%})", f"{v:,} visits by {u} {unit}") for _, e, s, v, u in rows])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=560))


def share_map(by_cell: pd.DataFrame, expert: int, *, names: pd.Series, context, unit: str) -> pdk.Deck:
    frame = by_cell.copy()
    col = f"expert_{expert}"
    frame["hex"] = frame["cell"]
    frame["colour"] = sequential(frame[col].to_numpy(), high=expert_colour(expert))
    rows = list(frame[["cell", col, "n_users"]].itertuples(index=False))
    with_tip(frame, [names.get(c, c) for c, *_ in rows], [(f"expert {expert}: {s:.0%} of routing", f"{u} {unit}") for _, s, u in rows])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=560))


def view_of_cells(cells, *, width_px: int = 620) -> pdk.ViewState:
    lat_lon = cell_centres(cells)
    return view_of(lat_lon[:, 0], lat_lon[:, 1], width_px=width_px)


def heatmap(matrix: pd.DataFrame, *, title: str, colour_label: str, scale="Purples", midpoint=None,
            height: int = 340) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index), colorscale=scale,
                               zmid=midpoint, colorbar={"title": colour_label},
                               hovertemplate="%{y}, %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin={"l": 0, "r": 0, "t": 40, "b": 0}, yaxis_autorange="reversed")
    return fig


def hour_heatmap(matrix: pd.DataFrame, *, title: str) -> go.Figure:
    """Experts x hours of the week, one tick per day."""
    fig = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=list(range(matrix.shape[1])), y=list(matrix.index),
                               customdata=np.tile(np.array(matrix.columns), (len(matrix), 1)),
                               colorscale="RdBu_r", zmid=1.0, colorbar={"title": "× usual"},
                               hovertemplate="%{y}, %{customdata}: %{z:.2f}× usual<extra></extra>"))
    if matrix.shape[1] == 168:
        fig.update_xaxes(tickvals=list(range(12, 168, 24)), ticktext=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
        for day in range(24, 168, 24):
            fig.add_vline(x=day - 0.5, line_width=1, line_color="white")
    else:
        fig.update_xaxes(tickvals=list(range(0, 24, 3)), ticktext=[f"{h:02d}h" for h in range(0, 24, 3)])
    fig.update_layout(title=title, height=340, margin={"l": 0, "r": 0, "t": 40, "b": 0}, yaxis_autorange="reversed")
    return fig


# --------------------------------------------------------------------------- scenario
def change_map(cells: pd.DataFrame, *, edited, names: pd.Series, context) -> pdk.Deck:
    frame = cells.copy()
    frame["hex"] = frame["cell"]
    frame["colour"] = diverging(frame["change"].to_numpy())
    rows = list(frame[["cell", "inflow_before", "inflow_after", "change"]].itertuples(index=False))
    with_tip(frame, [names.get(c, c) for c, *_ in rows], [f"expected arrivals {b:,.1f} → {a:,.1f} ({d:+,.2f})" for _, b, a, d in rows])
    layers = [context_layer(context), hex_layer(frame), outline_layer(edited, [20, 20, 20, 255])]
    return deck(layers, view_of_cells(context, width_px=700))


def plotly(fig: go.Figure, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key)
