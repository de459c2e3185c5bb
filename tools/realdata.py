"""Locate the shared real-data folder (``../shared/data`` next to the repository root).

Tests and benchmarks read real public mobility data from there and never copy it into the repo.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """Return ``../shared/data`` relative to the repo root (or ``$TRAJMOE_SHARED_DATA``), or None."""
    env = os.environ.get("TRAJMOE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if (path / "MANIFEST.md").is_file():
            return path
    return None


# The real datasets of ../shared/data/cities (see its MANIFEST.md) and how each is prepared.
# key -> (file under cities/, city name, metro, POI file under pois/ or None, prepare kwargs).
# H3 resolution is fixed at the protocol's 8 (10 for bike stations, ~39 cells at 8 per MANIFEST)
# rather than chosen automatically, so numbers compare across cities and with the MANIFEST.
REAL_DATASETS: dict[str, tuple[str, str, str, str | None, dict]] = {
    "nyc_foursquare": ("nyc_foursquare.csv.gz", "New York", "nyc", "nyc_osm_2013.csv", {"resolution": 8}),
    "nyc_gowalla": ("nyc_gowalla.csv.gz", "New York", "nyc", "nyc_osm_2013.csv", {"resolution": 8}),
    # SNAP Gowalla SF/LA: the weekday is rotated by an unknown constant (MANIFEST): hour only
    "sf_gowalla": ("sf_gowalla.csv.gz", "San Francisco", "sf", None, {"weekday_reliable": False, "resolution": 8}),
    "la_gowalla": ("la_gowalla.csv.gz", "Los Angeles", "la", None, {"weekday_reliable": False, "resolution": 8}),
    "beijing_geolife_gps": ("beijing_geolife_gps.csv.gz", "Beijing", "beijing", None, {"resolution": 8}),
    "sf_cabspotting_gps": ("sf_cabspotting_gps.csv.gz", "San Francisco taxis", "sf", None, {"resolution": 8}),
    "mexico_city_taxi_trips": ("mexico_city_taxi_trips.csv.gz", "Mexico City taxis", "mexico", None, {"resolution": 8}),
    "jersey_city_citibike": ("jersey_city_citibike.csv.gz", "Jersey City bikes", "jersey", None, {"resolution": 10}),
}


def prepare_real(key: str, cache: Path):
    """Prepare real dataset ``key`` into ``cache/key`` once; return its CityData."""
    from trajmoe.city.data import CityData
    from trajmoe.city.prepare import prepare

    folder = Path(cache) / key
    if not (folder / "meta.json").is_file():
        data = shared_data_dir()
        if data is None:
            raise FileNotFoundError("../shared/data not found next to the repository: the real data is needed here.")
        file, city, _, pois, extra = REAL_DATASETS[key]
        prepare(data / "cities" / file, city=city, out=folder, pois=data / "pois" / pois if pois else None, **extra)
    return CityData(folder)
