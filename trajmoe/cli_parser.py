"""The ``trajmoe`` command line's flags (README.md § The CLI), one to one with the dataclass configs;
the verbs themselves are in :mod:`trajmoe.cli`. Torch-free: ``--help`` starts fast."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from trajmoe.city.tasks import TASKS
from trajmoe.train.device import DEVICES, PRECISIONS
from trajmoe.train.recipe import CITY, PRESETS, PRETRAIN, PROTOCOL


def build_parser(verbs: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser; ``verbs`` maps each verb to the function that runs it (trajmoe.cli's ``cmd_*``)."""
    p = argparse.ArgumentParser(prog="trajmoe", description="TrajMoE: next-location prediction for any city.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the model verbs (default 1: on a shared or 2-core machine "
                        "more threads spin-wait on each other and run several times slower)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the model verbs run (default auto: CUDA when available, else CPU); "
                        "the data verbs ignore it")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="training forward pass in fp32 (default) or bf16 autocast (CUDA only); "
                        "evaluation and prediction always run in fp32")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = sub.add_parser("validate", help="check a trajectory file and print the report")
    s.add_argument("file", help="CSV/CSV.gz/Parquet with user_id,timestamp,lat,lon (or a raw Geolife/Gowalla/TSMC file)")
    s.add_argument("--timezone", help="IANA zone for Unix-second timestamps, e.g. America/New_York")
    s.set_defaults(func=verbs["validate"])

    s = sub.add_parser("pois", help="fetch or read POIs and write them as GeoParquet")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--place", help="place name for OpenStreetMap (online), e.g. 'Helsinki, Finland'")
    g.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), help="bounding box in degrees (online)")
    g.add_argument("--polygon", help="GeoJSON file with the area (online)")
    g.add_argument("--osm", help="offline OSM file: .osm, .osm.bz2 or .osm.pbf")
    g.add_argument("--table", help="offline POI table: CSV/Parquet with lat, lon and a category column")
    s.add_argument("--out", required=True, help="output .parquet")
    s.add_argument("--basemap", help="also write the area's streets, water, parks and place names (.geojson)")
    s.add_argument("--timeout", type=float, default=30, help="seconds before an online request gives up")
    s.set_defaults(func=verbs["pois"])

    s = sub.add_parser("prepare", help="turn trajectories (+ POIs) into a prepared city folder")
    s.add_argument("--trajectories", required=True, help="trajectory file (see validate)")
    s.add_argument("--city", required=True, help="city name, e.g. 'New York'")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--pois", help="POI file (.parquet from `trajmoe pois`, OSM file or POI table)")
    s.add_argument("--resolution", type=int, default=None, help="H3 resolution (default: 8 for a city; 10 for bike stations or an area under 5 km; 9 under 15 km)")
    s.add_argument("--kind", default="auto", choices=["auto", "checkins", "gps", "trips", "stations"])
    s.add_argument("--timezone", help="IANA zone for Unix-second timestamps")
    s.add_argument("--weekday-unreliable", action="store_true",
                   help="the source's weekday is not trustworthy (e.g. SNAP Gowalla SF/LA): use hour of day only")
    s.set_defaults(func=verbs["prepare"])

    def train_flags(s, recipe):
        """Training flags with ``recipe``'s defaults (train.recipe): they map one to one to TrainConfig fields.
        ``recipe`` None: defaults None, the verb's --preset decides."""
        if recipe is None:
            s.add_argument("--epochs", type=int, default=None, help="passes over the training windows "
                           "(default: the preset's)")
            s.add_argument("--max-steps", type=int, default=None, help="optimiser steps (default: the preset's)")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--batch-size", type=int, default=None, help="training windows per step (default: the preset's)")
            s.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
            s.add_argument("--warmup", type=int, default=None, help="learning-rate warm-up steps (default: the preset's)")
            return
        s.add_argument("--epochs", type=int, default=recipe.epochs,
                       help="passes over the training windows" + (
                           " (default: no limit, --max-steps decides)" if recipe.epochs is None else
                           f" (default {recipe.epochs})") + "; with --max-steps the run ends at whichever comes "
                           "first, and says so when the epochs end it early")
        s.add_argument("--max-steps", type=int, default=recipe.max_steps,
                       help=f"optimiser steps (default {recipe.max_steps or 'none: the epochs decide'})")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--batch-size", type=int, default=recipe.batch_size, help="training windows per step")
        s.add_argument("--lr", type=float, default=recipe.lr, help=f"peak learning rate (default {recipe.lr:g})")
        s.add_argument("--warmup", type=int, default=recipe.warmup_steps,
                       help=f"learning-rate warm-up steps (default {recipe.warmup_steps})")

    def task_flag(s, *, many: bool = False, preset: bool = False):
        help_ = ("next: where the next visit is, its time unknown (default); at-time: where it is, given when it "
                 "happens (its hour, weekday and the time since the current visit; never its place)")
        if preset:
            s.add_argument("--task", choices=TASKS, default=None, help=help_.replace(" (default)", "") + "; default: "
                           "the preset's (protocol: next; city: both in turn, test metrics of next)")
        elif many:
            s.add_argument("--task", nargs="+", choices=TASKS, default=list(TASKS), help=help_ + "; pretraining "
                           "takes the tasks in turn (default both)")
        else:
            s.add_argument("--task", choices=TASKS, default="next", help=help_)

    def visit_features_flag(s):
        s.add_argument("--features", "--visit-features", dest="features", choices=["all", "subset"], default="all",
                       help="visit-derived cell features from all training visits (default), or from the subset a "
                            "fine-tuned checkpoint recorded (reproduces the 'subset features' number `finetune` printed)")

    s = sub.add_parser("pretrain", help="pretrain TrajMoE on several prepared cities (works under torchrun)")
    s.add_argument("--data", nargs="+", required=True, help="prepared city folders")
    s.add_argument("--out", required=True, help="checkpoint NAME.safetensors (NAME.json written beside it)")
    s.add_argument("--d-model", type=int, default=128)
    s.add_argument("--layers", type=int, default=2)
    train_flags(s, PRETRAIN)  # the shipped checkpoint's recipe (assets/regenerate.py)
    task_flag(s, many=True)
    s.set_defaults(func=verbs["pretrain"])

    s = sub.add_parser("finetune", help="fine-tune a checkpoint on one city (--preset city: all of it)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--preset", choices=list(PRESETS), default="protocol",
                   help=f"protocol (default, so benchmark numbers do not move): the benchmark's few-shot "
                        f"run, {PROTOCOL.fraction * 100:.0f}%% of the training windows, {PROTOCOL.epochs} epoch, task next; "
                        f"city (the app's default): all training visits, both tasks, up to {CITY.epochs} epochs "
                        f"within a {CITY.max_seconds:.0f} s training budget, early stopping on validation. "
                        "The flags below override the preset's values")
    s.add_argument("--fraction", type=float, default=None, help="share of the training windows (default: the preset's)")
    s.add_argument("--max-seconds", type=float, default=None,
                   help="wall-clock budget of the training loop, steps and each epoch's validation (default: the preset's; city: "
                        f"{CITY.max_seconds:.0f} s, sized so ~30k visits finish in about a minute on 2 CPU cores)")
    s.add_argument("--mode", choices=["full", "light"], default="full")
    train_flags(s, None)
    task_flag(s, preset=True)
    s.set_defaults(func=verbs["finetune"])

    s = sub.add_parser("evaluate", help="metrics of a checkpoint on a prepared city")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--json", required=True, help="write metrics JSON here")
    s.add_argument("--split", choices=["val", "test"], default="test")
    visit_features_flag(s)
    task_flag(s)
    s.set_defaults(func=verbs["evaluate"])

    s = sub.add_parser("baseline", help="train and evaluate a baseline on a prepared city")
    s.add_argument("--model", required=True, choices=["popular", "markov", "epr", "epr+", "epr-time", "gru", "transformer"],
                   help="epr: return + gravity; epr+: the same plus personal successors and city transitions; "
                        "epr-time (--task at-time): the same plus visits at about the target's time and the "
                        "place's share of visits at that hour")
    s.add_argument("--data", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--fraction", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    task_flag(s)
    s.set_defaults(func=verbs["baseline"])

    s = sub.add_parser("predict", help="top-k next-cell predictions for every target visit")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="output .parquet")
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--split", choices=["val", "test", "all"], default="test")
    visit_features_flag(s)
    task_flag(s)
    s.set_defaults(func=verbs["predict"])
    return p
