"""Which routed expert each place and hour goes to, from the one-pass model run.

:func:`trajmoe.analysis.predict.predict` keeps each MoE layer's router
probabilities at every visit it predicts from (:class:`Routing`); :func:`routing_by_cell`,
:func:`expert_category_matrix`, :func:`expert_hour_matrix` and :func:`describe_experts` turn them
into maps, heatmaps and text. Show only :meth:`Routing.private` (the privacy rule of
:mod:`trajmoe.analysis.privacy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trajmoe.analysis.privacy import DEFAULT_K, persons_per, shown_keys
from trajmoe.pois.categories import CATEGORIES, CATEGORY_LABELS

if TYPE_CHECKING:  # torch (imported by dataset) costs ~2 s: the app's data pages never pay it
    from trajmoe.city.batch import CityTensors
    from trajmoe.city.data import CityData


@dataclass
class Routing:
    """Router probabilities of visits (inside the candidate cells) under one model."""

    probs: np.ndarray  # (V, n_layers, E) float32 router softmax
    cell: np.ndarray  # (V,) H3 cell of the visit
    user: np.ndarray  # (V,) user_id
    hour: np.ndarray  # (V,) local hour 0..23
    weekday: np.ndarray  # (V,) 0..6, 7 = unknown
    poi_share: np.ndarray  # (V, C) POI category shares of the visit's cell

    @property
    def n_layers(self) -> int:
        return self.probs.shape[1]

    @property
    def n_experts(self) -> int:
        return self.probs.shape[2]

    def subset(self, keep: np.ndarray) -> Routing:
        return Routing(self.probs[keep], self.cell[keep], self.user[keep], self.hour[keep],
                       self.weekday[keep], self.poi_share[keep])

    def private(self, k: int = DEFAULT_K) -> tuple[Routing, int]:
        """Only visits in cells with >= k distinct persons; also returns how many cells were hidden.

        Raises :class:`~trajmoe.errors.InputDataError` when ``k`` is not a whole number >= 1.
        """
        shown, hidden = shown_keys(self.cell, self.user, k)
        return self.subset(np.isin(self.cell, shown)), hidden


def _routing(data: CityData, city: CityTensors, visits: np.ndarray, probs: np.ndarray) -> Routing:
    """Routing of ``visits`` (their router probabilities ``probs``), leaving out visits outside
    the candidates: the model saw them as padding cell 0, so their routing says nothing."""
    inside = data.cell_idx[visits] >= 0
    visits, probs = visits[inside], probs[inside]
    return Routing(probs=probs.astype(np.float32), cell=data.visits["cell"].to_numpy()[visits],
                   user=data.visits["user_id"].to_numpy()[visits], hour=data.hour[visits],
                   weekday=data.weekday[visits], poi_share=city.poi_share.numpy()[data.cell_idx[visits]])


def routing_by_cell(routing: Routing, *, layer: int = 0) -> pd.DataFrame:
    """Per cell: mean router probability of each expert (``expert_1``...), the dominant expert
    (1-based), its share and the number of distinct persons."""
    p = routing.probs[:, layer, :]
    frame = pd.DataFrame(p, columns=[f"expert_{e + 1}" for e in range(routing.n_experts)])
    frame["cell"] = routing.cell
    shares = frame.groupby("cell").mean()
    out = shares.reset_index()
    out["dominant"] = shares.to_numpy().argmax(axis=1) + 1
    out["dominant_share"] = shares.to_numpy().max(axis=1)
    users = persons_per(routing.cell, routing.user)  # the count the privacy rule reads
    out["n_users"] = users.reindex(out["cell"]).to_numpy()
    out["n_visits"] = pd.Series(routing.cell).value_counts().reindex(out["cell"]).to_numpy()
    return out


def expert_category_matrix(routing: Routing, *, layer: int = 0) -> pd.DataFrame:
    """(E, C) how much more the POIs of a category make up the cells routed to each expert than
    the cells of all visits (1 = like average; rows experts 1.., columns category labels)."""
    p = routing.probs[:, layer, :].astype(np.float64)  # (V, E)
    mix = (p.T @ routing.poi_share) / np.maximum(p.sum(0), 1e-12)[:, None]  # (E, C)
    overall = routing.poi_share.mean(0)
    lift = np.divide(mix, overall, out=np.zeros_like(mix), where=overall > 0)
    return pd.DataFrame(lift, index=[f"Expert {e + 1}" for e in range(routing.n_experts)],
                        columns=[CATEGORY_LABELS[c] for c in CATEGORIES])


def expert_hour_matrix(routing: Routing, *, layer: int = 0, relative: bool = False,
                       min_visits: int = 1) -> pd.DataFrame:
    """(E, 168) mean router probability per hour of week (columns ``Mon 00h`` ...), or (E, 24)
    per hour of day when the weekday is unknown; NaN where fewer than ``min_visits`` visits fall
    (a mean over a handful of night-time visits is noise). ``relative`` divides each expert's
    row by its mean over all visits (1 = as often as usual)."""
    p = routing.probs[:, layer, :].astype(np.float64)
    known = bool(len(routing.weekday)) and bool((routing.weekday < 7).all())
    slot = routing.weekday * 24 + routing.hour if known else routing.hour
    n_slots = 168 if known else 24
    total = np.zeros((n_slots, routing.n_experts))
    np.add.at(total, slot, p)
    count = np.bincount(slot, minlength=n_slots).astype(np.float64)
    enough = count[:, None] >= max(min_visits, 1)
    mean = np.divide(total, count[:, None], out=np.full_like(total, np.nan), where=enough)
    if relative:
        mean = mean / np.maximum(p.mean(axis=0), 1e-12)
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    cols = [f"{days[s // 24]} {s % 24:02d}h" for s in range(168)] if known else [f"{h:02d}h" for h in range(24)]
    return pd.DataFrame(mean.T, index=[f"Expert {e + 1}" for e in range(routing.n_experts)], columns=cols)


MIN_BLOCK_SHARE = 0.05  # a time of day needs >= 5% of the visits before it can describe an expert
_DAY_PARTS = ((0, 6, "at night"), (6, 11, "in the morning"), (11, 14, "around midday"),
              (14, 18, "in the afternoon"), (18, 23, "in the evening"), (23, 24, "late at night"))


def _peak_hours(p_e: np.ndarray, hour: np.ndarray) -> str:
    """The 4-hour block of the day where an expert takes the largest share of visits relative to
    its own average, among blocks holding enough visits to say so."""
    count = np.bincount(hour, minlength=24).astype(np.float64)
    weight = np.bincount(hour, weights=p_e, minlength=24)
    blocks = [[(s + i) % 24 for i in range(4)] for s in range(24)]
    n = np.array([count[b].sum() for b in blocks])
    rel = np.array([weight[b].sum() for b in blocks]) / np.maximum(n, 1) / max(p_e.mean(), 1e-12)
    rel[n < MIN_BLOCK_SHARE * count.sum()] = -np.inf
    start = int(np.argmax(rel))
    centre = (start + 2) % 24
    part = next(text for a, b, text in _DAY_PARTS if a <= centre < b)
    return f"{part} ({start:02d}-{(start + 4) % 24:02d} h)"


def describe_experts(routing: Routing, *, layer: int = 0) -> list[str]:
    """One plain sentence per routed expert, from the data: its share of visits, the POI
    categories its cells are rich in, when in the day it is used most, weekday vs weekend."""
    if len(routing.cell) == 0:
        return [f"Expert {e + 1}: no visits to describe." for e in range(routing.n_experts)]
    lift = expert_category_matrix(routing, layer=layer)
    p = routing.probs[:, layer, :].astype(np.float64)
    mix = (p.T @ routing.poi_share) / np.maximum(p.sum(0), 1e-12)[:, None]
    known = bool((routing.weekday < 7).all())
    weekend = np.isin(routing.weekday, [5, 6])
    texts = []
    for e in range(routing.n_experts):
        share = p[:, e].mean()
        rich = [CATEGORY_LABELS[CATEGORIES[c]] for c in np.argsort(-lift.iloc[e].to_numpy())
                if mix[e, c] >= 0.05 and lift.iloc[e, c] >= 1.2][:2]
        if not routing.poi_share.any():  # no POIs: the kinds of place say nothing, the hours still do
            where = ""
        elif rich:
            where = "mostly cells rich in " + " and ".join(rich) + "; "
        else:
            where = "cells with a POI mix close to the city average; "
        text = f"Expert {e + 1} ({share:.0%} of routing): {where}used most {_peak_hours(p[:, e], routing.hour)}"
        if known and weekend.any() and (~weekend).any():
            ratio = p[weekend, e].mean() / max(p[~weekend, e].mean(), 1e-12)
            if ratio > 1.15:
                text += ", more on weekends"
            elif ratio < 0.87:
                text += ", more on weekdays"
        texts.append(text + ".")
    return texts
