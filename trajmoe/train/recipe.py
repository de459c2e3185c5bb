"""The training recipes, torch-free: the CLI's flag defaults and --help are built from them.

* :data:`PRETRAIN` - what the shipped checkpoint was trained with (``assets/regenerate.py``) and
  ``trajmoe pretrain``'s defaults: 1,600 steps of 32 windows, lr 2e-3 after 30 warm-up steps,
  both tasks in turn. Steps, not epochs, decide its length (``epochs=None``: no epoch limit).
* :data:`FINETUNE` - :class:`trajmoe.train.fit.TrainConfig`'s own defaults, ``trajmoe finetune``'s
  and the app's: one epoch over the few-shot share, lr 3e-3 after 10 warm-up steps, task next.

:func:`trajmoe.train.fit.pretrain_config` turns :data:`PRETRAIN` into a TrainConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

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


PRETRAIN = Recipe(epochs=None, max_steps=1600, batch_size=32, lr=2e-3, warmup_steps=30, tasks=TASKS)
FINETUNE = Recipe(epochs=1, max_steps=None, batch_size=32, lr=3e-3, warmup_steps=10, tasks=(TASKS[0],))
