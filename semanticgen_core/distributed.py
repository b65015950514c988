"""The process group, as ``torchrun`` sets it up: one process per GPU (or a few on a CPU, gloo).

Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is the single-process case, so the
cache builder and the trainer run the same code on a laptop and on a cluster.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as td


def init(timeout_minutes: float = 30.0) -> None:
    """Join the group torchrun describes (NCCL on GPUs, gloo on CPUs); nothing without torchrun. A finite
    timeout: a collective that waits on a dead rank fails instead of hanging (torchrun also ends the
    other workers as soon as one dies)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not td.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                              timeout=datetime.timedelta(minutes=timeout_minutes))


def shutdown() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def active() -> bool:
    return td.is_initialized()


def rank() -> int:
    return td.get_rank() if active() else 0


def world_size() -> int:
    return td.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if active():
        td.barrier()


def all_reduce(values: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """Reduce a small tensor over ranks (``mean``, ``sum`` or ``max``); itself in one process."""
    if not active():
        return values
    values = values.clone()
    td.all_reduce(values, td.ReduceOp.MAX if op == "max" else td.ReduceOp.SUM)
    return values / world_size() if op == "mean" else values
