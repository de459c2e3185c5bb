"""The City & POIs page's map: the POIs as dots coloured by kind, and their legend.

The one map that is not made of filled polygons alone: its POI dots are a deck.gl scatterplot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydeck as pdk

from maps.colours import CATEGORY_COLOURS, legend, rgb
from maps.deck import deck, view_of
from maps.layers import with_tip
from trajmoe.pois.categories import CATEGORY_LABELS


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
