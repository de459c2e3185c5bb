"""Wall time and peak memory of `trajmoe validate` and `trajmoe prepare` on a 5-million-row upload.

A planner's largest plausible upload: 5,000,000 check-ins of 50,000 people (100 each) in one
metro area, written as a plain CSV (~0.4 GB) under /tmp. Each verb runs in its own child process
(``python -m trajmoe ...``) and its peak resident memory is that child's own ``ru_maxrss`` from
``os.wait4``, so nothing of this script is counted. Goal: peak < 4 GB for each verb.

The check-ins are synthetic and vectorised (generated in seconds): every person has a home and
a work venue among 40,000 venues and otherwise picks venues by a Zipf law of popularity; gaps
between check-ins are exponential (mean 7 h); timestamps are ISO-8601 with a UTC offset.

    python bench/large_upload.py [--rows 5000000] [--users 50000] [--keep]

Writes bench/results/large_upload.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import pandas as pd

from tools.realdata import REPO_ROOT

CENTRE = (40.73, -73.95)  # a New York-sized metro: venues within ~25 km
N_VENUES = 40_000
GOAL_MB = 4096


def write_checkins(path: Path, *, rows: int, users: int, seed: int = 0, chunk_users: int = 5_000) -> None:
    """Write ``rows`` synthetic check-ins of ``users`` people to ``path`` (CSV), chunk by chunk."""
    rng = np.random.default_rng(seed)
    venue_lat = CENTRE[0] + rng.normal(0, 0.08, N_VENUES)
    venue_lon = CENTRE[1] + rng.normal(0, 0.10, N_VENUES)
    categories = np.array(["Coffee Shop", "Office", "Home (private)", "Subway", "Bar", "Gym", "Park",
                           "Restaurant", "Grocery Store", "University"])
    venue_cat = categories[rng.integers(0, len(categories), N_VENUES)]
    popularity = 1.0 / np.arange(1, N_VENUES + 1) ** 0.9
    popularity /= popularity.sum()
    per_user = np.full(users, rows // users)
    per_user[: rows - per_user.sum()] += 1
    with path.open("w") as out:
        out.write("user_id,timestamp,lat,lon,location_id,category\n")
        for first in range(0, users, chunk_users):
            counts = per_user[first:first + chunk_users]
            n = int(counts.sum())
            user = np.repeat(np.arange(first, first + len(counts)), counts)
            home = rng.integers(0, N_VENUES, len(counts))
            work = rng.integers(0, N_VENUES, len(counts))
            which = rng.random(n)
            venue = rng.choice(N_VENUES, size=n, p=popularity)
            venue = np.where(which < 0.3, np.repeat(home, counts), venue)
            venue = np.where((which >= 0.3) & (which < 0.5), np.repeat(work, counts), venue)
            gaps = rng.exponential(7 * 3600, n).astype("int64") + 60
            total = np.cumsum(gaps)
            starts = np.cumsum(np.r_[0, counts[:-1]])  # each person's first row in the chunk
            offset = rng.integers(0, 30 * 86400, len(counts)) - (total[starts] - gaps[starts])
            seconds = total + np.repeat(offset, counts)  # per person: own start, then the gaps
            stamps = np.datetime64("2012-04-01T00:00:00") + seconds.astype("timedelta64[s]")
            frame = pd.DataFrame({
                "user_id": np.char.add("u", user.astype(str)),
                "timestamp": np.char.add(np.datetime_as_string(stamps, unit="s"), "-04:00"),
                "lat": np.round(venue_lat[venue], 6), "lon": np.round(venue_lon[venue], 6),
                "location_id": np.char.add("v", venue.astype(str)), "category": venue_cat[venue],
            })
            frame.to_csv(out, header=False, index=False)


def run_child(argv: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``python -m trajmoe argv`` alone; (exit status, wall s, peak RSS MB of that child)."""
    start = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "trajmoe", *argv], stdout=sink, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024  # KB on Linux


def _gzip_mb(path: Path) -> float:
    """Size of ``path`` gzip-compressed (level 6, as `gzip` does by default), in MB."""
    compressor, size = zlib.compressobj(6, zlib.DEFLATED, 31), 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            size += len(compressor.compress(block))
    return (size + len(compressor.flush())) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where the CSV and the prepared folder go")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and prepared folder")
    parser.add_argument("--results", default=str(REPO_ROOT / "bench" / "results" / "large_upload.md"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trajmoe_large_upload_", dir=args.tmp))
    csv = work / "checkins.csv"
    try:
        t0 = time.perf_counter()
        write_checkins(csv, rows=args.rows, users=args.users)
        gen_s = time.perf_counter() - t0
        size_mb = csv.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows ({size_mb:,.0f} MB) in {gen_s:.0f} s: {csv}", flush=True)
        results = []
        for verb, argv in (("validate", ["validate", str(csv)]),
                           ("prepare", ["prepare", "--trajectories", str(csv), "--city", "Big City",
                                        "--out", str(work / "prepared"), "--kind", "checkins"])):
            code, wall, peak = run_child(argv, work / f"{verb}.log")
            tail = [t for t in (work / f"{verb}.log").read_text().splitlines() if t.strip()][-3:]
            print(f"{verb}: exit {code}, {wall:.1f} s, peak RSS {peak:,.0f} MB", *tail, sep="\n  ", flush=True)
            results.append((verb, code, wall, peak, tail))
        gz_mb = _gzip_mb(csv)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"# Large upload: {args.rows:,} rows",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this machine ({os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}): a {size_mb:,.0f} MB CSV of "
        f"{args.rows:,} synthetic check-ins by {args.users:,} people (see the script's docstring), "
        "each verb in its own child process; peak RSS is that child's `ru_maxrss` (`os.wait4`).",
        "",
        "| command | exit | wall s | peak RSS MB | goal |",
        "|---|---|---|---|---|",
    ]
    for verb, code, wall, peak, _ in results:
        verdict = "ok" if peak < GOAL_MB else "OVER"
        lines.append(f"| `trajmoe {verb}` | {code} | {wall:.1f} | {peak:,.0f} | < {GOAL_MB:,} MB: {verdict} |")
    lines += ["", "Last lines printed:", ""]
    for verb, _, _, _, tail in results:
        lines += [f"- `{verb}`: " + " / ".join(t.strip() for t in tail)]
    per_million = results[-1][3] / (args.rows / 1e6)
    lines += ["", "The app's upload limit (`server.maxUploadSize` = 200 MB in `.streamlit/config.toml`) counts "
              f"the uploaded bytes, and the reader takes `.csv.gz`: this upload is {gz_mb:,.0f} MB gzipped, so "
              f"about {200 / gz_mb * args.rows / 1e6:,.0f} million such rows fit under the limit, for which "
              f"`prepare` would need up to about {200 / gz_mb * args.rows / 1e6 * per_million / 1024:,.1f} GB "
              f"(this run's {per_million:,.0f} MB of peak per million rows, fixed costs included). Repetitive "
              "data compresses far better, so what bounds an upload's memory is its row count, not its size.",
              "", f"(generating the CSV took {gen_s:.0f} s and is not counted)", "",
              "Re-run: `python bench/large_upload.py` (needs ~1 GB free under /tmp)."]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n")
    print(f"-> {args.results}")


if __name__ == "__main__":
    main()
