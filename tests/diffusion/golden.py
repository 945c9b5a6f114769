"""Seeded IaN results that every refactor must reproduce bit for bit on CPU.

``python tests/diffusion/golden.py`` rewrites ``golden_ian.npz``; do that only when a change of
results is intended, and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).with_name("golden_ian.npz")
SIZE = 12


def golden_model() -> torch.nn.Module:
    """PRDiT-T/6/2 at 12³ with every weight non-zero (zero-initialised layers perturbed), seeded."""
    from prdit.models import create_model

    torch.manual_seed(0)
    model = create_model("PRDiT-T/6/2", input_size=SIZE)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def golden_values() -> dict[str, np.ndarray]:
    """Samples of both samplers from per-volume generators, and seeded training losses."""
    from prdit.diffusion import IaNDiffusion, SamplerSettings, sample

    model, diffusion = golden_model(), IaNDiffusion()
    values = {}
    for sampler in ("euler", "pc"):
        generators = [torch.Generator().manual_seed(seed) for seed in (11, 12)]
        result = sample(model, diffusion, (2, 1, SIZE, SIZE, SIZE), SamplerSettings(sampler, 7), generator=generators)
        values[f"{sampler}_x0"] = result.x0.numpy()
        values[f"{sampler}_state"] = result.state.numpy()
    x0 = torch.linspace(-1, 1, 2 * SIZE**3).reshape(2, 1, SIZE, SIZE, SIZE)
    losses = diffusion.training_losses(model, x0, generator=torch.Generator().manual_seed(5))
    values["losses"] = np.array([losses[k].item() for k in ("loss", "loss_x0", "loss_eps")], dtype=np.float64)
    return values


if __name__ == "__main__":
    np.savez_compressed(GOLDEN, **golden_values())
    print(f"wrote {GOLDEN}")
