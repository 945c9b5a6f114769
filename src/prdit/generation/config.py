"""The settings of a generation run, in one object that travels from the command line or the
pipeline down to the sampling loop (light: importing this does not import torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prdit.diffusion.guidance import DEFAULT_GUIDANCE_SCALE
from prdit.diffusion.samplers import SamplerSettings
from prdit.errors import ConfigError
from prdit.visualization import CT_WINDOWS

PRECISIONS = ("auto", "fp32", "bf16")
PREVIEW_WINDOWS = (*CT_WINDOWS, "full")  # "full": the model's normalisation window


@dataclass(frozen=True)
class SamplingConfig(SamplerSettings):
    """Sampler and steps (``None``: the defaults of the model's process, see :meth:`SamplerSettings.resolved`),
    plus how volumes are batched, seeded, computed and previewed, and the classifier-free guidance scale w of a
    model sampled with label maps."""

    batch_size: int = 1
    seed: int = 0
    precision: str = "auto"
    exact: bool = True
    preview_window: str = "lung"
    compile: bool = False
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE

    def resolved(self, process, guided: bool = False) -> "SamplingConfig":
        """Checked, with the process's defaults filled in (see :meth:`SamplerSettings.resolved`)."""
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if not math.isfinite(self.guidance_scale):
            raise ConfigError(f"guidance scale must be a finite number, got {self.guidance_scale}")
        if self.preview_window not in PREVIEW_WINDOWS:
            raise ConfigError(f"unknown preview window '{self.preview_window}'; "
                              f"choose one of {', '.join(PREVIEW_WINDOWS)}")
        return super().resolved(process, guided)
