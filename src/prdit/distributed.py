"""Work spread over the processes of a torchrun job, with no framework: the process group, rank
helpers, and the sharding that sampling, evaluation and reconstruction share.

Every command joins the job torchrun describes in its environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL where the work runs on CUDA, gloo where it runs
on the CPU (on a CUDA machine too). Work items (volume indices, files, pairs) are dealt round-robin,
rank r taking items ``r, r+W, …``, so shares differ by at most one item; results come back to every
rank in the items' order (:func:`gather_in_order`), and rank 0 alone writes summaries. A step that may
fail the same way for everyone (a folder of another run, a missing file) runs on rank 0 and its error
is raised on every rank (:func:`on_main`), printed once; so does whatever decides which collectives a rank
meets (a cached result, a checkpoint to resume from, what is still to do), so no rank skips a collective
the others wait in. An error on one rank alone ends that process, and torchrun then stops the others:
no rank waits forever on a dead one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from prdit.errors import PRDiTError

T = TypeVar("T")

# How long a collective may wait for the slowest rank. Training steps are short; an inference
# rank may finish its share a whole batch of volumes later than another (a batch of four 256³
# volumes at 1,000 steps takes most of an hour on one GPU), and a dead rank makes torchrun stop
# the job anyway, so inference commands wait long.
TRAINING_TIMEOUT = timedelta(minutes=30)
INFERENCE_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running under torchrun with more than one process."""
        return self.world_size > 1


class ReportedOnMain(PRDiTError):
    """Raised on the other ranks when a step run on rank 0 failed there; rank 0 prints the error."""


def backend_for(device: torch.device) -> str:
    """The process group's backend for work on ``device``: NCCL for CUDA, gloo for anything else."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup_distributed(timeout: timedelta = TRAINING_TIMEOUT, device: str | torch.device | None = None) -> DistInfo:
    """Join the torchrun job if there is one, with the backend of the work's ``device`` (the user's setting, read
    by :func:`rank_device`; None: ``auto``); a single process otherwise."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        work = rank_device(device, info)
        if work.type == "cuda":
            # NCCL's collectives run on the current GPU. CPU work claims none: a job may run more CPU processes
            # than the machine has GPUs.
            torch.cuda.set_device(work)
        dist.init_process_group(backend=backend_for(work), timeout=timeout)
    return info


def current() -> DistInfo:
    """The job this process has joined (a single process if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def teardown() -> None:
    """Leave the job (after the last collective of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str | torch.device | None, info: DistInfo) -> torch.device:
    """The device of this rank: ``auto`` and ``cuda`` mean the rank's local GPU (``cuda:LOCAL_RANK``) in a job
    of several processes; anything else as :func:`prdit.device.resolve_device` reads it."""
    from prdit.device import resolve_device

    resolved = resolve_device(device)
    if info.enabled and resolved.type == "cuda" and str(device) in ("auto", "cuda", "None"):
        return torch.device(f"cuda:{info.local_rank}")
    return resolved


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce when distributed, identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                                    "max": dist.ReduceOp.MAX}[op])
    return tensor


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` on every rank (a one-element list when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    """Wait for every rank."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T], info: DistInfo | None = None) -> list[T]:
    """This rank's share of ``items``: positions ``rank, rank + W, …`` (all of them in a single process)."""
    info = info or current()
    return list(items[info.rank::info.world_size])


def gather_in_order(part: Sequence[T], info: DistInfo | None = None) -> list[T]:
    """Every rank's ``part`` (the results of its :func:`shard`) merged back into the items' order, on every rank."""
    info = info or current()
    if not info.enabled:
        return list(part)
    parts = all_gather_objects(list(part))
    merged: list = [None] * sum(len(p) for p in parts)
    for rank, results in enumerate(parts):
        merged[rank::info.world_size] = results
    return merged


def on_main(step: Callable[[], T], info: DistInfo | None = None) -> T:
    """``step()`` run on rank 0 alone; its result on every rank. Where it raises a project error, rank 0 raises it
    and every other rank :class:`ReportedOnMain` (so the message is printed once and every rank stops)."""
    info = info or current()
    if not info.enabled:
        return step()
    payload: list = [None, None]
    if info.is_main:
        try:
            payload[0] = step()
        except PRDiTError as err:
            payload[1] = str(err)
            dist.broadcast_object_list(payload, src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    if payload[1] is not None:
        raise ReportedOnMain(f"rank 0 stopped the job: {payload[1]}")
    return payload[0]
