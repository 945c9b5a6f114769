"""``prdit export``: a run's EMA weights -> a model folder for sampling and evaluation."""

from __future__ import annotations

from pathlib import Path

from prdit.errors import CheckpointError
from prdit.models.folder import WEIGHTS_FILE, save_model_folder
from prdit.training.checkpoint import latest_checkpoint, load_checkpoint
from prdit.training.trainer import (CHECKPOINT_DIR, build_model, diffusion_of, load_run_config,
                                    normalization_of)


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str | Path | None = None,
               overwrite: bool = False) -> Path:
    """Write the EMA weights of ``checkpoint`` (default: the run's newest) as ``out/``."""
    run_dir, out = Path(run_dir), Path(out)
    config = load_run_config(run_dir)
    ckpt_path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if ckpt_path is None:
        raise CheckpointError(f"{run_dir}: no checkpoints yet; train first")
    if (out / WEIGHTS_FILE).exists() and not overwrite:
        raise CheckpointError(f"{out} already holds a model; pass --overwrite to replace it")
    state = load_checkpoint(ckpt_path)
    model = build_model(config)
    model.load_state_dict(state["ema"], strict=True)
    extra = {
        "training": {"run": str(run_dir), "checkpoint": ckpt_path.name, "step": int(state["step"]),
                     "stage": model.stage, "config": config.to_dict()},
        "sampling": {"sampler": "pc", "steps": 1000},
    }
    return save_model_folder(out, model, diffusion_of(config), normalization_of(config),
                             spacing=tuple(state["meta"]["spacing"]), extra=extra)
