"""A checkpoint's training record: what it was trained on and how (the sidecar's ``training``).

One typed record (:class:`TrainingRecord`), built by :func:`training_record` from what
:func:`trajmoe.train.fit.fit` returned, written by :func:`trajmoe.train.checkpoint.save_checkpoint`
for the CLI, the fine-tune service, ``assets/regenerate.py``, the benchmarks and the app alike;
:meth:`TrainingRecord.of` also reads the records older versions wrote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trajmoe.train.fit import TrainConfig, TrainResult


@dataclass(frozen=True)
class TrainedData:
    """One prepared folder a checkpoint was trained on (a :class:`TrainingRecord`'s ``datasets`` value)."""

    city: str  # the folder's city name (two datasets may share one: New York Foursquare and Gowalla)
    kind: str = ""  # kind of data (kinds.KINDS); "" in records older than the field
    train_visits: int | None = None  # the folder's training visits; None where an old record cannot tell


@dataclass
class TrainingRecord:
    """A checkpoint sidecar's ``training`` entry: what the weights were trained on and how.

    Built here (:func:`training_record`) for every writer (``trajmoe pretrain`` and ``finetune``,
    the fine-tune service, ``assets/regenerate.py``, the benchmarks) and read back with
    :meth:`of` (which also migrates the records older versions wrote). ``datasets`` lists exactly
    the folders trained on, keyed by dataset (:attr:`CityData.dataset`, the prepared trajectory
    file's name); a folder given without a training window is in ``skipped`` instead.
    """

    kind: str  # "pretrain" or "finetune"
    datasets: dict[str, TrainedData] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # datasets given but not trained on: no training windows
    tasks: tuple[str, ...] = ()  # tasks (batch.TASKS) this run trained, in turn
    # What the weights are trained for after this run, earlier training included (train.fit decided;
    # the sidecar's config repeats them as tasks and pretrained_kinds): tasks, and kinds of data
    # whose head rows training made meaningful.
    trained_tasks: tuple[str, ...] = ()
    trained_kinds: tuple[str, ...] = ()
    steps: int = 0
    seconds: float = 0.0
    # Mean training cross-entropy of the last FINAL_LOSS_STEPS (50) steps, all of them when fewer
    # (train.fit.TrainResult.final_loss), the same in every writer; None when unknown.
    final_loss: float | None = None
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    epochs: int | None = None  # None: no epoch limit (max_steps decided)
    max_steps: int | None = None
    fraction: float = 1.0
    mode: str = "full"
    world_size: int = 1
    splits: str = "train only"  # validation and test visits are never trained on
    # fine-tuning only
    city: str | None = None  # the city fine-tuned on (evaluate --features subset checks it)
    source: str | None = None  # the starting checkpoint's file name (JSON: "from"; never a path)
    subset: dict | None = None  # the run subset (RunSubset.describe()): evaluate --features subset rebuilds it
    kept: str = ""  # TrainResult.kept: "fine-tuned", "starting" or "baseline"
    calibration_kept: bool = False
    # The keep rule's verdict (train.keep.Verdict.to_json: kept, each state's validation acc@1 and
    # mrr, the paired z of the kept state over each other one, targets); None in older records.
    verdict: dict | None = None

    def to_json(self) -> dict:
        """The sidecar's ``training`` entry (a fine-tuning run's starting checkpoint as ``from``)."""
        tuned = self.kind == "finetune"
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if k not in ("datasets", "source") and (tuned or k not in _FINETUNE_ONLY)}
        out["datasets"] = {name: dataclasses.asdict(d) for name, d in self.datasets.items()}
        for name in ("tasks", "trained_tasks", "trained_kinds"):
            out[name] = list(getattr(self, name))
        if tuned:
            out["from"] = self.source
        return out

    @property
    def keep_verdict(self):
        """The recorded :class:`trajmoe.train.keep.Verdict` (None when the record has none)."""
        from trajmoe.train.keep import Verdict  # torch-free readers of the record do not pay for it

        return Verdict.from_json(self.verdict)

    @classmethod
    def of(cls, meta: dict) -> TrainingRecord | None:
        """The training record of a sidecar ``meta`` (None when it has none), older records migrated:
        ``data`` (folder names, `trajmoe pretrain` before), ``datasets`` as a list in the order of
        ``cities`` (assets/regenerate.py before), ``sources`` (bench/transfer.py), training visits
        keyed by city name (None where two datasets share the city), tasks and kinds from the config."""
        training = meta.get("training") if isinstance(meta, dict) else None
        if not isinstance(training, dict) or not isinstance(training.get("kind"), str):
            return None
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        datasets = training.get("datasets")
        if isinstance(datasets, dict):
            parsed = {str(k): TrainedData(city=v["city"], kind=str(v.get("kind") or ""),
                                          train_visits=v.get("train_visits") if type(v.get("train_visits")) is int else None)
                      for k, v in datasets.items() if isinstance(v, dict) and isinstance(v.get("city"), str)}
        else:
            parsed = _old_datasets(training, meta)
        fields = {k: v for k, v in training.items() if k in _FIELD_TYPES and isinstance(v, _FIELD_TYPES[k])
                  and (_FIELD_TYPES[k] is bool or not isinstance(v, bool))}  # a value of another type: the default
        source = training.get("from")
        return cls(**fields, datasets=parsed, source=source if isinstance(source, str) else None,
                   tasks=_names(training.get("tasks")),
                   trained_tasks=_names(training.get("trained_tasks") or config.get("tasks")),
                   trained_kinds=_names(training.get("trained_kinds") or config.get("pretrained_kinds")))


_FINETUNE_ONLY = ("city", "subset", "kept", "calibration_kept", "verdict")  # left out of a pretraining's record
# The JSON types of the record's plain fields (TrainingRecord.of keeps a value only when it has its type).
_FIELD_TYPES = {"kind": str, "skipped": list, "steps": int, "seconds": int | float, "final_loss": int | float,
                "seed": int, "batch_size": int, "lr": int | float, "warmup_steps": int, "epochs": int,
                "max_steps": int, "fraction": int | float, "mode": str, "world_size": int, "splits": str, "city": str,
                "subset": dict, "kept": str, "calibration_kept": bool, "verdict": dict}


def _names(value) -> tuple[str, ...]:
    """A tuple of the strings in a JSON list (anything else: empty)."""
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list | tuple) else ()


def _old_datasets(training: dict, meta: dict) -> dict[str, TrainedData]:
    """``datasets`` of a record written before it was keyed by dataset (see :meth:`TrainingRecord.of`)."""
    cities = [str(c) for c in meta.get("cities", [])] if isinstance(meta.get("cities"), list) else []
    visits = training.get("train_visits") if isinstance(training.get("train_visits"), dict) else {}
    names = training.get("datasets") or training.get("data") or training.get("sources") or []
    names = [Path(str(n)).name.split(".")[0] for n in names] if isinstance(names, list) else []
    if training.get("kind") == "finetune" and not names and isinstance(training.get("city"), str):
        names, cities = [training["city"]], [training["city"]]  # the dataset was not recorded: its city names it
    if len(names) != len(cities):
        cities = [""] * len(names)
    counts = {city: n for city, n in visits.items() if type(n) is int and cities.count(city) == 1}
    return {name: TrainedData(city=city, train_visits=counts.get(city)) for name, city in zip(names, cities)}


def training_record(kind: str, result: TrainResult, cfg: TrainConfig, *, source: str | Path | None = None,
                    world_size: int = 1) -> TrainingRecord:
    """The training record of a :func:`trajmoe.train.fit.fit` run (``kind``: pretrain or finetune):
    the folders it trained on (and skipped), the tasks and kinds fit decided, the recipe.

    ``source``: the starting checkpoint of a fine-tuning run, as a path or file name (only the
    name is recorded: a sidecar is shared with others).
    """
    datasets: dict[str, TrainedData] = {}
    for subset in result.subsets:
        data = subset.data
        name = data.dataset if data.dataset not in datasets else f"{data.dataset}/{data.folder.name}"
        datasets[name] = TrainedData(city=data.name, kind=data.kind, train_visits=int(data.meta["n_visits"]["train"]))
    tuned = kind == "finetune"
    return TrainingRecord(
        kind=kind, datasets=datasets, skipped=[c.dataset for c in result.skipped], tasks=tuple(cfg.tasks),
        trained_tasks=result.trained_tasks, trained_kinds=result.trained_kinds, steps=result.steps,
        seconds=round(result.seconds, 2), final_loss=result.final_loss, seed=cfg.seed, batch_size=cfg.batch_size,
        lr=cfg.lr, warmup_steps=cfg.warmup_steps, epochs=cfg.epochs, max_steps=cfg.max_steps, fraction=cfg.fraction,
        mode=cfg.mode, world_size=world_size, source=Path(str(source)).name if source is not None else None,
        city=result.subsets[0].data.name if tuned and result.subsets else None,
        subset=result.val_subset.describe() if tuned and result.val_subset is not None else None,
        kept=result.kept, calibration_kept=result.calibration_kept,
        verdict=result.verdict.to_json() if tuned and result.verdict is not None else None)


