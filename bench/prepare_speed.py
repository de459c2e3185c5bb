"""Time and peak memory to validate + prepare 1 million synthetic visits (goal: < 30 s).

The visits come from the project's own synthetic mobility model (tools.synthetic) over the
real Helsinki POIs in sample_data/, scaled up in users; they are written to a temporary CSV and
`trajmoe prepare` runs on it in a child process, so its peak RSS is measured alone.

    python bench/prepare_speed.py [--visits 1000000]

Writes bench/results/prepare_speed.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import pandas as pd

from tools.realdata import REPO_ROOT
from tools.synthetic import SyntheticConfig, generate_trajectories

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from trajmoe.city.prepare import prepare
t1 = time.perf_counter()
meta, report = prepare(sys.argv[1], city="Helsinki", out=sys.argv[2], pois=sys.argv[3], resolution=10)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "prepare_s": t2 - t1, "kept": sum(meta["n_visits"].values()),
                  "rows": report.n_rows, "cells": meta["n_cells"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--visits", type=int, default=1_000_000)
    args = p.parse_args()
    pois = pd.read_parquet(REPO_ROOT / "sample_data" / "helsinki_pois.parquet")
    base = SyntheticConfig()
    per_user = len(generate_trajectories(pois, config=replace(base, n_users=50))) / 50
    cfg = replace(base, n_users=int(args.visits / per_user) + 1)
    t0 = time.perf_counter()
    frame = generate_trajectories(pois, config=cfg).head(args.visits)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "visits.csv"
        frame.to_csv(csv, index=False)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(csv), str(Path(tmp) / "out"),
                               str(REPO_ROOT / "sample_data" / "helsinki_pois.parquet")],
                              capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [
        "# Prepare speed: 1 million visits",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this machine ({resource.getpagesize()} B pages, 2 cores).",
        "",
        "| visits in CSV | kept after collapse | H3 cells | prepare (read, validate, cells, split, write) s | peak RSS MB | goal |",
        "|---|---|---|---|---|---|",
        f"| {r['rows']:,} | {r['kept']:,} | {r['cells']} | {r['prepare_s']:.1f} | {r['peak_rss_mb']:.0f} | < 30 s |",
        "",
        f"(generating the synthetic visits took {gen_s:.1f} s and is not counted; importing trajmoe took {r['import_s']:.1f} s)",
        "",
        "Re-run: `python bench/prepare_speed.py`",
    ]
    out = REPO_ROOT / "bench" / "results" / "prepare_speed.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
