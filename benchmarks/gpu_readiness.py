"""Is a GPU ready for PRDiT? Numerics of bf16/TF32 against fp32, then training and sampling speed.

Four parts (``--part``; default all, in this order):

1. ``numerics``: from one initialisation and one batch, the training loss over a few AdamW steps
   and one sample from fixed noise (DPM-Solver++ 2M) in fp32, TF32 (attention in bf16, as
   trained) and bf16 autocast; the largest relative loss difference and the relative RMS
   difference of the sample against fp32. CUDA only; on CPU fp32 alone runs.
2. ``train``: one step of global batch 4 split into micro-batches of 1, 2 or 4 (the trainer's
   ``train.micro_batch``: gradients accumulated, weighted by micro-batch size, then clip and
   AdamW), with and without activation checkpointing (``set_grad_checkpointing``): step time,
   voxels/s, peak memory.
3. ``compile``: the same through ``torch.compile`` (micro-batches 1 and 4; each compiles anew,
   compile time in the warm-up step). CUDA only.
4. ``sample``: time per sampler step (one network call and the solver update), peak memory,
   voxels/s at each size.

    python benchmarks/gpu_readiness.py               # CUDA: B/12/4, training at 128³, sampling at 64³/128³/256³
    python benchmarks/gpu_readiness.py --part train  # one part: gpu_readiness-train-<device>.json
    python benchmarks/gpu_readiness.py --device cpu  # what a CPU can: B/12/4 at 32³ (training), 32³/64³ (sampling)

Configurations a device cannot run (bf16/TF32 and compile on CPU, sizes over the CPU defaults)
are listed as skipped with the reason, in the table and in the JSON.

``--time-budget`` (seconds, default 240) bounds the whole run: before each measurement the
script predicts its end from the last measurement of its kind (per voxel) and, past the budget,
stops; the JSON then says ``"status": "partial"`` and lists what was not measured
(``skipped_for_time``). The JSON is rewritten after every measurement, so a run killed part-way
leaves what it finished, with ``"status": "running"`` and the measurement under way.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (RESULTS_DIR, PeakMemory, add_common_args, build_prdit, fmt_bytes, fmt_number,
                               make_optimizer, memory_note, parse_int_list, prime_libraries, report, resolve_device,
                               run_configuration, set_threads, synchronize, training_volume, write_results)

NAME = "gpu_readiness"
GLOBAL_BATCH = 4
NUMERICS_STEPS = 5
NUMERICS_SAMPLE_STEPS = 10
PRECISIONS = ("fp32", "tf32", "bf16")
PARTS = ("numerics", "train", "compile", "sample")
# Each part is sized to end within the default budget on an H100-class GPU (estimated, taking one
# compile of a B/12/4 training step as about a minute), so that a GPU available only for short
# commands can run one part per command.
DEFAULT_TIME_BUDGET_S = 240.0
COMPILE_MICRO_BATCHES = "1,4"  # no accumulation, and the least memory


def train_step(model: torch.nn.Module, x0: torch.Tensor, micro_batch: int, precision: str):
    """A closure running one training step of ``x0`` ``[B, 1, G, G, G]`` as the trainer does with
    ``train.micro_batch = micro_batch``; returns the step's loss."""
    from prdit.diffusion import create_process

    process = create_process("ian")
    optimizer = make_optimizer(model, fused=x0.device.type == "cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator(x0.device).manual_seed(0)

    def step() -> float:
        t = process.sample_time(x0.shape[0], x0.device, generator)
        noise = process.sample_noise(x0.shape, x0.device, generator, x0.dtype)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for lo in range(0, x0.shape[0], micro_batch):
            part = slice(lo, lo + micro_batch)
            weight = x0[part].shape[0] / x0.shape[0]
            with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = process.training_losses(model, x0[part], t=t[part], noise=noise[part])["loss"]
            (loss * weight).backward()
            total += weight * loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return float(total)

    return step


def measure_numerics(model_name: str, size: int, device_name: str) -> dict:
    """Training losses over ``NUMERICS_STEPS`` steps and one sample per precision, compared with fp32."""
    from prdit.diffusion import SamplerSettings, create_process, sample
    from prdit.generation.sampling import denoiser, numerics

    device = resolve_device(device_name)
    precisions = PRECISIONS if device.type == "cuda" else ("fp32",)
    x0 = training_volume(2, size, device)
    process = create_process("ian")
    noise = process.sample_noise((1, 1, size, size, size), generator=torch.Generator().manual_seed(1)).to(device)
    losses, samples = {}, {}
    for precision in precisions:
        torch.manual_seed(0)
        model = build_prdit(model_name, size, device, train=True)
        with numerics(model, precision):
            step = train_step(model, x0, 1, precision)
            losses[precision] = [step() for _ in range(NUMERICS_STEPS)]
            model.eval()
            settings = SamplerSettings("dpm++2m", NUMERICS_SAMPLE_STEPS)
            samples[precision] = sample(denoiser(model, precision, exact=False), process, noise.shape, settings,
                                        device=device, noise=noise).x0.cpu()
    reference = samples["fp32"]
    out = {}
    for precision in precisions:
        loss_gap = max(abs(a - b) / abs(b) for a, b in zip(losses[precision], losses["fp32"]))
        rms = ((samples[precision] - reference).pow(2).mean() / reference.pow(2).mean().clamp_min(1e-12)).sqrt()
        out[precision] = {"losses": losses[precision], "max_relative_loss_difference": loss_gap,
                          "relative_rms_sample_difference": float(rms)}
    return out


def measure_training(model_name: str, size: int, micro_batch: int, checkpointing: bool, compiled: bool,
                     warmup: int, repeats: int, device_name: str) -> dict:
    """Step time and peak memory of a global-batch-``GLOBAL_BATCH`` step in micro-batches of ``micro_batch``."""
    device = resolve_device(device_name)
    prime_libraries(device)
    torch.manual_seed(0)
    with PeakMemory(device) as memory:
        model = build_prdit(model_name, size, device, train=True)
        model.set_grad_checkpointing(checkpointing)
        network = torch.compile(model) if compiled else model
        step = train_step(network, training_volume(GLOBAL_BATCH, size, device),
                          micro_batch, "bf16" if device.type == "cuda" else "fp32")
        times = []
        for k in range(warmup + repeats):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if k >= warmup:
                times.append(time.perf_counter() - start)
    return {"peak_bytes": memory.peak, "memory_method": memory.method, "step_times_s": times,
            "median_step_s": statistics.median(times)}


def measure_sampling(model_name: str, size: int, warmup: int, repeats: int, device_name: str) -> dict:
    """Time per DPM-Solver++ 2M step of one volume and the peak memory of building and sampling."""
    from prdit.diffusion import SamplerSettings, create_process, sample

    device = resolve_device(device_name)
    prime_libraries(device)
    marks: list[float] = []

    def clock(_: object) -> None:
        synchronize(device)
        marks.append(time.perf_counter())

    with PeakMemory(device) as memory:
        model = build_prdit(model_name, size, device).eval()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        steps = warmup + repeats + 1  # the last step returns x̂₀ without an update; it is not timed
        with autocast:
            synchronize(device)
            marks.append(time.perf_counter())
            sample(model, create_process("ian"), (1, 1, size, size, size), SamplerSettings("dpm++2m", steps),
                   device=device, generator=torch.Generator(device).manual_seed(0), hooks=[clock])
    # marks[k + 1] − marks[k] is network call k; its solver update falls into the next interval
    times = [b - a for a, b in zip(marks, marks[1:])][warmup:warmup + repeats]
    return {"peak_bytes": memory.peak, "memory_method": memory.method, "step_times_s": times,
            "median_step_s": statistics.median(times)}


@dataclass
class Measurement:
    """One planned measurement of a part: ``fn(*args)`` (a fresh process per measurement on CPU)."""

    part: str
    label: str
    group: str  # measurements of one group cost alike per voxel: the last one predicts the next
    voxels: int
    fn: Callable[..., dict]
    args: tuple
    meta: dict = field(default_factory=dict)


class TimeBudget:
    """``--time-budget`` seconds for the whole run, counted from its start. A measurement is predicted to
    take as long per voxel as the last one of its group; the first of a group is assumed to fit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()
        self.per_voxel: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def fits(self, measurement: Measurement) -> bool:
        """Whether ``measurement`` is predicted to end within the budget."""
        predicted = self.per_voxel.get(measurement.group, 0.0) * measurement.voxels
        return self.elapsed() + predicted <= self.seconds

    def spent(self, measurement: Measurement, seconds: float) -> None:
        """Record what ``measurement`` took."""
        self.per_voxel[measurement.group] = seconds / measurement.voxels


def plan(parts: Sequence[str], model: str, numerics_size: int, train_size: int, micro_batches: Sequence[int],
         compile_micro_batches: Sequence[int], sample_sizes: Sequence[int], args: argparse.Namespace,
         device: torch.device) -> list[Measurement]:
    """The measurements of ``parts``, in order."""
    cuda = device.type == "cuda"
    out = []
    if "numerics" in parts:
        out.append(Measurement("numerics", f"numerics {numerics_size}³", "numerics", numerics_size**3,
                               measure_numerics, (model, numerics_size, device.type)))
    for part, compiled, micros in (("train", False, micro_batches), ("compile", True, compile_micro_batches)):
        if part not in parts or (compiled and not cuda):
            continue
        for checkpointing in (False, True):
            for micro in micros:
                label = (f"train {train_size}³ micro {micro}" + (" ckpt" if checkpointing else "")
                         + (" compile" if compiled else ""))
                out.append(Measurement(part, label, part, GLOBAL_BATCH * train_size**3, measure_training,
                                       (model, train_size, micro, checkpointing, compiled, args.warmup, args.repeats,
                                        device.type),
                                       {"size": train_size, "micro_batch": micro, "compile": compiled,
                                        "checkpointing": checkpointing}))
    if "sample" in parts:
        for size in sample_sizes:
            out.append(Measurement("sample", f"sample {size}³ (per step)", "sample", size**3, measure_sampling,
                                   (model, size, args.warmup, args.repeats, device.type), {"size": size}))
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the measurements of the chosen part(s) within the time budget, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, time_budget=DEFAULT_TIME_BUDGET_S,
                    time_budget_help="seconds for the whole run: a measurement predicted to end later is not "
                                     "started, and the results say partial and what was not measured")
    parser.add_argument("--part", default="all", choices=("all", *PARTS),
                        help="run one part (default all); the JSON then defaults to "
                             "benchmarks/results/gpu_readiness-<part>-<device>.json")
    parser.add_argument("--model", default="PRDiT-B/12/4", help="registered PRDiT name")
    parser.add_argument("--train-size", type=int, default=None, help="training volume edge (128 on CUDA, 32 on CPU)")
    parser.add_argument("--sample-sizes", default=None, help="sampling edges (64,128,256 on CUDA, 32,64 on CPU)")
    parser.add_argument("--micro-batches", default="1,2,4", help=f"micro-batch sizes of a batch of {GLOBAL_BATCH}")
    parser.add_argument("--compile-micro-batches", default=COMPILE_MICRO_BATCHES,
                        help="micro-batch sizes trained through torch.compile (each compiles anew)")
    parser.add_argument("--numerics-size", type=int, default=None,
                        help="volume edge of the numerics check (64 on CUDA, 16 on CPU)")
    args = parser.parse_args(argv)
    budget = TimeBudget(args.time_budget)
    set_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    parts = PARTS if args.part == "all" else (args.part,)
    if args.json is None and args.part != "all":
        args.json = RESULTS_DIR / f"{NAME}-{args.part}-{device.type}.json"
    if args.smoke:
        model, train_size, sample_sizes, numerics_size, micro_batches = "PRDiT-T/6/1", 8, [8], 8, [2, 4]
        compile_micro_batches = [4]
    else:
        model = args.model
        train_size = args.train_size or (128 if cuda else 32)
        default_sizes = [64, 128, 256] if cuda else [32, 64]
        sample_sizes = parse_int_list(args.sample_sizes) if args.sample_sizes else default_sizes
        numerics_size = args.numerics_size or (64 if cuda else 16)
        micro_batches = parse_int_list(args.micro_batches)
        compile_micro_batches = parse_int_list(args.compile_micro_batches)
    skipped = []
    if not cuda:
        if "numerics" in parts:
            skipped.append("numerics: tf32 and bf16 (CUDA only; fp32 alone runs)")
        if "compile" in parts:
            skipped.append("training with torch.compile (compiling on CPU takes longer than the benchmark)")
        if ({"train", "sample"} & set(parts) and not args.smoke
                and (args.train_size is None or args.sample_sizes is None)):
            skipped.append("training at 128³ and sampling at 128³/256³ (CPU defaults are 32³ and 32³/64³)")
    measurements = plan(parts, model, numerics_size, train_size, micro_batches, compile_micro_batches, sample_sizes,
                        args, device)
    results: dict = {"model": model, "part": args.part, "status": "running", "running": None,
                     "time_budget_s": args.time_budget, "elapsed_s": 0.0, "skipped": skipped, "skipped_for_time": [],
                     "numerics": None, "training": [], "sampling": []}
    rows = []
    title = f"GPU readiness: {', '.join(parts)} ({device.type})"
    columns = ["check", "s/step (or loss diff)", "voxels/s (or sample diff)", "peak MiB", "status"]

    def notes() -> list[str]:
        lines = [f"{model}; training: global batch {GLOBAL_BATCH} per step, IaN loss, clip, AdamW, "
                 f"{'bf16 autocast + TF32' if cuda else 'fp32'}; sampling: one volume, DPM-Solver++ 2M steps"
                 f"{' under bf16 autocast' if cuda else ''}; median of {args.repeats} after {args.warmup} warm-up",
                 f"numerics: {NUMERICS_STEPS} training steps from one initialisation, one {NUMERICS_SAMPLE_STEPS}-step "
                 "sample from fixed noise; columns 2-3 give the largest relative loss difference and the relative "
                 "RMS sample difference against fp32",
                 memory_note(device, args.same_process)]
        if results["status"] == "partial":
            lines.append(f"partial: the time budget of {args.time_budget:.0f} s was spent after "
                         f"{results['elapsed_s']:.0f} s; not measured: {', '.join(results['skipped_for_time'])}")
        return lines

    def table() -> list[list[str]]:
        return (rows + [[label, "-", "-", "-", "skipped (time budget)"] for label in results["skipped_for_time"]]
                + [[line, "-", "-", "-", "skipped"] for line in skipped])

    def save(status: str, running: str | None = None) -> None:
        """Write what is measured so far (before each measurement, so a killed run leaves it, marked running)."""
        results.update(status=status, running=running, elapsed_s=budget.elapsed())
        write_results(NAME, device, args, f"{title} ({status})", notes(), columns, table(), results)

    for index, measurement in enumerate(measurements):
        if not budget.fits(measurement):
            results["skipped_for_time"] = [m.label for m in measurements[index:]]
            break
        save("running", measurement.label)
        print(f"{NAME}: {measurement.label} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            r = run_configuration(device, measurement.fn, *measurement.args, same_process=args.same_process)
        except Exception as error:  # noqa: BLE001 — on CUDA a failing compile must not end the benchmark
            reason = "out of memory" if getattr(error, "out_of_memory", False) else "failed"
            print(f"{measurement.label}: {str(error).splitlines()[0]}", file=sys.stderr)
            rows.append([measurement.label, "-", "-", "-", reason])
            continue
        finally:
            budget.spent(measurement, time.perf_counter() - started)
        record(measurement, r, results, rows)
    results.update(status="partial" if results["skipped_for_time"] else "complete", running=None,
                   elapsed_s=budget.elapsed())
    report(NAME, device, args, title + (" (partial)" if results["skipped_for_time"] else ""), notes(), columns,
           table(), results)


def record(measurement: Measurement, r: dict, results: dict, rows: list[list[str]]) -> None:
    """Add a finished measurement to ``results`` and its row to ``rows``."""
    if measurement.part == "numerics":
        results["numerics"] = r
        size = measurement.args[1]
        for precision, p in r.items():
            name = f"numerics {precision} vs fp32, {size}³" + (" (the reference)" if precision == "fp32" else "")
            rows.append([name, f"loss {p['max_relative_loss_difference']:.2e}",
                         f"sample {p['relative_rms_sample_difference']:.2e}", "-", "relative"])
        return
    per_step = measurement.voxels / r["median_step_s"]
    entry = {**measurement.meta, "voxels_per_s": per_step, **r}
    results["training" if measurement.part in ("train", "compile") else "sampling"].append(entry)
    rows.append([measurement.label, fmt_number(r["median_step_s"]), f"{per_step:,.0f}", fmt_bytes(r["peak_bytes"]),
                 "ok"])


if __name__ == "__main__":
    main()
