"""The privacy rule: no cell, district or flow that fewer than k distinct persons contribute to
leaves the app (maps, tables, downloads), and the number hidden is reported.

Crafted data puts a secret place and secret flows at exactly k - 1 persons (the most a rule can
be off by) next to public ones at exactly k. The library functions are checked one by one
(observed and predicted flows, per-place totals, districts, GeoJSON/CSV exports, routing maps,
scenario tables); then the app itself is driven with an upload in which k - 1 persons visit a
remote place, and every map layer, table and text of every page is searched for it.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import pytest

from trajmoe.analysis.flows import (
    filter_transitions,
    flows_csv,
    flows_geojson,
    predicted_transitions,
    snap_hours,
    summarize_flows,
)
from trajmoe.analysis.privacy import HOUR_BAND, pooled_histogram
from trajmoe.analysis.routing import Routing, describe_experts, expert_hour_matrix, routing_by_cell
from trajmoe.analysis.scenario import ScenarioResult
from trajmoe.analysis.zones import Zones
from trajmoe.errors import InputDataError

K = 5
RES = 9
PLACES = {"A": (60.170, 24.940), "B": (60.176, 24.952), "C": (60.163, 24.930), "S": (60.185, 24.990)}
CELL = {name: h3.latlng_to_cell(lat, lon, RES) for name, (lat, lon) in PLACES.items()}


def moves(origin: str, destination: str, users: list[str], *, repeat: int = 1, hour: int = 9) -> list[dict]:
    return [{"user_id": u, "origin": CELL[origin], "destination": CELL[destination], "weight": 1.0,
             "hour": hour, "weekday": 2} for u in users for _ in range(repeat)]


def people(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def transitions() -> pd.DataFrame:
    """Public: A->B by 10 persons, B->C by exactly K. Secret (K - 1 persons): A->C between public
    places, A->S to a place nobody else visits, and 50 moves B->A by one tireless person."""
    rows = (moves("A", "B", people("ab", 10)) + moves("B", "C", people("bc", K))
            + moves("A", "C", people("ac", K - 1)) + moves("A", "S", people("as", K - 1))
            + moves("B", "A", ["tireless"], repeat=50) + moves("C", "C", people("stay", 2)))
    return pd.DataFrame(rows)


def secret_free(text: str) -> None:
    assert CELL["S"] not in text
    lat, lon = PLACES["S"]
    assert f"{lat:.3f}" not in text or f"{lon:.3f}" not in text


def test_flows_places_totals_and_exports_hide_everything_under_k(transitions):
    summary = summarize_flows(transitions, k=K)
    shown = set(zip(summary.flows["origin"], summary.flows["destination"]))
    assert shown == {(CELL["A"], CELL["B"]), (CELL["B"], CELL["C"])}  # exactly K persons is enough
    assert summary.hidden_flows == 3  # A->C, A->S, B->A (50 moves but one person)
    assert set(summary.places["place"]) == {CELL["A"], CELL["B"], CELL["C"]}
    assert summary.hidden_places == 1  # S
    assert (summary.flows["n_users"] >= K).all() and (summary.places["n_users"] >= K).all()
    # per-place totals count only shown flows: A's departures are the 10 to B, not 10 + 4 + 4
    places = summary.places.set_index("place")
    assert places.loc[CELL["A"], "outflow"] == 10 and places.loc[CELL["A"], "inflow"] == 0
    assert places.loc[CELL["B"], "inflow"] == 10 and places.loc[CELL["B"], "outflow"] == K
    assert places.loc[CELL["C"], "inflow"] == K
    assert places["inflow"].sum() == summary.flows["flow"].sum() == places["outflow"].sum()
    for text in (flows_geojson(summary, label="observed"), flows_csv(summary), summary.places.to_csv()):
        secret_free(text)
    exported = json.loads(flows_geojson(summary, label="observed"))
    assert exported["properties"]["hidden_flows"] == 3 and exported["properties"]["privacy_k"] == K
    assert len(exported["features"]) == 2
    csv = pd.read_csv(io.StringIO(flows_csv(summary)))
    assert set(zip(csv["origin"], csv["destination"])) == shown


@pytest.mark.parametrize("k", [1, 2, K, K + 1, 11])
def test_the_rule_holds_at_every_k(transitions, k):
    summary = summarize_flows(transitions, k=k)
    moved = transitions[transitions["origin"] != transitions["destination"]]
    persons = moved.groupby(["origin", "destination"])["user_id"].nunique()
    places = set(summary.places["place"])
    for row in summary.flows.itertuples():
        assert persons[(row.origin, row.destination)] >= k and {row.origin, row.destination} <= places
    assert summary.hidden_flows == len(persons) - len(summary.flows)
    assert (summary.places["n_users"] >= k).all()


@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("n", [0, 4, 5, 9, 37, 350, 5000])
def test_visits_per_person_bars_hold_k_persons_and_hide_the_maximum(n, k):
    values = np.random.default_rng(n * 31 + k).zipf(1.6, n)
    if n:
        values[0] = 123_457  # one person with an exact, unusual count
    bars = pooled_histogram(values, k=k)
    if n < k:
        assert bars.empty
        return
    assert (bars["persons"] >= k).all() and bars["persons"].sum() == n  # nobody dropped, nobody alone
    assert len(bars) <= 40
    assert pd.isna(bars["high"].iloc[-1]) and bars["label"].iloc[-1].endswith("+")
    if k > 1:  # the outlier's count never shows (k = 1 is no privacy rule)
        assert not any("123457" in label for label in bars["label"])
    lows = bars["low"].to_numpy()
    assert (np.diff(lows) > 0).all()  # bars cover disjoint, increasing ranges
    for low, high, persons in bars[["low", "high", "persons"]].itertuples(index=False):
        inside = (values >= low) & (values <= (np.inf if pd.isna(high) else high))
        assert inside.sum() == persons


def test_districts_under_k_are_hidden(transitions):
    zones = Zones(of_cell=pd.Series({CELL["A"]: "Centre", CELL["B"]: "Centre", CELL["C"]: "South",
                                     CELL["S"]: "Far away"}),
                  position=pd.DataFrame({"lat": [60.17, 60.16, 60.19], "lon": [24.94, 24.93, 24.99]},
                                        index=["Centre", "South", "Far away"]),
                  geojson={"type": "FeatureCollection", "features": []})
    summary = summarize_flows(transitions, k=K, zones=zones)
    assert "Far away" not in set(summary.places["place"])
    assert "Far away" not in flows_csv(summary) + flows_geojson(summary, label="districts")
    # Centre -> South is bc (K persons, shown on the cell map) + ac (K - 1, hidden there). A
    # district flow adds up only what the cell map shows: bc's K moves; "districts minus cells"
    # shows nothing, however the districts are drawn.
    assert summary.flows[["origin", "destination", "flow"]].to_numpy().tolist() == [["Centre", "South", K]]
    assert summary.hidden_flows == 1 and summary.moves_hidden == K - 1 + K - 1  # ac, and Centre -> Far away
    # One more person on A -> C: shown on the cell map as well, nothing left to reveal.
    summary = summarize_flows(pd.concat([transitions, pd.DataFrame(moves("A", "C", ["ac_extra"]))]), k=K, zones=zones)
    assert set(zip(summary.flows["origin"], summary.flows["destination"])) == {("Centre", "South")}
    assert summary.flows["n_users"].tolist() == [2 * K] and summary.flows["flow"].tolist() == [2 * K]
    assert summary.n_moves == summary.moves_shown + summary.moves_within + summary.moves_hidden + summary.moves_outside


def _slices(frame: pd.DataFrame) -> pd.Series:
    """Persons per (origin, destination, band of hours, day type), computed here from scratch."""
    day = np.where(frame["weekday"] < 5, "weekday", np.where(frame["weekday"] < 7, "weekend", "unknown"))
    return frame.assign(band=frame["hour"] // HOUR_BAND, day=day).groupby(
        ["origin", "destination", "band", "day"])["user_id"].nunique()


def _flow(summary, a: str, b: str) -> float:
    hit = summary.flows[(summary.flows["origin"] == CELL[a]) & (summary.flows["destination"] == CELL[b])]
    return float(hit["flow"].sum())


def test_differencing_hours_or_days_reveals_no_one():
    """The attack of issue 12: hours 0-24 minus 0-23, all days minus weekdays. A -> B is public
    (10 persons on Wednesday mornings); one person also made it late on a Wednesday night and
    another on a Saturday. Neither difference may show their moves."""
    rows = (moves("A", "B", people("ab", 10)) + moves("A", "B", ["night owl"], repeat=3, hour=23)
            + [{**m, "weekday": 5} for m in moves("A", "B", ["weekender"], repeat=2, hour=10)])
    tr = pd.DataFrame(rows)
    summary = lambda **f: summarize_flows(filter_transitions(tr, **f), k=K)  # noqa: E731
    every, but_late = summary(hours=(0, 24)), summary(hours=(0, 23))
    assert snap_hours((0, 23)) == (0, 24)  # the slider moves in whole bands: "0-23" is 0-24
    before_evening = summary(hours=(0, 24 - HOUR_BAND))
    assert _flow(every, "A", "B") == 10  # the night owl's and the weekender's moves are not in it
    for other in (but_late, before_evening, summary(day="weekday")):
        assert _flow(every, "A", "B") - _flow(other, "A", "B") == 0
    assert every.moves_hidden == 5 and every.n_moves == every.moves_shown + every.moves_hidden
    # Per-place totals and person counts do not move either.
    for other in (before_evening, summary(day="weekday")):
        pa, pb = (x.places.set_index("place")[["inflow", "outflow", "n_users"]] for x in (every, other))
        pd.testing.assert_frame_equal(pa, pb)
    # With K more persons late in the evening (the night owl's band) the slice is public: the
    # difference is their K moves and the night owl's 3, from K + 1 persons.
    late = pd.DataFrame(rows + moves("A", "B", people("late", K), hour=24 - HOUR_BAND))
    assert (summarize_flows(late, k=K).flows["flow"].sum()
            - summarize_flows(filter_transitions(late, hours=(0, 24 - HOUR_BAND)), k=K).flows["flow"].sum()) == K + 3


@pytest.mark.parametrize("k", [2, K])
def test_every_setting_shows_only_sums_of_slices_of_k_persons(k):
    """Whatever hours and days are chosen, each shown flow is the sum of its slices with >= k
    persons, so the difference of any two settings is such a sum too."""
    rng = np.random.default_rng(k)
    names = list("ABC")
    tr = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 30, 3000)],
                       "origin": [CELL[c] for c in rng.choice(names, 3000)],
                       "destination": [CELL[c] for c in rng.choice(names, 3000)], "weight": 1.0,
                       "hour": rng.integers(0, 24, 3000), "weekday": rng.integers(0, 7, 3000)})
    day = np.where(tr["weekday"] < 5, "weekday", "weekend")
    for hours in ((0, 24), (0, 23), (3, 12), (7, 10), (21, 24)):
        for d in ("all", "weekday", "weekend"):
            chosen = filter_transitions(tr, hours=hours, day=d)
            lo, hi = snap_hours(hours)
            assert chosen["hour"].between(lo, hi - 1).all() and lo % HOUR_BAND == hi % HOUR_BAND == 0
            summary = summarize_flows(chosen, k=k)
            moved = chosen[chosen["origin"] != chosen["destination"]]
            persons = _slices(moved)
            public = persons[persons >= k].index
            key = pd.MultiIndex.from_frame(moved.assign(band=moved["hour"] // HOUR_BAND, day=day[moved.index])[
                ["origin", "destination", "band", "day"]])
            expected = moved[key.isin(public)].groupby(["origin", "destination"])["weight"].sum()
            got = summary.flows.set_index(["origin", "destination"])["flow"]
            pd.testing.assert_series_equal(got.sort_index(), expected.rename("flow").sort_index(), check_names=False)
            assert summary.n_moves == pytest.approx(summary.moves_shown + summary.moves_within + summary.moves_hidden)


def test_predicted_flows_hide_destinations_predicted_for_under_k_persons():
    """Top-3 predictions of 12 persons at A: B and C for everyone, S only for K - 1 of them."""
    rows = []
    for i in range(12):
        third = "S" if i < K - 1 else "A"
        for rank, (where, prob) in enumerate((("B", 0.5), ("C", 0.3), (third, 0.2)), start=1):
            rows.append({"user_id": f"p{i}", "timestamp": pd.Timestamp("2024-10-08 09:00") + pd.Timedelta(minutes=10 * i),
                         "cell": CELL["A"], "rank": rank, "next_cell": CELL[where], "prob": prob})
    predicted = predicted_transitions(pd.DataFrame(rows), top_n=3)
    summary = summarize_flows(predicted, k=K)
    assert set(summary.flows["destination"]) == {CELL["B"], CELL["C"]}
    assert CELL["S"] not in set(summary.places["place"]) and summary.hidden_places == 1
    assert summary.hidden_flows == 1
    secret_free(flows_geojson(summary, label="predicted") + flows_csv(summary))


def test_routing_maps_hide_cells_under_k():
    cells = [CELL["A"]] * 30 + [CELL["S"]] * 8
    users = [f"a{i % 10}" for i in range(30)] + [f"s{i % (K - 1)}" for i in range(8)]
    n = len(cells)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(n, 2)).astype(np.float32)  # (V, layers, E)
    routing = Routing(probs=probs, cell=np.array(cells), user=np.array(users), hour=np.arange(n) % 24,
                      weekday=np.arange(n) % 7, poi_share=rng.dirichlet(np.ones(20), size=n))
    private, hidden = routing.private(K)
    assert hidden == 1 and CELL["S"] not in set(private.cell)
    by_cell = routing_by_cell(private)
    assert set(by_cell["cell"]) == {CELL["A"]} and (by_cell["n_users"] >= K).all()
    secret_free(by_cell.to_csv() + "\n".join(describe_experts(private)) + expert_hour_matrix(private).to_csv())


@pytest.mark.parametrize("k", [0, -1])
def test_routing_maps_refuse_a_threshold_under_one(k):
    routing = Routing(probs=np.full((2, 1, 2), 0.5, dtype=np.float32), cell=np.array([CELL["A"]] * 2),
                      user=np.array(["a", "b"]), hour=np.zeros(2, dtype=int), weekday=np.zeros(2, dtype=int),
                      poi_share=np.full((2, 20), 0.05))
    with pytest.raises(InputDataError, match="privacy threshold k"):  # the same error as summarize_flows gives
        routing.private(k)
    with pytest.raises(InputDataError, match="privacy threshold k"):
        summarize_flows(pd.DataFrame(moves("A", "B", ["a", "b"])), k=k)


def test_scenario_tables_hide_cells_under_k():
    table = pd.DataFrame({"cell": [CELL["A"], CELL["S"]], "lat": [60.17, 60.185], "lon": [24.94, 24.99],
                          "inflow_before": [10.0, 2.0], "inflow_after": [11.0, 3.0], "change": [1.0, 1.0],
                          "change_pct": [10.0, 50.0], "edited": [True, False], "n_users": [12, K - 1]})
    shown, hidden = ScenarioResult(cells=table, n_targets=20, applied=[]).private(K)
    assert shown["cell"].tolist() == [CELL["A"]] and hidden == 1


# --------------------------------------------------------------------------- the app
APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
SECRET = (60.1900, 24.9950)  # a remote place, ~3 km from the sample's area, visited by K - 1 persons


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, sample_trajectories, app_sandbox):
    """A tiny checkpoint, a work folder of our own, and an upload with the secret place."""
    from streamlit.testing.v1 import AppTest  # noqa: F401  (fails early if streamlit is missing)

    root = tmp_path_factory.mktemp("privacy_app")
    frame = pd.read_csv(sample_trajectories)
    public = frame[frame["user_id"].isin(frame["user_id"].unique()[:60])]
    secret = []
    for p in range(K - 1):  # each alternates between the busy centre and the secret place
        for v in range(24):
            lat, lon = (SECRET if v % 2 else (60.1699, 24.9384))
            secret.append({"user_id": f"secret{p}", "timestamp": f"2024-10-{7 + v // 3:02d}T{8 + 4 * (v % 3) + p:02d}:00:00+03:00",
                           "lat": lat + 0.0004 * p, "lon": lon})
    upload = pd.concat([public, pd.DataFrame(secret)], ignore_index=True).to_csv(index=False).encode()
    with app_sandbox(root):
        yield upload


def _km(lat: float, lon: float) -> float:
    dy = (lat - SECRET[0]) * 111.2
    dx = (lon - SECRET[1]) * 111.2 * math.cos(math.radians(SECRET[0]))
    return math.hypot(dx, dy)


def _drawn(deck: dict, *, context: bool) -> list[tuple[str, float, float]]:
    """(layer, lat, lon) of everything a deck draws; grey context hexagons only when asked."""
    points = []
    for layer in deck["layers"]:
        if str(layer.get("id", "")).startswith("basemap"):  # public OpenStreetMap streets and names, no person
            continue
        kind, rows = layer["@@type"], layer.get("data") or []
        grey = layer.get("id") == "cells-context"
        if grey and not context or not isinstance(rows, list):
            continue
        for row in rows:
            polygon = row.get("polygon") or []  # what is really drawn: every vertex of every shape
            rings = polygon if polygon and isinstance(polygon[0][0], list) else [polygon]
            points += [(kind, y, x) for ring in rings for x, y in ring]
            if "hex" in row:
                points.append((kind, *h3.cell_to_latlng(row["hex"])))
            for a, b in (("o_lat", "o_lon"), ("d_lat", "d_lon"), ("lat", "lon")):
                if a in row and b in row:
                    points.append((kind, row[a], row[b]))
    return points


def _visit_every_page(upload: bytes):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.switch_page("app_pages/trajectories.py").run()
    at.file_uploader(key="traj_upload").set_value(("survey.csv", upload, "text/csv")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.sidebar.slider(key="privacy_k").value == K
    pages = {}
    for page in ("trajectories", "flows", "experts", "scenario"):
        at.switch_page(f"app_pages/{page}.py").run()
        if page == "flows":  # both maps: the observed one (the default) and the predicted one
            at.radio(key="fl_compare").set_value("Both, side by side").run()
            assert len(at.get("deck_gl_json_chart")) == 2
        assert not at.exception, (page, [e.message for e in at.exception])
        decks = [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]
        texts = [m.value for m in (*at.markdown, *at.caption, *at.info, *at.warning, *at.error)]
        tables = [df.value.to_csv() for df in at.dataframe]
        options = [str(o) for box in at.multiselect for o in box.options]
        pages[page] = decks, texts, tables, options
    return at, pages


@pytest.fixture(scope="module")
def visited(app_env):
    return _visit_every_page(app_env)


def test_the_app_never_shows_the_secret_place(visited):
    _, pages = visited
    drawn_somewhere = False
    for page, (decks, _texts, tables, options) in pages.items():
        for deck in decks:
            points = _drawn(deck, context=False)
            drawn_somewhere |= bool(points)
            near = [p for p in points if _km(p[1], p[2]) < 1.0]
            assert not near, f"{page}: the secret place is drawn: {near[:3]}"
        for text in (*tables, *options):
            for res in range(7, 12):
                assert h3.latlng_to_cell(*SECRET, res) not in text, f"{page}: the secret cell is listed"
    assert drawn_somewhere


def test_the_app_reports_what_it_hides(visited):
    _, pages = visited
    notes = [t for page in ("trajectories", "flows", "experts") for t in pages[page][1] if t.startswith("Privacy:")]
    assert len(notes) >= 4  # trajectories map, two flow maps, expert maps
    assert all(f"fewer than {K}" in t for t in notes)
    assert all(int(t.split()[1].replace(",", "")) >= 1 for t in notes)  # the secret place at least


def test_not_even_the_grey_background_reveals_the_secret_place(visited):
    """The grey hexagons drawn in place of a basemap are cells too: none under k persons."""
    _, pages = visited
    for page, (decks, *_rest) in pages.items():
        for deck in decks:
            near = [p for p in _drawn(deck, context=True) if _km(p[1], p[2]) < 1.0]
            assert not near, f"{page}: {near[:3]}"


def test_larger_cells_minus_cells_reveals_no_one():
    """The same complementary rule for H3 parent cells: two children of one parent send K and
    K - 1 persons to a third cell; the parent flow would expose the K - 1."""
    parent = h3.latlng_to_cell(60.170, 24.940, RES - 1)
    a, b = sorted(h3.cell_to_children(parent, RES))[:2]
    far = h3.latlng_to_cell(60.190, 24.990, RES)

    def go(origin, users):
        return [{"user_id": u, "origin": origin, "destination": far, "weight": 1.0, "hour": 9, "weekday": 2}
                for u in users]

    tr = pd.DataFrame(go(a, people("a", K)) + go(b, people("b", K - 1)))
    cells = summarize_flows(tr, k=K)
    assert cells.moves_shown == K  # a -> far only
    larger = summarize_flows(tr, k=K, resolution=RES - 1)
    assert larger.flows.empty and larger.moves_hidden == 2 * K - 1
    tr = pd.DataFrame(go(a, people("a", K)) + go(b, people("b", K)))
    larger = summarize_flows(tr, k=K, resolution=RES - 1)
    assert larger.flows["flow"].tolist() == [2 * K] and larger.flows["origin"].tolist() == [parent]


def test_even_larger_cells_minus_larger_cells_reveals_no_one():
    """The Flows page groups places up to two H3 levels coarser. Two children of one grandparent
    cell: K persons go from the first to a far cell, and one person from the second, each alone on
    the cell map. One level up the first child's flow is shown (K persons); two levels up the
    grandparent's would be K + 1 moves, so "two levels up minus one level up" would show the one
    person's move. Each level's rule counts against the level below it, so it stays hidden."""
    grand = h3.latlng_to_cell(60.170, 24.940, RES - 2)
    first, second = sorted(h3.cell_to_children(grand, RES - 1))[:2]
    a, b = sorted(h3.cell_to_children(first, RES))[0], sorted(h3.cell_to_children(second, RES))[0]
    far = h3.latlng_to_cell(60.300, 25.200, RES)

    def go(origin, users, repeat=1):
        return [{"user_id": u, "origin": origin, "destination": far, "weight": 1.0, "hour": 9, "weekday": 2}
                for u in users for _ in range(repeat)]

    # The K persons leave from K different children of the first parent: none is public on the cell map.
    children = sorted(h3.cell_to_children(first, RES))[:K]
    tr = pd.DataFrame([row for i, child in enumerate(children) for row in go(child, [f"a{i}"])] + go(b, ["lone"], 3))
    assert summarize_flows(tr, k=K).flows.empty
    one_up = summarize_flows(tr, k=K, resolution=RES - 1)
    assert one_up.flows["flow"].tolist() == [K] and one_up.flows["origin"].tolist() == [first]
    two_up = summarize_flows(tr, k=K, resolution=RES - 2)
    assert two_up.flows.empty, "two levels up minus one level up would be the lone person's 3 moves"
    # With K persons from the second parent as well, both levels show everything and agree.
    tr = pd.concat([tr, pd.DataFrame(go(b, people("b", K - 1)))])
    two_up = summarize_flows(tr, k=K, resolution=RES - 2)
    assert two_up.flows["flow"].tolist() == [K + 3 + K - 1]
    del a  # only its parent's other children are used


def test_even_larger_cells_minus_larger_cells_reveals_no_one_in_arrivals():
    """The same for the arrivals map: arrivals at the children of one grandparent cell."""
    from trajmoe.analysis.flows import summarize_arrivals

    grand = h3.latlng_to_cell(60.170, 24.940, RES - 2)
    first, second = sorted(h3.cell_to_children(grand, RES - 1))[:2]
    children = sorted(h3.cell_to_children(first, RES))[:K]
    lone = sorted(h3.cell_to_children(second, RES))[0]
    rows = [{"user_id": f"a{i}", "origin": "x", "destination": c, "weight": 1.0, "hour": 9, "weekday": 2}
            for i, c in enumerate(children)]
    rows += [{"user_id": "lone", "origin": "x", "destination": lone, "weight": 1.0, "hour": 9, "weekday": 2}] * 2
    tr = pd.DataFrame(rows)
    assert summarize_arrivals(tr, k=K).places.empty
    assert summarize_arrivals(tr, k=K, resolution=RES - 1).places["arrivals"].tolist() == [K]
    assert summarize_arrivals(tr, k=K, resolution=RES - 2).places.empty


@pytest.mark.parametrize("resolution", [None, RES - 1])
def test_two_crafted_district_files_reveal_no_one(resolution):
    """Hidden on the cell map: K - 1 persons A -> S, one person C -> S ("target") and one B -> S
    (the attacker, who knows their own 4 moves). Districts {A, C} and {A, B} each hold K persons
    whose moves the cell map hides: with a rule that only compared a district map with the cells
    (until 2026-12-02) both showed their flow, and their difference was the target's 2 moves.
    District flows now add up only what the map of cells (or of larger cells) shows."""
    tr = pd.DataFrame(moves("A", "S", people("a", K - 1)) + moves("C", "S", ["target"], repeat=2)
                      + moves("B", "S", ["attacker"], repeat=4))
    position = pd.DataFrame({"lat": [60.17, 60.185], "lon": [24.94, 24.99]}, index=["D", "Far"])

    def districts(*cells):
        return Zones(of_cell=pd.Series({**{CELL[c]: "D" for c in cells}, CELL["S"]: "Far"}), position=position,
                     geojson={"type": "FeatureCollection", "features": []})

    def total(*cells):
        zones = districts(*cells)
        if resolution is not None:  # the districts of the larger cells' centres
            parents = {h3.cell_to_parent(CELL[c], resolution): zones.of_cell[CELL[c]] for c in (*cells, "S")}
            zones = Zones(of_cell=pd.Series(parents), position=position, geojson=zones.geojson)
        return summarize_flows(tr, k=K, zones=zones, resolution=resolution).flows["flow"].sum()

    assert summarize_flows(tr, k=K, resolution=resolution).flows.empty  # nothing of this is on that map
    with_target, with_attacker = total("A", "C"), total("A", "B")
    assert with_target == with_attacker == 0, f"the target's {with_target - with_attacker + 4:g} moves"
