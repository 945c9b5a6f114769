from pathlib import Path

import pytest

from prdit.data.phantoms import write_phantoms
from prdit.training.config import load_config


@pytest.fixture(scope="session")
def phantom_lists(tmp_path_factory) -> tuple[Path, Path]:
    """Ten 64³ phantoms split 8 / 2: (train.txt, val.txt); runs pool them to 16³–64³."""
    root = tmp_path_factory.mktemp("phantoms")
    paths = write_phantoms(10, 64, root, seed=3)
    (root / "train.txt").write_text("".join(f"{p.name}\n" for p in paths[:8]))
    (root / "val.txt").write_text("".join(f"{p.name}\n" for p in paths[8:]))
    return root / "train.txt", root / "val.txt"


@pytest.fixture
def tiny_config(phantom_lists, tmp_path):
    """A factory of small stage-1/stage-2 configs on the phantoms, runs under tmp_path."""
    train, val = phantom_lists

    def make(name: str = "stage1", model: str = "PRDiT-T/6/0", size: int = 16, *overrides: str):
        return load_config(None, [
            f"run.name={name}", f"run.root={tmp_path / 'runs'}", f"model.name={model}", f"model.input_size={size}",
            f"data.train={train}", f"data.val={val}", "data.num_workers=0", "data.cache=true", "data.flip=true",
            "train.global_batch=4", "train.steps=6", "optim.lr=1e-3", "optim.ema_decay=0.9",
            "log.every=2", "log.checkpoint_every=3", "log.val_every=3", "log.preview_every=0",
            "log.tensorboard=false", *overrides])

    return make
