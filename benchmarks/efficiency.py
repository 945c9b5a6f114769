"""Achieved FLOP/s of a PRDiT training step as a fraction of this machine's dense-matmul FLOP/s.

FLOPs of one step (forward + backward; matmuls, convolutions and attention, as counted by
``torch.utils.flop_counter.FlopCounterMode``; the optimizer's element-wise work is not counted)
÷ the measured step time. The reference is a large square matmul (fp32 on CPU, bf16 on CUDA)
timed in the same rounds as the steps, so both see the same machine state.

    python benchmarks/efficiency.py                          # 64³ on CPU, 128³ on CUDA
    python benchmarks/efficiency.py --models PRDiT-B/12/4 --profile
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.utils import flop_counter

from benchmarks.common import (add_common_args, build_prdit, fmt_number, parameter_count, precision_note,
                               prdit_train_step, report, resolve_device, set_threads, synchronize, time_alternating,
                               training_volume)

NAME = "efficiency"


def _cpu_flash_forward(query_shape, key_shape, value_shape, *_, out_shape=None, **__) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_backward(grad_out_shape, query_shape, key_shape, value_shape, *_, out_shape=None, **__) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA attention kernels but not the CPU flash-attention ones.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def count_step_flops(step, model: torch.nn.Module) -> tuple[int, dict[str, float]]:
    """FLOPs of one training step, and their shares by part of the model (and attention alone)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        step()
    total = counter.get_total_flops()
    counts = counter.get_flop_counts()
    root = type(model).__name__
    shares: dict[str, float] = defaultdict(float)
    for part in ("time_embed", "local_denoiser", "global_refiner"):
        shares[part] = sum(counts.get(f"{root}.{part}", {}).values()) / max(total, 1)
    shares["attention (QKᵀ, ·V)"] = sum(flops for op, flops in counts.get("Global", {}).items()
                                        if "attention" in str(op)) / max(total, 1)
    return total, dict(shares)


def matmul_workload(n: int, device: torch.device):
    """A square ``n``×``n`` matmul (bf16 on CUDA, fp32 on CPU) and its FLOPs."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device, dtype)
    b = torch.randn(n, n, generator=generator).to(device, dtype)
    return (lambda: torch.mm(a, b)), 2 * n**3, str(dtype).replace("torch.", "")


def profile_step(step, device: torch.device, rows: int = 15) -> str:
    """The most expensive operators of one step (self time), as torch.profiler's table."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, count FLOPs, time steps and the matmul in alternating rounds, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--models", default="PRDiT-B/12/0,PRDiT-B/12/4", help="PRDiT names, comma-separated")
    parser.add_argument("--size", type=int, default=None, help="volume edge (default 64 on CPU, 128 on CUDA)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=None, help="reference matmul edge (default 4096 CPU, 8192 CUDA)")
    parser.add_argument("--profile", action="store_true", help="also print the top operators of one step per model")
    parser.add_argument("--unfused-adamw", action="store_true",
                        help="also time each model with torch's multi-tensor AdamW (the training loop uses the "
                             "fused one) in the same rounds")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = 16 if args.smoke else args.size or (128 if cuda else 64)
    names = ["PRDiT-T/6/1"] if args.smoke else [n for n in args.models.split(",") if n]
    matmul_n = 256 if args.smoke else args.matmul_size or (8192 if cuda else 4096)

    torch.manual_seed(0)
    x0 = training_volume(args.batch, size, device)
    workloads, flops, shares, parameters, profiles = {}, {}, {}, {}, {}
    for name in names:
        print(f"counting FLOPs: {name} at {size}³ …", file=sys.stderr, flush=True)
        model = build_prdit(name, size, device, train=True)
        step = prdit_train_step(model, x0, device)
        flops[name], shares[name] = count_step_flops(step, model)
        parameters[name] = parameter_count(model, trainable_only=True)
        if args.profile:
            profiles[name] = profile_step(step, device)
        workloads[name] = step
        if args.unfused_adamw:
            flops[f"{name} unfused AdamW"], shares[f"{name} unfused AdamW"] = flops[name], shares[name]
            parameters[f"{name} unfused AdamW"] = parameters[name]
            workloads[f"{name} unfused AdamW"] = prdit_train_step(model, x0, device, fused_adamw=False)
    matmul, matmul_flops, matmul_dtype = matmul_workload(matmul_n, device)
    workloads["matmul"] = matmul
    print("timing: alternating rounds …", file=sys.stderr, flush=True)
    timings = time_alternating(workloads, device, args.warmup, max(args.repeats, 1), args.time_budget)
    peak = matmul_flops / timings["matmul"].median

    results, rows = [], []
    for name in [n for n in workloads if n != "matmul"]:
        step_s = timings[name].median
        achieved = flops[name] / step_s
        results.append({"model": name, "size": size, "batch": args.batch, "trainable": parameters[name],
                        "flops_per_step": flops[name], "flop_shares": shares[name], "achieved_flops": achieved,
                        "matmul_flops": peak, "fraction_of_matmul": achieved / peak, **timings[name].to_dict()})
        rows.append([name, f"{size}³", fmt_number(flops[name] / 1e9), fmt_number(step_s),
                     fmt_number(achieved / 1e9), fmt_number(peak / 1e9), f"{100 * achieved / peak:.0f}%", timings[name].to_dict()["runs"]])
    notes = [f"training step: forward + backward + clip + AdamW, batch {args.batch}, {precision_note(device)}; "
             "stage-2 models with stage 1 frozen",
             "FLOPs by torch.utils.flop_counter.FlopCounterMode over one step (matmul/conv/attention; "
             "element-wise work uncounted)",
             f"reference: {matmul_n}x{matmul_n} {matmul_dtype} matmul; median of alternating rounds "
             f"(steps and matmul) after {args.warmup} warm-up round(s)"]
    for name in names:
        parts = ", ".join(f"{part} {100 * share:.0f}%" for part, share in shares[name].items() if share > 0)
        notes.append(f"{name} FLOPs: {parts}")
    report(NAME, device, args, f"Training-step efficiency: achieved vs dense-matmul FLOP/s ({device.type})", notes,
           ["model", "size", "GFLOP/step", "step s", "achieved GFLOP/s", "matmul GFLOP/s", "of matmul", "runs"],
           rows, {"models": results, "matmul": {"n": matmul_n, "dtype": matmul_dtype, "flops": matmul_flops,
                                                "flops_per_s": peak, **timings["matmul"].to_dict()},
                  "profiles": profiles})
    for name, table in profiles.items():
        print(f"\nprofile of one {name} training step at {size}³:\n{table}")


if __name__ == "__main__":
    main()
