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


def compiled(module: torch.nn.Module, purpose: str):
    """``torch.compile(module)`` that falls back to the eager module, with a warning, where compiling fails.

    Compilation happens on the first call, so that call is the one that is guarded; later calls
    go straight to whichever version worked. Compiled results equal eager ones up to float
    rounding, not bit for bit.
    """
    import warnings

    def fall_back(err: BaseException) -> None:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        warnings.warn(f"torch.compile is not available here ({type(err).__name__}: {detail[:200]}); "
                      f"{purpose} runs without it", RuntimeWarning, stacklevel=3)

    try:
        fast = torch.compile(module)
    except Exception as err:  # torch raises several types where a backend is missing
        fall_back(err)
        return module
    state = {"call": None}

    def call(*args, **kwargs):
        if state["call"] is not None:
            return state["call"](*args, **kwargs)
        try:
            out = fast(*args, **kwargs)
            state["call"] = fast
        except Exception as err:
            fall_back(err)
            state["call"] = module
            out = module(*args, **kwargs)
        return out

    return call
