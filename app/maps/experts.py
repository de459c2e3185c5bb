"""The Experts page's map: each place's main expert, or one expert's share of its routing, and
the share's colour legend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydeck as pdk
import streamlit as st

from maps.colours import expert_colour, rgb, sequential
from maps.deck import deck, view_of_cells
from maps.layers import context_layer, hex_layer, with_tip


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
