"""Choosing the torch device from a user's setting."""

from __future__ import annotations

import torch

from prdit.errors import ConfigError


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``auto``/None -> ``cuda`` when available, else ``cpu``; CUDA requested without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return device
