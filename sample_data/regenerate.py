"""Regenerate the app's embedded default: real Helsinki POIs and base map, a SYNTHETIC population.

    python sample_data/regenerate.py            # rewrites the three files next to this script
    python sample_data/regenerate.py --out-dir /tmp/check

Deterministic: the same code and package versions give the same rows (the gzip header carries no
time stamp). See README.md in this folder for what the files are and the model behind them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

from tools.synthetic import SyntheticConfig, generate_trajectories
from trajmoe.pois.basemap import read_basemap, write_basemap
from trajmoe.pois.offline import helsinki_extract_path, read_pois, write_pois

HERE = Path(__file__).resolve().parent
POIS_NAME = "helsinki_pois.parquet"
TRAJECTORIES_NAME = "helsinki_synthetic_trajectories.csv.gz"
BASEMAP_NAME = "helsinki_basemap.geojson"  # streets, water, parks, place labels drawn under every map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="folder to write the files to")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    pois_path = args.out_dir / POIS_NAME
    trajectories_path = args.out_dir / TRAJECTORIES_NAME
    basemap_path = args.out_dir / BASEMAP_NAME

    started = time.perf_counter()
    extract = helsinki_extract_path()
    write_pois(read_pois(extract), pois_path)
    basemap = read_basemap(extract)
    write_basemap(basemap, basemap_path)
    # Simulate over the table exactly as shipped: its row order defines the location ids.
    pois = read_pois(pois_path)
    config = SyntheticConfig()
    frame = generate_trajectories(pois, config=config)
    frame.to_csv(trajectories_path, index=False, compression={"method": "gzip", "mtime": 0})
    elapsed = time.perf_counter() - started

    print(f"read {extract}")
    print(f"wrote {pois_path}: {len(pois)} real OSM POIs, "
          f"{pois['category'].nunique()} categories, {pois_path.stat().st_size / 1e6:.2f} MB")
    print(f"wrote {trajectories_path}: SYNTHETIC, {frame['user_id'].nunique()} agents, "
          f"{len(frame)} visits, {config.days} days from {config.start}, seed {config.seed}, "
          f"{trajectories_path.stat().st_size / 1e6:.2f} MB")
    print(f"wrote {basemap_path}: {len(basemap.streets)} streets, {len(basemap.areas)} water/park areas, "
          f"{len(basemap.labels)} place labels, {basemap_path.stat().st_size / 1e6:.2f} MB")
    print(f"took {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
