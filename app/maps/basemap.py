"""The base map under every map: water and parks, streets and place names from the OSM data the
app has for the area (:mod:`trajmoe.pois.basemap`), as deck layers with ids starting ``basemap``.

Offline: no tile server; the shapes are made on the server (:mod:`shapes`), streets as wide as
their pixel width at the map's starting zoom. Shaping the streets and names of a view is the
costly part, so it is cached for every session (:func:`_shaped`, ``st.cache_resource`` keyed on
the base map and the camera: a page's maps keep their camera, so they are shaped once).
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pandas as pd
import pydeck as pdk
import shapes
import streamlit as st

from maps.layers import polygon_layer, with_tip

# Base map styling: OSM-like, muted so that the data stays the figure.
_WATER, _PARK = [170, 205, 225, 255], [205, 228, 196, 255]
_STREET = MappingProxyType({1: ([140, 140, 152, 255], 3.5), 2: ([160, 160, 170, 255], 2.4),
                            3: ([185, 185, 195, 255], 1.3)})  # rank -> (colour, width in pixels)
_LABEL_KINDS = ("town", "borough", "suburb", "quarter", "neighbourhood", "village")  # squares crowd the centre
_AREA_KINDS = MappingProxyType({"water": "Water", "park": "Park or green area"})
STREET_KINDS = MappingProxyType({1: "Main road", 2: "Street", 3: "Minor street"})  # an unnamed street's hover
_VIEW_SPAN_DEG = 360 * 1400 / 512  # degrees of longitude a 1400-px-wide view spans at zoom 0


def basemap_layers(base, view: pdk.ViewState) -> list[pdk.Layer]:
    """Water and parks, streets (wider for main roads) and place labels of ``base`` near ``view``.

    Ids start with ``basemap`` (tests find them); on hover they say what they are (a street's or
    park's OSM name, else its kind: :func:`maps.layers.polygon_layer` says why). Clipped to about three
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
    streets, letters, halos = shaped(base, view)
    if len(streets):
        layers.append(polygon_layer(streets, "basemap-streets"))
    if len(letters):
        layers.append(polygon_layer(halos, "basemap-labels-halo"))
        layers.append(polygon_layer(letters, "basemap-labels"))
    return layers


_LABEL_PX, _HALO_PX = 13, 2.0  # place names' size and white halo, in pixels at the map's starting zoom
_LABEL_COLOUR, _HALO_COLOUR = [60, 60, 75, 225], [255, 255, 255, 215]


def shaped(base, view: pdk.ViewState) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The streets (main roads last, on top), place names and their halos of (clipped) ``base`` as
    polygons sized for ``view``'s zoom (:mod:`shapes`), shaped again only when the camera moves."""
    lat, lon, zoom = float(view.latitude), float(view.longitude), float(view.zoom)
    return _shaped(base.source, len(base.streets), len(base.labels), round(zoom, 3), round(lat, 5), round(lon, 5),
                   base, view)


@st.cache_resource(show_spinner=False, max_entries=16)
def _shaped(base_source: str, n_streets: int, n_labels: int, zoom_key: float, lat_key: float, lon_key: float, _base,
            _view: pdk.ViewState) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`shaped`, cached for every session on the base map (its source and clipped size) and
    the camera, rounded (~1 m, 0.001 of a zoom level); read-only once made."""
    base, view = _base, _view
    lat, lon, zoom = float(view.latitude), float(view.longitude), float(view.zoom)
    mpp, local = shapes.metres_per_pixel(lat, zoom), shapes.Local(lat, lon)
    streets = base.streets.sort_values("rank", ascending=False).reset_index(drop=True)
    half = np.array([_STREET[r][1] for r in streets["rank"]]) / 2 * mpp
    polygons, source = shapes.buffered_lines(list(streets["path"]), half, local)
    rank = streets["rank"].to_numpy()[source]
    street_names = streets["name"].fillna("").astype(str).str.strip().to_numpy()[source]
    kinds = np.array([STREET_KINDS[r] for r in rank], dtype=str)
    named = street_names != ""
    names = base.labels[base.labels["kind"].isin(_LABEL_KINDS)].reset_index(drop=True)
    letters, halos, which, halo_of = shapes.labels(names["name"], names["lat"], names["lon"], _LABEL_PX * mpp,
                                                   _HALO_PX * mpp, local)
    text = names["name"].astype(str).to_numpy()
    kind = names["kind"].astype(str).str.capitalize().to_numpy()

    def label_frame(polygons, of, colour):
        return with_tip(pd.DataFrame({"polygon": polygons, "colour": [colour] * len(polygons)}), text[of], kind[of])

    return (with_tip(pd.DataFrame({"polygon": polygons, "colour": [_STREET[r][0] for r in rank]}),
                     np.where(named, street_names, kinds), np.where(named, kinds, "")),
            label_frame(letters, which, _LABEL_COLOUR), label_frame(halos, halo_of, _HALO_COLOUR))
