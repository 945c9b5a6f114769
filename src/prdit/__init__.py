"""prdit: Pixel-Level Residual Diffusion Transformer for 3D CT volume generation."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["create_model", "PRDiTPipeline", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import prdit` (and `prdit --help`) does not import torch.
    if name == "create_model":
        from prdit.models import create_model

        return create_model
    if name == "PRDiTPipeline":
        from prdit.generation.pipeline import PRDiTPipeline

        return PRDiTPipeline
    raise AttributeError(f"module 'prdit' has no attribute {name!r}")
