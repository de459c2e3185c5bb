"""Leave-one-metro-out transfer benchmark (the protocol of README.md § Protocol), cached and resumable.

For each target metro (New York = both NYC files, San Francisco, Los Angeles): pretrain TrajMoE
and the dense Transformer on every OTHER dataset (GPS, taxi and bike cities included as sources),
fine-tune ONE epoch on 5% of the target's training windows, evaluate on its test targets; on the
same targets, baselines from scratch on 5% and 100%, TrajMoE without pretraining, and zero-shot.
Ablations with New York as target. Every finished run is stored as one JSON file in
``bench/results/transfer_runs/`` (committed), so a re-run computes only what is missing and the
table can be completed across sessions.

    python bench/transfer.py                      # everything missing, then the tables
    python bench/transfer.py --targets la --pretrain-steps 600 --scratch-budget-min 3
    python bench/transfer.py --no-ablations --no-scratch-neural   # the headline rows first (every target)
    python bench/transfer.py --table-only         # re-render transfer.md / .json / .png
    python bench/transfer.py --device cuda        # train and evaluate on the GPU (default cpu)

Outputs: bench/results/transfer.md, transfer.json, transfer.png. Every test metric is also given
for returns (the target's cell is among the person's last 64 visits) and explorations apart.

Your own cities: ``--data DIR DIR [DIR ...]`` (at least two folders made by ``trajmoe prepare``)
runs leave-one-city-out on them instead: each folder (its name is the target key) is the target
once, TrajMoE pretrained on all the other folders, then fine-tuned 1 epoch on 5% and zero-shot,
against return + gravity, Markov and most-popular from scratch on 5% and 100% (``--scratch-neural``
adds the slow GRU, dense Transformer and TrajMoE from scratch). Runs, checkpoints and tables go to
``--out`` (default bench/results/custom/, git-ignored), never the shared tables; delete that folder
when the set of folders or their contents change.

    python bench/transfer.py --data prepared/lyon prepared/turin prepared/porto --pretrain-steps 300

This file is the command line; the runs are in bench/transfer_runs.py, the cached run files and their
versions in bench/transfer_cache.py, the tables and the plot in bench/transfer_report.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import torch

from bench.transfer_cache import RESULTS
from bench.transfer_report import render, render_custom, summarise, write
from bench.transfer_runs import (
    CHECKIN_TARGETS,
    CUSTOM_SCRATCH,
    DEFAULT_PRETRAIN_STEPS,
    OTHER_KINDS,
    SCRATCH,
    TransferSettings,
    at_time_runs,
    custom_runs,
    load_folders,
    other_kind_runs,
    run_target,
)
from tools.realdata import shared_data_dir
from trajmoe.city.tasks import TASKS
from trajmoe.train.device import DEVICES, resolve_device_or_exit

CUSTOM_OUT = RESULTS / "custom"  # --out default (git-ignored): its transfer_runs/, cache/ckpt/ and tables


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", default=list(CHECKIN_TARGETS), choices=list(CHECKIN_TARGETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--pretrain-steps", type=int, default=DEFAULT_PRETRAIN_STEPS, help="optimiser steps of each pretraining")
    p.add_argument("--budget-min", type=float, default=20.0, help="wall-time cap of each pretraining (<= 20)")
    p.add_argument("--scratch-budget-min", type=float, default=5.0, help="wall-time cap of one from-scratch neural run")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--no-scratch-neural", action="store_true",
                   help="leave out the GRU, dense Transformer and TrajMoE trained from scratch (minutes each)")
    p.add_argument("--ablations-only", action="store_true", help="only the New York ablations (run beside the main table)")
    p.add_argument("--other-kinds", nargs="*", choices=OTHER_KINDS, default=None,
                   help="the second table: GPS / taxi / bike targets (none given: all four)")
    p.add_argument("--data", nargs="+", type=Path, metavar="DIR", default=None,
                   help="your own prepared folders (`trajmoe prepare`, at least 2): leave-one-city-out on them "
                        "instead of the shared data")
    p.add_argument("--out", type=Path, default=CUSTOM_OUT,
                   help="with --data: where its runs, checkpoints and tables go (default bench/results/custom)")
    p.add_argument("--scratch-neural", action="store_true",
                   help="with --data: also the GRU, dense Transformer and TrajMoE from scratch (slow)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                   help="which sections to run: next (the main table) and/or at-time (default both)")
    p.add_argument("--at-time-dense", action="store_true",
                   help="at-time: also pretrain the dense Transformer for both tasks and fine-tune it")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where models train and are evaluated (default cpu: the committed runs are CPU ones)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> TransferSettings:
    """The flags as settings; ``--data`` keeps its runs and checkpoints under ``--out``."""
    folders = {"runs_dir": args.out / "transfer_runs", "ckpt_dir": args.out / "cache" / "ckpt"} if args.data else {}
    try:
        return TransferSettings(seeds=args.seeds, pretrain_steps=args.pretrain_steps,
                                pretrain_budget_s=args.budget_min * 60, scratch_budget_s=args.scratch_budget_min * 60,
                                device=resolve_device_or_exit(args.device), **folders)
    except ValueError as exc:
        raise SystemExit(f"bench/transfer.py: {exc}") from exc


def custom_main(args: argparse.Namespace, settings: TransferSettings) -> None:
    """``--data``: run (unless ``--table-only``) and render into ``--out``, never the shared tables."""
    cities = load_folders(args.data)
    if not args.table_only:
        custom_runs(settings, cities, scratch=SCRATCH if args.scratch_neural else CUSTOM_SCRATCH)
    table = summarise(settings.runs_dir)
    write(table, render_custom(table), args.out, plot_targets=sorted(table))
    print(render_custom(table))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # One thread: on a shared 2-core machine two OpenMP threads spin-wait on each other and a
    # training step gets several times slower (bench/results/moe_dispatch.txt shows the effect).
    torch.set_num_threads(args.threads)
    settings = settings_from(args)
    if args.data is not None:
        custom_main(args, settings)
        return
    if shared_data_dir() is None:
        raise SystemExit("../shared/data not found: the transfer benchmark needs the real data.")
    if not args.table_only and args.other_kinds is not None:
        for key in args.other_kinds or OTHER_KINDS:
            other_kind_runs(settings, key)
    elif not args.table_only:
        for metro in args.targets:
            if "next" in args.tasks:
                run_target(settings, metro, ablations=not args.no_ablations, main_table=not args.ablations_only,
                           scratch_neural=not args.no_scratch_neural)
            if "at-time" in args.tasks and not args.ablations_only:
                at_time_runs(settings, metro, scratch_neural=not args.no_scratch_neural, dense=args.at_time_dense)
    table = summarise(settings.runs_dir)
    write(table, render(table), RESULTS)
    print(render(table))


if __name__ == "__main__":
    main()
