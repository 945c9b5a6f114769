"""Seconds and peak memory per generated volume: PRDiT (predictor–corrector IaN sampler) at
several sizes, and a voxel-space 3D U-Net DDPM (MONAI ``DiffusionModelUNet`` with a DDIM
sampler) at one size, both with the same number of network calls.

A few steps are run (the first ``--warmup`` untimed); the median step time is scaled to
``--target-steps`` (default 1,000, the reference setting) to give seconds per volume.

    python benchmarks/sampling.py                            # CPU: PRDiT at 64³, 128³; U-Net at 64³
    python benchmarks/sampling.py --sizes 64,128,256 --unet-size 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (ConfigurationFailed, PeakMemory, UNetSpec, add_common_args, add_unet_args, autocast,
                               build_prdit, build_unet, fmt_bytes, fmt_number, memory_note, parameter_count,
                               parse_int_list, precision_note, prime_libraries, report, resolve_device,
                               run_configuration, set_threads, synchronize, unet_spec_from_args)

NAME = "sampling"


class StepClock:
    """Records the wall-clock time at which each sampler step ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[float] = []

    def start(self) -> None:
        """Mark the start of the first step."""
        synchronize(self.device)
        self.marks = [time.perf_counter()]

    def __call__(self, *_: object) -> None:
        synchronize(self.device)
        self.marks.append(time.perf_counter())

    def step_times(self) -> list[float]:
        """Seconds of each step, in order."""
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def sample_prdit(model, batch: int, size: int, steps: int, device: torch.device, clock: StepClock) -> None:
    """Predictor–corrector sampling of ``batch`` volumes (the project's default sampler)."""
    from prdit.diffusion import SamplerSettings, create_process, progress_hook, sample

    clock.start()
    sample(model, create_process("ian"), (batch, 1, size, size, size), SamplerSettings("pc", steps), device=device,
           generator=torch.Generator(device).manual_seed(0), hooks=[progress_hook(clock)])


def sample_unet(model, batch: int, size: int, steps: int, device: torch.device, clock: StepClock) -> None:
    """DDIM sampling (eta 0) of ``batch`` volumes with the epsilon-prediction U-Net."""
    from monai.networks.schedulers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(batch, 1, size, size, size, device=device, generator=torch.Generator(device).manual_seed(0))
    clock.start()
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = model(x, torch.full((batch,), int(t), device=device, dtype=torch.long)).float()
            x, _ = scheduler.step(eps, int(t), x)
            clock()


def measure_sampling(model: str | UNetSpec, size: int, batch: int, steps: int, warmup: int,
                     device_name: str) -> dict:
    """Peak memory of building the model and sampling ``steps`` steps; the step times after ``warmup``."""
    device = resolve_device(device_name)
    is_unet = isinstance(model, UNetSpec)
    prime_libraries(device, unet=is_unet)
    clock = StepClock(device)
    with PeakMemory(device) as memory:
        network = build_unet(model, device).eval() if is_unet else build_prdit(model, size, device).eval()
        with autocast(device):
            (sample_unet if is_unet else sample_prdit)(network, batch, size, steps, device, clock)
    times = clock.step_times()[warmup:]
    return {"parameters": parameter_count(network), "peak_bytes": memory.peak, "memory_method": memory.method,
            "step_times_s": times, "median_step_s": statistics.median(times)}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, sample with each configuration in turn, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    add_unet_args(parser)
    parser.add_argument("--model", default="PRDiT-B/12/4", help="registered PRDiT name")
    parser.add_argument("--sizes", default=None, help="PRDiT volume edges (default 64,128 on CPU, 64,128,256 on CUDA)")
    parser.add_argument("--unet-size", type=int, default=None, help="U-Net volume edge (default 64 on CPU, 128 on CUDA)")
    parser.add_argument("--no-unet", action="store_true", help="leave out the U-Net baseline")
    parser.add_argument("--batch", type=int, default=1, help="volumes generated together")
    parser.add_argument("--target-steps", type=int, default=1000, help="steps per volume that times are scaled to")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.smoke:
        model_name, sizes, unet_size = "PRDiT-T/6/1", [8], 8
    else:
        model_name = args.model
        sizes = parse_int_list(args.sizes) if args.sizes else ([64, 128, 256] if cuda else [64, 128])
        unet_size = args.unet_size or (128 if cuda else 64)
    unet = None if args.no_unet else unet_spec_from_args(args)
    steps = args.warmup + args.repeats
    configurations: list[tuple[str | UNetSpec, int]] = [(model_name, s) for s in sizes]
    if unet:
        configurations.append((unet, unet_size))

    results, rows = [], []
    for model, size in configurations:
        label = "U-Net DDPM (DDIM)" if isinstance(model, UNetSpec) else f"{model} (PC)"
        print(f"sampling: {label} at {size}³ …", file=sys.stderr, flush=True)
        try:
            r = run_configuration(device, measure_sampling, model, size, args.batch, steps, args.warmup, device.type,
                                  same_process=args.same_process)
        except ConfigurationFailed as error:
            reason = "out of memory" if error.out_of_memory else "failed"
            print(f"{label} at {size}³: {str(error).splitlines()[0]}", file=sys.stderr)
            results.append({"model": label, "size": size, "error": str(error), "out_of_memory": error.out_of_memory})
            rows.append([label, f"{size}³", "-", "-", "-", reason, "-"])
            continue
        per_volume = r["median_step_s"] * args.target_steps / args.batch
        results.append({"model": label, "size": size, "batch": args.batch, "steps_run": steps,
                        "target_steps": args.target_steps, "seconds_per_volume": per_volume, **r})
        rows.append([label, f"{size}³", f"{r['parameters'] / 1e6:.1f}", fmt_number(r["median_step_s"]),
                     fmt_number(per_volume), fmt_bytes(r["peak_bytes"]), len(r["step_times_s"])])
    notes = [f"batch {args.batch}, {precision_note(device)}; {steps} sampler steps run, the first {args.warmup} "
             f"untimed; s/volume = median step time x {args.target_steps} steps / batch",
             memory_note(device, args.same_process) + "; peak over building the model and sampling, incl. weights"]
    if unet:
        notes.insert(1, f"U-Net DDPM: {unet.describe()}; MONAI DDIM scheduler (eta 0)")
    report(NAME, device, args, f"Sampling: seconds and peak memory per generated volume ({device.type})", notes,
           ["model (sampler)", "size", "params M", "s/step", f"s/volume @{args.target_steps}", "peak MiB",
            "timed steps"], rows, results)


if __name__ == "__main__":
    main()
