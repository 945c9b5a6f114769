"""Choosing the torch device from a user's setting."""

from __future__ import annotations

import warnings

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


class CompiledModule:
    """``torch.compile(module)`` that runs the eager module from the first compile failure on.

    Compiling happens on the first call and again whenever an input needs a new graph (another
    shape, another dtype), so every call is guarded: where the compiled path raises and the eager
    module runs the same inputs, the eager result is returned, one warning says so, and every
    later call is eager. Where eager raises too, the inputs are at fault and eager's error is
    raised. A backward graph is compiled lazily, on the first ``backward()``, outside any call:
    the caller that runs backward hands such a failure to :meth:`fall_back` and repeats its step
    (the trainer does). Compiled results equal eager ones up to float rounding, not bit for bit.
    """

    def __init__(self, module: torch.nn.Module, purpose: str) -> None:
        self.module, self.purpose = module, purpose
        self.fast = None
        try:
            self.fast = torch.compile(module)
        except Exception as err:  # torch raises several types where a backend is missing
            self._warn(err)

    @property
    def is_compiled(self) -> bool:
        """True until compiling has failed once."""
        return self.fast is not None

    def fall_back(self, err: BaseException) -> bool:
        """Run eagerly from now on and warn; False (and no warning) where already eager."""
        if self.fast is None:
            return False
        self.fast = None
        self._warn(err)
        return True

    def _warn(self, err: BaseException) -> None:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        warnings.warn(f"torch.compile is not available here ({type(err).__name__}: {detail[:200]}); "
                      f"{self.purpose} runs without it", RuntimeWarning, stacklevel=4)

    def __call__(self, *args, **kwargs):
        if self.fast is None:
            return self.module(*args, **kwargs)
        try:
            return self.fast(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise  # eager needs more memory than compiled code, not less
        except Exception as err:
            out = self.module(*args, **kwargs)
            self.fall_back(err)
            return out


def compiled(module: torch.nn.Module, purpose: str) -> CompiledModule:
    """``module`` through ``torch.compile``; eager, with one warning, from a failure on (:class:`CompiledModule`)."""
    return CompiledModule(module, purpose)
