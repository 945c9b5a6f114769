"""Training-free inverse problems with a trained model as the prior (docs/method.md §15): PSNR and
SSIM of the guided reconstruction against each task's classical baseline, on held-out volumes,
and the time per reconstruction.

For every task (×4 super-resolution, infill of the centre cube, Gaussian deblurring, X-ray → CT
from two views) each held-out volume is measured with the task's operator (no noise), then
reconstructed with the task's default guidance (docs/method.md §15) and reconstructed by the classical
baseline (trilinear upsampling, mean fill, the blurred input, normalised back-projection).
Scores are means ± standard deviations over the volumes, in the model range [-1, 1] (SSIM: mean of
2D SSIMs along the three axes). The reconstructions are those of ``prdit reconstruct --simulate-from
LIST`` (``prdit.inverse.run.reconstruct_cases``): one folder per volume under ``--out`` (a finished
one is kept, so a stopped run resumes), and under torchrun the processes share the volumes.

    make demo                                   # the phantom model this uses by default
    python benchmarks/inverse_problems.py       # the demo model on the demo's validation phantoms
    python benchmarks/inverse_problems.py --model models/lidc-128-4l --real data/lidc/val.txt --steps 1000
    torchrun --nproc_per_node=8 benchmarks/inverse_problems.py --model models/lidc-128-4l --real data/lidc/val.txt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import add_common_args, report, resolve_device, set_threads, smoke_model_folder

NAME = "inverse_problems"
DEMO_MODEL = Path("demo_out/models/prdit")
DEMO_REAL = Path("demo_out/data/phantoms-32/val.txt")


def held_out(real: Path, limit: int) -> list[Path]:
    """Up to ``limit`` volume files of a folder or a list file (one path a line, relative to it; ``#`` comments)."""
    from prdit.data.io import is_volume_file

    if real.is_dir():
        files = sorted(p for p in real.iterdir() if is_volume_file(p))
    else:
        lines = [line.strip() for line in real.read_text().splitlines()]
        files = [real.parent / line for line in lines if line and not line.startswith("#")]
    return files[:limit]


def smoke_inputs(folder: Path) -> tuple[Path, Path]:
    """A tiny untrained 16³ model folder and two 16³ phantoms (for the tests)."""
    from prdit.data.phantoms import write_phantoms

    write_phantoms(2, 16, folder / "real", seed=1)
    return smoke_model_folder(folder / "model", spacing=(2.0, 2.0, 2.0)), folder / "real"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="model folder (prdit export) of an IaN model")
    parser.add_argument("--real", type=Path, default=DEMO_REAL, help="held-out volumes in HU: folder or list file")
    parser.add_argument("--num", type=int, default=4, help="held-out volumes per task")
    parser.add_argument("--steps", type=int, default=1000, help="guided predictor-corrector steps (reference: 1000)")
    parser.add_argument("--tasks", default="sr,infill,deblur,xray", help="comma-separated tasks")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--out", type=Path, default=None, help="folder of the reconstructions, one subfolder per "
                        "task and volume (default: a temporary folder, removed afterwards)")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from prdit.distributed import INFERENCE_TIMEOUT, on_main, rank_device, setup_distributed, teardown

    info = setup_distributed(INFERENCE_TIMEOUT)
    device = resolve_device(args.device)
    device = rank_device(device, info) if args.device != "cpu" else device
    scratch = Path(on_main(tempfile.mkdtemp, info)) if args.out is None else args.out
    try:
        rows, results, notes = run(args, parser, device, scratch)
    finally:
        if args.out is None and info.is_main:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    teardown()
    if info.is_main:
        columns = ["task", "PSNR (ours)", "PSNR (baseline)", "SSIM (ours)", "SSIM (baseline)", "s/reconstruction"]
        report(NAME, device, args, "training-free inverse problems", notes, columns, rows, results)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, device: torch.device,
        scratch: Path) -> tuple[list, list, list[str]]:
    """Reconstruct every held-out volume for every task into ``scratch``; the table rows, results and notes."""
    from prdit.distributed import current
    from prdit.generation.config import SamplingConfig
    from prdit.generation.pipeline import PRDiTPipeline
    from prdit.inverse.guidance import task_settings
    from prdit.inverse.operators import DEFAULT_MASK_PATTERN, make_mask
    from prdit.inverse.run import reconstruct_cases
    from prdit.inverse.tasks import task_operator

    from prdit.distributed import on_main

    model_dir, real = on_main(lambda: smoke_inputs(scratch / "smoke")) if args.smoke else (args.model, args.real)
    if not model_dir.is_dir():
        parser.error(f"{model_dir}: run `make demo` first, or pass --model")
    steps = 4 if args.smoke else args.steps
    pipe = PRDiTPipeline.from_pretrained(model_dir, device=device)
    files = held_out(real, 2 if args.smoke else args.num)
    rows, results = [], []
    for task in [t for t in args.tasks.split(",") if t]:
        mask = make_mask(DEFAULT_MASK_PATTERN, pipe.volume_shape) if task == "infill" else None
        operator = task_operator(task, pipe.volume_shape, pipe.spacing, pipe.normalization, mask=mask)
        guidance = task_settings(task)
        settings = pipe.guided_settings(guidance, SamplingConfig(steps=steps, seed=args.seed))
        done = reconstruct_cases(pipe, task, scratch / task, operator, guidance, settings, simulate_from=files,
                                 previews=False)
        table = done.table
        per_volume = {name: {metric: [c["metrics"][name][metric] for c in done.cases] for metric in ("psnr", "ssim")}
                      for name in ("reconstruction", "baseline")}
        entry = {"task": task, "guidance": guidance.to_dict(), "steps": steps, "volumes": len(files),
                 "seconds_per_reconstruction": table["seconds"]["mean"],
                 "mean": {name: {m: table[name][m]["mean"] for m in ("psnr", "ssim")} for name in per_volume},
                 "std": {name: {m: table[name][m]["std"] for m in ("psnr", "ssim")} for name in per_volume},
                 "per_volume": per_volume, "processes": current().world_size}
        results.append(entry)
        cell = {name: {m: f"{table[name][m]['mean']:{f}} ± {table[name][m]['std']:{f}}"
                       for m, f in (("psnr", ".2f"), ("ssim", ".4f"))} for name in per_volume}
        rows.append([task, cell["reconstruction"]["psnr"], cell["baseline"]["psnr"], cell["reconstruction"]["ssim"],
                     cell["baseline"]["ssim"], f"{entry['seconds_per_reconstruction']:.3g}"])
        if current().is_main:
            print(f"{task}: PSNR {rows[-1][1]} vs {rows[-1][2]} dB, SSIM {rows[-1][3]} vs {rows[-1][4]}, "
                  f"{rows[-1][5]} s", flush=True)
    notes = [f"{pipe.model.name} at {'x'.join(map(str, pipe.volume_shape))} ({model_dir}), {steps} guided pc "
             f"steps, seed {args.seed}", f"{len(files)} held-out volumes per task from {real}, no measurement noise; "
             "mean ± std over the volumes",
             f"infill: the {DEFAULT_MASK_PATTERN} pattern missing; xray: two views (0°, 90°), reference geometry; "
             "scores in the model range"]
    return rows, results, notes


if __name__ == "__main__":
    main()
