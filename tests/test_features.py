import h3
import numpy as np
import pandas as pd

from trajmoe.city.features import (
    FEATURE_DIM,
    FEATURE_GROUPS,
    build_cell_table,
    cell_feature_matrix,
    popularity_bucket,
)
from trajmoe.pois.categories import CATEGORIES

CENTRE = (60.17, 24.94)


def _pois():
    # 3 cafes in one cell, 1 school in a neighbour, 1 hospital far away
    rows = [(60.1700, 24.9400, "food_drink")] * 3 + [(60.1740, 24.9520, "education"), (60.2500, 25.1000, "health")]
    return pd.DataFrame(rows, columns=["lat", "lon", "category"])


def test_cell_table_counts_and_ring():
    pois = _pois()
    a = h3.latlng_to_cell(60.17, 24.94, 8)
    b = h3.latlng_to_cell(60.1740, 24.9520, 8)
    far = h3.latlng_to_cell(60.25, 25.10, 8)
    cells = build_cell_table([a, b, far], pois=pois, centre=CENTRE, resolution=8)
    assert cells.loc[0, "poi_n_food_drink"] == 3
    assert cells.loc[2, "poi_n_health"] == 1
    if b in h3.grid_disk(a, 1):
        assert cells.loc[0, "ring_poi_n_education"] == 1
    assert cells["poi_known"].all()
    assert np.hypot(cells.loc[0, "x_km"], cells.loc[0, "y_km"]) < 1.0


def test_feature_rows_differ_between_cells_and_visit_part_comes_from_given_visits():
    pois = _pois()
    cells_ids = [h3.latlng_to_cell(60.17, 24.94, 8), h3.latlng_to_cell(60.25, 25.10, 8)]
    cells = build_cell_table(cells_ids, pois=pois, centre=CENTRE, resolution=8)
    f = cell_feature_matrix(cells, train_cell_idx=np.array([0, 0, 1]), train_hour=np.array([8, 9, 20]),
                            train_weekday=np.array([0, 1, 5]))
    assert f.shape == (2, FEATURE_DIM)
    assert not np.allclose(f[0], f[1])
    hour = f[:, FEATURE_GROUPS["visit_hour"]]
    assert hour[0, 8] == 0.5 and hour[1, 20] == 1.0
    poi = f[:, FEATURE_GROUPS["poi_share"]]
    assert poi[0, CATEGORIES.index("food_drink")] == 1.0
    # no visits -> visit part empty, "never visited" popularity bucket, mask says so
    g = cell_feature_matrix(cells, train_cell_idx=np.array([], dtype=int), train_hour=np.array([], dtype=int),
                            train_weekday=np.array([], dtype=int))
    assert g[:, FEATURE_GROUPS["visit_hour"]].sum() == 0
    assert (g[:, FEATURE_GROUPS["popularity"]][:, -1] == 1).all()
    assert (g[:, FEATURE_GROUPS["mask"]][:, 1] == 0).all()


def test_city_without_pois_is_masked_not_missing():
    cells = build_cell_table([h3.latlng_to_cell(60.17, 24.94, 8)], pois=None, centre=CENTRE, resolution=8)
    f = cell_feature_matrix(cells, train_cell_idx=np.array([0]), train_hour=np.array([3]), train_weekday=np.array([2]),
                            weekday_reliable=False)
    assert f[0, FEATURE_GROUPS["poi_share"]].sum() == 0
    assert f[0, FEATURE_GROUPS["mask"]].tolist() == [0.0, 1.0, 0.0]
    assert f[0, FEATURE_GROUPS["visit_weekday"]].sum() == 0


def test_popularity_bucket():
    b = popularity_bucket(np.array([0, 10, 5, 1, 0]))
    assert b[1] == 0 and b[0] == 10 and b[4] == 10
    assert b[1] <= b[2] <= b[3]
