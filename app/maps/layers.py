"""The one kind of deck layer every offline map is made of: filled polygons that answer a hover.

Each row carries ``polygon`` (a ring, or rings with holes: :mod:`shapes`), ``colour`` and the
plain-text hover fields ``tip_title`` / ``tip_body`` (:func:`with_tip`, shown through
:data:`maps.deck.TOOLTIP_HTML`). :func:`polygon_layer` says why one kind, and why every one pickable.
"""

from __future__ import annotations

import pandas as pd
import pydeck as pdk
import shapes


def with_tip(frame: pd.DataFrame, titles, bodies) -> pd.DataFrame:
    """``frame`` with the plain-text hover fields of :data:`maps.deck.TOOLTIP_HTML` (bodies: one
    string or lines per row)."""
    frame["tip_title"] = [str(t) for t in titles]
    frame["tip_body"] = [b if isinstance(b, str) else "\n".join(map(str, b)) for b in bodies]
    return frame


POLYGON_COLUMNS = ("polygon", "colour", "tip_title", "tip_body")


def polygon_layer(frame: pd.DataFrame, layer_id: str, *, highlight: bool = False, opacity: float = 1.0) -> pdk.Layer:
    """Filled polygons: per row ``polygon`` (a ring, or rings with holes), ``colour`` ([r, g, b, a])
    and the hover text ``tip_title`` / ``tip_body`` (:func:`with_tip`).
    ``highlight``: the data (not the base map): the hovered polygon lights up, and :func:`maps.deck.deck`
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
