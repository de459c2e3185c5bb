"""Visited cells shaded by their visits: the Trajectories page's map, and the Flows page's
arrivals (observed and predicted, per cell)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydeck as pdk

from maps.colours import sequential
from maps.deck import deck, view_of_cells
from maps.layers import context_layer, hex_layer, with_tip


def visits_map(cells: pd.DataFrame, *, context, unit: str, base=None, tiles: bool = False) -> pdk.Deck:
    """Visited cells (cell, visits, people) shaded by visits on a log scale."""
    frame = cells.assign(hex=cells["cell"], colour=sequential(np.log1p(cells["visits"].to_numpy())))
    with_tip(frame, [f"{n:,} visits" for n in frame["visits"]], [f"by {p:,} {unit}" for p in frame["people"]])
    return deck([context_layer(context), hex_layer(frame)], view_of_cells(context, width_px=1000), base=base, tiles=tiles)
