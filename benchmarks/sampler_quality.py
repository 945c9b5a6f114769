"""Quality and time against the number of sampler steps, for every sampler of each model's
process (IaN: predictor–corrector, Euler, Heun; flow matching: Euler, Heun): how few steps
keep the quality, and how the two processes compare on the same budget.

Each model folder is sampled with 10, 25, 50, 100, 250 and 1,000 steps (same seeds for every
setting, so only the step count changes), and each set is scored with the evaluation suite
against real volumes: FID ×10³ and MMD (MedicalNet with ``--weights``, otherwise a random-init
network — fine for comparing rows, not comparable with published numbers), MS-SSIM diversity,
and optionally the Wasserstein critic.

    make demo; prdit demo --process flow        # the phantom models this uses by default
    python benchmarks/sampler_quality.py        # both demo models against the demo's validation phantoms
    python benchmarks/sampler_quality.py --models models/lidc-128-4l --real data/lidc/val.txt --weights resnet_50.pth
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

from benchmarks.common import add_common_args, parse_int_list, report, resolve_device, set_threads, synchronize

NAME = "sampler_quality"
DEMO_MODELS = (Path("demo_out/models/prdit"), Path("demo_out/flow/models/prdit"))
DEMO_REAL = Path("demo_out/data/phantoms-32/val.txt")


def smoke_inputs(folder: Path) -> tuple[Path, Path]:
    """A tiny untrained model folder and four 16³ phantoms (for the tests); the zero-initialised
    output layer gets random weights so the volumes are not all one value."""
    from prdit.data.normalization import Normalization
    from prdit.data.phantoms import write_phantoms
    from prdit.diffusion import IaNDiffusion
    from prdit.models import create_model
    from prdit.model_folder import save_model_folder

    torch.manual_seed(0)
    model = create_model("PRDiT-T/6/1", input_size=16)
    torch.nn.init.normal_(model.local_denoiser.output.weight, std=0.1)
    save_model_folder(folder / "model", model, IaNDiffusion(), Normalization())
    write_phantoms(4, 16, folder / "real", seed=1)
    return folder / "model", folder / "real"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda text: [Path(p) for p in text.split(",")], default=None,
                        help="comma-separated model folders (prdit export); default: the demo's IaN and "
                        "flow-matching models, those that exist")
    parser.add_argument("--real", type=Path, default=DEMO_REAL, help="real volumes in HU: folder or list file")
    parser.add_argument("--num", type=int, default=16, help="generated volumes per setting")
    parser.add_argument("--batch", type=int, default=16, help="volumes sampled together")
    parser.add_argument("--steps", type=parse_int_list, default=[10, 25, 50, 100, 250, 1000])
    parser.add_argument("--samplers", default="", help="comma-separated; default: every sampler of each process")
    parser.add_argument("--schedules", default="uniform", help="comma-separated time-step schedules: uniform, lambda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated volumes (same for every row)")
    parser.add_argument("--weights", type=Path, default=None, help="MedicalNet ResNet-50 weights for FID/MMD")
    parser.add_argument("--feature-seed", type=int, default=0, help="seed of the random-init feature network")
    parser.add_argument("--wasserstein", action="store_true", help="also train the WGAN-GP critic per row (slow)")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)

    from prdit.evaluation.config import CriticConfig, EvaluationConfig
    from prdit.evaluation.report import evaluate
    from prdit.generation.pipeline import PRDiTPipeline

    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            model_dir, real = smoke_inputs(Path(scratch))
            model_dirs = [model_dir]
        else:
            model_dirs = args.models or [m for m in DEMO_MODELS if m.is_dir()]
            real = args.real
        steps_list = [2, 4] if args.smoke else args.steps
        num = 2 if args.smoke else args.num
        missing = [m for m in model_dirs if not m.is_dir()]
        if not model_dirs or missing:
            parser.error(f"{missing[0] if missing else 'no model folder'}: run `make demo` (and `prdit demo "
                         "--process flow`) first, or pass --models")
        rows, results, described = [], [], []
        for model_dir in model_dirs:
            pipe = PRDiTPipeline.from_pretrained(model_dir, device=device)
            process = pipe.process.kind
            described.append(f"{process}: {pipe.model.name} at {'x'.join(map(str, pipe.volume_shape))} ({model_dir})")
            metrics = ("fid", "mmd", "msssim") + (("wasserstein",) if args.wasserstein else ())
            config = EvaluationConfig(
                metrics=metrics, real_units="hu", fake_units="hu", normalization=pipe.normalization,
                features="medicalnet" if args.weights else "random-init",
                weights=str(args.weights) if args.weights else None,
                seed=None if args.weights else args.feature_seed, device=str(device), progress=False,
                cache_dir=str(Path(scratch) / "features"),
                critic=CriticConfig(steps=20 if args.smoke else 300, seed=args.seed))
            samplers = [s for s in args.samplers.split(",") if s] or list(pipe.process.samplers)
            runs = [(sampler, schedule) for sampler in samplers if sampler in pipe.process.samplers
                    for schedule in args.schedules.split(",")]
            for sampler, schedule in runs:
                for steps in steps_list:
                    settings = pipe.settings(sampler=sampler, steps=steps, schedule=schedule, seed=args.seed,
                                             batch_size=args.batch, exact=False)
                    synchronize(device)
                    start = time.perf_counter()
                    out = pipe(num_volumes=num, settings=settings)
                    synchronize(device)
                    seconds = (time.perf_counter() - start) / num
                    scores = evaluate(real, out.volumes, config)
                    entry = {"process": process, "sampler": sampler, "schedule": schedule, "steps": steps,
                             "network_calls": settings.network_calls(), "seconds_per_volume": seconds,
                             "fid_x1e3": scores["fid"]["value_x1e3"], "mmd": scores["mmd"]["value"],
                             "msssim": scores["msssim"]["fake"]["mean"],
                             "wasserstein": scores["wasserstein"]["value"] if args.wasserstein else None}
                    results.append(entry)
                    rows.append([process, sampler, schedule, steps, settings.network_calls(), f"{seconds:.3g}",
                                 f"{entry['fid_x1e3']:.4g}", f"{entry['mmd']:.4f}", f"{entry['msssim']:.4f}"]
                                + ([f"{entry['wasserstein']:.4f}"] if args.wasserstein else []))
                    print(f"{process} {sampler} ({schedule}) {steps:>5} steps: {seconds:.3g} s/volume, FID×10³ "
                          f"{entry['fid_x1e3']:.4g}, MMD {entry['mmd']:.4f}", flush=True)
        real_msssim = scores["msssim"]["real"]["mean"]

    features = ("MedicalNet" if args.weights else
                f"random-init feature network (seed {args.feature_seed}): NOT comparable with published numbers")
    notes = [*described, f"{num} volumes per row (seed {args.seed}), {scores['samples']['real']} real volumes",
             f"FID/MMD: {features}; MS-SSIM of the real set for reference: {real_msssim:.4f}"]
    columns = (["process", "sampler", "schedule", "steps", "network calls", "s/volume", "FID x10^3", "MMD", "MS-SSIM"]
               + (["Wasserstein"] if args.wasserstein else []))
    report(NAME, device, args, "sampler quality against steps", notes, columns, rows, results)


if __name__ == "__main__":
    main()
