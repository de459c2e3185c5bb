"""Importers for the original layouts (Geolife, SNAP Gowalla, Foursquare TSMC2014), on real files."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from trajmoe.trajectories.layouts import read_foursquare_tsmc, read_geolife, read_gowalla_snap
from trajmoe.trajectories.reader import read_trajectories

CANONICAL = ["user_id", "timestamp", "lat", "lon", "location_id"]


@pytest.fixture(scope="module")
def small_geolife(shared_data, tmp_path_factory):
    """Three Geolife users in the original layout (a copy keeps trackintel's read short)."""
    root = tmp_path_factory.mktemp("geolife")
    for user in ("000", "003", "004"):
        shutil.copytree(shared_data / "raw" / "geolife_plt" / user, root / user)
    return root


def test_geolife_agrees_with_trackintel_fix_for_fix(small_geolife):
    import trackintel as ti

    frame, report = read_geolife(small_geolife)
    assert report.ok and report.n_users == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pfs, _ = ti.io.read_geolife(str(small_geolife))
    assert report.n_rows == len(pfs)  # every fix of every .plt file was read
    theirs = pd.DataFrame({
        "user_id": pfs["user_id"].map("{:03d}".format),  # trackintel turns "000" into 0
        "timestamp": pfs["tracked_at"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None),
        "lat": pfs.geometry.y, "lon": pfs.geometry.x,
    }).drop_duplicates().sort_values(["user_id", "timestamp"], kind="stable")
    ours = frame[["user_id", "timestamp", "lat", "lon"]]
    assert len(ours) == len(theirs)
    np.testing.assert_array_equal(ours["user_id"], theirs["user_id"])
    np.testing.assert_array_equal(ours["timestamp"].to_numpy(), theirs["timestamp"].to_numpy(
        "datetime64[ns]"))
    np.testing.assert_allclose(ours[["lat", "lon"]], theirs[["lat", "lon"]])
    utc, _ = read_geolife(small_geolife, timezone="UTC")
    assert (frame["timestamp"] - utc["timestamp"]).eq(pd.Timedelta(hours=8)).all()


def test_geolife_folder_through_read_trajectories_matches_the_city_file(shared_data):
    frame, report = read_trajectories(shared_data / "raw" / "geolife_plt")
    assert report.ok and report.n_users == 11
    assert any("Geolife importer" in n for n in report.notes)
    assert any("converted to Asia/Shanghai" in n for n in report.notes)
    city, _ = read_trajectories(shared_data / "cities" / "beijing_geolife_gps.csv.gz")
    # The shared city file is the same Geolife data in Beijing local time.
    for user in ("000", "009"):
        ours, theirs = frame[frame["user_id"] == user], city[city["user_id"] == user]
        assert len(ours) == len(theirs)
        np.testing.assert_array_equal(ours["timestamp"].to_numpy(), theirs["timestamp"].to_numpy())
        np.testing.assert_allclose(ours[["lat", "lon"]], theirs[["lat", "lon"]])


def test_gowalla_snap_equals_the_new_york_city_file(shared_data):
    path = shared_data / "raw" / "gowalla_nyc_snap_format.tsv.gz"
    frame, report = read_gowalla_snap(path, timezone="America/New_York")
    assert report.ok and any("SNAP Gowalla importer" in n for n in report.notes)
    city, _ = read_trajectories(shared_data / "cities" / "nyc_gowalla.csv.gz")
    pd.testing.assert_frame_equal(frame[CANONICAL], city[CANONICAL])
    # Rows are newest first in the source: row numbers still point at the source lines.
    assert frame.loc[0, "row"] > frame.loc[1, "row"]


def test_gowalla_snap_is_dispatched_and_kept_in_utc_without_timezone(shared_data):
    frame, report = read_trajectories(shared_data / "raw" / "gowalla_nyc_snap_format.tsv.gz")
    assert any("SNAP Gowalla importer" in n for n in report.notes)
    assert any("--timezone" in n for n in report.notes)
    assert frame.loc[0, "timestamp"] == pd.Timestamp("2010-10-07 15:27:40")  # UTC, from 'Z'


def test_foursquare_tsmc_local_time_is_utc_plus_the_offset(shared_data):
    path = shared_data / "raw" / "foursquare_nyc_tsmc_style_val.csv"
    frame, report = read_foursquare_tsmc(path)
    assert report.ok and set(frame.columns) >= {"location_id", "category"}
    raw = pd.read_csv(path, usecols=["LocalTime"])
    local = pd.to_datetime(raw["LocalTime"]).to_numpy()[frame["row"].to_numpy() - 1]
    np.testing.assert_array_equal(frame["timestamp"].to_numpy(), local)
    dispatched, report = read_trajectories(path)
    assert any("TSMC2014 importer" in n for n in report.notes)
    pd.testing.assert_frame_equal(dispatched, frame)


ORIGINAL_TSMC = (  # the 2014 release's own layout: headerless, tab-separated, Latin-1
    "470\t49bbd6c0f964a520f4531fe3\t4bf58dd8d48988d127951735\tArts & Crafts Store\t"
    "40.719810375488535\t-74.00258103213994\t-240\tTue Apr 03 18:00:09 +0000 2012\n"
    "979\t4a43c0aef964a520c6a61fe3\t4bf58dd8d48988d1df941735\tCaf\xe9\t"
    "40.60679958140643\t-74.04416981025437\t-240\tTue Apr 03 18:00:25 +0000 2012\n"
    "69\t4c5cc7b485a1e21e00d35711\t4bf58dd8d48988d103941735\tHome (private)\t"
    "40.716161684843215\t-73.88307005845945\t-300\tTue Nov 13 18:02:24 +0000 2012\n")


def test_original_tsmc_release_layout(tmp_path):
    path = tmp_path / "dataset_TSMC2014_NYC.txt"
    path.write_bytes(ORIGINAL_TSMC.encode("latin-1"))
    frame, report = read_trajectories(path)
    assert report.ok and any("TSMC2014 importer" in n for n in report.notes)
    by_user = frame.set_index("user_id")
    assert by_user.loc["470", "timestamp"] == pd.Timestamp("2012-04-03 14:00:09")
    assert by_user.loc["69", "timestamp"] == pd.Timestamp("2012-11-13 13:02:24")
    assert by_user.loc["979", "category"] == "Café"
    assert by_user.loc["979", "location_id"] == "4a43c0aef964a520c6a61fe3"


def test_importers_report_wrong_layouts(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("user_id,timestamp,lat,lon\nu,2012-04-07,1,2\n")
    assert "SNAP Gowalla layout" in read_gowalla_snap(path)[1].fatal[0]
    assert "TSMC2014 layout" in read_foursquare_tsmc(path)[1].fatal[0]
    assert "not a Geolife folder" in read_geolife(tmp_path)[1].fatal[0]


@pytest.mark.parametrize("bad", ["not a time", ""])
def test_gowalla_bad_rows_are_dropped_with_row_numbers(tmp_path, bad):
    path = tmp_path / "gowalla.txt"
    path.write_text("0\t2010-10-19T23:55:27Z\t30.2359091167\t-97.7951395833\t22847\n"
                    f"0\t{bad}\t30.26\t-97.76\t420315\n"
                    "1\t2010-10-18T22:17:43Z\t0\t0\t316637\n"
                    "1\t2010-10-17T23:42:03Z\t30.2557309927\t-97.7633857727\t16516\n")
    frame, report = read_trajectories(path, timezone="America/Chicago")
    assert frame["row"].tolist() == [1, 4]
    assert sorted(sum((e["rows"] for e in report.dropped.values()), [])) == [2, 3]
    assert frame.loc[0, "timestamp"] == pd.Timestamp("2010-10-19 18:55:27")


def test_a_single_plt_file_points_to_the_folder(shared_data):
    plt = next((shared_data / "raw" / "geolife_plt" / "000" / "Trajectory").glob("*.plt"))
    _, report = read_trajectories(plt)
    assert "pass the Geolife folder" in report.fatal[0]
