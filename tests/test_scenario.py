"""What-if scenarios: edited POIs -> recomputed features -> the model's changed inflow (trajmoe/analysis/scenario.py)."""

from __future__ import annotations

import copy

import h3
import numpy as np
import pandas as pd
import pytest
import torch

from trajmoe.analysis.scenario import POIEdit, edit_cells, run_scenario
from trajmoe.city.data import CityData
from trajmoe.city.features import POI_COLUMNS, RING_POI_COLUMNS, build_cell_table
from trajmoe.city.prepare import prepare
from trajmoe.errors import InputDataError, POIError, TrajMoEError


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory, sample_trajectories):
    frame = pd.read_csv(sample_trajectories)
    path = tmp_path_factory.mktemp("scenario") / "small.csv"
    frame[frame["user_id"].isin(frame["user_id"].unique()[:60])].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def city(small_helsinki) -> CityData:
    return small_helsinki


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def busiest(city: CityData) -> str:
    return city.visits["cell"][city.visits["cell_idx"] >= 0].value_counts().index[0]


def test_edit_matches_a_cell_table_built_from_the_edited_pois(city, sample_pois):
    """Adding POIs at a cell centre and rebuilding the table gives the same counts as the edit."""
    from trajmoe.pois.offline import read_pois

    cell = busiest(city)
    edited, applied = edit_cells(city.cells, [POIEdit(cell, "nightlife", 7)])
    assert applied == [POIEdit(cell, "nightlife", 7)]
    pois = read_pois(sample_pois)
    lat, lon = h3.cell_to_latlng(cell)
    more = pd.concat([pois, pd.DataFrame({"lat": [lat] * 7, "lon": [lon] * 7, "category": "nightlife",
                                          "name": "", "source": "scenario"})], ignore_index=True)
    near = more[more["lat"].between(city.visits["lat"].min() - 0.02, city.visits["lat"].max() + 0.02)
                & more["lon"].between(city.visits["lon"].min() - 0.02, city.visits["lon"].max() + 0.02)]
    rebuilt = build_cell_table(city.cells["cell"], pois=near, centre=tuple(city.meta["centre"]),
                               resolution=city.meta["resolution"])
    np.testing.assert_array_equal(edited[POI_COLUMNS].to_numpy(), rebuilt[POI_COLUMNS].to_numpy())
    np.testing.assert_array_equal(edited[RING_POI_COLUMNS].to_numpy(), rebuilt[RING_POI_COLUMNS].to_numpy())


def test_removal_is_capped_and_nothing_shared_is_modified(city):
    cell = busiest(city)
    before = city.cells.copy()
    have = int(city.cells.loc[city.cells["cell"] == cell, "poi_n_food_drink"].iloc[0])
    edited, applied = edit_cells(city.cells, [POIEdit(cell, "food_drink", -(have + 50))])
    assert applied == ([POIEdit(cell, "food_drink", -have)] if have else [])
    assert int(edited.loc[edited["cell"] == cell, "poi_n_food_drink"].iloc[0]) == 0
    pd.testing.assert_frame_equal(city.cells, before)
    with pytest.raises(InputDataError, match="category"):
        edit_cells(city.cells, [POIEdit(cell, "castles", 1)])
    with pytest.raises(InputDataError, match="candidate"):
        edit_cells(city.cells, [POIEdit("8a1126d3312ffff", "retail", 1)])


def test_adding_pois_changes_inflow_most_near_the_edited_cell(model, city):
    cell = busiest(city)
    weights = copy.deepcopy(model.state_dict())
    cells_before = city.cells.copy()
    result = run_scenario(model, city, [POIEdit(cell, "food_drink", 30)])
    table = result.cells
    assert result.n_targets == len(city.targets("test"))
    # Probabilities still sum to one per move: arrivals move between cells, their total stays.
    assert table["inflow_before"].sum() == pytest.approx(result.n_targets, rel=1e-4)
    assert table["change"].sum() == pytest.approx(0.0, abs=1e-3 * result.n_targets)
    assert table["change"].abs().max() > 1e-3
    # The biggest change is at the edited cell or a neighbour (the ring counts changed there).
    top = table.loc[table["change"].abs().idxmax(), "cell"]
    assert h3.grid_distance(top, cell) <= 1
    assert bool(table.loc[table["cell"] == cell, "edited"].iloc[0])
    # The model and the city are untouched.
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name])
    pd.testing.assert_frame_equal(city.cells, cells_before)


def test_privacy_rule_on_scenario_cells(model, city):
    result = run_scenario(model, city, [POIEdit(busiest(city), "retail", 5)])
    users = city.visits.groupby("cell")["user_id"].nunique()
    shown, hidden = result.private(5)
    assert (shown["cell"].map(users) >= 5).all()
    assert hidden == int((result.cells["cell"].map(users).fillna(0) < 5).sum()) and hidden > 0


def test_city_without_pois_says_so(model, small_csv, tmp_path):
    prepare(small_csv, city="Nowhere", out=tmp_path, resolution=9)
    bare = CityData(tmp_path)
    with pytest.raises(POIError, match="no POI data"):
        run_scenario(model, bare, [POIEdit(busiest(bare), "retail", 5)])


def test_a_scenario_for_an_arrival_band_asks_the_at_time_task_about_those_arrivals(model, city):
    edits = [POIEdit(busiest(city), "food_drink", 10)]
    whole = run_scenario(model, city, edits)
    band = run_scenario(model, city, edits, arrival_hours=(7, 11))  # widened to whole bands: 06-12
    assert band.arrival_hours == (6, 12) and whole.arrival_hours is None
    targets = city.targets("test")
    in_band = ((city.hour[targets] >= 6) & (city.hour[targets] < 12)).sum()
    assert band.n_targets == in_band < whole.n_targets
    # expected arrivals add up to the arrivals asked about, before and after the edit
    assert band.cells["inflow_before"].sum() == pytest.approx(in_band, rel=1e-4)
    assert band.cells["inflow_after"].sum() == pytest.approx(in_band, rel=1e-4)
    assert not hasattr(model, "task")  # the task is an argument of each scoring call, not a mode of the model
    next_only = copy.deepcopy(model)
    next_only.config.tasks = ("next",)
    with pytest.raises(TrajMoEError, match="at-time"):
        run_scenario(next_only, city, edits, arrival_hours=(6, 12))
