"""The world layer (GSHHG shorelines, GeoNames places shipped in wheels), GeoNames place names and
the hemisphere / ocean check, on real check-ins of ../shared/data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trajmoe.geo import cell_centres, latlon_to_cells, project_km
from trajmoe.pois.basemap import Basemap
from trajmoe.pois.geocheck import coordinate_check
from trajmoe.pois.placenames import coordinates_name, place_names
from trajmoe.pois.world import land_shape, on_land, places_in, visits_box, with_world, world_basemap

APP_LABEL_KINDS = ("town", "borough", "suburb", "quarter", "neighbourhood", "village")  # app/maps/basemap.py


@pytest.fixture(scope="module")
def nyc(shared_data) -> pd.DataFrame:
    return pd.read_csv(shared_data / "cities" / "nyc_foursquare.csv.gz", nrows=20_000)


@pytest.fixture(scope="module")
def seattle(shared_data) -> pd.DataFrame:
    return pd.read_csv(shared_data / "more_cities" / "seattle_foursquare_lbsn.csv.gz", nrows=20_000)


def _box(frame: pd.DataFrame) -> tuple[float, float, float, float]:
    box = visits_box(frame["lat"], frame["lon"], margin_km=2.0)
    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    inside = (lat >= box[0]) & (lat <= box[2]) & (lon >= box[1]) & (lon <= box[3])
    assert inside.mean() > 0.98 and box == visits_box(frame["lat"], frame["lon"], margin_km=2.0)
    return box


@pytest.mark.parametrize("city", ["nyc", "seattle"])
def test_world_layer_of_a_real_city_has_water_and_labels_the_app_draws(city, request):
    frame = request.getfixturevalue(city)
    south, west, north, east = _box(frame)
    base = world_basemap(south, west, north, east)
    assert (base.areas["kind"] == "water").sum() >= 1
    assert base.labels["kind"].isin(APP_LABEL_KINDS).any()
    for ring in base.areas["polygon"]:  # one outer ring each, inside the box
        pts = np.asarray(ring)
        assert pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 4
        assert pts[:, 0].min() >= west - 1e-6 and pts[:, 0].max() <= east + 1e-6
        assert pts[:, 1].min() >= south - 1e-6 and pts[:, 1].max() <= north + 1e-6
    assert base.clip(south, west, north, east).labels.shape == base.labels.shape
    # The hole-free pieces add up to the water: the box less the land.
    import shapely

    pieces = sum(shapely.Polygon(ring).area for ring in base.areas["polygon"])
    water = shapely.box(west, south, east, north).area - land_shape(south, west, north, east).area
    assert pieces == pytest.approx(water, rel=0.02)
    # Most check-ins are on land, and none of the water rings covers most of them.
    assert on_land(frame["lat"], frame["lon"]).mean() > 0.9


def test_the_ocean_is_all_water_and_has_no_places():
    base = world_basemap(-42.1, -87.9, -41.7, -87.5)  # Chicago with its latitude sign-flipped
    assert len(base.labels) == 0 and base.areas["kind"].tolist() == ["water"]
    lon, lat = np.asarray(base.areas["polygon"].iloc[0]).T
    assert (lon.min(), lat.min(), lon.max(), lat.max()) == pytest.approx((-87.9, -42.1, -87.5, -41.7))


def test_water_is_where_the_sea_is():
    # Manhattan's Central Park (land), the Upper Bay off Liberty Island and Lake Michigan (water)
    assert on_land([40.7829, 40.670, 41.90], [-73.9654, -74.050, -87.45]).tolist() == [True, False, False]


def test_world_layer_goes_under_the_citys_own_osm_base_map(nyc):
    south, west, north, east = _box(nyc)
    osm = Basemap(streets=pd.DataFrame({"path": [[[-73.99, 40.75], [-73.98, 40.76]]], "name": ["Broadway"], "rank": [1]}),
                  areas=pd.DataFrame({"polygon": [[[-73.97, 40.77], [-73.95, 40.77], [-73.95, 40.79], [-73.97, 40.77]]],
                                      "kind": ["park"], "name": ["Central Park"]}),
                  labels=pd.DataFrame({"lat": [40.7831], "lon": [-73.9712], "name": ["Manhattan"], "kind": ["borough"]}),
                  source="test.osm")
    world = world_basemap(south, west, north, east)
    both = with_world(osm, south, west, north, east)
    assert both.streets["name"].tolist() == ["Broadway"]
    assert both.areas["kind"].iloc[-1] == "park" and both.areas["name"].iloc[-1] == "Central Park"  # OSM on top
    assert (both.areas["kind"] == "water").sum() == (world.areas["kind"] == "water").sum()
    assert both.labels["name"].tolist().count("Manhattan") == 1  # OSM's own label, not GeoNames' again
    assert len(both.labels) > len(osm.labels)
    assert with_world(None, south, west, north, east) is world


def test_cells_osm_names_nothing_near_are_named_after_geonames_places(nyc):
    cells = pd.unique(latlon_to_cells(nyc["lat"].to_numpy(), nyc["lon"].to_numpy(), 8))
    names = place_names(cells)  # no OSM data at all: GeoNames, then coordinates
    assert names.is_unique and len(names) == len(cells)
    latlon = cell_centres(names.index)
    centre = (float(latlon[:, 0].mean()), float(latlon[:, 1].mean()))
    places = places_in(latlon[:, 0].min() - 0.1, latlon[:, 1].min() - 0.1, latlon[:, 0].max() + 0.1, latlon[:, 1].max() + 0.1)
    from scipy.spatial import cKDTree

    km, _ = cKDTree(project_km(places["lat"].to_numpy(), places["lon"].to_numpy(), centre)).query(
        project_km(latlon[:, 0], latlon[:, 1], centre))
    by_coordinates = np.array([n == coordinates_name(a, b) for n, (a, b) in zip(names, latlon)])
    assert (km < 1.9).sum() > 100
    assert not (by_coordinates & (km < 1.9)).any()  # (1.9: the test's projection differs a little)
    assert names.str.contains("Brooklyn|Manhattan|Queens|Bronx|Jersey City").any()
    assert (names.str.startswith("near ") | names.str.contains(" km ")).mean() > 0.5


def test_an_unmodified_real_city_is_not_flagged(nyc, seattle, sample_trajectories):
    helsinki = pd.read_csv(sample_trajectories)
    for frame in (nyc, seattle, helsinki):
        assert coordinate_check(frame["lat"], frame["lon"]) is None


# Each mistake on a city where it lands away from people (a sign-flipped longitude puts New York in
# Central Asia, Seattle in Inner Mongolia: inhabited, so no check of where the points lie can tell).
@pytest.mark.parametrize(("file", "move", "cause", "fix", "city"), [
    ("more_cities/seattle_foursquare_lbsn", lambda la, lo: (-la, lo), "latitudes look sign-flipped", "lat column", "Seattle"),
    ("more_cities/honolulu_gowalla_lbsn", lambda la, lo: (la, -lo), "longitudes look sign-flipped", "lon column", "Honolulu"),
    ("cities/nyc_foursquare", lambda la, lo: (lo, la), "look swapped", "Swap the file's lat and lon", "New York City"),
    ("more_cities/honolulu_gowalla_lbsn", lambda la, lo: (-la, -lo), "Both your latitudes and longitudes",
     "lat and lon columns", "Honolulu"),
])  # fmt: skip
def test_a_wrong_copy_of_a_real_city_is_reported_with_its_cause(shared_data, file, move, cause, fix, city):
    frame = pd.read_csv(shared_data / f"{file}.csv.gz", nrows=20_000)
    assert coordinate_check(frame["lat"], frame["lon"]) is None
    warning = coordinate_check(*move(frame["lat"].to_numpy(), frame["lon"].to_numpy()))
    assert warning is not None and cause in warning and fix in warning
    assert f"they are in {city}" in warning


def test_when_two_mistakes_fit_both_are_said(shared_data):
    miami = pd.read_csv(shared_data / "more_cities" / "miami_foursquare_lbsn.csv.gz", nrows=20_000)
    warning = coordinate_check(-miami["lat"], -miami["lon"])  # lat flipped alone lands in India
    assert "with both signs changed, in Miami" in warning


def test_a_sign_flipped_file_is_reported_at_upload(nyc, tmp_path):
    from trajmoe.city.prepare import prepare

    flipped = nyc.head(3000).assign(lat=lambda f: -f["lat"])
    path = tmp_path / "flipped.csv"
    flipped.to_csv(path, index=False)
    _, report = prepare(path, city="Somewhere", out=tmp_path / "city", resolution=8)
    notes = [n for n in report.notes if "sign-flipped" in n]
    assert len(notes) == 1 and "they are in New York City" in notes[0] and "lat column" in notes[0]
    assert "sign-flipped" in report.to_text()
