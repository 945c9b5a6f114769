"""DDP through torchrun without a framework: the shared-seed data order that gives each rank a
disjoint shard (docs/method.md §12.3); the process group and rank helpers are
:mod:`prdit.distributed`'s, shared with sampling, evaluation and reconstruction."""

from __future__ import annotations

import numpy as np

from prdit.distributed import DistInfo, all_gather_objects, all_reduce, barrier, on_main, setup_distributed

__all__ = ["DistInfo", "ShardedBatchSampler", "all_gather_objects", "all_reduce", "barrier", "on_main",
           "setup_distributed"]


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
