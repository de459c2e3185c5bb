"""Origin -> destination flows over H3 cells (or districts), observed or predicted, after the privacy rule.

A *transition* is one person's move from an origin cell to a destination cell, with a weight: 1
for an observed move (:func:`observed_transitions`), the predicted probability for a predicted
one (:func:`model_transitions`: for each observed move, the model's top-N next cells from the
same origin at the same time, rescaled to sum to one, so observed and predicted maps start from
the very same moves). :func:`summarize_flows` adds them up per (origin, destination) pair and
per cell (or per coarser H3 cell, or per district with :func:`trajmoe.analysis.zones.read_zones`),
and applies the privacy rule of :mod:`trajmoe.analysis.privacy` per slice of hours and day type,
predicted flows included, so that no two filter settings differ by fewer than ``k`` persons. Per-place
totals add up only the flows that are shown, and every summary says how many moves it could not
show and why (inside one place, under the rule, outside the districts).

*Arrivals by hour* (:func:`observed_arrivals`, :func:`model_arrivals`, :func:`summarize_arrivals`):
the same moves timed at their arrival (the local hour and weekday of the visit they arrive at),
observed next to the at-time task's guesses for each of them (the model told when the visit
happens). A place's arrivals are the sum of its (place, arrival band, day type) pieces of at least
``k`` persons, so two arrival-hour or day settings differ by whole pieces of >= k persons.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h3
import numpy as np
import pandas as pd

from trajmoe.analysis.predict import target_visits
from trajmoe.analysis.privacy import DEFAULT_K, HOUR_BAND, allowed, check_k, persons_per
from trajmoe.analysis.zones import Zones
from trajmoe.errors import InputDataError
from trajmoe.geo import cell_centres

if TYPE_CHECKING:  # torch (imported by dataset) costs ~2 s: the app's data pages never pay it
    from trajmoe.analysis.predict import Predictions
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
    """Expected moves from :func:`predict_next` rows: each visit's top-N, rescaled to sum to one.

    Hours and weekdays come from the rows' time stamps; :func:`model_transitions` takes them
    from the city itself, exactly as :func:`observed_transitions` does (the app uses that one)."""
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


def model_transitions(data: CityData, predictions: Predictions, *, top_n: int = DEFAULT_TOP_N) -> pd.DataFrame:
    """The model's expected moves for the very moves :func:`observed_transitions` counts.

    ``predictions`` is one :func:`~trajmoe.analysis.predict.predict` pass; each of its target
    visits gives one move (weight 1 spread over its top-N next cells), with the person, origin,
    local hour and weekday of the observed move into that visit. So with the same filters,
    observed and predicted maps start from the same moves (``FlowSummary.n_moves`` agree).
    """
    tr = predicted_transitions(predictions.table, top_n=top_n)
    n = len(tr) // max(len(predictions.targets), 1)
    origin = np.asarray(predictions.targets) - 1
    return tr.assign(hour=np.repeat(data.hour[origin], n), weekday=np.repeat(data.weekday[origin], n))


def snap_hours(hours: tuple[int, int]) -> tuple[int, int]:
    """``hours`` widened to whole :data:`~trajmoe.analysis.privacy.HOUR_BAND` bands (0-24 stays)."""
    start, end = int(hours[0]), int(hours[1])
    start = max(0, start - start % HOUR_BAND)
    end = min(24, end + (-end) % HOUR_BAND)
    return start, max(end, start + HOUR_BAND)


def filter_transitions(transitions: pd.DataFrame, *, hours: tuple[int, int] = (0, 24),
                       day: str = "all") -> pd.DataFrame:
    """Moves starting in ``hours`` [start, end) of the day, on ``all`` days, ``weekday`` or ``weekend``.

    ``hours`` are widened to whole bands (:func:`snap_hours`): a filter never cuts the day finer
    than the privacy rule's slices, so no two settings differ by less than a slice.
    """
    if day not in ("all", "weekday", "weekend"):
        raise InputDataError(f"day must be all, weekday or weekend, got {day!r}")
    hours = snap_hours(hours)
    h, w = transitions["hour"], transitions["weekday"]
    keep = (h >= hours[0]) & (h < hours[1])
    if day == "weekday":
        keep &= w < 5
    elif day == "weekend":
        keep &= w.isin([5, 6])
    return transitions[keep]


@dataclass
class FlowSummary:
    """Flows and per-place totals after the privacy rule (only what may be shown), and what was not.

    ``n_moves == flows.flow.sum() + moves_within + moves_hidden + moves_outside``: every move of
    the filter is shown in a flow or counted under one reason it is not.
    """

    flows: pd.DataFrame  # origin, destination, flow, n_users, o_lat, o_lon, d_lat, d_lon
    places: pd.DataFrame  # place, lat, lon, inflow, outflow, net, n_users
    hidden_flows: int  # origin -> destination pairs with moves, none of them shown
    hidden_places: int  # cells / districts with moves that no shown flow starts or ends at
    k: int
    n_moves: float = 0.0  # moves in the filter (predicted: expected moves, the same number)
    moves_within: float = 0.0  # moves that stay inside one place: not flows
    moves_hidden: float = 0.0  # moves in slices with fewer than k persons (see summarize_flows)
    moves_outside: float = 0.0  # moves with an end outside every district (districts only)

    @property
    def moves_shown(self) -> float:
        return float(self.flows["flow"].sum())


def cell_positions(cells: Iterable[str]) -> pd.DataFrame:
    """Centre lat/lon of H3 cells (index = cell)."""
    cells = pd.Index(pd.unique(np.asarray(list(cells), dtype=object)))
    latlng = cell_centres(cells)
    return pd.DataFrame({"lat": latlng[:, 0], "lon": latlng[:, 1]}, index=cells)


def parent_cells(cells: Iterable[str], resolution: int) -> np.ndarray:
    """The H3 parent of each cell at the coarser ``resolution`` (cells already that coarse stay)."""
    import h3

    cells = np.asarray(list(cells), dtype=object)
    codes, uniq = pd.factorize(cells)
    parents = np.array([c if h3.get_resolution(c) <= resolution else h3.cell_to_parent(c, resolution)
                        for c in uniq], dtype=object)
    return parents[codes] if len(cells) else np.array([], dtype=object)


def _day_type(weekday: np.ndarray) -> np.ndarray:
    """0 weekday, 1 weekend, 2 unknown: the day filter never splits a slice."""
    weekday = np.asarray(weekday)
    return np.where(weekday < 5, 0, np.where(weekday < 7, 1, 2))


def _kept_slices(moves: pd.DataFrame, k: int, *, by: tuple[str, ...] = ("origin", "destination"),
                 residual_of: np.ndarray | None = None) -> np.ndarray:
    """Per move: is its slice (the ``by`` places, hour band, day type) shown?

    A slice is shown when at least ``k`` distinct persons make it up. With ``residual_of`` (per
    move: already shown at the cell level), a slice of coarser places is also hidden when the
    moves in it the cell map does not show come from 1 to k - 1 persons: else "districts minus
    cells" would reveal them. ``by``: origin and destination for flows, destination for arrivals.
    """
    if not len(moves):
        return np.zeros(0, dtype=bool)
    key = moves[list(by)].assign(band=moves["hour"].to_numpy() // HOUR_BAND,
                                 day=_day_type(moves["weekday"].to_numpy()))
    persons = persons_per(key, moves["user_id"])
    ok = allowed(persons, k)
    if residual_of is not None:
        rest = ~residual_of
        left = persons_per(key[rest], moves["user_id"].to_numpy()[rest]).reindex(persons.index, fill_value=0)
        ok &= (left.to_numpy() == 0) | allowed(left, k)
    ok = pd.Series(ok, index=persons.index)
    return ok.reindex(pd.MultiIndex.from_frame(key)).to_numpy(dtype=bool)


def _shown_up_to(moves: pd.DataFrame, k: int, resolution: int, *, by: tuple[str, ...], shown: np.ndarray) -> np.ndarray:
    """Per move: shown on the map of H3 ``resolution``, given ``shown`` on the cell map.

    The levels between are applied in turn, each slice's rule counting against the level just
    below (:func:`_kept_slices` with ``residual_of``). Then the difference between any two
    levels is a sum of pieces of at least k persons: with the rule only against cells, "two
    levels up minus one level up" showed the moves a one-level-up map hides. Moves that stay
    inside one place of a level (flows only) are not shown there."""
    cells = pd.unique(moves[list(by)].to_numpy().ravel())
    finest = max((h3.get_resolution(c) for c in cells if h3.is_valid_cell(c)), default=resolution)
    level_moves = moves
    for level in range(finest - 1, resolution - 1, -1):
        level_moves = level_moves.assign(**{c: parent_cells(level_moves[c], level) for c in by})
        moving = (level_moves["origin"] != level_moves["destination"]).to_numpy() if len(by) == 2 \
            else np.ones(len(level_moves), dtype=bool)
        now = np.zeros(len(level_moves), dtype=bool)
        now[moving] = _kept_slices(level_moves[moving], k, by=by, residual_of=shown[moving])
        shown = now
    return shown


def summarize_flows(transitions: pd.DataFrame, *, k: int = DEFAULT_K, zones: Zones | None = None,
                    resolution: int | None = None) -> FlowSummary:
    """Add moves up per (origin, destination) and per place, then apply the privacy rule.

    Places are cells, their H3 parents at a coarser ``resolution``, or districts (``zones``).
    The rule is applied per *slice*: the moves of one origin -> destination pair in one
    :data:`~trajmoe.analysis.privacy.HOUR_BAND` of the day on one day type (weekday, weekend,
    unknown). A slice is shown only when at least ``k`` distinct persons make it up; a flow adds
    up its shown slices (it is hidden when none is shown). Every filter (hours in whole bands,
    weekdays / weekends) selects whole slices, so the difference between any two settings, e.g.
    hours 0-24 minus 0-21, is itself a sum of slices of at least ``k`` persons: differencing
    reveals nothing about fewer than ``k`` persons. Parent cells also hide a slice whose moves not
    shown one level finer come from fewer than ``k`` persons, level by level (:func:`_kept_slices`,
    :func:`_shown_up_to`). Districts (``zones``, with ``resolution`` or cells) add up only the
    slices shown on that level's map, each place in the district its centre lies in: whatever
    districts are drawn, they show nothing that map does not (a district flow can be smaller than
    the moves between its districts; the rest is counted as hidden).
    Places are the ends of the shown flows; their totals add up shown flows only. Moves that
    stay inside one place are not flows.
    """
    k = check_k(k)
    tr = transitions.reset_index(drop=True)
    n_moves = float(tr["weight"].sum())
    grouped = zones is not None or resolution is not None
    if grouped:
        cell_moves = tr[tr["origin"] != tr["destination"]]
        shown_on_cells = pd.Series(False, index=tr.index)
        shown_on_cells[cell_moves.index] = _kept_slices(cell_moves, k)
        if zones is not None:
            # Districts are the user's own file: two files drawn around one person ({A, C} and
            # {A, B}) would difference them out. So a district flow only adds up slices that the
            # map of ``resolution`` (cells when None) shows: it says nothing that map does not.
            if resolution is not None:
                shown_on_cells = pd.Series(_shown_up_to(tr, k, resolution, by=("origin", "destination"),
                                                        shown=shown_on_cells.to_numpy()), index=tr.index)
                tr = tr.assign(origin=parent_cells(tr["origin"], resolution),
                               destination=parent_cells(tr["destination"], resolution))
            tr = tr.assign(origin=tr["origin"].map(zones.of_cell), destination=tr["destination"].map(zones.of_cell))
            inside = tr["origin"].notna() & tr["destination"].notna()
        else:
            # Level by level: each level's rule counts against the level just below it, so that
            # "two levels up minus one level up" reveals no one either (_shown_up_to).
            shown_on_cells = pd.Series(_shown_up_to(tr, k, resolution + 1, by=("origin", "destination"),
                                                    shown=shown_on_cells.to_numpy()), index=tr.index)
            tr = tr.assign(origin=parent_cells(tr["origin"], resolution),
                           destination=parent_cells(tr["destination"], resolution))
            inside = pd.Series(True, index=tr.index)
        moves_outside = float(tr.loc[~inside, "weight"].sum())
        tr, shown_on_cells = tr[inside], shown_on_cells[inside]
    else:
        moves_outside = 0.0
    within = tr["origin"] == tr["destination"]
    moves = tr[~within]
    if zones is not None:
        shown = moves[shown_on_cells[~within].to_numpy()]
    else:
        residual = shown_on_cells[~within].to_numpy() if grouped else None
        shown = moves[_kept_slices(moves, k, residual_of=residual)] if len(moves) else moves
    pairs = moves[["origin", "destination"]].drop_duplicates()
    flows = shown.groupby(["origin", "destination"], sort=False)["weight"].sum().rename("flow").to_frame()
    flows["n_users"] = persons_per(shown[["origin", "destination"]], shown["user_id"]).reindex(flows.index)
    flows = flows.reset_index().sort_values("flow", ascending=False).reset_index(drop=True)
    ends = np.concatenate([tr["origin"].to_numpy(), tr["destination"].to_numpy()])
    everywhere = pd.unique(ends)
    pos = zones.position if zones is not None else cell_positions(everywhere)
    for end, col in (("o", "origin"), ("d", "destination")):
        flows[f"{end}_lat"] = pos["lat"].reindex(flows[col]).to_numpy()
        flows[f"{end}_lon"] = pos["lon"].reindex(flows[col]).to_numpy()
    # A person counts for a place when a shown move of theirs leaves from it or arrives at it.
    place_users = persons_per(np.concatenate([shown["origin"].to_numpy(), shown["destination"].to_numpy()]),
                              np.concatenate([shown["user_id"].to_numpy(), shown["user_id"].to_numpy()]))
    ok_places = place_users.index
    inflow = flows.groupby("destination")["flow"].sum()
    outflow = flows.groupby("origin")["flow"].sum()
    places = pd.DataFrame({"place": ok_places})
    places["lat"] = pos["lat"].reindex(ok_places).to_numpy()
    places["lon"] = pos["lon"].reindex(ok_places).to_numpy()
    places["inflow"] = inflow.reindex(ok_places, fill_value=0.0).to_numpy()
    places["outflow"] = outflow.reindex(ok_places, fill_value=0.0).to_numpy()
    places["net"] = places["inflow"] - places["outflow"]
    places["n_users"] = place_users.to_numpy()
    return FlowSummary(flows=flows, places=places, hidden_flows=int(len(pairs) - len(flows)),
                       hidden_places=int(len(everywhere) - len(ok_places)), k=k, n_moves=n_moves,
                       moves_within=float(tr.loc[within, "weight"].sum()),
                       moves_hidden=float(moves["weight"].sum() - shown["weight"].sum()), moves_outside=moves_outside)


# --------------------------------------------------------------------------- arrivals by hour
def _at_arrival(moves: pd.DataFrame, data: CityData, targets: np.ndarray) -> pd.DataFrame:
    """``moves`` (one or top-N rows per target visit, in target order) timed at their arrival:
    the local hour and weekday of the target visit itself, not of the visit they leave from."""
    t = np.asarray(targets)
    n = len(moves) // max(len(t), 1)
    return moves.assign(hour=np.repeat(data.hour[t], n), weekday=np.repeat(data.weekday[t], n))


def observed_arrivals(data: CityData, *, split: str = "test") -> pd.DataFrame:
    """The moves of :func:`observed_transitions`, with the hour and weekday of their arrival."""
    return _at_arrival(observed_transitions(data, split=split), data, target_visits(data, split))


def model_arrivals(data: CityData, predictions: Predictions, *, top_n: int = DEFAULT_TOP_N) -> pd.DataFrame:
    """The model's expected arrivals for the very moves :func:`observed_arrivals` counts.

    ``predictions`` is one :func:`~trajmoe.analysis.predict.predict` pass of a model set to the
    ``at-time`` task (trajmoe.city.tasks): each target visit's time is an input, so its top-N
    places answer "where does this person arrive at that hour". Each move spreads a weight of one
    over them (as :func:`model_transitions`); hour and weekday are those of the observed arrival.
    """
    return _at_arrival(predicted_transitions(predictions.table, top_n=top_n), data, predictions.targets)


@dataclass
class ArrivalSummary:
    """Arrivals per place after the privacy rule (only what may be shown), and what was not.

    ``n_moves == places.arrivals.sum() + moves_hidden``: every arrival of the filter is shown at
    its place or counted as hidden.
    """

    places: pd.DataFrame  # place, lat, lon, arrivals, n_users (persons of the shown pieces)
    hidden_places: int  # places with arrivals, none of them shown
    k: int
    n_moves: float = 0.0  # arrivals in the filter (predicted: expected arrivals, the same number)
    moves_hidden: float = 0.0  # arrivals in pieces with fewer than k persons

    @property
    def moves_shown(self) -> float:
        return float(self.places["arrivals"].sum())


def summarize_arrivals(arrivals: pd.DataFrame, *, k: int = DEFAULT_K, resolution: int | None = None) -> ArrivalSummary:
    """Add arrivals (:func:`observed_arrivals` or :func:`model_arrivals` rows, filtered by
    :func:`filter_transitions` on the arrival's hour and day) up per place, after the privacy rule.

    The rule is applied per *piece*: the arrivals at one place in one
    :data:`~trajmoe.analysis.privacy.HOUR_BAND` of the day on one day type. A piece is shown only
    when at least ``k`` distinct persons make it up, and a place shows the sum of its shown
    pieces. Filters select whole pieces, so any two settings (arrivals 0-24 minus 0-18, all days
    minus weekdays) differ by whole pieces of >= k persons. Places are cells or their H3 parents at
    a coarser ``resolution``; a coarser piece is also hidden when its arrivals the map one level
    finer does not show come from 1 to k - 1 persons (:func:`_shown_up_to`: no two levels differ
    by fewer than k persons).
    """
    k = check_k(k)
    tr = arrivals.reset_index(drop=True)
    by = ("destination",)
    residual = None
    if resolution is not None:
        residual = _shown_up_to(tr, k, resolution + 1, by=by, shown=_kept_slices(tr, k, by=by))
        tr = tr.assign(destination=parent_cells(tr["destination"], resolution))
    shown = tr[_kept_slices(tr, k, by=by, residual_of=residual)]
    per_place = shown.groupby("destination")["weight"].sum()
    users = persons_per(shown["destination"], shown["user_id"]).reindex(per_place.index)
    pos = cell_positions(per_place.index)
    places = pd.DataFrame({"place": per_place.index.to_numpy(), "lat": pos["lat"].to_numpy(),
                           "lon": pos["lon"].to_numpy(), "arrivals": per_place.to_numpy(),
                           "n_users": users.to_numpy()}).sort_values("arrivals", ascending=False)
    return ArrivalSummary(places=places.reset_index(drop=True), k=k,
                          hidden_places=int(tr["destination"].nunique() - len(places)),
                          n_moves=float(tr["weight"].sum()),
                          moves_hidden=float(tr["weight"].sum() - shown["weight"].sum()))


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
