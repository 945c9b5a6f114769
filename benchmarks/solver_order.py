"""How fast each deterministic sampler converges, on a data set whose exact denoiser is known.

The data: a mixture of two Gaussians in 8 dimensions (``prdit.diffusion.oracles.TwoGaussians``,
means ±0.6, variance 0.05). From 64 fixed noises, each sampler runs 5 to 40 steps; the error is
the mean absolute difference from 1,000 Heun steps from the same noise, and the measured order is
the slope of log error against log steps. No network is involved, so this says how each solver
and schedule treats the path itself; a trained model adds its own errors
(``benchmarks/sampler_quality.py``).

    python benchmarks/solver_order.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import add_common_args, report, set_threads

NAME = "solver_order"
STEPS = [5, 8, 10, 20, 25, 40]


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run every deterministic sampler and schedule of both processes, report."""
    from prdit.diffusion import PROCESSES, SamplerSettings, create_process, sample
    from prdit.diffusion.oracles import TwoGaussians
    from prdit.diffusion.samplers import SCHEDULES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    steps, reference_steps, volumes = ([2, 4], 20, 4) if args.smoke else (STEPS, 1000, 64)
    signs = torch.tensor([1, -1, 1, 1, -1, 1, 1, 1.0]).reshape(1, 1, 2, 2, 2)
    means = torch.cat([0.6 * signs, -0.6 * signs])
    results, rows = [], []
    for process in (create_process(kind) for kind in PROCESSES):
        oracle = TwoGaussians(process, means, 0.05)
        noise = process.sample_noise((volumes, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
        reference = sample(oracle, process, noise.shape, SamplerSettings("heun", reference_steps), noise=noise).x0
        for sampler in [s for s in process.samplers if s != "pc"]:
            for schedule in SCHEDULES:
                errors = [(sample(oracle, process, noise.shape, SamplerSettings(sampler, n, schedule), noise=noise).x0
                           - reference).abs().mean().item() for n in steps]
                order = float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])
                calls = [SamplerSettings(sampler, n).network_calls() for n in steps]
                results.append({"process": process.kind, "sampler": sampler, "schedule": schedule, "steps": steps,
                                "network_calls": calls, "errors": errors, "order": order})
                rows.append([process.kind, sampler, schedule, *(f"{e:.2e}" for e in errors), f"{order:.2f}"])
    notes = [f"two Gaussians in 8 dimensions (means ±0.6, variance 0.05), {volumes} noises; error = mean |x - x_ref|, "
             f"x_ref from {reference_steps} Heun steps; order = slope of log error over log steps",
             "heun makes 2N-1 network calls for N steps, every other sampler N"]
    report(NAME, torch.device("cpu"), args, "Solver convergence on the exact two-Gaussian denoiser", notes,
           ["process", "sampler", "schedule", *(f"err @{n}" for n in steps), "order"], rows, results)


if __name__ == "__main__":
    main()
