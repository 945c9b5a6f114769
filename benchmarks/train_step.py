"""Training-step time, voxels/s and peak memory of PRDiT against a voxel-space 3D U-Net DDPM.

Each step is forward + backward + gradient clip + AdamW: PRDiT with the IaN loss
(``IaNDiffusion.training_losses``; stage-2 models with stage 1 frozen, as training does), the
U-Net (MONAI ``DiffusionModelUNet``) with the epsilon-prediction MSE. Timing runs all models in
one process in alternating rounds (A, B, C, A, B, C, …) so that machine drift hits all alike;
memory is taken per model on its own (a fresh process on CPU), over two steps so that the
optimizer state is included.

    python benchmarks/train_step.py                          # 64³ on CPU, 128³ on CUDA
    python benchmarks/train_step.py --size 128 --batch 2
    python benchmarks/train_step.py --models PRDiT-B/12/4 --no-unet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (ConfigurationFailed, PeakMemory, UNetSpec, add_common_args, add_unet_args, build_prdit,
                               build_unet, fmt_bytes, fmt_number, memory_note, parameter_count, prdit_train_step,
                               precision_note, prime_libraries, report, resolve_device, run_configuration, set_threads,
                               time_alternating, training_volume, unet_spec_from_args, unet_train_step)

NAME = "train_step"
MEMORY_STEPS = 2  # the second step is the first with the optimizer state already allocated


def build_workload(model: str | UNetSpec, size: int, batch: int, device: torch.device):
    """The network and a closure running one training step on a fixed batch."""
    x0 = training_volume(batch, size, device)
    if isinstance(model, UNetSpec):
        network = build_unet(model, device).train()
        return network, unet_train_step(network, x0, device)
    network = build_prdit(model, size, device, train=True)
    return network, prdit_train_step(network, x0, device)


def measure_train_memory(model: str | UNetSpec, size: int, batch: int, device_name: str) -> dict:
    """Peak memory of building a model and running two training steps (weights, gradients,
    optimizer state and activations)."""
    device = resolve_device(device_name)
    prime_libraries(device, unet=isinstance(model, UNetSpec))
    torch.manual_seed(0)
    with PeakMemory(device) as memory:
        network, step = build_workload(model, size, batch, device)
        for _ in range(MEMORY_STEPS):
            step()
    return {"peak_bytes": memory.peak, "memory_method": memory.method,
            "parameters": parameter_count(network), "trainable": parameter_count(network, trainable_only=True)}


def label(model: str | UNetSpec) -> str:
    """Row name of a workload."""
    return "U-Net DDPM" if isinstance(model, UNetSpec) else model


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure memory per model, time all models alternately, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    add_unet_args(parser)
    parser.add_argument("--models", default="PRDiT-B/12/0,PRDiT-B/12/4", help="PRDiT names, comma-separated")
    parser.add_argument("--no-unet", action="store_true", help="leave out the U-Net baseline")
    parser.add_argument("--size", type=int, default=None, help="volume edge (default 64 on CPU, 128 on CUDA)")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    size = 8 if args.smoke else args.size or (128 if device.type == "cuda" else 64)
    names = ["PRDiT-T/6/1"] if args.smoke else [n for n in args.models.split(",") if n]
    unet = None if args.no_unet else unet_spec_from_args(args)
    workloads: list[str | UNetSpec] = names + ([unet] if unet else [])

    memory: dict[str, dict] = {}
    for model in workloads:
        print(f"memory: {label(model)} at {size}³ …", file=sys.stderr, flush=True)
        try:
            memory[label(model)] = run_configuration(device, measure_train_memory, model, size, args.batch, device.type,
                                                   same_process=args.same_process)
        except ConfigurationFailed as error:
            print(f"{label(model)}: {str(error).splitlines()[0]}", file=sys.stderr)
            memory[label(model)] = {"error": str(error), "out_of_memory": error.out_of_memory}

    print("timing: alternating rounds …", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    steps, parameters = {}, {}
    for model in workloads:
        if "error" in memory[label(model)]:
            continue
        network, steps[label(model)] = build_workload(model, size, args.batch, device)
        parameters[label(model)] = (parameter_count(network), parameter_count(network, trainable_only=True))
    timings = time_alternating(steps, device, args.warmup, args.repeats, args.time_budget)

    voxels = args.batch * size**3
    unet_time = timings["U-Net DDPM"].median if "U-Net DDPM" in timings else None
    results, rows = [], []
    for model in workloads:
        key = label(model)
        mem = memory[key]
        if key not in timings:
            rows.append([key, "-", "-", "-", "-", "out of memory" if mem.get("out_of_memory") else "failed", "-", "-"])
            results.append({"model": key, **mem})
            continue
        timing = timings[key]
        total, trainable = parameters[key]
        ratio = unet_time / timing.median if unet_time else None
        rows.append([key, f"{total / 1e6:.1f}", f"{trainable / 1e6:.1f}", fmt_number(timing.median),
                     f"{voxels / timing.median:,.0f}", fmt_bytes(mem["peak_bytes"]),
                     f"{ratio:.2f}" if ratio else "-", timing.to_dict()["runs"]])
        results.append({"model": key, "size": size, "batch": args.batch, "parameters": total, "trainable": trainable,
                        "voxels_per_s": voxels / timing.median, "unet_time_ratio": ratio, **mem, **timing.to_dict()})
    notes = [f"{size}³, batch {args.batch}, {precision_note(device)}; forward + backward + clip + AdamW; "
             f"median of alternating rounds after {args.warmup} warm-up round(s)",
             memory_note(device, args.same_process) + f"; peak over {MEMORY_STEPS} steps incl. weights, gradients, AdamW state",
             "speed-up = U-Net step time / this model's step time (from the same rounds)"]
    if unet:
        notes.insert(1, f"U-Net DDPM: {unet.describe()}; epsilon-prediction MSE, linear 1,000-step schedule")
    report(NAME, device, args, f"Training step: PRDiT vs voxel-space U-Net DDPM ({device.type})", notes,
           ["model", "params M", "trainable M", "step s", "voxels/s", "peak MiB", "speed-up vs U-Net", "runs"],
           rows, results)


if __name__ == "__main__":
    main()
