"""``prdit export``: a run's EMA weights -> a model folder for sampling and evaluation."""

from __future__ import annotations

from pathlib import Path

from prdit.errors import CheckpointError
from prdit.files import recorded_path
from prdit.model_folder import (CHECKPOINT_DIR, WEIGHTS_FILE, load_strict, load_weights, recorded_model,
                                save_model_folder)
from prdit.training.checkpoint import latest_checkpoint
from prdit.training.run_dir import load_run_config
from prdit.training.setup import build_model, normalization_of, process_of

# The run config's paths (section, key) and whether each can name a model (then kept as its weights' digest when
# it lies outside the working directory).
CONFIG_PATHS = {("run", "root"): False, ("data", "train"): False, ("data", "val"): False, ("data", "root"): False,
                ("train", "init_from"): True, ("distill", "teacher"): True}


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
    weights = load_weights(ckpt_path)
    model = build_model(config)
    load_strict(model, weights.state, ckpt_path)
    extra = {"training": {"run": recorded_path(run_dir), "checkpoint": ckpt_path.name, "step": weights.step,
                          "stage": model.stage, "config": recorded_config(config.to_dict())}}
    return save_model_folder(out, model, process_of(config), normalization_of(config),
                             spacing=tuple(weights.meta["spacing"]), extra=extra)


def recorded_config(config: dict) -> dict:
    """The run config with its paths as a model folder records them: relative to the working directory, a
    model outside it by its digest (a shipped folder names none of the training machine's folders)."""
    for (section, key), can_be_model in CONFIG_PATHS.items():
        value = config.get(section, {}).get(key)
        if value:
            config[section][key] = recorded_model(value) if can_be_model else recorded_path(value)
    return config
