"""Seeded IaN results that every refactor must reproduce bit for bit on CPU.

Float kernels differ between CPUs (torch picks AVX-512 or AVX2 code, MKL takes other paths on
other vendors), so bit-identity holds per kind of CPU: ``golden_ian-<machine key>.npz`` is the
record of one kind. ``python tests/diffusion/golden.py`` writes this machine's; rewrite one only
when a change of results is intended, and say so in the commit.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

SIZE = 12


def machine_key() -> str:
    """What decides the float kernels on this CPU: architecture, vendor and torch's vector instruction set."""
    vendor = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}-{vendor}-{torch.backends.cpu.get_cpu_capability()}".lower()


def golden_path(key: str | None = None) -> Path:
    """The record of the kind of CPU ``key`` (default: this one)."""
    return Path(__file__).with_name(f"golden_ian-{key or machine_key()}.npz")


def recorded() -> list[Path]:
    """Every stored record."""
    return sorted(Path(__file__).parent.glob("golden_ian-*.npz"))


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
    np.savez_compressed(golden_path(), **golden_values())
    print(f"wrote {golden_path()}")
