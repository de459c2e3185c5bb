"""The prepared-folder protocol: collapse, user filter, splits, candidates, targets, few-shot."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from trajmoe.city.batch import IGNORE, MISS
from trajmoe.city.data import CityData
from trajmoe.city.features import FEATURE_GROUPS, log_popularity
from trajmoe.city.prepare import prepare
from trajmoe.city.subset import FewShot, run_subset
from trajmoe.errors import InputDataError, PreparedDataError


def _spot(i):  # 12 well-separated places in a ~20 km city (res 8 cells are ~1 km wide)
    return 40.70 + 0.02 * (i % 4), -74.00 + 0.03 * (i // 4)


def _csv(tmp_path, rows):
    frame = pd.DataFrame(rows, columns=["user_id", "timestamp", "lat", "lon"])
    path = tmp_path / "visits.csv"
    frame.to_csv(path, index=False)
    return path


def _rows(user, places, start="2024-03-04T08:00:00-05:00"):
    t0 = pd.Timestamp(start)
    return [(user, (t0 + pd.Timedelta(hours=3 * k)).isoformat(), *_spot(p)) for k, p in enumerate(places)]


@pytest.fixture
def city(tmp_path):
    rows = (_rows("a", [0, 1, 1, 2, 0, 1, 2, 0, 3, 0, 1])  # one repeat (1,1) collapses -> 10 visits
            + _rows("b", [4, 5, 4, 5, 4, 6, 7, 4, 5, 8])
            + _rows("c", [9, 9, 10]))  # 2 visits after collapsing: too short
    out = tmp_path / "prep"
    meta, report = prepare(_csv(tmp_path, rows), city="Testville", out=out, resolution=8)
    return CityData(out), meta, report


def test_collapse_filter_and_report(city):
    data, meta, report = city
    assert meta["n_users"] == 2
    assert sum(report.reduced.values()) >= 2  # a's repeat and c's repeat
    assert "user too short to evaluate" in report.dropped
    assert "fewer than 3 visits" in report.to_text()
    assert json.loads((data.folder / "meta.json").read_text())["city"] == "Testville"


def test_split_is_chronological_70_10_20(city):
    data, _, _ = city
    v = data.visits
    for _, g in v.groupby("user_id"):
        assert g["timestamp"].is_monotonic_increasing
        codes = g["split"].astype(str).tolist()
        assert codes == sorted(codes, key=["train", "val", "test"].index)
        assert codes.count("test") >= 1
    a = v[v.user_id == "a"]["split"].astype(str).value_counts()
    assert (a["train"], a["val"], a["test"]) == (7, 1, 2)


def test_candidates_and_misses(city):
    data, _, _ = city
    train_cells = set(data.visits.loc[data.visits.split == "train", "cell"])
    assert set(data.cells["cell"]) == train_cells  # no POIs: candidates = training cells
    outside = data.visits[~data.visits.cell.isin(train_cells)]
    assert (outside["cell_idx"] == MISS).all()
    targets = data.targets("test")
    batch = data.eval_batch(targets)
    last = batch.mask.sum(1) - 1
    truth = batch.targets.gather(1, last[:, None]).squeeze(1).numpy()
    assert (truth == data.cell_idx[targets]).all()  # misses stay in as MISS, never dropped
    assert ((batch.targets == IGNORE) | batch.mask).all()


def test_targets_contexts_see_only_the_past(city):
    data, _, _ = city
    for t in data.targets("test"):
        ctx = data.context(int(t))
        assert len(ctx) and ctx.max() == t - 1
        assert (data.user_of_visit[ctx] == data.user_of_visit[t]).all()
    every = np.concatenate([data.targets("val"), data.targets("test")])
    assert len(every) == len(set(every.tolist()))
    assert len(every) == int((data.split > 0).sum())  # every val/test visit is a target once


def test_windows_cover_every_training_transition(city):
    data, _, _ = city
    windows = data.all_train_windows(max_len=4)
    assert all(2 <= len(w) <= 4 for w in windows)
    pairs = {(int(w[i]), int(w[i + 1])) for w in windows for i in range(len(w) - 1)}
    train = np.flatnonzero(data.split == 0)
    expected = {(int(i), int(i) + 1) for i in train if i + 1 in set(train.tolist())
                and data.user_of_visit[i] == data.user_of_visit[i + 1]}
    assert pairs == expected
    batch = data.window_batch(windows)
    assert batch.targets[0, 0].item() == data.cell_idx[windows[0][1]]


def test_few_shot_is_seeded_and_features_use_only_its_visits(city):
    data, _, _ = city
    w1 = run_subset(data, fraction=0.5, seed=3, max_len=3).windows
    w2 = run_subset(data, fraction=0.5, seed=3, max_len=3).windows
    assert [list(a) for a in w1] == [list(b) for b in w2]
    assert len(w1) == round(0.5 * len(data.all_train_windows(max_len=3)))
    seen = data.train_visits(w1)
    tensors = data.city_tensors(w1)
    counts = np.bincount(data.cell_idx[seen], minlength=data.n_cells)
    relative = lambda c: np.log1p(c * len(c) / c.sum())  # noqa: E731  visits relative to the mean cell
    assert np.allclose(tensors.log_pop.numpy(), relative(counts))
    # validation / test visits never feed the features
    full = data.city_tensors()
    train_counts = np.bincount(data.cell_idx[data.split == 0], minlength=data.n_cells)
    assert np.allclose(full.log_pop.numpy(), relative(train_counts))
    # the popularity of a cell does not grow with the amount of data: twice every count, same value
    assert np.allclose(log_popularity(2 * train_counts), log_popularity(train_counts))
    with pytest.raises(InputDataError):
        FewShot(0.0)


def test_broken_inputs_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("latitude,longitude,when\n1,2,3\n")
    with pytest.raises(InputDataError, match="lat"):
        prepare(bad, city="X", out=tmp_path / "o")
    with pytest.raises(PreparedDataError, match="trajmoe prepare"):
        CityData(tmp_path / "nothing")


def test_small_area_gets_finer_resolution(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(5):
        for k in range(8):
            rows.append((f"u{u}", f"2024-03-04T{8 + k:02d}:00:00", 60.17 + rng.uniform(0, 0.01), 24.94 + rng.uniform(0, 0.02)))
    meta, report = prepare(_csv(tmp_path, rows), city="Tiny", out=tmp_path / "p")
    assert meta["resolution"] == 10
    assert "resolution 10 chosen automatically" in report.to_text()


def test_real_city_feature_rows_differ(shared_data, tmp_path):
    meta, _ = prepare(shared_data / "cities" / "nyc_foursquare.csv.gz", city="New York", out=tmp_path / "nyc",
                      pois=shared_data / "pois" / "nyc_osm_2013.csv")
    data = CityData(tmp_path / "nyc")
    feats = data.city_tensors().features.numpy()
    assert meta["n_cells_with_pois"] > 100
    assert len(np.unique(feats.round(5), axis=0)) > 0.9 * len(feats)
    poi = feats[:, FEATURE_GROUPS["poi_share"]]
    assert (poi.sum(1) > 0).mean() > 0.3


# --------------------------------------------------------------------------- counts add up
# Team issue 12, items 5-6: rows read = used + merged + left out, and people read = kept + dropped,
# after every step (reading, GPS -> staypoints, collapsing repeats, dropping short users); the app
# and the CLI print these same numbers (ValidationReport.count_lines).
def _adds_up(report, meta=None):
    assert report.n_rows == report.n_used + report.n_reduced + report.n_left_out, report.to_text()
    assert report.n_users_read == report.n_users_kept + report.n_users_dropped, report.to_text()
    assert report.counts_add_up()
    if meta is not None:  # the prepared folder holds exactly the rows and units the report keeps
        assert sum(meta["n_visits"].values()) == report.n_used
        assert meta["n_users"] == report.n_users
        assert meta["report"]["n_kept"] == report.n_used
    lines = "\n".join(report.count_lines())
    assert (f"{report.n_rows:,} rows read: {report.n_used:,} used, {report.n_reduced:,} merged into "
            f"other rows, {report.n_left_out:,} left out.") in lines
    assert all(f"  {line}" in report.to_text().splitlines() for line in report.count_lines())


def test_counts_add_up_on_la_gowalla(shared_data, tmp_path):
    meta, report = prepare(shared_data / "cities" / "la_gowalla.csv.gz", city="Los Angeles",
                           out=tmp_path / "la", weekday_reliable=False)
    _adds_up(report, meta)
    # Before the fix the report said 15,467 used (the rows before collapsing and short users).
    assert report.n_used == sum(meta["n_visits"].values()) < report.n_rows - report.n_left_out
    assert report.users_dropped and report.n_users_kept == meta["n_users"]


TWELVE_ROWS = """user_id,timestamp,lat,lon
a,2024-01-01T08:00:00,60.17,24.94
a,2024-01-01T09:00:00,60.20,24.90
a,2024-01-01T10:00:00,60.17,24.94
a,2024-01-01T11:00:00,60.22,24.80
a,2024-01-01T11:00:00,60.22,24.80
a,2024-01-01T12:00:00,60.17,24.94
b,2024-01-01T08:00:00,60.17,24.94
b,2024-01-01T09:00:00,60.20,24.90
,2024-01-01T09:00:00,60.20,24.90
c,,60.20,24.90
c,2024-01-01T09:00:00,,24.90
a,2024-01-01T13:00:00,0,0
"""


def test_counts_add_up_on_twelve_rows_with_a_short_user_and_bad_rows(tmp_path):
    (tmp_path / "twelve.csv").write_text(TWELVE_ROWS)
    meta, report = prepare(tmp_path / "twelve.csv", city="Twelve", out=tmp_path / "out", resolution=8)
    _adds_up(report, meta)
    # a: 5 visits (row 5 repeats row 4, row 12 is null island); b: too short; c: no usable row;
    # row 9 has no user at all (not a person).
    assert (report.n_rows, report.n_used, report.n_reduced, report.n_left_out) == (12, 5, 0, 7)
    assert (report.n_users_read, report.n_users_kept, report.n_users_dropped) == (3, 1, 2)
    assert report.dropped["user too short to evaluate"]["rows"] == [7, 8]
    text = report.to_text()
    assert "12 rows read: 5 used, 0 merged into other rows, 7 left out." in text
    assert "3 people read: 1 kept, 2 dropped." in text
    assert "Kind: checkins; the visits belong to 1 person." in text and "(row 12)" in text
    assert "1 user has fewer than 3 visits after collapsing repeats (2 visits)" in text
    assert "Every row could be used" not in text


def _gps_rows():
    """g1 stays at 3 places (10 min each, a fix every 30 s) with short drives between, plus a fix
    200 km away; g2 drives without stopping (no staypoint); one fix has no latitude."""
    t0, rows = pd.Timestamp("2024-05-06T08:00:00"), []
    t = t0
    for stay in range(3):
        lat, lon = 60.15 + 0.02 * stay, 24.90 + 0.03 * stay
        for _ in range(21):
            rows.append(("g1", t.isoformat(), lat, lon))
            t += pd.Timedelta(seconds=30)
        for k in range(4):  # driving to the next stay
            rows.append(("g1", t.isoformat(), lat + 0.005 * (k + 1), lon + 0.007 * (k + 1)))
            t += pd.Timedelta(seconds=30)
    rows.append(("g1", t.isoformat(), 61.95, 24.90))  # ~200 km north: outside the city area
    for k in range(40):
        rows.append(("g2", (t0 + pd.Timedelta(seconds=30 * k)).isoformat(), 60.16 + 0.004 * k, 24.95))
    rows.append(("g2", (t0 + pd.Timedelta(hours=1)).isoformat(), "", 24.95))
    return rows


def test_counts_add_up_on_a_gps_file(tmp_path):
    pytest.importorskip("trackintel")
    path = _csv(tmp_path, _gps_rows())
    meta, report = prepare(path, city="GPS town", out=tmp_path / "out", kind="gps", resolution=8)
    _adds_up(report, meta)
    assert report.kind == "gps" and report.reduced["GPS fixes merged into staypoints"] > 0
    assert report.dropped["outside the city area"]["count"] == 1
    assert report.dropped["missing coordinates"]["count"] == 1
    assert (report.n_users_read, report.n_users_kept, report.n_users_dropped) == (2, 1, 1)
    assert report.n_used == 3  # g1's three stays


def test_one_row_and_one_user_are_singular(tmp_path):
    from trajmoe.trajectories.reader import read_trajectories

    _, report = read_trajectories(b"user_id,timestamp,lat,lon\nu,2024-01-01T08:00:00,60.1,24.9\n"
                                  b"u,2024-01-01T09:00:00,0,0\n", name="two.csv")
    text = report.to_text()
    assert "2 rows read: 1 used, 0 merged into other rows, 1 left out." in text
    assert "Left out 1 row:" in text and "null island: 1 (row 2)" in text
    assert "1 person read: 1 kept, 0 dropped." in text
    assert not re.search(r"(?<![\d,])1 (rows|users|people)\b", text), text
    assert "Every row could be used" not in text


@pytest.mark.parametrize(("name", "data"), [
    ("binary.csv", b"\x00\xff\xfe\x00 not text at all \x00"),
    ("empty.csv", b""),
    ("header_only.csv", b"user_id,timestamp,lat,lon\n"),
    ("no_columns.csv", b"person,when,latitude\nA,2024-01-01T10:00:00,60.1\n"),
])
def test_a_file_that_cannot_be_read_never_says_every_row_could_be_used(tmp_path, name, data):
    from trajmoe.trajectories.reader import read_trajectories

    _, report = read_trajectories(data, name=name)
    assert not report.ok
    text = report.to_text()
    assert "Every row could be used" not in text and "Every row" not in report.headline()
    assert "cannot be used" in text
    assert report.counts_add_up()
    with pytest.raises(InputDataError) as err:
        prepare(data, city="X", out=tmp_path / "out", name=name)
    assert "Every row could be used" not in str(err.value)
