"""How fast each deterministic sampler converges, on a data set whose exact denoiser is known.

The data: a mixture of two Gaussians in 8 dimensions (``prdit.diffusion.oracles.TwoGaussians``,
means ±0.6, variance 0.05). From 64 fixed noises, each sampler runs 5 to 40 steps; the error is
the mean absolute difference of the volume it returns — its final state, its solution of the
sampling ODE at t = 0 (``DEFAULT_OUTPUT``) — from the final state of 1,000 Heun steps from the
same noise, and the measured order is the slope of log error against log steps. No network is
involved, so this says how each solver and schedule treats the path itself; a trained
model adds its own errors (``benchmarks/sampler_quality.py``).

    python benchmarks/solver_order.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import add_common_args, report, set_threads

if TYPE_CHECKING:
    from prdit.diffusion import Process
    from prdit.diffusion.oracles import TwoGaussians

NAME = "solver_order"
STEPS = [5, 8, 10, 20, 25, 40]


def two_gaussians(kind: str, volumes: int = 64,
                  reference_steps: int = 1000) -> tuple[Process, TwoGaussians, torch.Tensor, torch.Tensor]:
    """The process, its exact two-Gaussian denoiser, ``volumes`` fixed noises ``[N, 1, 2, 2, 2]`` and the final
    states of ``reference_steps`` Heun steps from them."""
    from prdit.diffusion import SamplerSettings, create_process, sample
    from prdit.diffusion.oracles import TwoGaussians

    signs = torch.tensor([1, -1, 1, 1, -1, 1, 1, 1.0]).reshape(1, 1, 2, 2, 2)
    process = create_process(kind)
    oracle = TwoGaussians(process, torch.cat([0.6 * signs, -0.6 * signs]), 0.05)
    noise = process.sample_noise((volumes, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    reference = sample(oracle, process, noise.shape, SamplerSettings("heun", reference_steps), noise=noise).state
    return process, oracle, noise, reference


def measure(process: Process, oracle: TwoGaussians, noise: torch.Tensor, reference: torch.Tensor, sampler: str,
            schedule: str, steps: list[int]) -> dict:
    """Mean |x − x_ref| of the returned volumes after each step count, the network calls, and the order (slope)."""
    from prdit.diffusion import SamplerSettings, sample

    errors = [(sample(oracle, process, noise.shape, SamplerSettings(sampler, n, schedule), noise=noise).volumes
               - reference).abs().mean().item() for n in steps]
    return {"process": process.kind, "sampler": sampler, "schedule": schedule, "steps": list(steps),
            "network_calls": [SamplerSettings(sampler, n).network_calls() for n in steps], "errors": errors,
            "order": float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run every deterministic sampler and schedule of both processes, report."""
    from prdit.diffusion import PROCESSES
    from prdit.diffusion.samplers import SCHEDULES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    steps, reference_steps, volumes = ([2, 4], 20, 4) if args.smoke else (STEPS, 1000, 64)
    results, rows = [], []
    for kind in [k for k, process in PROCESSES.items() if "heun" in process.samplers]:  # those with ODE solvers
        setup = two_gaussians(kind, volumes, reference_steps)
        for sampler in [s for s in setup[0].samplers if s != "pc"]:
            for schedule in SCHEDULES:
                result = measure(*setup, sampler, schedule, steps)
                results.append(result)
                rows.append([kind, sampler, schedule, *(f"{e:.2e}" for e in result["errors"]),
                             f"{result['order']:.2f}"])
    notes = [f"two Gaussians in 8 dimensions (means ±0.6, variance 0.05), {volumes} noises; error = mean |x - x_ref| "
             f"of the returned volumes (the final states, the ODE's solution at t = 0), x_ref the final states of "
             f"{reference_steps} Heun steps; "
             "order = slope of log error over log steps",
             "heun makes 2N-1 network calls for N steps, every other sampler N"]
    report(NAME, torch.device("cpu"), args, "Solver convergence on the exact two-Gaussian denoiser", notes,
           ["process", "sampler", "schedule", *(f"err @{n}" for n in steps), "order"], rows, results)


if __name__ == "__main__":
    main()
