"""The transfer benchmark's cache: one JSON file per finished run, and the versions that decide which
cached runs and pretrained checkpoints still count.

A run file is ``v{version}__{target}__{method}__f{fraction}__s{seed}.json`` in the runs folder
(``bench/results/transfer_runs/``, committed; ``--data``: ``OUT/transfer_runs/``). A run whose
version is not the method's current one (:func:`method_version`) is never read: it is recomputed,
and the stale file can be deleted (git keeps it). Prepared folders and pretrained checkpoints are
cached under ``bench/results/cache/`` (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.realdata import REPO_ROOT, prepare_real
from trajmoe.city.data import CityData

RESULTS = REPO_ROOT / "bench" / "results"
RUNS = RESULTS / "transfer_runs"
CACHE = RESULTS / "cache"  # git-ignored: prepared folders and pretrained checkpoints

# Bump a version when the protocol or a default changes: runs of an older version are then ignored.
# Version 3 (issue 13): popularity relative to the mean cell (every method reading it: the count
# baselines, return + gravity, the GRU and the TrajMoE head), cross-fitted training, successor and
# transition terms, the learned return scorer, keep-the-better fine-tuning, metrics for returns and
# explorations, and the fine-tuned model scored with all training visits too.
# Version 4: fine-tuning keeps the starting state (and undoes head calibration) only when the validation
# share shows it worse beyond noise (train.keep.worse_beyond_noise; bench/results/keep_rule.md), not
# whenever it scores lower there. Pretraining, zero-shot and the prior-terms ablation never pass
# through that rule: their version-3 checkpoints and runs stand.
# Version 5 (issue 14): checkpoint format 4, pretrained for both tasks (next and at-time, steps in
# turn, twice the steps). The headline rows (FORMAT4_METHODS) are re-run on it; the other pretrained
# rows (ablations, the dense Transformer) and the from-scratch neural rows stay version 4 / 3 runs of
# the format-3 design and say so in the table.
BENCH_VERSION = 4
PRETRAIN_VERSION = 4  # of the cached pretrained checkpoints (v4: format 4, both tasks)
BASELINE_VERSION = 3
FORMAT4_VERSION = 5
COUNT_BASELINES = ("popular", "markov", "epr", "epr+", "gru")
NO_KEEP_RULE = ("trajmoe_zero_shot", "ablation_prior_terms_only")  # runs that never fine-tune
FORMAT4_METHODS = ("trajmoe_pretrained_ft1", "trajmoe_zero_shot", "ablation_prior_terms_only")
# The at-time section (issue 14): its runs are named AT_TIME + method, with their own version.
AT_TIME = "at-time_"
AT_TIME_VERSION = 1


def method_version(method: str) -> int:
    """The version a run of ``method`` must have to be read (older ones are recomputed)."""
    if method.startswith(AT_TIME):
        return AT_TIME_VERSION
    if method in COUNT_BASELINES:
        return BASELINE_VERSION
    if method.startswith(FORMAT4_METHODS):
        return FORMAT4_VERSION
    return 3 if method.startswith(NO_KEEP_RULE) else BENCH_VERSION


def run_path(runs_dir: Path, target: str, method: str, fraction: float, seed: int) -> Path:
    """The file of one run (current version) in ``runs_dir``."""
    return runs_dir / f"v{method_version(method)}__{target}__{method}__f{fraction:g}__s{seed}.json"


def read_runs(runs_dir: Path) -> dict[tuple[str, str, float], list[dict]]:
    """``{(target, method, fraction): [run, ...]}`` of the current-version run files in ``runs_dir``
    (seeds in file-name order); stale versions are skipped."""
    rows: dict[tuple[str, str, float], list[dict]] = {}
    for path in sorted(runs_dir.glob("v*__*.json")):
        version, target, method, f, _ = path.stem.split("__")
        if version != f"v{method_version(method)}":
            continue
        rows.setdefault((target, method, float(f[1:])), []).append(json.loads(path.read_text()))
    return rows


def stale_runs(runs_dir: Path) -> list[Path]:
    """Run files in ``runs_dir`` that :func:`read_runs` skips (an older version of their method)."""
    return [path for path in sorted(runs_dir.glob("v*__*.json"))
            if path.stem.split("__")[0] != f"v{method_version(path.stem.split('__')[2])}"]


def cached(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def store(path: Path, result: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def checkpoint_path(ckpt_dir: Path, metro: str, variant: str, steps: int) -> Path:
    """The cached pretrained checkpoint of ``variant`` with ``metro`` held out, after ``steps`` steps."""
    return ckpt_dir / f"v{PRETRAIN_VERSION}_{metro}_{variant}_{steps}.safetensors"


def prepared(key: str) -> CityData:
    """Real dataset ``key`` (tools.realdata.REAL_DATASETS), prepared once into the cache."""
    return prepare_real(key, CACHE / "prepared")
