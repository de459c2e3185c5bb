"""The city preset vs the protocol preset vs the hand-made baselines, on the check-in targets.

For each check-in target of ../shared/data (tools/realdata.py REAL_DATASETS) and seed: the shipped
checkpoint (assets/trajmoe_pretrained.safetensors) fine-tuned with ``--preset city`` (all training
visits, both tasks, the preset's time budget, early stopping and the three-state keep rule on
validation) and with ``--preset protocol`` (5%, 1 epoch, task next: the benchmark's), both scored
like ``trajmoe evaluate`` (cell features from all training visits) in next and at-time; and the
hand-made baselines trained on 100% (``trajmoe baseline``: epr and epr+ for next, epr-time for
at-time). Each run's JSON is cached in bench/results/city_preset.json (rerun to resume; runs done
are skipped); the table goes to bench/results/city_preset.md.

The keep rule's verdict (which state won on validation, each state's validation Acc@1 and MRR, the
paired z) is recorded for every fine-tuning run: the rule was designed on those validation numbers,
the test columns are only read for this table.

    python bench/city_preset.py --cities la_gowalla sf_gowalla --seeds 0
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

from tools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real
from trajmoe.city.tasks import TASKS
from trajmoe.train.checkpoint import load_checkpoint
from trajmoe.train.evaluate import evaluate
from trajmoe.train.finetune import finetune, preset_config
from trajmoe.train.recipe import PRESETS
from trajmoe.train.runner import run_baseline

CKPT = REPO_ROOT / "assets" / "trajmoe_pretrained.safetensors"
PREPARED = REPO_ROOT / "bench" / "results" / "cache" / "prepared"
OUT = REPO_ROOT / "bench" / "results" / "city_preset.json"
CHECKINS = ("la_gowalla", "sf_gowalla", "nyc_gowalla", "nyc_foursquare")  # smallest first
BASELINES = {"epr": "next", "epr+": "next", "epr-time": "at-time"}
KEEP = ("acc@1", "acc@5", "mrr", "n")


def _short(m: dict) -> dict:
    return {k: m[k] for k in KEEP if k in m}


def preset_run(data, preset: str, seed: int) -> dict:
    """Fine-tune the shipped checkpoint with ``preset``; test metrics in both tasks with all visits."""
    model, meta = load_checkpoint(CKPT)
    t0 = time.perf_counter()
    run = finetune(model, data, preset_config(preset, seed=seed), base_info=meta, source=CKPT.name, evaluate_test=False)
    seconds = time.perf_counter() - t0
    test = {task: _short(evaluate(model, data, split="test", task=task)) for task in TASKS}
    return {"seconds": round(seconds, 1), "steps": run.train.steps, "epochs_validated": len(run.train.val),
            "kept": run.train.kept, "verdict": run.verdict.to_json() if run.verdict else None,
            "sentence": run.verdict.sentence() if run.verdict else "", "test": test}


def baseline_run(data, name: str, seed: int) -> dict:
    t0 = time.perf_counter()
    m = run_baseline(name, data, fraction=1.0, seed=seed, task=BASELINES[name])
    return {"seconds": round(time.perf_counter() - t0, 1), "test": {BASELINES[name]: _short(m)}}


def table(runs: dict) -> str:
    """The markdown table: seed means per target, ratios to the best hand-made baseline."""
    lines = ["# City preset vs protocol preset vs hand-made baselines (check-in targets)", "",
             "Shipped checkpoint `assets/trajmoe_pretrained.safetensors` fine-tuned with `trajmoe finetune --preset "
             f"city` (all training visits, both tasks, {PRESETS['city'].max_seconds:.0f} s of steps, up to "
             f"{PRESETS['city'].epochs} epochs, early stopping, three-state keep rule) and `--preset protocol` (5%, "
             "1 epoch, next); baselines `trajmoe baseline --fraction 1.0` (epr, epr+; epr-time at-time). Test Acc@1 "
             "scored as `trajmoe evaluate` (features from all training visits); mean over the seeds listed. "
             "Ratios: to the best of epr / epr+ (next) or to epr-time (at-time). 2 shared CPU cores, "
             "1 torch thread. `python bench/city_preset.py --cities ... --seeds ...`.", "",
             "| target | seeds | city next | protocol next | epr | epr+ | city / best | protocol / best "
             "| city at-time | epr-time | city / epr-time | kept (city) | city seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in CHECKINS:
        seeds = sorted({r["seed"] for r in runs.values() if r["key"] == key and r["method"] == "city"})
        if not seeds:
            continue

        def mean(method, task, seeds=seeds, key=key):
            vals = [runs[f"{key}/{method}/{s}"]["test"][task]["acc@1"] for s in seeds if f"{key}/{method}/{s}" in runs]
            return float(np.mean(vals)) if vals else float("nan")

        base = {m: mean(m, BASELINES[m], seeds=[0]) for m in BASELINES}  # deterministic on 100%: seed 0
        best = max(base["epr"], base["epr+"])
        city, proto, city_t = mean("city", "next"), mean("protocol", "next"), mean("city", "at-time")
        kept = ", ".join(runs[f"{key}/city/{s}"]["kept"] for s in seeds)
        secs = np.mean([runs[f"{key}/city/{s}"]["seconds"] for s in seeds])
        lines.append(f"| {key} | {','.join(map(str, seeds))} | {city:.4f} | {proto:.4f} | {base['epr']:.4f} | "
                     f"{base['epr+']:.4f} | {city / best:.3f}x | {proto / best:.3f}x | {city_t:.4f} | "
                     f"{base['epr-time']:.4f} | {city_t / base['epr-time']:.3f}x | {kept} | {secs:.0f} |")
    lines += ["", "Keep rule verdicts (validation only; the city preset's runs):", ""]
    for rid, r in runs.items():
        if r["method"] == "city" and r.get("verdict"):
            v = r["verdict"]
            vals = "; ".join(f"{s} acc@1 {m['acc@1']:.4f} mrr {m['mrr']:.4f}" for s, m in v["val"].items())
            zs = ", ".join(f"vs {s} z {z:+.1f}" for s, z in v["z"].items())
            lines.append(f"- {rid}: kept {v['kept']} ({zs}); {vals}; {v['targets']} targets per task")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cities", nargs="+", default=list(CHECKINS[:2]), choices=CHECKINS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--methods", nargs="+", default=["city", "protocol", *BASELINES])
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for key in args.cities:
        assert REAL_DATASETS[key][0].endswith(".csv.gz")
        data = prepare_real(key, PREPARED)
        for seed in args.seeds:
            for method in args.methods:
                rid = f"{key}/{method}/{seed}"
                if rid in runs or (method in BASELINES and seed != 0):
                    continue
                out = preset_run(data, method, seed) if method in PRESETS else baseline_run(data, method, seed)
                runs[rid] = {"key": key, "method": method, "seed": seed, **out}
                OUT.write_text(json.dumps(runs, indent=1))
                print(rid, json.dumps(out.get("test")), out.get("kept", ""), flush=True)
    OUT.with_suffix(".md").write_text(table(runs))
    print(table(runs))


if __name__ == "__main__":
    main()
