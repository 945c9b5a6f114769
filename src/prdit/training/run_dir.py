"""A training run's directory: ``{run.root}/{run.name}/`` with its resolved ``config.yaml`` and
``checkpoints/``. A directory holding another config is never reused silently."""

from __future__ import annotations

from pathlib import Path

import yaml

from prdit.errors import ConfigError
from prdit.model_folder import CHECKPOINT_DIR
from prdit.training.checkpoint import latest_checkpoint
from prdit.training.config import ExperimentConfig, config_from_dict, diff_configs, upgrade_config_dict

CONFIG_FILE = "config.yaml"
# Keys that may change when a run is continued (a longer schedule, other logging, batching).
RESUMABLE_CHANGES = ("train.steps", "log.", "data.num_workers", "train.compile", "train.init_from",
                     "train.micro_batch")


def run_directory(config: ExperimentConfig) -> Path:
    """``{run.root}/{run.name}``."""
    return Path(config.run.root) / config.run.name


def prepare_run_directory(config: ExperimentConfig, resume: bool) -> tuple[Path, Path | None]:
    """Check that an existing run directory holds the same config; return it and the checkpoint to
    resume from (None for a fresh run). Nothing is written here (see :func:`write_run_config`)."""
    run_dir = run_directory(config)
    saved = run_dir / CONFIG_FILE
    ckpt = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if saved.is_file():
        previous = upgrade_config_dict(yaml.safe_load(saved.read_text()) or {})
        changes = [c for c in diff_configs(previous, config.to_dict()) if not c.startswith(RESUMABLE_CHANGES)]
        if changes:
            raise ConfigError(
                f"{run_dir} already holds a run with another config ({'; '.join(changes[:5])}). "
                f"Choose another run name (run.name=...) or delete that directory yourself.")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} exists and is not a PRDiT run directory (no {CONFIG_FILE}); "
                          "choose another run name (run.name=...)")
    if resume and ckpt is None:
        raise ConfigError(f"--resume: no checkpoint in {run_dir / CHECKPOINT_DIR} to resume from")
    return run_dir, ckpt


def write_run_config(run_dir: Path, config: ExperimentConfig) -> None:
    """Create the run's folders and record its resolved config."""
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run directory was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a PRDiT run directory (no {CONFIG_FILE})")
    return config_from_dict(yaml.safe_load(path.read_text()))
