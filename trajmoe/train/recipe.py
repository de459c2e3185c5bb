"""The training recipes, torch-free: the CLI's flag defaults and --help are built from them.

* :data:`PRETRAIN` - what the shipped checkpoint was trained with (``assets/regenerate.py``) and
  ``trajmoe pretrain``'s defaults: 1,600 steps of 32 windows, lr 2e-3 after 30 warm-up steps,
  both tasks in turn. Steps, not epochs, decide its length (``epochs=None``: no epoch limit).
* :data:`FINETUNE` - :class:`trajmoe.train.fit.TrainConfig`'s own defaults: one epoch, lr 3e-3
  after 10 warm-up steps, task next.
* The fine-tuning presets (:data:`PRESETS`, ``trajmoe finetune --preset``):
  :data:`PROTOCOL`, the benchmark's few-shot protocol (5% of the training windows, 1 epoch: the
  CLI's default, so benchmark numbers do not move), and :data:`CITY`, what a planner with a whole
  city's file needs (all its training visits, both tasks, as many epochs as a wall-clock budget
  allows, early stopping on validation; the app's default).

:func:`trajmoe.train.fit.pretrain_config` turns :data:`PRETRAIN` into a TrainConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trajmoe.city.tasks import TASKS


@dataclass(frozen=True)
class Recipe:
    """The TrainConfig fields a recipe fixes (the rest keep TrainConfig's defaults)."""

    epochs: int | None  # None: no epoch limit, max_steps decides
    max_steps: int | None  # None: the epochs decide
    batch_size: int  # windows per step
    lr: float  # peak learning rate (cosine schedule down to a tenth of it)
    warmup_steps: int  # linear warm-up steps
    tasks: tuple[str, ...]  # tasks taken in turn (batch.TASKS)
    fraction: float = 1.0  # share of the city's training windows (and validation targets) used
    max_seconds: float | None = None  # wall-clock budget of the training loop (None: none)


PRETRAIN = Recipe(epochs=None, max_steps=1600, batch_size=32, lr=2e-3, warmup_steps=30, tasks=TASKS)
FINETUNE = Recipe(epochs=1, max_steps=None, batch_size=32, lr=3e-3, warmup_steps=10, tasks=(TASKS[0],))

PROTOCOL = replace(FINETUNE, fraction=0.05)  # `trajmoe finetune`'s defaults before presets, unchanged
# The city preset's budget: about a minute for an upload of ~30k visits on a 2-core CPU: 40 s of
# steps and per-epoch validation, the rest for the keep rule's three states and head calibration
# (the 30,595-visit Helsinki sample: fit 65 s, under a load average of 4 on 2 cores). Epochs: at most 20, early stopping (patience 2) and the budget end
# it sooner; the learning-rate schedule follows whichever of steps and time is further along.
CITY = Recipe(epochs=20, max_steps=None, batch_size=32, lr=FINETUNE.lr, warmup_steps=FINETUNE.warmup_steps,
              tasks=TASKS, fraction=1.0, max_seconds=40.0)
PRESETS = {"protocol": PROTOCOL, "city": CITY}
