"""The PRDiT network: local denoiser, global residual DiT, registry.

Names are imported on first use, so the command line can register its commands without
importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PRDiT": "prdit.models.prdit", "PRDiTConfig": "prdit.models.prdit", "count_parameters": "prdit.models.prdit",
    "create_model": "prdit.models.registry", "model_names": "prdit.models.registry",
    "model_spec": "prdit.models.registry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prdit.models' has no attribute {name!r}")
