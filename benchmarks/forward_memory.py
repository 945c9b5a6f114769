"""Peak memory and time of one no-grad forward pass of a PRDiT model, batch 1, per volume size.

    python benchmarks/forward_memory.py                      # PRDiT-B/12/4 at 64³ and 128³
    python benchmarks/forward_memory.py --size 256           # 256³ only
    python benchmarks/forward_memory.py --model PRDiT-B/12/0 --sizes 64,128,256
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (ConfigurationFailed, PeakMemory, add_common_args, autocast, build_prdit, fmt_bytes,
                               fmt_number, memory_note, parameter_count, parse_int_list, precision_note, prime_libraries, report,
                               resolve_device, run_configuration, set_threads, time_runs)

NAME = "forward_memory"


def measure_forward(model_name: str, size: int, batch: int, device_name: str, warmup: int, repeats: int,
                    budget_s: float) -> dict:
    """Build the model and its input inside the memory measurement, then time no-grad forwards."""
    device = resolve_device(device_name)
    prime_libraries(device, unet=False)
    torch.manual_seed(0)
    with PeakMemory(device) as memory:
        model = build_prdit(model_name, size, device).eval()
        x = 0.5 * torch.randn(batch, 1, size, size, size, device=device)
        t = torch.full((batch,), 500.0, device=device)

        def forward() -> None:
            with torch.no_grad(), autocast(device):
                model(x, t)

        timing = time_runs(forward, device, warmup, repeats, budget_s)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"model": model_name, "size": size, "batch": batch, "tokens": math.prod(model.config.grid), "parameters": parameter_count(model),
            "weights_bytes": weights, "peak_bytes": memory.peak, "memory_method": memory.method,
            **timing.to_dict()}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure each size, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--model", default="PRDiT-B/12/4", help="registered model name")
    parser.add_argument("--sizes", default="64,128", help="volume edges, comma-separated")
    parser.add_argument("--size", type=int, action="append", help="volume edge (repeatable); replaces --sizes")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    model_name = "PRDiT-T/6/1" if args.smoke else args.model
    sizes = [16] if args.smoke else (args.size or parse_int_list(args.sizes))

    results, rows = [], []
    for size in sizes:
        try:
            r = run_configuration(device, measure_forward, model_name, size, args.batch, device.type, args.warmup,
                                  args.repeats, args.time_budget, same_process=args.same_process)
        except ConfigurationFailed as error:
            reason = "out of memory" if error.out_of_memory else "failed"
            print(f"{model_name} at {size}³: {reason}: {str(error).splitlines()[0]}", file=sys.stderr)
            results.append({"model": model_name, "size": size, "error": str(error), "out_of_memory": error.out_of_memory})
            rows.append([model_name, f"{size}³", "-", "-", "-", reason, "-", "-", "-"])
            continue
        results.append(r)
        rows.append([model_name, f"{size}³", f"{r['tokens']:,}", f"{r['parameters'] / 1e6:.1f}",
                     fmt_bytes(r["weights_bytes"]), fmt_bytes(r["peak_bytes"]),
                     fmt_bytes(r["peak_bytes"] - r["weights_bytes"]), fmt_number(r["median_s"]), r["runs"]])
    notes = [f"one no-grad forward, batch {args.batch}, {precision_note(device)}; "
             f"median of the timed runs after {args.warmup} warm-up run(s)",
             memory_note(device, args.same_process) + "; the peak includes the weights and the input"]
    report(NAME, device, args, f"PRDiT forward pass: peak memory and time ({device.type})", notes,
           ["model", "size", "tokens", "params M", "weights MiB", "peak MiB", "peak-weights MiB", "time s", "runs"],
           rows, results)


if __name__ == "__main__":
    main()
