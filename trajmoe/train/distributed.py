"""torchrun scale-out: process-group set-up and tear-down, this rank's place, its shard of a batch.

Gloo on CPU, one thread per rank. Outside torchrun everything here is a no-op: rank 0 of 1.
"""

from __future__ import annotations

import os

import torch


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not running under torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def maybe_init_distributed() -> bool:
    """Initialise gloo when launched by torchrun (WORLD_SIZE > 1). One thread per rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.set_num_threads(1)
        torch.distributed.init_process_group("gloo")
        return True
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def shutdown_distributed() -> None:
    """Leave the process group (a barrier first, so no rank exits while another still talks to it).

    Exiting with the group still up can abort a rank at teardown ("terminate called without an
    active exception", SIGABRT) when the machine is busy."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def shard(windows: list, *, rank: int, world: int) -> list:
    """This rank's share of a batch's windows: every ``world``-th one, starting at ``rank``."""
    return windows[rank::world] if world > 1 else windows
