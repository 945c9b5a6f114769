"""Seconds per generated volume when volumes are sampled together: batch 1, 4 and 16, each with the
network called once per volume (``prdit sample --exact``: a volume is bit-identical in any batch)
and once per batch (``--no-exact``: equal up to float rounding), as ``prdit sample`` calls it.

Every configuration samples 16 volumes (a batch of 16 once, batches of 4 four times, ...) with
the same solver and steps, in alternating rounds so that machine drift hits all alike. With
``--compile`` every configuration also runs through ``torch.compile`` (``prdit sample
--compile``) in the same rounds; the first call of each, which compiles, is timed apart.

    python benchmarks/batched_sampling.py                    # the demo model: PRDiT-T/6/2 at 32³
    python benchmarks/batched_sampling.py --model PRDiT-B/12/4 --size 64 --batches 1,4
    python benchmarks/batched_sampling.py --compile --batches 1,16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (add_common_args, build_prdit, fmt_number, parse_int_list, precision_note, report,
                               resolve_device, set_threads, time_alternating)

NAME = "batched_sampling"


def sampling_run(model: torch.nn.Module, volumes: int, batch: int, exact: bool, steps: int, device: torch.device,
                 compile: bool = False):
    """A closure sampling ``volumes`` volumes in batches of ``batch`` as ``prdit sample`` does."""
    from prdit.diffusion import create_process
    from prdit.generation.config import SamplingConfig
    from prdit.generation.sampling import sample_volumes, volume_generators

    process = create_process("ian")
    settings = SamplingConfig(sampler="dpm++2m", steps=steps, batch_size=batch, exact=exact, compile=compile)
    generators = volume_generators(range(volumes), device)

    def run() -> None:
        for start in range(0, volumes, batch):
            sample_volumes(model, process, generators[start:start + batch], settings, device)

    return run


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, time every (batch, exact) pair alternately, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--model", default="PRDiT-T/6/2", help="registered PRDiT name (default: the demo's)")
    parser.add_argument("--size", type=int, default=32, help="volume edge (default: the demo's 32)")
    parser.add_argument("--batches", default="1,4,16", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps per volume (DPM-Solver++ 2M)")
    parser.add_argument("--compile", action="store_true", help="also time every configuration with torch.compile")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    model_name, size, batches = ("PRDiT-T/6/1", 8, [1, 2]) if args.smoke else (args.model, args.size,
                                                                               parse_int_list(args.batches))
    steps = 2 if args.smoke else args.steps
    volumes = max(batches)
    torch.manual_seed(0)
    model = build_prdit(model_name, size, device).eval()
    modes = (False, True) if args.compile else (False,)
    runs = {(b, exact, c): sampling_run(model, volumes, b, exact, steps, device, c) for c in modes
            for b in batches for exact in (True, False) if not (b == 1 and not exact)}
    first_call = {}
    for key, fn in runs.items():
        if key[2]:  # the first compiled call compiles (once per input shape)
            start = time.perf_counter()
            fn()
            first_call[key] = time.perf_counter() - start
    timings = time_alternating({_label(*key): fn for key, fn in runs.items()}, device, args.warmup, args.repeats,
                               args.time_budget)
    baseline = timings[_label(batches[0], True, False)].median / volumes
    results, rows = [], []
    for key in runs:
        b, exact, compiled = key
        timing = timings[_label(*key)]
        per_volume = timing.median / volumes
        results.append({"batch": b, "exact": exact, "compile": compiled, "volumes": volumes, "steps": steps,
                        "seconds_per_volume": per_volume, "first_call_seconds": first_call.get(key),
                        **timing.to_dict()})
        rows.append([b, "per volume (--exact)" if exact else "per batch (--no-exact)", "yes" if compiled else "no",
                     fmt_number(per_volume), fmt_number(per_volume / steps), f"{baseline / per_volume:.2f}",
                     "-" if key not in first_call else f"{first_call[key]:.0f} s", timing.to_dict()["runs"]])
    notes = [f"{model_name} at {size}³, {precision_note(device)}; {volumes} volumes per run, DPM-Solver++ 2M with "
             f"{steps} steps; median of alternating rounds after {args.warmup} warm-up round(s)",
             f"speed-up = s/volume of batch {batches[0]} (exact, eager) / this row's s/volume; first run = the first "
             "compiled run of the row, which compiles"]
    report(NAME, device, args, f"Batched sampling: seconds per volume by batch and network call ({device.type})",
           notes, ["batch", "network call", "compile", "s/volume", "s/volume/step", "speed-up", "first run", "runs"],
           rows, results)


def _label(batch: int, exact: bool, compiled: bool) -> str:
    return f"{batch}/{exact}/{compiled}"


if __name__ == "__main__":
    main()
