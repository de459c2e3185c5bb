"""The city preset vs the protocol preset vs the hand-made baselines, on the check-in targets.

For each check-in target of ../shared/data (tools/realdata.py REAL_DATASETS) and seed: the shipped
checkpoint (assets/trajmoe_pretrained.safetensors) fine-tuned with ``--preset city`` (all training
visits, both tasks, the preset's time budget, early stopping and the three-state keep rule on
validation) and with ``--preset protocol`` (5%, 1 epoch, task next: the benchmark's), both scored
like ``trajmoe evaluate`` (cell features from all training visits) in next and at-time; and the
hand-made baselines trained on 100% (``trajmoe baseline``: epr and epr+ for next, epr-time for
at-time). Each run's JSON is cached in bench/results/city_preset.json (rerun to resume; runs done
are skipped); the table goes to bench/results/city_preset.md. ``--methods keep_study`` compares
keep rules on the validation targets alone (half picks, the other half judges).

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
from trajmoe.train.keep import STATES, choose_state
from trajmoe.train.recipe import PRESETS
from trajmoe.train.runner import run_baseline

CKPT = REPO_ROOT / "assets" / "trajmoe_pretrained.safetensors"
PREPARED = REPO_ROOT / "bench" / "results" / "cache" / "prepared"
OUT = REPO_ROOT / "bench" / "results" / "city_preset.json"
KEEP_OUT = REPO_ROOT / "bench" / "results" / "city_preset.keep.json"  # --methods keep_study (may run beside)
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


# The keep rules compared on validation (bench/results/city_preset.md, "Keep rule"): each picks a state from
# the ranks of half of the validation targets; it is judged on the other half.
RULES = {
    "most tuned unless worse beyond noise (shipped)": lambda r: choose_state(r),
    "simplest unless worse beyond noise": lambda r: choose_state(r, order=tuple(reversed(STATES))),
    "highest mean on the half": lambda r: max(r, key=lambda s: (1.0 / r[s]).mean()),
    "always fine-tuned": lambda r: "fine-tuned",
    "always baseline": lambda r: "baseline",
}
SPLITS = 200


def keep_study(data, seed: int) -> dict:
    """The city preset's three states' validation ranks; each rule picks on a random half of the
    validation targets (paired across tasks) and is scored on the other half, over SPLITS halves.
    Caveat: early stopping and head calibration saw all validation targets, the judged half too."""
    model, meta = load_checkpoint(CKPT)
    run = finetune(model, data, preset_config("city", seed=seed), base_info=meta, source=CKPT.name, evaluate_test=False)
    ranks = run.train.state_ranks
    n = len(next(iter(ranks.values()))) // len(TASKS)  # the targets, once per task
    rng = np.random.default_rng(seed)
    out = {rule: {"acc@1": 0.0, "mrr": 0.0, "picks": {}} for rule in RULES}
    for _ in range(SPLITS):
        half = np.zeros(n, dtype=bool)
        half[rng.permutation(n)[: n // 2]] = True
        a = np.tile(half, len(TASKS))
        for rule, pick in RULES.items():
            state = pick({s: r[a] for s, r in ranks.items()})
            judged = ranks[state][~a]
            out[rule]["acc@1"] += float((judged == 1).mean()) / SPLITS
            out[rule]["mrr"] += float((1.0 / judged).mean()) / SPLITS
            out[rule]["picks"][state] = out[rule]["picks"].get(state, 0) + 1
    return {"kept": run.train.kept, "verdict": run.verdict.to_json(), "rules": out}


def baseline_run(data, name: str, seed: int) -> dict:
    t0 = time.perf_counter()
    m = run_baseline(name, data, fraction=1.0, seed=seed, task=BASELINES[name])
    return {"seconds": round(time.perf_counter() - t0, 1), "test": {BASELINES[name]: _short(m)}}


def table(runs: dict) -> str:
    """The markdown table: seed means per target, ratios to the best hand-made baseline."""
    lines = ["# City preset vs protocol preset vs hand-made baselines (check-in targets)", "",
             "Shipped checkpoint `assets/trajmoe_pretrained.safetensors` fine-tuned with `trajmoe finetune --preset "
             f"city` (all training visits, both tasks, {PRESETS['city'].max_seconds:.0f} s training budget, up to "
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
    study = {rid: r for rid, r in runs.items() if r["method"] == "keep_study"}
    if study:
        lines += ["", "## Keep rule, on validation only", "",
                  f"City preset runs ({', '.join(sorted(study))}): each rule picks among the fine-tuned state, the "
                  f"starting one and the calibrated hand-made head alone on a random half of the validation targets "
                  f"and is scored on the other half ({SPLITS} halves per run; mean Acc@1 and MRR over runs and halves, "
                  "both tasks). Early stopping and calibration saw every validation target, so the judged half is "
                  "not fully held out. `python bench/city_preset.py --methods keep_study`.", "",
                  "| rule | val Acc@1 (judged half) | val MRR | picks (fine-tuned / starting / baseline) |",
                  "|---|---|---|---|"]
        for rule in RULES:
            acc = np.mean([r["rules"][rule]["acc@1"] for r in study.values()])
            mrr = np.mean([r["rules"][rule]["mrr"] for r in study.values()])
            picks = {s: sum(r["rules"][rule]["picks"].get(s, 0) for r in study.values()) for s in STATES}
            lines.append(f"| {rule} | {acc:.4f} | {mrr:.4f} | {' / '.join(str(picks[s]) for s in STATES)} |")
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
    ap.add_argument("--methods", nargs="+", default=["city", "protocol", *BASELINES],
                    choices=["city", "protocol", *BASELINES, "keep_study"])
    ap.add_argument("--json", type=Path, help="cache the runs in this file instead (a second run beside another; "
                                              "the table reads every bench/results/city_preset*.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out_file = args.json or (KEEP_OUT if args.methods == ["keep_study"] else OUT)
    runs = json.loads(out_file.read_text()) if out_file.is_file() else {}
    for key in args.cities:
        assert REAL_DATASETS[key][0].endswith(".csv.gz")
        data = prepare_real(key, PREPARED)
        for seed in args.seeds:
            for method in args.methods:
                rid = f"{key}/{method}/{seed}"
                if rid in runs or (method in BASELINES and seed != 0):
                    continue
                if method == "keep_study":
                    out = keep_study(data, seed)
                elif method in PRESETS:
                    out = preset_run(data, method, seed)
                else:
                    out = baseline_run(data, method, seed)
                runs[rid] = {"key": key, "method": method, "seed": seed, **out}
                # merged with what another run of this script wrote meanwhile (runs never overlap by id)
                runs = {**(json.loads(out_file.read_text()) if out_file.is_file() else {}), **runs}
                out_file.write_text(json.dumps(runs, indent=1))
                print(rid, json.dumps(out.get("test")), out.get("kept", ""), flush=True)
    runs = {**runs, **{k: v for f in sorted(OUT.parent.glob("city_preset*.json")) for k, v in json.loads(f.read_text()).items()}}
    OUT.with_suffix(".md").write_text(table(runs))
    print(table(runs))


if __name__ == "__main__":
    main()
