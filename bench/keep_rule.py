"""Which rule should fine-tuning use to keep a state? Checked on SOURCE cities' validation splits.

The New York-held-out checkpoint of bench/transfer.py (pretrained on SF/LA Gowalla and the GPS,
taxi and bike cities) is fine-tuned 1 epoch on 5% of San Francisco and Los Angeles (sources of that
checkpoint), seeds 0-4. For each run, three states are scored on the run's 5% validation share
(what a keep rule may look at: Acc@1 + MRR, and NLL) and on the validation targets OUTSIDE that
share (what the rule should maximise): the starting state, the fine-tuned state, and the
fine-tuned state after head calibration. The table says how often each rule picks the state
that is best outside the share, and the held-out Acc@1 each rule ends with.

    python bench/keep_rule.py   (needs bench/results/cache/ckpt/v3_nyc_trajmoe_600.safetensors)
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import numpy as np
import torch
import torch.nn.functional as F

from tools.realdata import REPO_ROOT, prepare_real
from trajmoe.train.calibration import calibrate_head
from trajmoe.train.checkpoint import load_checkpoint
from trajmoe.train.evaluate import iter_scores
from trajmoe.train.fit import TrainConfig, fit
from trajmoe.train.metrics import metrics_from_ranks, target_ranks

CKPT = REPO_ROOT / "bench" / "results" / "cache" / "ckpt" / "v3_nyc_trajmoe_600.safetensors"
OUT = REPO_ROOT / "bench" / "results" / "keep_rule.json"


def scores(model, data, city, targets) -> dict:
    """Acc@1, MRR and mean NLL of ``targets`` (candidates only for the NLL)."""
    ranks, nll, n = [], 0.0, 0
    for chunk, s, _ in iter_scores(model, data, targets, city=city):
        truth = torch.from_numpy(data.cell_idx[chunk])
        ranks.append(target_ranks(s, truth).numpy())
        ok = truth >= 0
        nll += float(F.cross_entropy(s[ok], truth[ok], reduction="sum"))
        n += int(ok.sum())
    r = np.concatenate(ranks)
    m = metrics_from_ranks(r)
    return {"acc@1": m["acc@1"], "mrr": m["mrr"], "nll": nll / max(n, 1), "n": m["n"], "rr": (1.0 / r).tolist()}


def paired(row: dict, state: str) -> float:
    """The rule fit uses: start from the calibrated state, step back (to the fine-tuned, then the
    starting state) only when the share shows the later state worse beyond noise; 1 for the pick."""
    from trajmoe.train.keep import worse_beyond_noise

    rr = {s: np.asarray(row[s]["share"]["rr"]) for s in ("start", "tuned", "calibrated")}
    tuned = "start" if worse_beyond_noise(rr["tuned"], rr["start"]) else "tuned"
    pick = tuned if worse_beyond_noise(rr["calibrated"], rr[tuned]) else "calibrated"
    return float(pick == state)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for key in ("sf_gowalla", "la_gowalla"):
        data = prepare_real(key, REPO_ROOT / "bench" / "results" / "cache" / "prepared")
        for seed in range(5):
            start, _ = load_checkpoint(CKPT)
            tuned = copy.deepcopy(start)
            res = fit(tuned, [data], TrainConfig(fraction=0.05, epochs=1, seed=seed, batch_size=8, lr=1e-3,
                                                 warmup_steps=1, calibrate=False), val_city=data)
            # fit keeps the better of start and epoch on the share; score the epoch's state itself
            sub = res.val_subset
            if res.kept == "starting":  # rerun without the rule to have the fine-tuned state
                tuned = copy.deepcopy(start)
                res = fit(tuned, [data], TrainConfig(fraction=0.05, epochs=1, seed=seed, batch_size=8, lr=1e-3,
                                                     warmup_steps=1, calibrate=False, patience=99), val_city=None)
            calibrated = copy.deepcopy(tuned)
            calibrate_head(calibrated, data, sub.city, sub.val_targets)
            outside = np.setdiff1d(data.targets("val"), sub.val_targets)
            row = {"city": key, "seed": seed, "share": len(sub.val_targets), "outside": len(outside)}
            for name, m in (("start", start), ("tuned", tuned), ("calibrated", calibrated)):
                row[name] = {"share": scores(m, data, sub.city, sub.val_targets),
                             "outside": scores(m, data, sub.city, outside)}
            rows.append(row)
            print(json.dumps({k: (v if not isinstance(v, dict) else {p: round(q["acc@1"], 4) for p, q in v.items()})
                              for k, v in row.items()}), flush=True)
    OUT.write_text(json.dumps(rows, indent=2))
    states = ("start", "tuned", "calibrated")
    rules = {"acc@1 + MRR on the share": lambda r, s: r[s]["share"]["acc@1"] + r[s]["share"]["mrr"],
             "NLL on the share": lambda r, s: -r[s]["share"]["nll"],
             "paired test (fit.worse_beyond_noise)": paired}
    lines = ["# Keep rule for fine-tuning, on source cities' validation splits", "",
             "New York-held-out checkpoint, fine-tuned 1 epoch on 5% of sf_gowalla and la_gowalla (sources of that "
             "checkpoint), seeds 0-4: which state each rule keeps, judged on the validation targets outside the "
             "run's 5% share. `python bench/keep_rule.py`.", "",
             "| rule | picks the best state outside the share | mean held-out Acc@1 |", "|---|---|---|"]
    for name, rule in {**rules, **{f"always {s}": (lambda r, s, t=s: float(s == t)) for s in states}}.items():
        picks = [max(states, key=lambda s, r=r: rule(r, s)) for r in rows]
        best = [max(states, key=lambda s, r=r: r[s]["outside"]["acc@1"] + r[s]["outside"]["mrr"]) for r in rows]
        acc = np.mean([r[p]["outside"]["acc@1"] for r, p in zip(rows, picks)])
        lines.append(f"| {name} | {sum(p == b for p, b in zip(picks, best))} of {len(rows)} | {acc:.4f} |")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
