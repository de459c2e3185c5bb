"""The plotly charts the pages draw, and drawing one on the page (:func:`plotly`).

POIs per kind (City & POIs); visits per hour, move lengths and pooled visits per person
(Trajectories); hit rates per model (Fine-tune); expert x kind of place and expert x hour-of-week
heatmaps (Experts). Display only: the numbers come from ``state/`` and ``trajmoe/``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from maps.colours import CATEGORY_COLOURS
from trajmoe.pois.categories import CATEGORY_LABELS


def plotly(fig: go.Figure, key: str | None = None) -> None:
    st.plotly_chart(fig, config={"displaylogo": False}, key=key)


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


def metrics_chart(table: pd.DataFrame) -> go.Figure:
    """Grouped bars of the first-guess and top-5 hit rates per model."""
    long = table.melt(id_vars="Model", value_vars=["First guess right", "Right place in top 5"], var_name="measure")
    fig = px.bar(long, x="measure", y="value", color="Model", barmode="group", height=320)
    fig.update_layout(yaxis_tickformat=".0%", xaxis_title=None, yaxis_title=None,
                      margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig


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
