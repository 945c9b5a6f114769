"""`prdit sample` and `prdit evaluate` in one process and under torchrun: wall time and whether the results
are the same.

Each command runs as a user runs it, in a fresh process (``python -m prdit …``) or a torchrun job
(``python -m torch.distributed.run --nproc_per_node=P -m prdit …``; gloo on CPU, NCCL on GPUs), so the
time includes starting Python and loading the model (a few seconds each). On a CPU the processes share
its cores: a job of P processes gives each ``cores // P`` threads, and one process uses them all, so the
comparison is one process against P at equal cores. Sampling writes ``--num-sample`` volumes of the
model (default: the reference model of ``reference_model.py``) with its default sampler; their files are
compared bit for bit with the one-process run's. Evaluation scores ``--num-evaluate`` fresh phantoms
against as many others (FID, MMD, KID, PRDC, MS-SSIM with bootstrap intervals) and reports the largest
relative difference of any number in the report from the one-process report.

    python benchmarks/torchrun_scaling.py                       # 1 and 2 processes, 16 volumes, 64 + 64 phantoms
    python benchmarks/torchrun_scaling.py --processes 1,2,4 --device cuda --model models/lidc-128-4l
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import add_common_args, parse_int_list, report, resolve_device, set_threads, smoke_model_folder

NAME = "torchrun_scaling"
DEFAULT_MODEL = Path(__file__).resolve().parent / "reference_model" / "prdit"
METRICS = "fid,mmd,kid,prdc,msssim"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, args: list[str], device: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``prdit ARGS`` in one process or a torchrun job of ``processes``; its wall seconds and result."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)) if device == "cpu" else "1"}
    command = [sys.executable, "-m", "prdit", *args]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   f"--master_port={free_port()}", *command[1:]]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, result


def same_files(folder: Path, reference: Path) -> tuple[int, int]:
    """How many of the reference's volume files the folder holds with identical voxels, and how many there are."""
    from prdit.data.io import read_volume

    files = sorted(reference.glob("sample_*.nii.gz"))
    equal = sum(np.array_equal(read_volume(folder / f.name).array, read_volume(f).array)
                for f in files if (folder / f.name).is_file())
    return equal, len(files)


def numbers(entry, prefix: str = ""):
    """Every number in a report entry, by its path."""
    if isinstance(entry, dict):
        for key, value in entry.items():
            yield from numbers(value, f"{prefix}.{key}")
    elif isinstance(entry, list):
        for i, value in enumerate(entry):
            yield from numbers(value, f"{prefix}[{i}]")
    elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
        yield prefix, float(entry)


def largest_difference(report: dict, reference: dict, metrics: list[str]) -> tuple[float, str]:
    """The largest relative difference of a metric's number between two reports, and where it is."""
    worst, where = 0.0, "-"
    for metric in metrics:
        ours, theirs = dict(numbers(report[metric])), dict(numbers(reference[metric]))
        if ours.keys() != theirs.keys():
            return float("inf"), f"{metric}: other entries"
        for path, value in theirs.items():
            gap = abs(ours[path] - value) / max(abs(value), 1e-12)
            if gap > worst:
                worst, where = gap, f"{metric}{path}"
    return worst, where


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder to sample")
    parser.add_argument("--processes", type=parse_int_list, default=[1, 2], help="process counts; 1 comes first")
    parser.add_argument("--num-sample", type=int, default=16, help="volumes sampled")
    parser.add_argument("--num-evaluate", type=int, default=64, help="phantoms in each evaluated set")
    parser.add_argument("--features", default="auto", help="feature network of the evaluation (auto: ct-resnet152 "
                        "where installed, else random-init)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the evaluation")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    counts = sorted(set(args.processes) | {1})

    from prdit.data.phantoms import write_phantoms
    from prdit.evaluation.ct_resnet import weights_installed

    features = args.features
    if features == "auto":
        features = "ct-resnet152" if weights_installed() and not args.smoke else "random-init"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = smoke_model_folder(scratch / "model", spacing=(2.0, 2.0, 2.0)) if args.smoke else args.model
        if not model.is_dir():
            parser.error(f"{model}: no model folder; run `python benchmarks/reference_model.py` or pass --model")
        num_sample, num_evaluate = (4, 8) if args.smoke else (args.num_sample, args.num_evaluate)
        steps = ["--steps", "4"] if args.smoke else []
        size = 16 if args.smoke else 32
        real = write_phantoms(num_evaluate, size, scratch / "real", seed=11)[0].parent
        fake = write_phantoms(num_evaluate, size, scratch / "fake", seed=12)[0].parent
        rows, results = [], []
        base = {}
        for processes in counts:
            out = scratch / f"sample-{processes}"
            seconds, _ = launch(processes, ["sample", str(model), "--out", str(out), "--num-volumes", str(num_sample),
                                            "--device", device.type, "--quiet", "--no-previews", *steps], device.type)
            base.setdefault("sample", (seconds, out))
            equal, total = same_files(out, base["sample"][1])
            results.append({"command": "sample", "processes": processes, "seconds": seconds, "volumes": num_sample,
                            "identical_files": equal, "files": total})
            rows.append(["sample", processes, f"{num_sample} volumes", f"{seconds:.1f}",
                         f"{base['sample'][0] / seconds:.2f}", f"{equal}/{total} files bit-identical"])
            print(f"sample, {processes} process(es): {seconds:.1f} s, {equal}/{total} files identical", flush=True)

            report_path = scratch / f"evaluate-{processes}.json"
            extra = ["--seed", "0"] if features == "random-init" else []
            seconds, _ = launch(processes, ["evaluate", "--fake", str(fake), "--real", str(real), "--features", features,
                                            *extra, "--metrics", METRICS, "--bootstrap", str(args.bootstrap),
                                            "--no-cache", "--device", device.type, "--out", str(report_path),
                                            "--quiet"], device.type)
            evaluation = json.loads(report_path.read_text())
            base.setdefault("evaluate", (seconds, evaluation))
            gap, where = largest_difference(evaluation, base["evaluate"][1], METRICS.split(","))
            results.append({"command": "evaluate", "processes": processes, "seconds": seconds,
                            "volumes": 2 * num_evaluate, "largest_relative_difference": gap, "where": where,
                            "timings_s": evaluation["timings_s"]})
            rows.append(["evaluate", processes, f"{num_evaluate} + {num_evaluate} volumes", f"{seconds:.1f}",
                         f"{base['evaluate'][0] / seconds:.2f}",
                         "reference" if processes == 1 else f"numbers within {gap:.1e} relative ({where})"])
            print(f"evaluate, {processes} process(es): {seconds:.1f} s, largest relative difference {gap:.1e}",
                  flush=True)
    notes = [f"model {model.name if args.smoke else model}; sampling with its default sampler and steps"
             + (" (4 steps)" if args.smoke else ""),
             f"evaluation: {METRICS} on {features} features, {args.bootstrap} bootstrap resamples, fresh phantoms "
             f"({size}³)",
             f"wall time of the whole command (Python start, model and network loading included); on CPU a job of P "
             f"processes gives each {os.cpu_count()} // P threads"]
    columns = ["command", "processes", "work", "wall s", "speed-up", "same result"]
    report(NAME, device, args, "sampling and evaluation under torchrun", notes, columns, rows, results)


if __name__ == "__main__":
    main()
