"""Quality and time against the number of sampler steps, for every sampler of each model's
process: how few network calls keep the quality of the reference's predictor–corrector sampler.

By default the model is the reference model of ``benchmarks/reference_model.py`` (the phantom
demo model trained longer) and the real volumes are its held-out phantoms. Each sampler runs 5,
10, 15, 25, 50, 100 and 250 steps from the same seeds, so only the solver and step count
change. Per row:

* **error against the ODE solution**: for deterministic samplers, the mean absolute difference
  (model range) between the row's final state — its solution of the sampling ODE at t = 0 — and
  that of a 1,000-step Heun solution from the same noise: how well the row solves the ODE. The
  generated volume is the last x̂₀, the network's prediction one step before t = 0 (for
  DPM-Solver++ the final state itself), so comparing x̂₀ would mix in where that last prediction
  was taken. The stochastic predictor–corrector sampler has none;
* **distribution metrics** against the held-out phantoms: FID ×10³ and MMD (the CT-pretrained
  ResNet-152 where installed, else a random-init network: rankings only), 1D Wasserstein
  distance between the HU histograms of all voxels, and MS-SSIM diversity;
* seconds per volume.

    python benchmarks/reference_model.py --data-only   # the held-out phantoms (the model is in the repository)
    python benchmarks/sampler_quality.py
    python benchmarks/sampler_quality.py --models models/lidc-128-4l --real data/lidc/val.txt --weights resnet_50.pth
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import add_common_args, parse_int_list, report, resolve_device, set_threads, synchronize
from prdit.diffusion import SampleResult

if TYPE_CHECKING:
    from prdit.generation.config import SamplingConfig
    from prdit.generation.pipeline import PRDiTPipeline

NAME = "sampler_quality"
REFERENCE = Path(__file__).resolve().parent / "reference_model"
DEFAULT_MODEL = REFERENCE / "prdit"
DEFAULT_REAL = REFERENCE / "data" / "val.txt"
STEPS = [5, 10, 15, 25, 50, 100, 250]


def smoke_inputs(folder: Path) -> tuple[Path, Path]:
    """A tiny untrained model folder and four 16³ phantoms (for the tests); the zero-initialised
    output layer gets random weights so the volumes are not all one value."""
    from prdit.data.normalization import Normalization
    from prdit.data.phantoms import write_phantoms
    from prdit.diffusion import create_process
    from prdit.models import create_model
    from prdit.model_folder import save_model_folder

    torch.manual_seed(0)
    model = create_model("PRDiT-T/6/1", input_size=16)
    torch.nn.init.normal_(model.local_denoiser.output.weight, std=0.1)
    save_model_folder(folder / "model", model, create_process("ian"), Normalization())
    write_phantoms(4, 16, folder / "real", seed=1)
    return folder / "model", folder / "real"


def sample_row(pipe: PRDiTPipeline, settings: SamplingConfig, num: int) -> SampleResult:
    """``num`` volumes with the seeds and batches of ``pipe(num_volumes=num, settings=settings)``: the last
    x̂₀ (the generated volumes) and the final state, both ``[N, C, D, H, W]`` in the model range, on the CPU."""
    from prdit.generation.sampling import sample_volumes, volume_generators, volume_seed

    generators = volume_generators([volume_seed(settings.seed, i) for i in range(num)], pipe.device)
    parts = [sample_volumes(pipe.model, pipe.process, generators[lo:lo + settings.batch_size], settings, pipe.device)
             for lo in range(0, num, settings.batch_size)]
    return SampleResult(x0=torch.cat([p.x0.cpu() for p in parts]), state=torch.cat([p.state.cpu() for p in parts]))


def ode_error(row: SampleResult, reference: SampleResult) -> float:
    """Mean |x − x_ref| of the final states (model range): the row's ODE solution at t = 0 against the
    reference's, from the same noise."""
    return float((row.state - reference.state).abs().mean())


def hu_wasserstein(real: "np.ndarray", fake: "np.ndarray", voxels: int = 200_000, seed: int = 0) -> float:
    """1D Wasserstein-1 distance (HU) between the voxel values of two sets (a fixed random subset of each)."""
    import numpy as np
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(seed)

    def subset(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values).ravel()
        return values if values.size <= voxels else values[rng.choice(values.size, voxels, replace=False)]

    return float(wasserstein_distance(subset(real), subset(fake)))


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, sample every row, score it, report."""
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda text: [Path(p) for p in text.split(",")], default=None,
                        help=f"comma-separated model folders (prdit export); default {DEFAULT_MODEL}")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real volumes in HU: folder or list file")
    parser.add_argument("--num", type=int, default=24, help="generated volumes per row")
    parser.add_argument("--batch", type=int, default=8, help="volumes sampled together (one call per batch)")
    parser.add_argument("--steps", type=parse_int_list, default=STEPS)
    parser.add_argument("--samplers", default="", help="comma-separated sampler[:schedule] (schedule uniform or "
                        "lambda); default: every sampler of the process, DPM-Solver++ on both schedules")
    parser.add_argument("--reference-steps", type=int, default=1000, help="Heun steps of the ODE solution "
                        "(0: no ODE error column, e.g. to repeat rows with other seeds)")
    parser.add_argument("--real-baseline", type=Path, default=REFERENCE / "data" / "train.txt",
                        help="other real volumes (default: the reference model's training phantoms): --num of them "
                        "are scored like a row, the floor the metrics reach with real volumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated volumes (same for every row)")
    parser.add_argument("--features", default="auto", help="FID/MMD network: ct-resnet152, random-init, medicalnet "
                        "(with --weights); auto: ct-resnet152 where installed, else random-init")
    parser.add_argument("--weights", type=Path, default=None, help="MedicalNet ResNet-50 weights for FID/MMD")
    parser.add_argument("--feature-seed", type=int, default=0, help="seed of the random-init feature network")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)

    from prdit.evaluation.config import EvaluationConfig
    from prdit.evaluation.ct_resnet import weights_installed
    from prdit.evaluation.report import evaluate
    from prdit.generation.pipeline import PRDiTPipeline
    from prdit.evaluation.volumes import list_volume_files
    from prdit.data.io import read_volume

    features = args.features
    if args.weights is not None:
        features = "medicalnet"
    elif features == "auto":
        features = "ct-resnet152" if weights_installed() and not args.smoke else "random-init"
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            model_dir, real = smoke_inputs(Path(scratch))
            model_dirs = [model_dir]
        else:
            model_dirs = args.models or [DEFAULT_MODEL]
            real = args.real
        steps_list = [2, 4] if args.smoke else args.steps
        num, reference_steps = (2, 8) if args.smoke else (args.num, args.reference_steps)
        missing = [m for m in model_dirs if not m.is_dir()]
        if missing:
            parser.error(f"{missing[0]}: no model folder; run `python benchmarks/reference_model.py` first "
                         "(or pass --models)")
        if not Path(real).exists():
            parser.error(f"{real}: no real volumes; `python benchmarks/reference_model.py --data-only` writes the "
                         "reference model's held-out phantoms (or pass --real)")
        real_hu = np.stack([read_volume(f).array for f in list_volume_files(real)])
        rows, results, described = [], [], []
        for model_dir in model_dirs:
            pipe = PRDiTPipeline.from_pretrained(model_dir, device=device)
            process = pipe.process.kind
            described.append(f"{process}: {pipe.model.name} at {'x'.join(map(str, pipe.volume_shape))} ({model_dir})")
            config = EvaluationConfig(
                metrics=("fid", "mmd", "msssim"), real_units="hu", fake_units="hu", normalization=pipe.normalization,
                features=features, weights=str(args.weights) if args.weights else None,
                seed=args.feature_seed if features == "random-init" else None, device=str(device), progress=False,
                cache_dir=str(Path(scratch) / "features"))
            if args.samplers:
                runs = [tuple(f"{item}:uniform".split(":")[:2]) for item in args.samplers.split(",") if item]
            else:
                runs = [(s, "uniform") for s in pipe.process.samplers]
                runs += [(s, "lambda") for s in pipe.process.samplers if s.startswith("dpm++") and s != "dpm++1"]
            runs = [(s, sch) for s, sch in runs if s in pipe.process.samplers]

            def generate(sampler: str, steps: int, schedule: str = "uniform"):
                settings = pipe.settings(sampler=sampler, steps=steps, schedule=schedule, seed=args.seed,
                                         batch_size=args.batch, exact=False)
                synchronize(device)
                start = time.perf_counter()
                result = sample_row(pipe, settings, num)
                synchronize(device)
                return settings, result, (time.perf_counter() - start) / num

            reference = None
            if reference_steps > 0:
                started = time.perf_counter()
                _, reference, _ = generate("heun", reference_steps)
                print(f"{process}: {reference_steps}-step Heun solution in {time.perf_counter() - started:.0f} s",
                      flush=True)
                gap = float((reference.x0 - reference.state).abs().mean())
                described[-1] += f"; its reference's last x̂₀ differs from its final state by {gap:.2e}"
            for sampler, schedule in runs:
                for steps in steps_list:
                    settings, result, seconds = generate(sampler, steps, schedule)
                    hu = pipe.to_hu(result.x0)
                    scores = evaluate(real, hu, config)
                    error = None if sampler == "pc" or reference is None else ode_error(result, reference)
                    entry = {"process": process, "sampler": sampler, "schedule": schedule, "steps": steps,
                             "network_calls": settings.network_calls(), "seconds_per_volume": seconds,
                             "ode_state_error": error, "fid_x1e3": scores["fid"]["value_x1e3"],
                             "mmd": scores["mmd"]["value"], "hu_wasserstein": hu_wasserstein(real_hu, hu),
                             "msssim": scores["msssim"]["fake"]["mean"]}
                    results.append(entry)
                    rows.append([process, sampler, schedule, steps, settings.network_calls(), f"{seconds:.3g}",
                                 "-" if error is None else f"{error:.2e}", f"{entry['fid_x1e3']:.4g}",
                                 f"{entry['mmd']:.4f}", f"{entry['hu_wasserstein']:.1f}", f"{entry['msssim']:.4f}"])
                    print(f"{process} {sampler} ({schedule}) {steps:>4} steps: {seconds:.3g} s/volume, "
                          f"ODE error (state) {rows[-1][6]}, FID×10³ {entry['fid_x1e3']:.4g}, "
                          f"MMD {entry['mmd']:.4f}, W(HU) {entry['hu_wasserstein']:.1f}", flush=True)
        if args.real_baseline.is_file() and not args.smoke:
            baseline = np.stack([read_volume(f).array for f in list_volume_files(args.real_baseline)[:num]])
            base = evaluate(real, baseline, config)
            entry = {"process": "-", "sampler": "real volumes", "schedule": "-", "steps": 0, "network_calls": 0,
                     "seconds_per_volume": 0.0, "ode_state_error": None, "fid_x1e3": base["fid"]["value_x1e3"],
                     "mmd": base["mmd"]["value"], "hu_wasserstein": hu_wasserstein(real_hu, baseline),
                     "msssim": base["msssim"]["fake"]["mean"]}
            results.append(entry)
            rows.append(["-", f"{num} real ({args.real_baseline.name})", "-", "-", "-", "-", "-",
                         f"{entry['fid_x1e3']:.4g}", f"{entry['mmd']:.4f}", f"{entry['hu_wasserstein']:.1f}",
                         f"{entry['msssim']:.4f}"])
        real_msssim = scores["msssim"]["real"]["mean"]
        network = scores["feature_network"]

    notes = [*described, f"{num} volumes per row (seed {args.seed}, batches of {args.batch}), "
             f"{scores['samples']['real']} real volumes ({real})",
             f"ODE error (state): mean |x - x_ref| of the final states (the ODE solution at t = 0; the volumes are "
             f"the last x0-hat), model range, x_ref from {reference_steps} Heun steps from the same noise "
             "('-': stochastic sampler)",
             f"FID/MMD: {network.get('label')}{'' if network['comparable_with_published'] else ' (rankings only)'}; "
             "W(HU): 1D Wasserstein between the HU histograms; MS-SSIM of the real set for reference: "
             f"{real_msssim:.4f}"]
    columns = ["process", "sampler", "schedule", "steps", "network calls", "s/volume", "ODE error (state)",
               "FID x10^3", "MMD", "W(HU)", "MS-SSIM"]
    report(NAME, device, args, "sampler quality against steps", notes, columns, rows, results)


if __name__ == "__main__":
    main()
