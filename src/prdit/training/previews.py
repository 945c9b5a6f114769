"""Stage-2 training previews: a few EMA samples (the process's default sampler) as a PNG."""

from __future__ import annotations

from pathlib import Path

import torch

from prdit.data.normalization import Normalization
from prdit.diffusion import Process, SamplerSettings, sample


def save_training_preview(model: torch.nn.Module, process: Process, normalization: Normalization,
                          path: Path, num: int, steps: int | None, seed: int, device: torch.device) -> Path:
    """Sample ``num`` volumes with a fixed seed (``steps`` None: the process's default) and save their orthogonal
    mid-slices in HU."""
    from prdit.visualization import save_slices_figure

    cfg = model.config
    generator = torch.Generator(device=device).manual_seed(seed)
    settings = SamplerSettings(steps=steps).resolved(process)
    result = sample(model, process, (num, cfg.in_channels, *cfg.input_size), settings, device=device,
                    generator=generator)
    volumes = [normalization.to_hu(v[0].cpu().numpy()) for v in result.volumes]
    return save_slices_figure(volumes, path, titles=[f"sample {i}" for i in range(num)])
