"""Training-free inverse problems with a trained model as the prior (docs/method.md §15): PSNR and
SSIM of the guided reconstruction against each task's classical baseline, on held-out volumes,
and the time per reconstruction.

For every task (×4 super-resolution, infill of the centre cube, Gaussian deblurring, X-ray → CT
from two views) each held-out volume is measured with the task's operator (no noise), then
reconstructed with the task's default guidance (docs/method.md §15) and reconstructed by the classical
baseline (trilinear upsampling, mean fill, the blurred input, normalised back-projection).
Scores are means over the volumes, in the model range [-1, 1] (SSIM: mean of 2D SSIMs along the
three axes).

    make demo                                   # the phantom model this uses by default
    python benchmarks/inverse_problems.py       # the demo model on the demo's validation phantoms
    python benchmarks/inverse_problems.py --model models/lidc-128-4l --real data/lidc/val.txt --steps 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import add_common_args, report, resolve_device, set_threads, synchronize

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
    from prdit.data.normalization import Normalization
    from prdit.data.phantoms import write_phantoms
    from prdit.diffusion import create_process
    from prdit.model_folder import save_model_folder
    from prdit.models import create_model

    torch.manual_seed(0)
    model = create_model("PRDiT-T/6/1", input_size=16)
    torch.nn.init.normal_(model.local_denoiser.output.weight, std=0.1)
    save_model_folder(folder / "model", model, create_process("ian"), Normalization(), spacing=(2.0, 2.0, 2.0))
    write_phantoms(2, 16, folder / "real", seed=1)
    return folder / "model", folder / "real"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="model folder (prdit export) of an IaN model")
    parser.add_argument("--real", type=Path, default=DEMO_REAL, help="held-out volumes in HU: folder or list file")
    parser.add_argument("--num", type=int, default=4, help="held-out volumes per task")
    parser.add_argument("--steps", type=int, default=1000, help="guided predictor-corrector steps (reference: 1000)")
    parser.add_argument("--tasks", default="sr,infill,deblur,xray", help="comma-separated tasks")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)

    from prdit.data.io import read_volume
    from prdit.generation.pipeline import PRDiTPipeline
    from prdit.inverse.guidance import task_settings
    from prdit.inverse.metrics import classical_baseline, psnr, ssim
    from prdit.inverse.operators import DEFAULT_MASK_PATTERN, make_mask, simulate_measurement
    from prdit.inverse.tasks import task_operator

    with tempfile.TemporaryDirectory() as scratch:
        model_dir, real = smoke_inputs(Path(scratch)) if args.smoke else (args.model, args.real)
        if not model_dir.is_dir():
            parser.error(f"{model_dir}: run `make demo` first, or pass --model")
        steps = 4 if args.smoke else args.steps
        pipe = PRDiTPipeline.from_pretrained(model_dir, device=device)
        files = held_out(real, 2 if args.smoke else args.num)
        truths = [torch.from_numpy(pipe.normalization.to_model(read_volume(f).array))[None, None] for f in files]
        rows, results = [], []
        for task in [t for t in args.tasks.split(",") if t]:
            mask = make_mask(DEFAULT_MASK_PATTERN, pipe.volume_shape) if task == "infill" else None
            operator = task_operator(task, pipe.volume_shape, pipe.spacing, pipe.normalization, mask=mask)
            guidance = task_settings(task)
            scores = {"reconstruction": {"psnr": [], "ssim": []}, "baseline": {"psnr": [], "ssim": []}}
            seconds = []
            for truth in truths:
                measurement = simulate_measurement(operator, truth)
                synchronize(device)
                start = time.perf_counter()
                x = pipe.reconstruct(task, measurement, operator=operator, guidance=guidance, steps=steps,
                                     seed=args.seed, output_type="model").volumes
                synchronize(device)
                seconds.append(time.perf_counter() - start)
                for name, volume in (("reconstruction", x), ("baseline", classical_baseline(operator, measurement))):
                    scores[name]["psnr"].append(float(psnr(volume, truth)))
                    scores[name]["ssim"].append(float(ssim(volume, truth)))
            mean = {name: {k: sum(v) / len(v) for k, v in s.items()} for name, s in scores.items()}
            entry = {"task": task, "guidance": guidance.to_dict(), "steps": steps, "volumes": len(truths),
                     "seconds_per_reconstruction": sum(seconds) / len(seconds), "mean": mean, "per_volume": scores}
            results.append(entry)
            rec, base = mean["reconstruction"], mean["baseline"]
            rows.append([task, f"{rec['psnr']:.2f}", f"{base['psnr']:.2f}", f"{rec['ssim']:.4f}", f"{base['ssim']:.4f}",
                         f"{entry['seconds_per_reconstruction']:.3g}"])
            print(f"{task}: PSNR {rec['psnr']:.2f} vs {base['psnr']:.2f} dB, SSIM {rec['ssim']:.4f} vs "
                  f"{base['ssim']:.4f}, {entry['seconds_per_reconstruction']:.3g} s", flush=True)

    notes = [f"{pipe.model.name} at {'x'.join(map(str, pipe.volume_shape))} ({model_dir}), {steps} guided pc "
             f"steps, seed {args.seed}", f"{len(truths)} held-out volumes per task from {real}, no measurement noise",
             f"infill: the {DEFAULT_MASK_PATTERN} pattern missing; xray: two views (0°, 90°), reference geometry; "
             "scores in the model range"]
    columns = ["task", "PSNR (ours)", "PSNR (baseline)", "SSIM (ours)", "SSIM (baseline)", "s/reconstruction"]
    report(NAME, device, args, "training-free inverse problems", notes, columns, rows, results)


if __name__ == "__main__":
    main()
