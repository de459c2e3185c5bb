"""Colours and colour scales of the maps and charts, and the legend row that names them.

One owner for every colour the app draws with: POI kinds (D3 category20), experts (ColorBrewer
Dark2 + Set1), the diverging blue-white-red scale of net flows and scenario changes, and the
light-to-dark ramp of counts and shares. Colours go into deck layers as ``[r, g, b, a]`` lists.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import streamlit as st

from trajmoe.pois.categories import CATEGORIES

# D3 category20: one colour per POI category (order of CATEGORIES).
_CAT20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
          "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
          "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")
CATEGORY_COLOURS = MappingProxyType(dict(zip(CATEGORIES, _CAT20)))  # read-only: shared by every session
# Expert colours (ColorBrewer Dark2 + Set1), readable side by side.
EXPERT_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
                  "#377eb8", "#666666", "#e41a1c", "#4daf4a", "#984ea3")


def rgb(hex_colour: str, alpha: int = 220) -> list[int]:
    h = hex_colour.lstrip("#")
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)] + [alpha]


def expert_colour(e: int) -> str:
    """Colour of expert ``e`` (1-based)."""
    return EXPERT_COLOURS[(e - 1) % len(EXPERT_COLOURS)]


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
