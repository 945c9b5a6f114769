"""DDP through torchrun without a framework: process group set-up, rank helpers, and the
shared-seed data order that gives each rank a disjoint shard (docs/method.md §12.3)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


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


def setup_distributed() -> DistInfo:
    """Join the torchrun job if there is one (NCCL on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


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


class ShardedBatchSampler:
    """Batches of dataset indices for one rank, from any step on.

    Every epoch is one permutation drawn from ``(seed, epoch)`` — the same on every rank — and
    rank r takes positions ``r, r+W, …`` of it (the tail that does not divide evenly is left out,
    so every rank sees the same count). The rank's stream is the concatenation of its epochs,
    and step s takes items ``s·b … s·b+b−1``: the data order is a function of the step alone,
    so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_step: int = 0, total_steps: int = 0) -> None:
        if num_items < world_size:
            raise ValueError(f"{num_items} training volumes cannot be shared by {world_size} ranks")
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.per_epoch = num_items // world_size
        self._cache: tuple[int, np.ndarray] | None = None

    def _share(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            self._cache = (epoch, perm[self.rank::self.world_size][: self.per_epoch])
        return self._cache[1]

    def position(self, step: int) -> dict:
        """Epoch and offset in the rank's stream where ``step`` begins."""
        item = step * self.batch_size
        return {"step": step, "epoch": item // self.per_epoch, "offset": item % self.per_epoch}

    def batch(self, step: int) -> list[int]:
        """Dataset indices of this rank's batch at ``step``."""
        first = step * self.batch_size
        return [int(self._share(i // self.per_epoch)[i % self.per_epoch]) for i in range(first, first + self.batch_size)]

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0)
