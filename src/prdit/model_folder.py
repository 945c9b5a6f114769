"""A trained model as a folder, and the one loader of weights.

``config.json`` (format version 2) records the network (registry name, input size, channels, and for a
model conditioned on label maps its conditioned stages and label table, name -> index),
the generative process (kind and settings), the intensity normalisation and the voxel spacing;
``model.safetensors`` holds the EMA weights. Folders of format version 1 (an IaN-only
``diffusion`` section, ``learn_sigma``) still load. Loading never unpickles.

:func:`load_weights` is the one place weights are read from whatever a user points at (a run
directory, a checkpoint, a model folder, a ``.safetensors`` file), for the pipeline,
``--init-from``, export and the demo alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prdit.data.io import file_sha256
from prdit.data.normalization import Normalization
from prdit.diffusion import Process, process_from_dict
from prdit.errors import CheckpointError, ConfigError
from prdit.files import atomic_write, is_inside, recorded_path
from prdit.models.conditioning import Conditioning
from prdit.models.prdit import PRDiT
from prdit.models.registry import create_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "prdit-model"
FORMAT_VERSION = 2
CHECKPOINT_DIR = "checkpoints"
_SECTIONS = ("format", "format_version", "model", "process", "normalization", "spacing")


@dataclass
class ModelFolder:
    """What a model folder describes, and the network built from it."""

    model: PRDiT
    process: Process
    normalization: Normalization
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    extra: dict = field(default_factory=dict)


def save_model_folder(path: str | Path, model: PRDiT, process: Process, normalization: Normalization,
                      spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), extra: dict | None = None,
                      state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model.safetensors`` then ``config.json``, each atomically (``state_dict``: the model's by
    default), so a folder with a config always has whole weights."""
    from safetensors.torch import save_file

    if model.name is None:
        raise ConfigError("only registered models (built with create_model) can be saved as a model folder")
    cfg = model.config
    if cfg.out_channels != process.output_channels(cfg.in_channels):
        raise ConfigError(f"{model.name} returns {cfg.out_channels} channel(s), the {process.kind} process needs "
                          f"{process.output_channels(cfg.in_channels)}")
    path = Path(path)
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"name": model.name, "input_size": list(cfg.input_size), "in_channels": cfg.in_channels,
                  "out_channels": cfg.out_channels,
                  **({"conditioning": cfg.conditioning.to_dict()} if cfg.conditioning is not None else {})},
        "process": process.to_dict(),
        "normalization": normalization.to_dict(),
        "spacing": [float(s) for s in spacing],
        **(extra or {}),
    }
    weights = {k: v.detach().to("cpu").contiguous() for k, v in (state_dict or model.state_dict()).items()}
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(weights, str(tmp), metadata={"format": FORMAT}))
    atomic_write(path / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    return path


def read_model_config(path: str | Path) -> dict:
    """The parsed ``config.json`` of a model folder in the current format (older formats upgraded)."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a model folder (expected a directory with {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE}; make one with `prdit export RUN --out DIR`)")
    if not config_path.is_file():
        raise CheckpointError(f"{path}: missing {CONFIG_FILE}; make the folder with `prdit export`")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err})") from err
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: not a PRDiT model config (format is {config.get('format')!r})")
    version = config.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: format version {version} is newer than this prdit reads "
                              f"({FORMAT_VERSION}); update prdit")
    if version == 1:
        config = _upgrade_from_v1(config)
    for key in ("model", "process", "normalization"):
        if key not in config:
            raise CheckpointError(f"{config_path}: missing the '{key}' section")
    if "name" not in config["model"] or "input_size" not in config["model"]:
        raise CheckpointError(f"{config_path}: the 'model' section needs 'name' and 'input_size'")
    return config


def recorded_model(path: str | Path, base: str | Path | None = None) -> str:
    """How a record names the model (or run, or checkpoint) at ``path``: relative to ``base`` (default: the
    working directory) when it lies inside; outside, a model folder by the SHA-256 of its weights
    (``sha256:...``, the same on any machine), anything else relative with ``..``."""
    weights = Path(path) / WEIGHTS_FILE
    base = base if base is not None else Path.cwd()
    if not is_inside(path, base) and weights.is_file():
        return f"sha256:{file_sha256(weights)}"
    return recorded_path(path, base)


def load_model_folder(path: str | Path, device: torch.device | str = "cpu",
                      input_size: int | tuple[int, int, int] | None = None) -> ModelFolder:
    """Build the network of a model folder and load its weights strictly.

    ``input_size`` overrides the stored size (the network has no learned positional table,
    so weights trained at 128³ load into a 256³ model).
    """
    path = Path(path)
    config = read_model_config(path)
    model_cfg = config["model"]
    try:
        process = process_from_dict(config["process"])
        in_channels = model_cfg.get("in_channels", 1)
        conditioning = model_cfg.get("conditioning")
        model = create_model(model_cfg["name"], input_size=input_size or tuple(model_cfg["input_size"]),
                             in_channels=in_channels,
                             out_channels=model_cfg.get("out_channels", process.output_channels(in_channels)),
                             conditioning=Conditioning.from_dict(conditioning) if conditioning is not None else None)
        normalization = Normalization.from_dict(config["normalization"])
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: {err}") from err
    load_strict(model, load_weights(path).state, path / WEIGHTS_FILE)
    model.to(device).eval()
    return ModelFolder(model=model, process=process, normalization=normalization,
                       spacing=tuple(config.get("spacing", (1.0, 1.0, 1.0))),
                       extra={k: v for k, v in config.items() if k not in _SECTIONS})


@dataclass
class Weights:
    """A state dict, where it came from, and the training step and metadata of a checkpoint (else None)."""

    state: dict[str, torch.Tensor]
    source: str
    step: int | None = None
    meta: dict | None = None


def load_weights(source: str | Path) -> Weights:
    """The weights a user points at: a run directory (its newest checkpoint's EMA), a checkpoint
    ``.pt`` (EMA), a model folder, or a ``.safetensors`` file."""
    from prdit.training.checkpoint import latest_checkpoint, load_checkpoint

    path = Path(source)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return Weights(_read_safetensors(path / WEIGHTS_FILE), f"model folder {path}")
    if path.suffix == ".safetensors" and path.is_file():
        return Weights(_read_safetensors(path), str(path))
    if path.is_dir():
        checkpoint = latest_checkpoint(path / CHECKPOINT_DIR)
        if checkpoint is None:
            raise CheckpointError(f"{path}: no checkpoints in {path / CHECKPOINT_DIR}; is it a finished training run?")
        path = checkpoint
    if path.is_file():
        state = load_checkpoint(path)
        return Weights(state.get("ema", state.get("model", state)), f"EMA weights of {path}",
                       state.get("step"), state.get("meta"))
    raise CheckpointError(f"{source}: no such run directory, checkpoint, model folder or .safetensors file")


def load_strict(model: PRDiT, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is an error naming ``source``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: weights do not fit {model.name} (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(state, strict=True)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path.parent}: missing {path.name}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _upgrade_from_v1(config: dict) -> dict:
    """Format 1: IaN only, its settings under ``diffusion``, the output channels as ``learn_sigma``."""
    config = dict(config)
    model = dict(config.get("model", {}))
    in_channels = model.get("in_channels", 1)
    model["out_channels"] = 2 * in_channels if model.pop("learn_sigma", True) else in_channels
    config["model"] = model
    if "diffusion" in config:
        config["process"] = {"kind": "ian", **config.pop("diffusion")}
    config.pop("sampling", None)  # written by format 1, never read
    config["format_version"] = FORMAT_VERSION
    return config
