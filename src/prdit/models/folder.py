"""A trained model as a folder: ``config.json`` (model name, input size, normalisation,
diffusion settings, spacing) + ``model.safetensors`` (EMA weights). Loading never unpickles."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prdit.data.normalization import Normalization
from prdit.diffusion import IaNDiffusion
from prdit.errors import CheckpointError, ConfigError
from prdit.models.prdit import PRDiT
from prdit.models.registry import create_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "prdit-model"
FORMAT_VERSION = 1


@dataclass
class ModelFolder:
    """What a model folder describes, and the network built from it."""

    model: PRDiT
    diffusion: IaNDiffusion
    normalization: Normalization
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    extra: dict = field(default_factory=dict)


def save_model_folder(path: str | Path, model: PRDiT, diffusion: IaNDiffusion, normalization: Normalization,
                      spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), extra: dict | None = None,
                      state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (``state_dict`` defaults to the model's)."""
    from safetensors.torch import save_file

    if model.name is None:
        raise ConfigError("only registered models (built with create_model) can be saved as a model folder")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": model.name, "input_size": list(cfg.input_size), "in_channels": cfg.in_channels,
                  "learn_sigma": cfg.learn_sigma},
        "diffusion": diffusion.to_dict(),
        "normalization": normalization.to_dict(),
        "spacing": [float(s) for s in spacing],
        **(extra or {}),
    }
    weights = {k: v.detach().to("cpu").contiguous() for k, v in (state_dict or model.state_dict()).items()}
    save_file(weights, str(path / WEIGHTS_FILE), metadata={"format": FORMAT})
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return path


def read_model_config(path: str | Path) -> dict:
    """The parsed ``config.json`` of a model folder, checked for the fields loading needs."""
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
    for key in ("model", "diffusion", "normalization"):
        if key not in config:
            raise CheckpointError(f"{config_path}: missing the '{key}' section")
    if "name" not in config["model"] or "input_size" not in config["model"]:
        raise CheckpointError(f"{config_path}: the 'model' section needs 'name' and 'input_size'")
    return config


def load_model_folder(path: str | Path, device: torch.device | str = "cpu",
                      input_size: int | tuple[int, int, int] | None = None) -> ModelFolder:
    """Build the network of a model folder and load its weights strictly.

    ``input_size`` overrides the stored size (the network has no learned positional table,
    so weights trained at 128³ load into a 256³ model).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = read_model_config(path)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{path}: missing {WEIGHTS_FILE}")
    try:
        model_cfg = config["model"]
        model = create_model(model_cfg["name"], input_size=input_size or tuple(model_cfg["input_size"]),
                             in_channels=model_cfg.get("in_channels", 1),
                             learn_sigma=model_cfg.get("learn_sigma", True))
        diffusion = IaNDiffusion(**config["diffusion"])
        normalization = Normalization.from_dict(config["normalization"])
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: {err}") from err
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({err})") from err
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    wrong = [k for k in state if k in model.state_dict() and state[k].shape != model.state_dict()[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights_path}: weights do not fit {model_cfg['name']} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return ModelFolder(model=model, diffusion=diffusion, normalization=normalization,
                       spacing=tuple(config.get("spacing", (1.0, 1.0, 1.0))),
                       extra={k: v for k, v in config.items()
                              if k not in ("format", "format_version", "model", "diffusion", "normalization", "spacing")})
