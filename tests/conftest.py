"""Shared fixtures. Real data comes from ../shared/data through one helper; absent -> clean skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from trajmoe.realdata import REPO_ROOT, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data folder ../shared/data not found next to the repository")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_trajectories() -> Path:
    return REPO_ROOT / "sample_data" / "helsinki_synthetic_trajectories.csv.gz"


@pytest.fixture(scope="session")
def sample_pois() -> Path:
    return REPO_ROOT / "sample_data" / "helsinki_pois.parquet"
