"""Regenerate the shipped pretrained checkpoint ``assets/trajmoe_pretrained.safetensors`` (+ .json)
and its model card ``assets/MODEL_CARD.md``.

Pretrained on the TRAINING splits of every real dataset in ../shared/data/cities (all metros,
check-ins, GPS, taxi and bike kinds), never on the embedded Helsinki default, so the app's view of
the default is zero-shot. Validation/test visits are never trained on (train.fit only draws
training windows).

Trained for both tasks (next and at-time, steps in turn), measured on both.

    python assets/regenerate.py [--steps 1600] [--budget-min 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

import torch

from tools.realdata import REAL_DATASETS, REPO_ROOT, prepare_real
from trajmoe.city.data import CityData
from trajmoe.city.features import SCHEMA_ID
from trajmoe.city.prepare import prepare
from trajmoe.city.tasks import TASKS
from trajmoe.train.checkpoint import FORMAT_VERSION, save_checkpoint
from trajmoe.train.device import DEVICES, resolve_device_or_exit
from trajmoe.train.evaluate import evaluate
from trajmoe.train.fit import fit, pretrain_config
from trajmoe.train.models import new_trajmoe
from trajmoe.train.recipe import PRETRAIN
from trajmoe.train.record import training_record

ASSETS = REPO_ROOT / "assets"
NAME = "trajmoe_pretrained"
CACHE = REPO_ROOT / "bench" / "results" / "cache" / "prepared"

LICENCES = """| data | source | licence / terms |
|---|---|---|
| nyc_foursquare | Foursquare TSMC2014 (Yang et al.), STAN-filtered release | research use |
| nyc_gowalla, sf_gowalla, la_gowalla | Gowalla, SNAP (Cho et al. 2011) | research use, cite SNAP |
| beijing_geolife_gps | Microsoft Research Geolife | Geolife licence, research use |
| sf_cabspotting_gps | CRAWDAD epfl/mobility (Cabspotting) | CRAWDAD terms |
| mexico_city_taxi_trips | public Mexico City taxi trips (via EPR-model-comparison, MIT) | as published |
| jersey_city_citibike | Citi Bike system data | NYCBS data licence |
| nyc_osm_2013 POIs | OpenStreetMap | ODbL, © OpenStreetMap contributors |"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=PRETRAIN.max_steps,
                   help=f"optimiser steps of {PRETRAIN.batch_size} windows (the tasks in turn)")
    p.add_argument("--budget-min", type=float, default=20.0, help="wall-time cap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where to pretrain (default cpu, as the shipped checkpoint was)")
    args = p.parse_args()
    device = resolve_device_or_exit(args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # fastest on the shared 2-core machine (see bench/transfer.py)
    cities = [prepare_real(k, CACHE) for k in REAL_DATASETS]
    model, config = new_trajmoe(seed=args.seed)
    model.to(device)
    # the one pretraining recipe (train.recipe.PRETRAIN), `trajmoe pretrain`'s defaults too
    cfg = pretrain_config(max_steps=args.steps, max_seconds=args.budget_min * 60, seed=args.seed)
    res = fit(model, cities, cfg)
    record = training_record("pretrain", res, cfg)
    in_domain = {task: {c.name + f" ({k})": evaluate(model, c, split="test", task=task)
                        for k, c in zip(REAL_DATASETS, cities)} for task in TASKS}
    helsinki_dir = CACHE / "helsinki_default"
    if not (helsinki_dir / "meta.json").is_file():
        prepare(REPO_ROOT / "sample_data" / "helsinki_synthetic_trajectories.csv.gz", city="Helsinki (synthetic)",
                out=helsinki_dir, pois=REPO_ROOT / "sample_data" / "helsinki_pois.parquet")
    zero_shot = {task: evaluate(model, CityData(helsinki_dir), split="test", task=task) for task in TASKS}
    info = {
        "cities": [d.city for d in record.datasets.values()],  # one per dataset trained on, in order
        "domain_experts": model.domain_expert_names(),
        "metrics": {"test_in_domain": in_domain, "zero_shot_helsinki_synthetic": zero_shot},
        "created": time.strftime("%Y-%m-%d"),
    }
    # float16 on disk keeps the file under 8 MB; weights load back into float32 parameters
    path = save_checkpoint(ASSETS / f"{NAME}.safetensors", model, arch="trajmoe", config=config, info=info,
                           record=record, dtype=torch.float16)
    size_mb = path.stat().st_size / 1e6
    hardware = "2 CPU cores" if device.type == "cpu" else device.type
    if device.type == "cuda":
        hardware = f"GPU {torch.cuda.get_device_name(device)}"
    again = "" if device.type == "cpu" else f" --device {args.device}"
    rows = "\n".join(
        f"| {name} | {m['acc@1']:.4f} | {at['acc@1']:.4f} | {m['acc@5']:.4f} | {m['mrr']:.4f} | {at['mrr']:.4f} | {m['n']} |"
        for (name, m), at in zip({**in_domain["next"], "Helsinki synthetic default (zero-shot)": zero_shot["next"]}.items(),
                                 [*in_domain["at-time"].values(), zero_shot["at-time"]]))
    card = f"""# Model card: {NAME}

TrajMoE (spatially-aware mixture-of-experts next-location model, after arXiv 2505.18670),
d_model {config.d_model}, {config.n_layers} SAMoE layers, {config.n_routed_experts} routed experts (top-{config.top_k}) +
shared expert, one domain expert per training city; {model.num_parameters():,} parameters
({model.num_parameters(active=True):,} active per token); weights {size_mb:.1f} MB (safetensors, float16);
feature schema `{SCHEMA_ID}`; checkpoint format {FORMAT_VERSION}: rotary (relative) positions, attention over the
last {config.attn_window} visits per layer, so every score depends on the last {config.reach} visits only and one
causal pass per person scores all of its targets. Two tasks share every weight but their head rows:
`next` (where the next visit is, its time unknown) and `at-time` (where it is given when it happens: the
target's hour, weekday and gap since the current visit enter the input, the router's temporal prior and
the head's time-matched terms); the steps took the tasks in turn. The output head adds personal-successor and
city-transition terms to the mobility priors and a learned return scorer over the person's own recent places,
and training is cross-fitted (each person fold trained against cell features, popularity and transitions
counted from the other fold). Trained {res.steps} steps ({res.seconds / 60:.1f} min, {hardware}), batch
{cfg.batch_size} windows of up to {cfg.max_len} visits, cities drawn with probability ∝ size^0.5.

## Training data (training splits only; validation and test visits never seen)

{LICENCES}

## Metrics (test split, H3 cells, the protocol of README.md § Protocol)

In-domain rows are cities the model was pretrained on (their training splits); the Helsinki row
is zero-shot on the embedded SYNTHETIC default.

| data | next Acc@1 | at-time Acc@1 | next Acc@5 | next MRR | at-time MRR | targets |
|---|---|---|---|---|---|---|
{rows}

Cross-city transfer (leave-one-metro-out) is measured separately: bench/results/transfer.md.

## Intended use and limits

For: exploring likely next places and aggregate flows in a city, research on transferable
mobility models, fine-tuning on a planner's own anonymised trajectories.
Not for: tracking or re-identifying individuals, decisions about specific persons, law
enforcement, or any use where a prediction about one person matters. The training data are
old (2007-2019), small and biased toward Foursquare/Gowalla users, taxi fleets and bike-share
users of a few cities; flows describe those samples, not whole populations. Outside those cities
the model relies on POI semantics and the universal return/distance regularities. The output
head keeps one set of mobility-prior weights per kind of data (check-ins, GPS staypoints, trips,
bike stations), learned from every training city of that kind: prepare a new city with the
right `--kind` (detected automatically unless given).

Regenerate: `python assets/regenerate.py --steps {args.steps} --budget-min {args.budget_min:g}{again}`.
"""
    (ASSETS / "MODEL_CARD.md").write_text(card)
    print(card)
    print(json.dumps({"size_mb": size_mb}))


if __name__ == "__main__":
    main()
