"""What the Experts page shows: the routing of one layer of the model over the places visited by
at least k persons (:mod:`trajmoe.analysis.routing`), cached per model, layer and k."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from state.predictions import Shown

MIN_HOUR_VISITS = 20  # an expert x hour-of-week square with fewer visits is left blank


@dataclass
class ExpertView:
    """Routing of one layer over the cells visited by >= k persons."""

    by_cell: pd.DataFrame  # routing_by_cell: expert shares, dominant expert, persons per cell
    hidden: int  # cells left out by the privacy rule
    texts: list[str]  # one sentence per expert
    categories: pd.DataFrame  # expert x kind of place (1 = city average), kinds present only
    hours: pd.DataFrame  # expert x hour of week (1 = the expert's usual share)
    busiest: int  # the expert most places go to (1-based)


@st.cache_data(show_spinner=False, max_entries=32)
def _expert_view(model_key: str, layer: int, k: int, _routing) -> ExpertView | None:
    from trajmoe.analysis.routing import (
        describe_experts,
        expert_category_matrix,
        expert_hour_matrix,
        routing_by_cell,
    )

    private, hidden = _routing.private(k)
    if len(private.cell) == 0:
        return None
    by_cell = routing_by_cell(private, layer=layer)
    categories = expert_category_matrix(private, layer=layer)
    return ExpertView(by_cell=by_cell, hidden=hidden, texts=describe_experts(private, layer=layer),
                      categories=categories.loc[:, private.poi_share.sum(axis=0) > 0],
                      hours=expert_hour_matrix(private, layer=layer, relative=True, min_visits=MIN_HOUR_VISITS),
                      busiest=int(by_cell["dominant"].value_counts().index[0]))


def expert_view(shown: Shown, *, layer: int, k: int) -> ExpertView | None:
    """Routing maps, heatmaps and texts of one layer from the visits in cells with >= k persons
    (None when no cell has enough); cached per model, layer and k."""
    return _expert_view(shown.key, layer, k, shown.outputs.routing)


def layer_labels(n_layers: int) -> list[str]:
    return [f"Layer {i + 1}" + (" (closest to the places)" if i == 0 else "") for i in range(n_layers)]
