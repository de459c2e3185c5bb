"""detect_kind and to_visits on every shared city, and on small hand-made frames."""

from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import pytest

from trajmoe.errors import InputDataError
from trajmoe.geo import project_km
from trajmoe.trajectories.kinds import KINDS, VisitConfig, detect_kind, to_visits
from trajmoe.trajectories.reader import read_trajectories
from trajmoe.trajectories.report import ValidationReport

CITIES = {
    "nyc_foursquare": "checkins", "nyc_gowalla": "checkins", "sf_gowalla": "checkins",
    "la_gowalla": "checkins", "beijing_geolife_gps": "gps", "sf_cabspotting_gps": "gps",
    "mexico_city_taxi_trips": "trips", "jersey_city_citibike": "stations",
}


@pytest.fixture(scope="module")
def city(shared_data):
    cache: dict[str, tuple[pd.DataFrame, ValidationReport]] = {}

    def load(name: str) -> tuple[pd.DataFrame, ValidationReport]:
        if name not in cache:
            cache[name] = read_trajectories(shared_data / "cities" / f"{name}.csv.gz")
        frame, report = cache[name]
        return frame, copy.deepcopy(report)  # tests add to their own report

    return load


def balanced(report: ValidationReport) -> bool:
    rows = report.n_rows == report.n_kept + report.n_dropped + sum(report.reduced.values())
    people = report.n_users_read == report.n_users_kept + sum(report.users_dropped.values())
    return rows and people and report.counts_add_up()


@pytest.mark.parametrize(("name", "kind"), CITIES.items())
def test_every_city_reads_clean_and_is_detected(city, name, kind):
    frame, report = city(name)
    assert report.ok and report.n_kept > 10_000
    assert report.n_dropped < 0.01 * report.n_rows  # only exact duplicates in these files
    assert detect_kind(frame) == kind


def test_checkins_pass_through(city):
    frame, report = city("nyc_foursquare")
    visits, kind = to_visits(frame, "checkins", report)
    assert kind == "checkins" and report.kind == "checkins"
    pd.testing.assert_frame_equal(visits, frame)
    assert balanced(report)


def test_geolife_becomes_staypoints_inside_the_city(city):
    frame, report = city("beijing_geolife_gps")
    # Five users keep this fast: one travels outside Beijing, two never stay anywhere.
    frame = frame[frame["user_id"].isin(["000", "004", "006", "020", "178"])]
    report.n_rows = report.n_kept = len(frame)
    report.n_users_read = report.n_users_kept = 5  # the subset's people, as its rows above
    visits, kind = to_visits(frame, "gps", report)
    assert kind == "gps" and balanced(report)
    assert report.n_users_dropped == 2  # the two who never stay anywhere
    assert report.dropped["outside the city area"]["count"] == 552
    assert report.reduced["GPS fixes merged into staypoints"] == len(frame) - 552 - len(visits)
    assert any("['020', '178']" in n for n in report.notes)
    assert set(visits["user_id"]) == {"000", "004", "006"}
    assert 20 < len(visits) < 500
    km = np.linalg.norm(project_km(visits["lat"], visits["lon"], (39.99, 116.33)), axis=1)
    assert km.max() < 50
    # A staypoint starts at one of its user's fixes; visits stay ordered in time.
    assert visits["row"].isin(frame["row"]).all()
    assert visits.groupby("user_id")["timestamp"].is_monotonic_increasing.all()


@pytest.mark.slow
def test_whole_geolife_city(city):
    frame, report = city("beijing_geolife_gps")
    visits, _ = to_visits(frame, detect_kind(frame), report)
    assert balanced(report) and 500 < len(visits) < 2000 and report.n_users == 11


def test_cabspotting_becomes_pickup_dropoff_trips(city):
    frame, report = city("sf_cabspotting_gps")
    visits, kind = to_visits(frame, "gps", report)
    assert kind == "trips" and report.kind == "trips" and balanced(report)
    assert "occupied" not in visits
    sizes = visits.groupby("user_id").size()
    assert (sizes == 2).all() and 6000 < len(sizes) < 7000
    assert visits["user_id"].str.fullmatch(r"cab_[a-z]+#\d+").all()
    origin, destination = visits.iloc[0::2], visits.iloc[1::2]
    assert (origin["user_id"].to_numpy() == destination["user_id"].to_numpy()).all()
    minutes = (destination["timestamp"].to_numpy() - origin["timestamp"].to_numpy()
               ) / np.timedelta64(1, "m")
    assert (minutes > 0).all() and np.median(minutes) < 30
    # Origins are fixes with a passenger on board.
    on_board = frame.set_index("row").loc[origin["row"], "occupied"]
    assert (on_board == 1).all()
    for reason in ("incomplete taxi trip", "taxi trip of a single fix"):
        assert report.dropped[reason]["count"] > 0


def test_handmade_taxi_flips():
    t0 = pd.Timestamp("2008-05-17 07:00")
    occupied = [1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1]  # run 1 starts at the first fix: incomplete
    frame = pd.DataFrame({
        "row": np.arange(1, 13), "user_id": "cab_a",
        "timestamp": [t0 + pd.Timedelta(minutes=i) for i in range(12)],
        "lat": 37.7 + np.arange(12) * 1e-3, "lon": -122.4,
        "occupied": pd.array(occupied, dtype="Int8")})
    report = ValidationReport(source="x", n_rows=12, n_kept=12)
    visits, kind = to_visits(frame, "gps", report)
    assert kind == "trips"
    assert visits["row"].tolist() == [4, 6]  # pickup at the 0->1 flip, drop-off before 1->0
    assert visits["user_id"].tolist() == ["cab_a#1", "cab_a#1"]
    assert report.dropped["incomplete taxi trip"]["rows"] == [1, 2, 11, 12]
    assert report.dropped["taxi trip of a single fix"]["rows"] == [9]
    assert report.reduced["taxi GPS fixes reduced to pickup and drop-off points"] == 5
    assert balanced(report)
    # people are cabs (1 read, 1 kept); the units the visits belong to are its trips
    assert (report.n_users_read, report.n_users_kept, report.n_users) == (1, 1, 1)
    assert "1 cab read: 1 kept, 0 dropped." in report.count_lines()


def test_mexico_city_trips(city):
    frame, report = city("mexico_city_taxi_trips")
    visits, kind = to_visits(frame, "trips", report)
    assert kind == "trips" and len(visits) == len(frame) and balanced(report)
    assert any("longer than 8 h" in n for n in report.notes)


def test_trips_without_exactly_two_rows_are_dropped():
    t = pd.Timestamp("2016-09-16 07:00")
    frame = pd.DataFrame({"row": [1, 2, 3, 4, 5, 6], "user_id": ["a", "a", "b", "c", "c", "c"],
                          "timestamp": [t, t + pd.Timedelta(hours=9), t, t, t, t],
                          "lat": 19.4, "lon": -99.1})
    report = ValidationReport(source="x", n_rows=6, n_kept=6)
    visits, _ = to_visits(frame, "trips", report)
    assert visits["user_id"].tolist() == ["a", "a"]
    assert report.dropped["trip without exactly 2 rows"]["rows"] == [3, 4, 5, 6]
    assert "2 trips" in report.dropped["trip without exactly 2 rows"]["message"]
    assert any("1 of 1 trips last longer than 8 h" in n for n in report.notes)


def test_citibike_stations(city):
    frame, report = city("jersey_city_citibike")
    visits, kind = to_visits(frame, "stations", report)
    assert kind == "stations" and visits["location_id"].nunique() == 76
    assert any("76 stations used by 779 vehicles" in n for n in report.notes)


def test_stations_without_ids_use_coordinates():
    frame = pd.DataFrame({"row": [1, 2, 3], "user_id": "bike", "lat": [40.7, 40.8, 40.7],
                          "lon": [-74.0, -74.1, -74.0],
                          "timestamp": pd.date_range("2018-01-01", periods=3, freq="h")})
    visits, _ = to_visits(frame, "stations", ValidationReport(source="x"))
    assert visits["location_id"].nunique() == 2


def test_dense_trace_without_occupied_is_gps():
    n = 200
    frame = pd.DataFrame({"row": np.arange(1, n + 1), "user_id": "u",
                          "timestamp": pd.date_range("2020-01-01", periods=n, freq="5s"),
                          "lat": 60.17 + np.arange(n) * 1e-5, "lon": 24.94})
    assert detect_kind(frame) == "gps"
    assert detect_kind(frame.iloc[::60]) == "checkins"  # 5 minutes apart, 4 rows: not a trace


def test_unknown_kind_and_bad_config_raise():
    frame = pd.DataFrame(columns=["row", "user_id", "timestamp", "lat", "lon"])
    with pytest.raises(InputDataError, match="Unknown kind 'taxi'"):
        to_visits(frame, "taxi", ValidationReport(source="x"))
    with pytest.raises(InputDataError, match="must be positive"):
        VisitConfig(city_radius_km=0)
    assert KINDS == ("checkins", "gps", "trips", "stations")


@pytest.mark.slow
def test_a_million_checkins_read_and_become_visits_in_seconds(shared_data, tmp_path):
    source = pd.read_csv(shared_data / "cities" / "nyc_gowalla.csv.gz", dtype="str")
    copies = [source.assign(user_id=source["user_id"] + f"_{i}") for i in range(8)]
    path = tmp_path / "million.csv"
    pd.concat(copies).iloc[:1_000_000].to_csv(path, index=False)
    start = time.perf_counter()
    frame, report = read_trajectories(path)
    visits, kind = to_visits(frame, detect_kind(frame), report)
    elapsed = time.perf_counter() - start
    assert kind == "checkins" and report.n_rows == 1_000_000 and len(visits) > 999_000
    assert elapsed < 20, f"{elapsed:.1f} s"  # ~3 s on an idle core
