"""The Flows page's map: flows drawn the way flowmap.blue draws them, and the width legend.

Curved arrows as wide as their flow, narrow where they leave and with a head where they arrive;
places as circles sized by the moves through them, filled by net flow; over the city's cells or
the planner's districts. All filled polygons (:mod:`shapes`), sized in pixels at the starting zoom.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydeck as pdk
import shapes
import streamlit as st

from maps.colours import diverging, rgb
from maps.deck import FIT_SHARE, deck, view_of
from maps.layers import context_layer, polygon_layer, with_tip
from trajmoe.geo import cell_centres

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
