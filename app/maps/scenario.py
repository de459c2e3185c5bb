"""The Scenario page's map: the change of each place's expected arrivals in %, on a numeric
colour scale, the edited places outlined; and that scale's legend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydeck as pdk
import streamlit as st

from maps.colours import diverging
from maps.deck import deck, view_of_cells
from maps.layers import context_layer, hex_layer, outline_layer, with_tip

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
