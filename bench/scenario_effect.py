"""How far the Scenario page's what-if moves predictions: +10 POIs of each category in 10 cells.

For every POI category: add 10 POIs of it to each of 10 cells of New York (Foursquare check-ins;
the 10 cells are drawn once, seeded, among cells with test arrivals), and measure with
:func:`trajmoe.analysis.scenario.run_scenario` the change in expected arrivals (the sum of the
model's next-cell probabilities over every test target) in the edited cells. Reported per
category: the mean |change in inflow| per edited cell, in arrivals and as a share of the cell's
inflow before, and the total |change| anywhere in the city.

    python bench/scenario_effect.py [--checkpoint assets/trajmoe_pretrained.safetensors] [--tag NAME]

Writes bench/results/scenario_effect.json (one entry per tag) and prints a Markdown table. The
script only uses the public API, so the same file run in a checkout of an older commit measures
the model of that commit ("before").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch

from tools.realdata import prepare_real, shared_data_dir
from trajmoe.analysis.scenario import POIEdit, run_scenario
from trajmoe.pois.categories import CATEGORIES
from trajmoe.train.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
N_CELLS, N_POIS, SEED = 10, 10, 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(HERE.parent / "assets" / "trajmoe_pretrained.safetensors"))
    p.add_argument("--tag", default="current")
    p.add_argument("--out", default=str(HERE / "results" / "scenario_effect.json"))
    p.add_argument("--cache", default=str(HERE / "results" / "cache" / "prepared"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if shared_data_dir() is None:
        raise SystemExit("../shared/data not found: the scenario benchmark needs the New York check-ins.")
    torch.set_num_threads(args.threads)
    data = prepare_real("nyc_foursquare", Path(args.cache))
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    test = data.targets("test")
    arrived = np.unique(data.cell_idx[test][data.cell_idx[test] >= 0])
    cells = np.random.default_rng(SEED).choice(arrived, size=N_CELLS, replace=False)
    names = data.cells["cell"].to_numpy()[cells]
    rows, t0 = {}, time.perf_counter()
    for category in CATEGORIES:
        res = run_scenario(model, data, [POIEdit(str(c), category, N_POIS) for c in names])
        edited = res.cells[res.cells["edited"]]
        rows[category] = {
            "mean_abs_change": float(edited["change"].abs().mean()),
            "mean_abs_change_pct": float((edited["change"].abs() / edited["inflow_before"].clip(lower=1e-9)).mean() * 100),
            "total_abs_change": float(res.cells["change"].abs().sum()),
            "inflow_before_mean": float(edited["inflow_before"].mean()),
        }
        print(category, rows[category], flush=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[args.tag] = {"checkpoint": Path(args.checkpoint).name, "cells": [str(c) for c in names],
                         "targets": int(len(test)), "seconds": round(time.perf_counter() - t0, 1), "categories": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    text = render(results)
    out.with_suffix(".md").write_text(text)
    print(text)


def render(results: dict) -> str:
    """Markdown: per category, the mean |change| per edited cell (and its % of the cell's inflow)
    of every tagged run side by side, then the means over categories."""
    tags = list(results)
    lines = ["# Scenario effect: +10 POIs of one category in each of 10 New York cells", "",
             f"Mean |change in expected arrivals| per edited cell over {results[tags[0]]['targets']:,} test targets "
             "(nyc_foursquare, cells drawn with seed 0 among cells with test arrivals), and as % of the cell's "
             "inflow before. `python bench/scenario_effect.py --tag NAME` (run in an older checkout for 'before').", "",
             "| category | " + " | ".join(tags) + " |", "|---|" + "---|" * len(tags)]
    for category in results[tags[0]]["categories"]:
        cells = [results[t]["categories"].get(category) for t in tags]
        lines.append(f"| {category} | " + " | ".join(
            f"{c['mean_abs_change']:.3f} ({c['mean_abs_change_pct']:.2f}%)" if c else "" for c in cells) + " |")
    means = [np.mean([c["mean_abs_change"] for c in results[t]["categories"].values()]) for t in tags]
    pcts = [np.mean([c["mean_abs_change_pct"] for c in results[t]["categories"].values()]) for t in tags]
    lines.append("| **mean over categories** | " + " | ".join(f"**{m:.3f} ({p:.2f}%)**" for m, p in zip(means, pcts)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
