"""torchrun scale-out: process-group set-up and tear-down, this rank's place and device, its shard of a batch.

NCCL when the run is on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU with one thread per
rank. Outside torchrun everything here is a no-op: rank 0 of 1, on the device it was given.
"""

from __future__ import annotations

import os

import torch


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not running under torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(device: torch.device | str | None = None) -> torch.device:
    """This rank's device: under torchrun on CUDA, ``cuda:LOCAL_RANK``; otherwise ``device`` (default CPU)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and _under_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def maybe_init_distributed(device: torch.device | str | None = None) -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1).

    ``device`` is where the run trains (default CPU): NCCL on CUDA, this rank bound to
    ``cuda:LOCAL_RANK`` (move the model to :func:`rank_device`); gloo otherwise, one thread per rank.
    """
    device = rank_device(device)
    if _under_torchrun() and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.distributed.init_process_group("nccl", device_id=device)
        else:
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
