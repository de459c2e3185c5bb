"""The category taxonomy: the table's integrity, tag priority, the three vocabularies, and how much
of the real POI and check-in files it maps (coverage is printed: run with -s to see it)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from trajmoe.pois.categories import (
    CATEGORIES,
    NOT_DESTINATIONS,
    OSM_KEYS,
    TAXONOMY,
    category_from_fclass,
    category_from_foursquare,
    match_osm_tags,
    not_a_destination,
    osm_query_tags,
)


def test_categories_are_the_fixed_schema_and_the_table_follows_them():
    assert CATEGORIES == (
        "food_drink", "nightlife", "retail", "grocery", "education", "health", "transport",
        "parks_leisure", "sport", "culture_tourism", "entertainment", "accommodation",
        "office_work", "personal_services", "public_service", "religion", "residential",
        "industrial", "automotive", "other",
    )  # fmt: skip
    assert tuple(TAXONOMY) == CATEGORIES
    for category, row in TAXONOMY.items():
        if category != "other":  # every real class is reachable from OSM tags
            assert row.osm, category
        assert set(row.osm) <= set(OSM_KEYS)


@pytest.mark.parametrize(
    ("tags", "expected", "label"),
    [
        ({"amenity": "restaurant", "building": "retail"}, "food_drink", "amenity=restaurant"),
        ({"building": "church"}, "religion", "building=church"),
        ({"amenity": "place_of_worship", "religion": "christian"}, "religion", "amenity=place_of_worship"),
        ({"amenity": "shelter", "highway": "bus_stop"}, "transport", "highway=bus_stop"),
        ({"shop": "a_shop_type_invented_tomorrow"}, "retail", "shop=a_shop_type_invented_tomorrow"),
        ({"shop": "hairdresser"}, "personal_services", "shop=hairdresser"),
        ({"office": "government"}, "public_service", "office=government"),
        ({"office": "it"}, "office_work", "office=it"),
        ({"craft": "brewery"}, "industrial", "craft=brewery"),
        ({"leisure": "park", "tourism": "attraction"}, "parks_leisure", "leisure=park"),
        ({"amenity": "Cafe;Bar "}, "food_drink", "amenity=cafe"),  # first of a list, normalised
        ({"amenity": math.nan, "shop": "bakery"}, "food_drink", "shop=bakery"),  # NaN = absent
        ({"amenity": "bench"}, None, "amenity=bench"),
        ({"shop": "vacant"}, None, "shop=vacant"),
        ({"building": "yes"}, None, "building=yes"),
        ({"name": "Nothing known"}, None, None),
    ],
)
def test_osm_tags_follow_the_documented_priority(tags, expected, label):
    assert match_osm_tags(tags) == (expected, label)  # the category is what the pipeline keeps


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("restaurant", "food_drink"),
        ("railway_station", "transport"),  # Geofabrik's own class names
        ("christian_catholic", "religion"),
        ("art", "culture_tourism"),  # Geofabrik "art" is tourism=artwork, not shop=art
        ("Fast food", "food_drink"),  # case, spaces and hyphens normalised
        ("post-office", "public_service"),
        ("restaura", "food_drink"),  # truncated by a shapefile export
        ("post_offic", "public_service"),
        ("re", None),  # too short to tell
        ("fir", None),  # fire_station or firepit: ambiguous
        ("bench", None),
        ("", None),
        (None, None),
    ],
)
def test_fclass(value, expected):
    assert category_from_fclass(value) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Coffee Shop", "food_drink"),
        ("CAFE", "food_drink"),  # case and accents ignored: Café
        ("Ramen /  Noodle House", "food_drink"),  # doubled space as in TSMC2014
        ("Home (private)", "residential"),
        ("Gas Station", "automotive"),  # exact names win over the head-noun rule
        ("Peruvian Restaurant", "food_drink"),  # long tail: head noun
        ("Sports Bar", "nightlife"),
        ("Rooftop Bar", "nightlife"),
        ("Video Game Store", "retail"),
        ("Ski Lodge", "accommodation"),
        ("Baseball Stadium", "sport"),
        ("Animal Hospital", "health"),
        ("Neighborhood", None),  # an area, not a place
        ("Unknown Thing", None),
        (None, None),
    ],
)
def test_foursquare(name, expected):
    assert category_from_foursquare(name) == expected


def test_not_a_destination_reads_source_labels():
    assert not_a_destination("osm:amenity=bench")
    assert not_a_destination("fclass:Toilet")
    assert not_a_destination("foursquare:Neighborhood")
    assert not not_a_destination("osm:amenity=cafe")
    assert not not_a_destination("fclass:atlantis")
    assert not not_a_destination("category:retail")
    assert "bench" in NOT_DESTINATIONS.osm["amenity"].split()


def test_osm_query_tags_fetch_pois_not_infrastructure():
    query = osm_query_tags()
    assert query["amenity"] is True and query["shop"] is True  # unmapped values come back counted
    assert "building" not in query  # would fetch every building of a city
    assert query["railway"] == ["halt", "station", "subway_entrance", "tram_stop"]  # no tracks
    assert query["highway"] == ["bus_stop"]


# --------------------------------------------------------------------------- coverage, real data
def _coverage(labels: pd.Series, to_category, vocabulary: str) -> tuple[int, float, float]:
    """(non-blank rows, share mapped, share mapped or deliberately left out)."""
    labels = labels.dropna().astype(str)
    labels = labels[labels.str.strip() != ""]
    unique = labels.unique()
    mapped = {v: to_category(v) is not None for v in unique}
    known = {v: mapped[v] or not_a_destination(f"{vocabulary}:{v}") for v in unique}
    return len(labels), labels.map(mapped).mean(), labels.map(known).mean()


@pytest.mark.parametrize("name", ["nyc_osm_2013.csv", "nyc_osm_2017.csv", "san_jose_osm_2017.csv"])
def test_fclass_coverage_of_real_files(shared_data, name):
    labels = pd.read_csv(shared_data / "pois" / name)["fclass"]
    n, mapped, known = _coverage(labels, category_from_fclass, "fclass")
    print(f"{name}: {n} non-blank fclass rows, {mapped:.1%} mapped, {known:.1%} mapped or left out")
    # The rest are benches, toilets, post boxes, drinking water: not destinations (see module doc).
    assert mapped > 0.84
    assert known > 0.995


def test_fclass_coverage_pooled(shared_data):
    files = ["nyc_osm_2013.csv", "nyc_osm_2017.csv", "san_jose_osm_2017.csv"]
    labels = pd.concat([pd.read_csv(shared_data / "pois" / f)["fclass"] for f in files])
    n, mapped, known = _coverage(labels, category_from_fclass, "fclass")
    print(f"all fclass files: {n} rows, {mapped:.1%} mapped, {known:.1%} mapped or left out")
    assert mapped > 0.90 and known > 0.995


@pytest.mark.parametrize(
    ("path", "column"),
    [("cities/nyc_foursquare.csv.gz", "category"), ("pois/nyc_foursquare_venues.csv", "PoiCategoryName")],
)
def test_foursquare_coverage_of_real_files(shared_data, path, column):
    labels = pd.read_csv(shared_data / path, usecols=[column])[column]
    n, mapped, known = _coverage(labels, category_from_foursquare, "foursquare")
    print(f"{path}: {n} non-blank {column} rows, {mapped:.1%} mapped, {known:.1%} mapped or left out")
    assert mapped > 0.95  # only "Neighborhood" and "City" (areas, not places) are left out
    assert known == 1.0
