"""What the model says about a city, in the aggregates planners read: next-cell predictions,
origin -> destination flows over H3 cells, and which routed expert each place and hour goes to.

* :func:`predict` / :func:`predict_next` - the top-k next cells (with probabilities) for every
  target visit, and the rank of the true one; the ``trajmoe predict`` verb writes the table.
* Flows. A *transition* is one person's move from an origin cell to a destination cell, with a
  weight: 1 for an observed move, the predicted probability for a predicted one (each visit's
  top-N next cells, rescaled to sum to one, so observed and predicted maps count the same number
  of moves). :func:`summarize_flows` adds them up per (origin, destination) pair and per cell
  (or per district, with :func:`read_zones`), and applies the privacy rule.
* Routing. A strided :func:`predict` pass also keeps each MoE layer's router probabilities at
  every visit it predicts from; :func:`routing_by_cell`, :func:`expert_category_matrix`,
  :func:`expert_hour_matrix` and :func:`describe_experts` turn them into maps, heatmaps and text.

Privacy rule: a cell (or district) that fewer than ``k`` distinct persons contribute to, and a flow
with fewer than ``k`` distinct persons, is removed from everything shown or exported, predicted
flows included; the functions return how many were hidden. "Persons" are the ``user_id`` values
of the data: people for check-ins and GPS, trips for trip data, bikes for bike-share stations
(:func:`counted_unit`). Per-cell totals add up only the flows that are shown, so hidden flows
cannot be recovered by subtraction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h3
import numpy as np
import pandas as pd

from trajmoe.errors import InputDataError
from trajmoe.pois.categories import CATEGORIES

if TYPE_CHECKING:  # torch (imported by dataset) costs ~2 s: the app's data pages never pay it
    from trajmoe.city.batch import CityTensors
    from trajmoe.city.data import CityData

log = logging.getLogger(__name__)

DEFAULT_MIN_USERS = 5  # k of the privacy rule
DEFAULT_TOP_N = 5  # predicted next cells per visit that make up the predicted flows
Progress = Callable[[int, int], None]  # (done, total) -> None

CATEGORY_LABELS: dict[str, str] = {c: c.replace("_", " ") for c in CATEGORIES} | {
    "food_drink": "food & drink", "parks_leisure": "parks & leisure",
    "culture_tourism": "culture & tourism", "office_work": "offices & work",
}
_UNITS = {"trips": "trips", "stations": "bikes"}
_DAY_PARTS = ((0, 6, "at night"), (6, 11, "in the morning"), (11, 14, "around midday"),
              (14, 18, "in the afternoon"), (18, 23, "in the evening"), (23, 24, "late at night"))


def counted_unit(kind: str) -> str:
    """What the privacy rule counts for a data kind: people, trips or bikes."""
    return _UNITS.get(kind, "people")


def _model_max_len(model, max_len: int | None) -> int:
    from trajmoe.city.data import DEFAULT_MAX_LEN

    cap = getattr(getattr(model, "config", None), "max_len", DEFAULT_MAX_LEN)
    return min(max_len or cap, cap)


def target_visits(data: CityData, split: str = "test") -> np.ndarray:
    """Visit indices whose next-location is predicted: a split's targets, or ``all`` of them."""
    from trajmoe.city.data import SPLITS

    if split == "all":
        return np.flatnonzero(data.seq > 0)
    if split not in SPLITS:
        raise InputDataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)} or all.")
    return data.targets(split)


def _strided_windows(data: CityData, targets: np.ndarray, max_len: int, stride: int):
    """Windows of consecutive visits whose LAST ``stride`` positions are origins of targets.

    Returns (windows, positions, targets): per window its visit indices, the window positions to
    read, and the target predicted at each. Every origin sees at least ``max_len - stride + 1``
    visits of context, or all its user's earlier visits when there are fewer.
    """
    origins = np.sort(np.asarray(targets)) - 1
    user = data.user_of_visit[origins]
    windows, positions, covered = [], [], []
    i = len(origins) - 1
    while i >= 0:
        end, first = origins[i], data.user_start[user[i]]
        start = max(first, end - max_len + 1)
        low = start if start == first else end - stride + 1
        j = i
        while j >= 0 and user[j] == user[i] and origins[j] >= low:
            j -= 1
        windows.append(np.arange(start, end + 1))
        positions.append(origins[j + 1 : i + 1] - start)
        covered.append(origins[j + 1 : i + 1] + 1)
        i = j
    return windows, positions, covered


def iter_next_scores(model, data: CityData, targets: np.ndarray, *, city: CityTensors | None = None,
                     stride: int | None = None, max_len: int | None = None, batch_size: int = 256,
                     progress: Progress | None = None):
    """Yield ``(chunk, scores, router)`` for the target visits ``targets``.

    ``scores`` (B, N) float32 are the next-cell logits of each target's predecessor (``softmax``
    gives probabilities); ``router`` (B, n_layers, E) the router probabilities of that
    predecessor visit, or None (exact passes, models without routed experts).

    ``stride=None`` is the protocol exactly (DESIGN.md §Protocol): each target's context is up to
    ``max_len`` earlier visits of its user, one sequence per target. ``stride=s`` reads the last
    ``s`` positions of each sequence instead, so one sequence serves ``s`` targets (about ``s``
    times less compute) and a target's context is at least ``max_len - s + 1`` visits (or all
    of its user's earlier visits): the app uses it to stay interactive. ``city`` defaults to
    features from all training visits. Chunks come in no particular order.
    """
    import torch

    from trajmoe.city.data import iter_batches

    city = city if city is not None else data.city_tensors()
    max_len = _model_max_len(model, max_len)
    targets = np.asarray(targets)
    done = 0
    if stride is None:
        for chunk in iter_batches(targets, batch_size):
            with torch.no_grad():
                scores = model.score_last(data.eval_batch(chunk, max_len=max_len), city)  # (B, N)
            done += len(chunk)
            if progress is not None:
                progress(done, len(targets))
            yield chunk, scores.float(), None
        return
    if not 1 <= stride <= max_len:
        raise InputDataError(f"stride must be in 1..{max_len}, got {stride}")
    windows, positions, covered = _strided_windows(data, targets, max_len, stride)
    per_batch = max(1, batch_size // 4)  # sequences per pass (each up to max_len visits)
    for group in iter_batches(list(range(len(windows))), per_batch):
        with torch.no_grad():
            out = model(data.window_batch([windows[w] for w in group]), city, targets=False)
        rows = torch.from_numpy(np.concatenate([np.full(len(positions[w]), b) for b, w in enumerate(group)]))
        cols = torch.from_numpy(np.concatenate([positions[w] for w in group]))
        layers = getattr(out, "router_probs", None)
        router = torch.stack([p[rows, cols] for p in layers], dim=1) if layers else None  # (B, n_layers, E)
        chunk = np.concatenate([covered[w] for w in group])
        done += len(chunk)
        if progress is not None:
            progress(done, len(targets))
        yield chunk, out.logits[rows, cols].float(), router


@dataclass
class Predictions:
    """One model pass over a split's target visits."""

    table: pd.DataFrame  # predict_next rows: user_id, timestamp, cell, rank, next_cell, prob
    targets: np.ndarray  # (n,) the target visits, ascending
    ranks: np.ndarray  # (n,) pessimistic rank of each target's true cell (inf outside the candidates)
    routing: Routing | None  # router probabilities at each target's predecessor (strided passes)

    def metrics(self, data: CityData, split: str = "test") -> dict:
        """Acc@1/5/10, MRR, NDCG@10 over this pass's targets of ``split``."""
        from trajmoe.city.data import SPLITS
        from trajmoe.train.metrics import metrics_from_ranks

        return metrics_from_ranks(self.ranks[data.split[self.targets] == SPLITS.index(split)])


def predict(model, data: CityData, *, top_k: int = 10, split: str = "test", city: CityTensors | None = None,
            stride: int | None = None, max_len: int | None = None, batch_size: int = 256,
            progress: Progress | None = None) -> Predictions:
    """Top-k next cells of every target's predecessor, the rank of each true next cell and (with
    ``stride``) the routing of each predecessor visit, from one pass (see :func:`iter_next_scores`)."""
    import torch

    from trajmoe.train.metrics import target_ranks

    if top_k < 1:
        raise InputDataError(f"top_k must be >= 1, got {top_k}: e.g. --top-k 10")
    targets = target_visits(data, split)
    k = min(top_k, data.n_cells)
    order, idx, prob, ranks, router = [], [], [], [], []
    for chunk, scores, probs in iter_next_scores(model, data, targets, city=city, stride=stride, max_len=max_len,
                                                 batch_size=batch_size, progress=progress):
        p, i = scores.softmax(dim=-1).topk(k, dim=-1)  # (B, k)
        order.append(chunk)
        idx.append(i.numpy())
        prob.append(p.numpy())
        ranks.append(target_ranks(scores, torch.from_numpy(data.cell_idx[chunk])).numpy())
        if probs is not None:
            router.append(probs.numpy())
    chunk = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    sort = np.argsort(chunk, kind="stable")
    chunk = chunk[sort]
    origin = np.repeat(chunk - 1, k)
    v = data.visits
    table = pd.DataFrame({
        "user_id": v["user_id"].to_numpy()[origin],
        "timestamp": pd.to_datetime(v["timestamp"]).to_numpy()[origin],
        "cell": v["cell"].to_numpy()[origin],
        "rank": np.tile(np.arange(1, k + 1), len(chunk)),
        "next_cell": data.cells["cell"].to_numpy()[np.concatenate(idx)[sort].reshape(-1)] if idx else [],
        "prob": np.concatenate(prob)[sort].reshape(-1) if prob else np.zeros(0, dtype=np.float32),
    })
    routing = None
    if router:
        origins = chunk - 1
        routing = _routing(data, city if city is not None else data.city_tensors(), origins,
                           np.concatenate(router)[sort])
    return Predictions(table=table, targets=chunk, ranks=np.concatenate(ranks)[sort] if ranks else np.zeros(0),
                       routing=routing)


def predict_next(model, data: CityData, *, top_k: int = 10, split: str = "test", city: CityTensors | None = None,
                 stride: int | None = None, max_len: int | None = None, batch_size: int = 256,
                 progress: Progress | None = None) -> pd.DataFrame:
    """Top-k next cells of every target visit's predecessor (``split``: test, val or all).

    Returns
    -------
    pandas.DataFrame
        One row per (visit, rank), in visit order: ``user_id``, ``timestamp`` and ``cell`` of the
        visit the prediction is made at, ``rank`` (1 = most likely), ``next_cell``, ``prob``.
    """
    return predict(model, data, top_k=top_k, split=split, city=city, stride=stride, max_len=max_len,
                   batch_size=batch_size, progress=progress).table


# --------------------------------------------------------------------------- transitions
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


# --------------------------------------------------------------------------- zones
@dataclass
class Zones:
    """Districts to add flows up to: which district each cell centre lies in, and where they are."""

    of_cell: pd.Series  # cell -> district name (cells outside every district are absent)
    position: pd.DataFrame  # index district name -> lat, lon (a point inside it)
    geojson: dict  # the district polygons, for drawing


def pooled_histogram(values: Iterable[int], *, k: int = DEFAULT_MIN_USERS) -> pd.DataFrame:
    """Histogram of one number per person (e.g. visits per person) in which every bar holds at
    least ``k`` persons, so no bar singles anyone out (a plain 40-bin histogram shows the one
    heaviest user on their own). Persons are sorted by value and cut into bars of >= k; persons
    with the same value share a bar; a remainder under k joins the last bar. Columns ``low``,
    ``high`` (the bar covers low..high; the last bar is open-ended, so the largest
    value is never shown: high is <NA>), ``label`` ("3-5", "61+"), ``persons``.
    """
    v = np.sort(np.asarray(list(values), dtype=np.int64))
    n = len(v)
    if n < k:
        return pd.DataFrame(columns=["low", "high", "label", "persons"])
    n_bars = min(40, n // k)
    rows, start = [], 0  # (lowest value, persons) per bar
    for i in range(1, n_bars + 1):
        end = max(start + k, round(n * i / n_bars))  # about equal bars, never under k
        end = int(np.searchsorted(v, v[min(end, n) - 1], side="right"))  # equal values share a bar
        if n - end < k:  # a remainder under k joins this bar
            end = n
        rows.append((int(v[start]), end - start))
        start = end
        if start == n:
            break
    low = [r[0] for r in rows]
    high = [nxt - 1 for nxt in low[1:]] + [None]  # up to the next bar: no bar shows anyone's exact maximum
    label = [f"{a}+" if b is None else (f"{a}" if a == b else f"{a}-{b}") for a, b in zip(low, high)]
    return pd.DataFrame({"low": low, "high": pd.array(high, dtype="Int64"), "label": label,
                         "persons": [r[1] for r in rows]})


def read_zones(source, *, cells: Iterable[str], name: str = "districts.geojson") -> Zones:
    """Read a GeoJSON of districts (path or bytes) and place each cell centre in one of them."""
    import io

    import geopandas as gpd

    try:
        frame = gpd.read_file(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputDataError(f"Cannot read {name} as GeoJSON ({exc}): upload a .geojson file of district polygons.") from exc
    frame = frame[frame.geometry.notna() & frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise InputDataError(f"{name} has no polygons: upload a GeoJSON whose features are district polygons.")
    frame = frame.to_crs(4326) if frame.crs is not None else frame.set_crs(4326)
    label = next((c for c in ("name", "NAME", "Name", "district", "zone", "id") if c in frame.columns), None)
    names = frame[label].astype(str) if label else pd.Series([f"district {i + 1}" for i in range(len(frame))])
    frame = frame.assign(zone=names.to_numpy()).dissolve(by="zone").reset_index()
    cells = pd.Index(pd.unique(np.asarray(list(cells), dtype=object)))
    latlng = np.array([h3.cell_to_latlng(c) for c in cells]).reshape(-1, 2)
    points = gpd.GeoDataFrame({"cell": cells}, geometry=gpd.points_from_xy(latlng[:, 1], latlng[:, 0]), crs=4326)
    hit = gpd.sjoin(points, frame[["zone", "geometry"]], predicate="within", how="inner").drop_duplicates("cell")
    inside = frame.representative_point()
    position = pd.DataFrame({"lat": inside.y.to_numpy(), "lon": inside.x.to_numpy()}, index=frame["zone"])
    return Zones(of_cell=hit.set_index("cell")["zone"], position=position,
                 geojson=json.loads(frame[["zone", "geometry"]].to_json()))


# --------------------------------------------------------------------------- flows + privacy
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
    latlng = np.array([h3.cell_to_latlng(c) for c in cells]).reshape(-1, 2)
    return pd.DataFrame({"lat": latlng[:, 0], "lon": latlng[:, 1]}, index=cells)


def summarize_flows(transitions: pd.DataFrame, *, k: int = DEFAULT_MIN_USERS, zones: Zones | None = None) -> FlowSummary:
    """Add moves up per (origin, destination) and per place, then apply the privacy rule.

    A place (cell, or district with ``zones``) is kept when at least ``k`` distinct persons move
    from or to it; a flow when at least ``k`` distinct persons contribute to it and both ends are
    kept. Moves that stay inside one place are not flows. Totals add up the kept flows only.
    """
    if k < 1:
        raise InputDataError(f"the privacy threshold k must be >= 1, got {k}")
    tr = transitions
    if zones is not None:
        tr = tr.assign(origin=tr["origin"].map(zones.of_cell), destination=tr["destination"].map(zones.of_cell))
        tr = tr.dropna(subset=["origin", "destination"])
    # Distinct persons = rows left after dropping duplicates (much faster than groupby nunique).
    ends = pd.concat([tr[["user_id", "origin"]].set_axis(["user_id", "place"], axis=1),
                      tr[["user_id", "destination"]].set_axis(["user_id", "place"], axis=1)])
    place_users = ends.drop_duplicates().groupby("place").size()
    ok_places = place_users.index[place_users >= k]
    moves = tr[tr["origin"] != tr["destination"]]
    flows = moves.groupby(["origin", "destination"], sort=False)["weight"].sum().rename("flow").to_frame()
    pairs = moves[["origin", "destination", "user_id"]].drop_duplicates()
    flows["n_users"] = pairs.groupby(["origin", "destination"]).size().reindex(flows.index)
    flows = flows.reset_index()
    keep = (flows["n_users"] >= k) & flows["origin"].isin(ok_places) & flows["destination"].isin(ok_places)
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


# --------------------------------------------------------------------------- routing
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

    def private(self, k: int = DEFAULT_MIN_USERS) -> tuple[Routing, int]:
        """Only visits in cells with >= k distinct persons; also returns how many cells were hidden."""
        users = pd.DataFrame({"cell": self.cell, "user": self.user}).groupby("cell")["user"].nunique()
        ok = users.index[users >= k]
        return self.subset(np.isin(self.cell, ok)), int((users < k).sum())


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
    users = pd.Series(routing.user).groupby(routing.cell).nunique()
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
        if not routing.poi_share.any():
            where = "cells of a city without known POIs"
        elif rich:
            where = "mostly cells rich in " + " and ".join(rich)
        else:
            where = "cells with a POI mix close to the city average"
        text = f"Expert {e + 1} ({share:.0%} of routing): {where}; used most {_peak_hours(p[:, e], routing.hour)}"
        if known and weekend.any() and (~weekend).any():
            ratio = p[weekend, e].mean() / max(p[~weekend, e].mean(), 1e-12)
            if ratio > 1.15:
                text += ", more on weekends"
            elif ratio < 0.87:
                text += ", more on weekdays"
        texts.append(text + ".")
    return texts
