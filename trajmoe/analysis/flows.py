"""Origin -> destination flows over H3 cells (or districts), observed or predicted, after the privacy rule.

A *transition* is one person's move from an origin cell to a destination cell, with a weight: 1
for an observed move (:func:`observed_transitions`), the predicted probability for a predicted
one (:func:`predicted_transitions`: each visit's top-N next cells, rescaled to sum to one, so
observed and predicted maps count the same number of moves). :func:`summarize_flows` adds them
up per (origin, destination) pair and per cell (or per district, with
:func:`trajmoe.analysis.zones.read_zones`), and applies the privacy rule of
:mod:`trajmoe.analysis.privacy` to places and flows alike, predicted flows included. Per-cell
totals add up only the flows that are shown, so hidden flows cannot be recovered by subtraction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trajmoe.analysis.predict import target_visits
from trajmoe.analysis.privacy import DEFAULT_K, allowed, check_k, persons_per
from trajmoe.analysis.zones import Zones
from trajmoe.errors import InputDataError
from trajmoe.geo import cell_centres

if TYPE_CHECKING:  # torch (imported by dataset) costs ~2 s: the app's data pages never pay it
    from trajmoe.city.data import CityData

DEFAULT_TOP_N = 5  # predicted next cells per visit that make up the predicted flows


def observed_transitions(data: CityData, *, split: str = "test") -> pd.DataFrame:
    """The moves that really happened into each target visit of ``split`` (weight 1)."""
    t = target_visits(data, split)
    v = data.visits
    return pd.DataFrame({
        "user_id": v["user_id"].to_numpy()[t - 1],
        "origin": v["cell"].to_numpy()[t - 1],
        "destination": v["cell"].to_numpy()[t],
        "weight": np.ones(len(t)),
        "hour": data.hour[t - 1],
        "weekday": data.weekday[t - 1],
    })


def predicted_transitions(predictions: pd.DataFrame, *, top_n: int = DEFAULT_TOP_N,
                          weekday_reliable: bool = True) -> pd.DataFrame:
    """Expected moves from :func:`predict_next` rows: each visit's top-N, rescaled to sum to one."""
    k = int(predictions["rank"].max()) if len(predictions) else 1  # every visit has ranks 1..k, in order
    n = min(top_n, k)
    prob = predictions["prob"].to_numpy(np.float64).reshape(-1, k)[:, :n]
    first = predictions.iloc[::k]  # one row per visit
    ts = pd.to_datetime(first["timestamp"])
    weekday = ts.dt.day_of_week.to_numpy() if weekday_reliable else np.full(len(first), 7)
    return pd.DataFrame({"user_id": np.repeat(first["user_id"].to_numpy(), n),
                         "origin": np.repeat(first["cell"].to_numpy(), n),
                         "destination": predictions["next_cell"].to_numpy().reshape(-1, k)[:, :n].reshape(-1),
                         "weight": (prob / prob.sum(axis=1, keepdims=True)).reshape(-1),
                         "hour": np.repeat(ts.dt.hour.to_numpy(), n), "weekday": np.repeat(weekday, n)})


def filter_transitions(transitions: pd.DataFrame, *, hours: tuple[int, int] = (0, 24),
                       day: str = "all") -> pd.DataFrame:
    """Moves starting in ``hours`` [start, end) of the day, on ``all`` days, ``weekday`` or ``weekend``."""
    if day not in ("all", "weekday", "weekend"):
        raise InputDataError(f"day must be all, weekday or weekend, got {day!r}")
    h, w = transitions["hour"], transitions["weekday"]
    keep = (h >= hours[0]) & (h < hours[1])
    if day == "weekday":
        keep &= w < 5
    elif day == "weekend":
        keep &= w.isin([5, 6])
    return transitions[keep]


@dataclass
class FlowSummary:
    """Flows and per-place totals after the privacy rule (only what may be shown)."""

    flows: pd.DataFrame  # origin, destination, flow, n_users, o_lat, o_lon, d_lat, d_lon
    places: pd.DataFrame  # place, lat, lon, inflow, outflow, net, n_users
    hidden_flows: int  # flows removed by the privacy rule
    hidden_places: int  # cells / districts removed by the privacy rule
    k: int


def cell_positions(cells: Iterable[str]) -> pd.DataFrame:
    """Centre lat/lon of H3 cells (index = cell)."""
    cells = pd.Index(pd.unique(np.asarray(list(cells), dtype=object)))
    latlng = cell_centres(cells)
    return pd.DataFrame({"lat": latlng[:, 0], "lon": latlng[:, 1]}, index=cells)


def summarize_flows(transitions: pd.DataFrame, *, k: int = DEFAULT_K, zones: Zones | None = None) -> FlowSummary:
    """Add moves up per (origin, destination) and per place, then apply the privacy rule.

    A place (cell, or district with ``zones``) is kept when at least ``k`` distinct persons move
    from or to it; a flow when at least ``k`` distinct persons contribute to it and both ends are
    kept. Moves that stay inside one place are not flows. Totals add up the kept flows only.
    """
    k = check_k(k)
    tr = transitions
    if zones is not None:
        tr = tr.assign(origin=tr["origin"].map(zones.of_cell), destination=tr["destination"].map(zones.of_cell))
        tr = tr.dropna(subset=["origin", "destination"])
    # A person counts for a place whether they leave from it or arrive at it.
    place_users = persons_per(np.concatenate([tr["origin"].to_numpy(), tr["destination"].to_numpy()]),
                              np.concatenate([tr["user_id"].to_numpy(), tr["user_id"].to_numpy()]))
    ok_places = place_users.index[allowed(place_users, k)]
    moves = tr[tr["origin"] != tr["destination"]]
    flows = moves.groupby(["origin", "destination"], sort=False)["weight"].sum().rename("flow").to_frame()
    flows["n_users"] = persons_per(moves[["origin", "destination"]], moves["user_id"]).reindex(flows.index)
    flows = flows.reset_index()
    keep = flows["origin"].isin(ok_places) & flows["destination"].isin(ok_places) & allowed(flows["n_users"], k)
    hidden_flows = int((~keep).sum())
    flows = flows[keep].sort_values("flow", ascending=False).reset_index(drop=True)
    pos = zones.position if zones is not None else cell_positions(place_users.index)
    for end, col in (("o", "origin"), ("d", "destination")):
        flows[f"{end}_lat"] = pos["lat"].reindex(flows[col]).to_numpy()
        flows[f"{end}_lon"] = pos["lon"].reindex(flows[col]).to_numpy()
    inflow = flows.groupby("destination")["flow"].sum()
    outflow = flows.groupby("origin")["flow"].sum()
    places = pd.DataFrame({"place": ok_places})
    places["lat"] = pos["lat"].reindex(ok_places).to_numpy()
    places["lon"] = pos["lon"].reindex(ok_places).to_numpy()
    places["inflow"] = inflow.reindex(ok_places, fill_value=0.0).to_numpy()
    places["outflow"] = outflow.reindex(ok_places, fill_value=0.0).to_numpy()
    places["net"] = places["inflow"] - places["outflow"]
    places["n_users"] = place_users.reindex(ok_places).to_numpy()
    return FlowSummary(flows=flows, places=places, hidden_flows=hidden_flows,
                       hidden_places=int(len(place_users) - len(ok_places)), k=k)


def flows_geojson(summary: FlowSummary, *, label: str) -> str:
    """The shown flows as a GeoJSON FeatureCollection of origin -> destination lines."""
    features = [{
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[r.o_lon, r.o_lat], [r.d_lon, r.d_lat]]},
        "properties": {"origin": r.origin, "destination": r.destination, "flow": round(float(r.flow), 4),
                       "n_users": int(r.n_users), "what": label},
    } for r in summary.flows.itertuples()]
    return json.dumps({"type": "FeatureCollection", "features": features,
                       "properties": {"what": label, "privacy_k": summary.k, "hidden_flows": summary.hidden_flows}})


def flows_csv(summary: FlowSummary) -> str:
    """The shown flows as CSV text."""
    return summary.flows.to_csv(index=False)
