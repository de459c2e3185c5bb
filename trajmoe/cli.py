"""The ``trajmoe`` command (README.md § The CLI). Flags map one to one to the dataclass configs.

Errors a user can cause (TrajMoEError and its subclasses, missing files) print one clear message
and exit with status 1 or 2; they never show a Python traceback.

The global ``--device auto|cpu|cuda|mps`` (default auto: CUDA when available) and ``--precision
fp32|bf16`` apply to the model verbs (pretrain, finetune, evaluate, predict, baseline): ``main``
resolves the device once (``args.torch_device``), each verb moves its model there after creating
or loading it; the loops move the batches (trajmoe.train.device). The data verbs ignore both.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from trajmoe import cli_parser
from trajmoe.errors import TrajMoEError
from trajmoe.train.device import (  # torch-free import
    check_precision,
    resolve_device,
)

log = logging.getLogger("trajmoe")

MODEL_VERBS = ("pretrain", "finetune", "evaluate", "baseline", "predict")


def _progress_bar(desc: str):
    """A tqdm bar driven by train.fit's progress callback (step, total, loss, seconds_left): with a
    time budget the total follows the steps that fit in it, and the seconds left are shown."""
    from tqdm import tqdm

    state = {"bar": None}

    def update(step: int, total: int, loss: float, seconds_left: float | None = None) -> None:
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
        bar = state["bar"]
        if bar.total != total:
            bar.total = total
        bar.update(step - bar.n)
        post = {"loss": f"{loss:.3f}"}
        if seconds_left is not None:
            post["left"] = f"{seconds_left:.0f}s"
        bar.set_postfix(post)
        if step >= total:
            bar.close()

    return update


def _write_json(path: str | Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


# --------------------------------------------------------------------------- data verbs
def cmd_validate(args) -> int:
    from trajmoe.trajectories.reader import read_trajectories

    _, report = read_trajectories(args.file, timezone=args.timezone)
    print(report.to_text())
    return 0 if report.ok else 1


def cmd_pois(args) -> int:
    from trajmoe.pois.basemap import read_basemap, write_basemap
    from trajmoe.pois.offline import read_pois, write_pois
    from trajmoe.pois.online import area_from_file, fetch_basemap, fetch_pois
    from trajmoe.pois.report import POIReport

    if args.basemap and args.table:
        raise TrajMoEError("--basemap needs OpenStreetMap data (--osm, --place, --bbox or --polygon): "
                           "a POI table has no streets.")
    if args.osm or args.table:
        pois = read_pois(args.osm or args.table)
        base = read_basemap(args.osm) if args.basemap else None
    else:
        area = ({"polygon": area_from_file(args.polygon)} if args.polygon else
                {"bbox": tuple(args.bbox)} if args.bbox else {"place": args.place})
        pois = fetch_pois(**area, timeout=args.timeout)
        base = fetch_basemap(**area, timeout=args.timeout) if args.basemap else None  # the same area's streets
    write_pois(pois, args.out)
    report = POIReport.of(pois)
    print(*([report.to_text()] if report is not None else []), f"{len(pois)} POIs written to {args.out}",
          *(f"  {cat:<18} {n}" for cat, n in pois["category"].value_counts().items()), sep="\n")
    if base is not None:
        write_basemap(base, args.basemap)
        print(f"base map written to {args.basemap}: {len(base.streets)} streets, {len(base.areas)} areas of water "
              f"or park, {len(base.labels)} place names")
    return 0


def cmd_prepare(args) -> int:
    from trajmoe.city.prepare import prepare

    meta, report = prepare(
        args.trajectories,
        city=args.city,
        out=args.out,
        pois=args.pois,
        resolution=args.resolution,
        kind=args.kind,
        timezone=args.timezone,
        weekday_reliable=not args.weekday_unreliable,
    )
    from trajmoe.trajectories.report import plural

    print(report.to_text())
    nv = meta["n_visits"]
    print(
        f"\nPrepared {meta['city']} ({meta['kind']}, H3 res {meta['resolution']}) in {args.out}: "
        f"{plural(meta['n_users'], 'user')}, {plural(sum(nv.values()), 'visit')} (train {nv['train']}, val {nv['val']}, "
        f"test {nv['test']}), {meta['n_cells']} candidate cells ({meta['n_cells_with_pois']} with POIs)."
    )
    return 0


# --------------------------------------------------------------------------- model verbs
def _train_config(args, **overrides):
    from trajmoe.train.fit import TrainConfig

    kw = dict(epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
              warmup_steps=args.warmup, precision=args.precision)
    kw.update(overrides)
    return TrainConfig(**kw)


def _say_capped(res, cfg) -> None:
    """One line on stderr when --epochs ended the run before --max-steps (never capped in silence)."""
    if res.epoch_capped:
        print(f"note: --max-steps {cfg.max_steps} asked, but {cfg.epochs} epoch(s) of the training windows allow "
              f"{res.planned_steps} steps: ran {res.steps}. Raise --epochs to run them all.", file=sys.stderr)


def cmd_pretrain(args) -> int:
    from trajmoe.city.data import CityData
    from trajmoe.train.checkpoint import save_checkpoint
    from trajmoe.train.distributed import (
        dist_info,
        maybe_init_distributed,
        rank_device,
        shutdown_distributed,
    )
    from trajmoe.train.fit import FINAL_LOSS_STEPS, fit
    from trajmoe.train.models import new_trajmoe
    from trajmoe.train.record import training_record

    maybe_init_distributed(args.torch_device)  # NCCL on CUDA (one GPU per rank), gloo on CPU
    rank, world = dist_info()
    cities = [CityData(d) for d in args.data]
    model, config = new_trajmoe(d_model=args.d_model, n_layers=args.layers, seed=args.seed)
    model.to(rank_device(args.torch_device))
    cfg = _train_config(args, tasks=tuple(args.task))
    res = fit(model, cities, cfg, progress=_progress_bar("pretrain"))
    if rank == 0:
        record = training_record("pretrain", res, cfg, world_size=world)
        info = {"cities": [d.city for d in record.datasets.values()], "domain_experts": model.domain_expert_names()}
        save_checkpoint(args.out, model, arch="trajmoe", config=config, info=info, record=record)
        for c in res.skipped:
            print(f"skipped {c.dataset} ({c.name}): no training windows (no user with 2 training visits); "
                  "not trained on and not in the checkpoint's record", file=sys.stderr)
        _say_capped(res, cfg)
        trained = ", ".join(f"{name} ({d.city}, {d.train_visits:,} training visits)" for name, d in record.datasets.items())
        print(f"pretrained on {trained}: {res.steps} steps in {res.seconds:.1f}s, final loss {record.final_loss:.3f} "
              f"(mean of the last {min(res.steps, FINAL_LOSS_STEPS)} steps) -> {args.out}")
    shutdown_distributed()
    return 0


def cmd_finetune(args) -> int:
    from trajmoe.city.data import CityData
    from trajmoe.train.checkpoint import load_checkpoint
    from trajmoe.train.finetune import finetune, preset_config

    model, meta = load_checkpoint(args.checkpoint)
    model.to(args.torch_device)  # fine-tuning may teach a checkpoint a task it was not pretrained for
    data = CityData(args.data)
    # the preset's values, each flag given overriding its own (train.recipe.PRESETS)
    cfg = preset_config(args.preset, epochs=args.epochs, max_steps=args.max_steps, seed=args.seed,
                        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup, precision=args.precision,
                        fraction=args.fraction, max_seconds=args.max_seconds, mode=args.mode,
                        tasks=(args.task,) if args.task else None)
    run = finetune(model, data, cfg, base_info=meta, source=str(args.checkpoint), progress=_progress_bar("fine-tune"))
    run.save(args.out, arch=meta["arch"])
    _say_capped(run.train, cfg)
    kept = {"starting": "the starting state", "fine-tuned": "the fine-tuned state",
            "baseline": "the simple baseline inside the model"}.get(run.train.kept, "the fine-tuned state (no validation targets)")
    print(f"fine-tuned ({args.preset} preset) on {cfg.fraction:.0%} of {data.name}: {run.train.steps} steps in "
          f"{run.train.seconds:.1f}s, kept {kept}; head calibration "
          f"{'kept' if run.train.calibration_kept else 'not kept'} -> {args.out}", file=sys.stderr)
    if run.verdict is not None:
        print(run.verdict.sentence(), file=sys.stderr)
    print(f"test acc@1 (subset features): {run.metrics['acc@1']:.4f}")
    print(f"test acc@1 (all training visits): {run.metrics_all['acc@1']:.4f}")
    return 0


def _visit_features(args, meta: dict, data):
    """The run subset (or None = all training visits) whose features a verb uses; says which on stderr."""
    from trajmoe.train.finetune import visit_features

    subset, sentence = visit_features(meta, data, choice=args.features)
    print(sentence, file=sys.stderr)
    return subset


def cmd_evaluate(args) -> int:
    from trajmoe.city.data import CityData
    from trajmoe.train.checkpoint import load_checkpoint
    from trajmoe.train.evaluate import evaluate
    from trajmoe.train.models import require_task

    model, meta = load_checkpoint(args.checkpoint)
    model.to(args.torch_device)
    task = require_task(model, args.task, checkpoint=Path(args.checkpoint).name)
    data = CityData(args.data)
    subset = _visit_features(args, meta, data)
    metrics = evaluate(model, data, split=args.split, subset=subset, task=task)
    metrics["features"] = args.features
    metrics["task"] = args.task
    _write_json(args.json, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_baseline(args) -> int:
    import dataclasses

    from trajmoe.city.data import CityData
    from trajmoe.train.runner import default_train_config, run_baseline

    data = CityData(args.data)
    cfg = dataclasses.replace(default_train_config(fraction=args.fraction, seed=args.seed), precision=args.precision)
    metrics = run_baseline(args.model, data, fraction=args.fraction, seed=args.seed, progress=_progress_bar(args.model),
                           train_config=cfg, device=args.torch_device, task=args.task)
    metrics["task"] = args.task
    _write_json(args.json, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_predict(args) -> int:
    from trajmoe.analysis.predict import predict_next
    from trajmoe.city.data import CityData
    from trajmoe.train.checkpoint import load_checkpoint
    from trajmoe.train.models import require_task

    model, meta = load_checkpoint(args.checkpoint)
    model.to(args.torch_device)
    task = require_task(model, args.task, checkpoint=Path(args.checkpoint).name)
    data = CityData(args.data)
    subset = _visit_features(args, meta, data)
    table = predict_next(model, data, top_k=args.top_k, split=args.split, city=subset.city if subset else None,
                         task=task)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(f"{len(table)} predictions ({table['user_id'].nunique()} users) -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line (:mod:`trajmoe.cli_parser`), each verb run by its ``cmd_*`` function here."""
    return cli_parser.build_parser({"validate": cmd_validate, "pois": cmd_pois, "prepare": cmd_prepare, "pretrain": cmd_pretrain, "finetune": cmd_finetune, "evaluate": cmd_evaluate, "baseline": cmd_baseline, "predict": cmd_predict})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    try:
        if args.verb in MODEL_VERBS:
            import torch

            torch.set_num_threads(args.threads)
            args.torch_device = resolve_device(args.device)  # one-line TrajMoEError naming the fix
            check_precision(args.torch_device, args.precision)  # bf16 off CUDA: refused before any work
        return args.func(args)
    except TrajMoEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename or exc}. Check the path.", file=sys.stderr)
        return 2
    except OSError as exc:  # --out naming a file, --json naming a folder, no permission, disk full
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}. Check the path, its permissions and "
              "the free disk space.", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory. Split the input into smaller files or use a machine with more "
              "memory.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
