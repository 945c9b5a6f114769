"""Defaults of generation, in one place (light: importing this does not import torch)."""

from __future__ import annotations

from dataclasses import dataclass

from prdit.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
# CT display windows of the previews as (level, width) in HU; "full" is the normalisation window.
PREVIEW_WINDOWS = {"lung": (-600.0, 1500.0), "mediastinal": (40.0, 400.0), "bone": (400.0, 1800.0), "full": None}


@dataclass(frozen=True)
class SamplingConfig:
    """Settings of a generation run (spec §8: the reference samples with PC and 1,000 steps)."""

    steps: int = 1000
    sampler: str = "pc"
    batch_size: int = 1
    seed: int = 0
    precision: str = "auto"
    exact: bool = True
    preview_window: str = "lung"

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot work."""
        from prdit.diffusion import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; choose one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if self.preview_window not in PREVIEW_WINDOWS:
            raise ConfigError(f"unknown preview window '{self.preview_window}'; "
                              f"choose one of {', '.join(PREVIEW_WINDOWS)}")
