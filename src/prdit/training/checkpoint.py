"""Training checkpoints: atomic writes, the whole training state, retention, safe loading."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from prdit.errors import CheckpointError
from prdit.files import atomic_write

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    """``directory/step_00001234.pt``."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` through :func:`prdit.files.atomic_write` with fsync: a kill at any moment
    leaves either the old checkpoint or the new one, never a partial file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    atomic_write(path, write, fsync=True)


def prune_checkpoints(directory: Path, keep_last: int, milestone_every: int) -> None:
    """Delete checkpoints older than the newest ``keep_last``, except milestones, and the partial
    files of writes that a killed process never finished."""
    for stale in Path(directory).glob(".partial-*-step_*.pt"):
        if not stale.name.startswith(f".partial-{os.getpid()}-"):
            stale.unlink(missing_ok=True)
    found = list_checkpoints(directory)
    for step, path in found[:-keep_last] if keep_last > 0 else found:
        if milestone_every > 0 and step % milestone_every == 0:
            continue
        path.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: name it
        raise CheckpointError(f"{path}: not a readable PRDiT checkpoint ({type(err).__name__}: {err})") from err


def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    version, keys, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys_np, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys_np.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
