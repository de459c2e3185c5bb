"""Predictions, flows, the privacy rule, districts, exports and routing shares (trajmoe/analysis)."""

from __future__ import annotations

import io
import json

import h3
import numpy as np
import pandas as pd
import pytest
import torch

from trajmoe.analysis.flows import (
    filter_transitions,
    flows_csv,
    flows_geojson,
    model_transitions,
    observed_transitions,
    predicted_transitions,
    summarize_flows,
)
from trajmoe.analysis.predict import iter_next_scores, predict, predict_next
from trajmoe.analysis.privacy import counted_unit
from trajmoe.analysis.routing import (
    Routing,
    describe_experts,
    expert_category_matrix,
    expert_hour_matrix,
    routing_by_cell,
)
from trajmoe.analysis.zones import read_zones
from trajmoe.city.data import CityData
from trajmoe.train.evaluate import rank_targets


@pytest.fixture(scope="module")
def city(small_helsinki) -> CityData:
    """60 synthetic Helsinki people over real POIs, H3 resolution 9 (a few dozen cells)."""
    return small_helsinki


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def predictions(model, city) -> pd.DataFrame:
    return predict_next(model, city, top_k=5)


def test_predict_next_rows(model, city, predictions):
    targets = city.targets("test")
    assert list(predictions.columns) == ["user_id", "timestamp", "cell", "rank", "next_cell", "prob"]
    assert len(predictions) == 5 * len(targets)
    per_visit = predictions["prob"].to_numpy().reshape(-1, 5)
    assert (np.diff(per_visit, axis=1) <= 1e-7).all()  # ranks in order of probability
    assert (per_visit.sum(axis=1) <= 1 + 1e-5).all()
    assert set(predictions["next_cell"]) <= set(city.cells["cell"])
    origins = predictions[predictions["rank"] == 1]
    assert (origins["cell"].to_numpy() == city.visits["cell"].to_numpy()[targets - 1]).all()
    assert (origins["user_id"].to_numpy() == city.visits["user_id"].to_numpy()[targets - 1]).all()


def test_predict_is_the_protocol_from_one_pass_per_person(model, city):
    """predict scores every target from one pass per person, exactly as its own context would."""
    exact = predict(model, city, top_k=3)
    protocol = rank_targets(model, city, city.city_tensors(), city.targets("test"))
    np.testing.assert_array_equal(exact.targets, city.targets("test"))
    np.testing.assert_array_equal(exact.ranks, protocol)
    # Each target alone, from only its last `reach` visits (one sequence per target): same scores.
    targets = city.targets("test")[::7]
    alone = model.score_last(city.eval_batch(targets, max_len=model.reach), city.city_tensors())
    together = {int(t): row for chunk, scores, _ in iter_next_scores(model, city, targets)
                for t, row in zip(chunk, scores)}
    torch.testing.assert_close(torch.stack([together[int(t)] for t in targets]), alone, atol=2e-5, rtol=1e-5)
    # One pass over every visit serves any split's metrics.
    everything = predict(model, city, top_k=3, split="all")
    assert everything.metrics(city, "test") == exact.metrics(city, "test")


def _users_per_place(transitions: pd.DataFrame) -> pd.Series:
    ends = pd.concat([transitions[["user_id", "origin"]].set_axis(["u", "p"], axis=1),
                      transitions[["user_id", "destination"]].set_axis(["u", "p"], axis=1)])
    return ends.groupby("p")["u"].nunique()


@pytest.mark.parametrize("which", ["observed", "predicted"])
@pytest.mark.parametrize("k", [2, 5, 12])
def test_no_flow_or_place_under_k_people_is_shown(city, predictions, which, k):
    tr = observed_transitions(city) if which == "observed" else predicted_transitions(predictions, top_n=3)
    summary = summarize_flows(tr, k=k)
    moves = tr[tr["origin"] != tr["destination"]]
    truth = moves.groupby(["origin", "destination"])["user_id"].nunique()
    place_users = _users_per_place(tr)
    for row in summary.flows.itertuples():  # persons of the flow's shown slices (hours x day type)
        assert truth[(row.origin, row.destination)] >= row.n_users >= k
        assert place_users[row.origin] >= k and place_users[row.destination] >= k
    assert (summary.places["n_users"] >= k).all()
    assert summary.hidden_flows == len(truth) - len(summary.flows)
    assert summary.hidden_places == len(place_users) - len(summary.places)
    # Every move is shown or counted under one reason it is not.
    assert summary.n_moves == pytest.approx(tr["weight"].sum())
    assert summary.n_moves == pytest.approx(summary.moves_shown + summary.moves_within + summary.moves_hidden)
    assert summary.hidden_flows > 0  # the small sample has rare flows: the rule must bite
    # Totals add up the shown flows only (hidden ones cannot be recovered by subtraction).
    assert summary.places["inflow"].sum() == pytest.approx(summary.flows["flow"].sum())
    assert (summary.places["net"] == summary.places["inflow"] - summary.places["outflow"]).all()
    # Exports carry exactly the shown flows.
    exported = json.loads(flows_geojson(summary, label=which))
    assert len(exported["features"]) == len(summary.flows)
    assert all(f["properties"]["n_users"] >= k for f in exported["features"])
    assert len(pd.read_csv(io.StringIO(flows_csv(summary)))) == len(summary.flows)


def test_predicted_flows_count_the_same_moves_as_observed(model, city, predictions):
    observed = observed_transitions(city)
    predicted = predicted_transitions(predictions, top_n=5)
    assert predicted["weight"].sum() == pytest.approx(observed["weight"].sum())
    assert summarize_flows(observed, k=1).hidden_flows == 0


@pytest.mark.parametrize("hours, day", [((0, 24), "all"), ((6, 12), "weekday"), ((18, 24), "weekend")])
def test_observed_and_predicted_maps_start_from_the_same_moves(model, city, hours, day):
    """What the Flows page compares: the same persons, origins, hours and days on both sides, so
    the moves in the filter agree to the move; each side accounts for every one of them."""
    everything = predict(model, city, top_k=5, split="all")
    observed = observed_transitions(city, split="all")
    predicted = model_transitions(city, everything, top_n=3)
    per_move = predicted.iloc[::3]
    for col in ("user_id", "origin", "hour", "weekday"):
        np.testing.assert_array_equal(per_move[col].to_numpy(), observed[col].to_numpy())
    obs = summarize_flows(filter_transitions(observed, hours=hours, day=day), k=5)
    pred = summarize_flows(filter_transitions(predicted, hours=hours, day=day), k=5)
    assert obs.n_moves == pytest.approx(pred.n_moves) and obs.n_moves > 0
    for s in (obs, pred):
        assert s.n_moves == pytest.approx(s.moves_shown + s.moves_within + s.moves_hidden)


def test_filters(city):
    tr = observed_transitions(city)
    morning = filter_transitions(tr, hours=(6, 12))
    assert morning["hour"].between(6, 11).all() and len(morning) < len(tr)
    # Hours are widened to whole 6-hour bands (the privacy rule's slices): 7-10 means 6-12.
    assert len(filter_transitions(tr, hours=(7, 10))) == len(morning)
    weekend = filter_transitions(tr, day="weekend")
    weekday = filter_transitions(tr, day="weekday")
    assert weekend["weekday"].isin([5, 6]).all() and (weekday["weekday"] < 5).all()
    assert len(weekend) + len(weekday) == len(tr)


def test_districts(city, tmp_path):
    """Two districts split the area west/east; flows between them respect the rule too."""
    lat, lon = city.visits["lat"], city.visits["lon"]
    mid = float(lon.median())
    s, n, w, e = lat.min() - 0.01, lat.max() + 0.01, lon.min() - 0.01, lon.max() + 0.01
    def square(x0, x1):
        return {"type": "Polygon", "coordinates": [[[x0, s], [x1, s], [x1, n], [x0, n], [x0, s]]]}
    geojson = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "West"}, "geometry": square(w, mid)},
        {"type": "Feature", "properties": {"name": "East"}, "geometry": square(mid, e)}]}
    path = tmp_path / "districts.geojson"
    path.write_text(json.dumps(geojson))
    zones = read_zones(str(path), cells=city.visits["cell"])
    assert set(zones.of_cell) == {"West", "East"}
    tr = observed_transitions(city)
    summary = summarize_flows(tr, k=5, zones=zones)
    assert set(summary.flows["origin"]) <= {"West", "East"}
    assert (summary.flows["n_users"] >= 5).all()
    crossing = tr[tr["origin"].map(zones.of_cell) != tr["destination"].map(zones.of_cell)]
    assert summary.flows["flow"].sum() + summary.moves_hidden == pytest.approx(len(crossing))
    assert summary.moves_within + len(crossing) == len(tr) and summary.moves_outside == 0
    with pytest.raises(ValueError, match="GeoJSON"):
        read_zones(b"not json", cells=city.visits["cell"])


def test_routing(model, city):
    routing = predict(model, city, split="all").routing
    origins = np.flatnonzero(city.seq > 0) - 1  # every visit a next visit is predicted from
    assert routing.probs.shape == (int((city.cell_idx[origins] >= 0).sum()), 2, 8)
    np.testing.assert_allclose(routing.probs.sum(-1), 1.0, atol=1e-5)
    private, hidden = routing.private(5)
    users = pd.Series(routing.user).groupby(routing.cell).nunique()
    assert hidden == int((users < 5).sum()) and hidden > 0
    by_cell = routing_by_cell(private, layer=1)
    assert (by_cell["n_users"] >= 5).all()
    shares = by_cell[[f"expert_{e}" for e in range(1, 9)]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-5)
    assert (by_cell["dominant"] == shares.argmax(1) + 1).all()
    assert expert_category_matrix(private).shape == (8, 20)
    assert expert_hour_matrix(private).shape == (8, 168)
    texts = describe_experts(private)
    assert len(texts) == 8 and all(t.startswith(f"Expert {e + 1} (") for e, t in enumerate(texts))


def test_expert_text_reads_the_data():
    """An expert that takes the food-heavy evening visits is described as such."""
    n = 400
    rng = np.random.default_rng(0)
    poi = np.zeros((n, 20))
    food = np.arange(n) < n // 2
    poi[food, 0] = 1.0  # food & drink cells
    poi[~food, 12] = 1.0  # office cells
    hour = np.where(food, rng.integers(19, 23, n), rng.integers(8, 12, n))
    probs = np.zeros((n, 1, 2), dtype=np.float32)
    probs[:, 0, 0] = np.where(food, 0.9, 0.1)
    probs[:, 0, 1] = 1 - probs[:, 0, 0]
    routing = Routing(probs=probs, cell=np.array([h3.latlng_to_cell(60.17, 24.94, 9)] * n),
                      user=np.array([f"u{i % 50}" for i in range(n)]), hour=hour,
                      weekday=np.zeros(n, dtype=np.int64), poi_share=poi)
    first, second = describe_experts(routing)
    assert "food & drink" in first and "evening" in first
    assert "offices & work" in second and "morning" in second


def test_counted_unit():
    assert counted_unit("checkins") == "people" and counted_unit("gps") == "people"
    assert counted_unit("trips") == "trips" and counted_unit("stations") == "bikes"
