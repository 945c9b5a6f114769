"""The demo as a thin orchestration of the commands a user runs: ``prdit phantoms``, ``split``,
``train`` (both stages, the shipped ``phantoms-tiny-stage1/2`` configs, or ``phantoms-tiny-fm-*``
for flow matching), ``export``, ``sample`` and ``evaluate`` — then a report. Every step skips
work that is already done, so an interrupted demo continues where it stopped."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prdit.generation.config import SamplingConfig

# The whole demo's time budget in minutes: training takes the stages' shares of it, sampling,
# evaluation and the report the rest; with the one-time installation a fresh clone's `make demo`
# stays under 15 minutes on a 2-core CPU (docs/getting-started.md, "What `make demo` does").
DEFAULT_MINUTES = 11.0

STAGE_CONFIGS = {"ian": ("phantoms-tiny-stage1", "phantoms-tiny-stage2"),
                 "flow": ("phantoms-tiny-fm-stage1", "phantoms-tiny-fm-stage2")}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the training settings are those of the shipped configs."""

    num_phantoms: int = 72
    size: int = 32
    seed: int = 0
    process: str = "ian"
    num_samples: int = 16
    sample_steps: int | None = None  # the process's default (Process.sample_steps)
    sampler: str | None = None  # the process's default: IaN predictor-corrector, flow matching Euler
    critic_steps: int = 300
    sr_steps: int | None = None  # guided steps of the ×4 super-resolution panel (IaN only; Process.guided_steps)
    # Shares of the time budget that each training stage may use at most.
    stage1_share: float = 0.3
    stage2_share: float = 0.45


def _say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"\n== {text}")


def _stage(out: Path, index: int, data: Path, settings: DemoSettings, init_from: Path | None,
           time_limit_s: float, progress: bool, extra: list[str]) -> Path:
    from prdit.training.config import load_config
    from prdit.training.trainer import train

    overrides = [f"run.root={out / 'runs'}", f"data.train={data / 'train.txt'}", f"data.val={data / 'val.txt'}",
                 f"model.input_size={settings.size}"]
    if init_from is not None:
        overrides.append(f"train.init_from={init_from}")
    config = load_config(STAGE_CONFIGS[settings.process][index], overrides + extra)
    run_dir = out / "runs" / config.run.name
    done_marker = run_dir / "demo-stage-done"
    if done_marker.is_file():
        _say(f"stage {index + 1}: already trained ({run_dir})")
        return run_dir
    _say(f"stage {index + 1}: training {config.model.name} for up to {config.train.steps} steps "
         f"(at most {time_limit_s / 60:.1f} min)")
    train(config, progress=progress, time_limit_s=time_limit_s)
    done_marker.write_text("done\n")
    return run_dir


def _export(run_dir: Path, out: Path) -> Path:
    from prdit.errors import CheckpointError
    from prdit.model_folder import CHECKPOINT_DIR, read_model_config
    from prdit.training.checkpoint import latest_checkpoint
    from prdit.training.export import export_run

    newest = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    try:
        if read_model_config(out)["training"]["checkpoint"] == newest.name:
            return out
    except (CheckpointError, KeyError):
        pass  # no folder yet, or not this run's: export
    return export_run(run_dir, out, overwrite=True)


def _sampling_config(settings: DemoSettings) -> SamplingConfig:
    """The demo's sampling settings (sampler and steps ``None``: the model's process fills them in), every
    volume in one batch."""
    from prdit.generation.config import SamplingConfig

    return SamplingConfig(sampler=settings.sampler, steps=settings.sample_steps, seed=settings.seed,
                          batch_size=settings.num_samples, exact=False, preview_window="full")


def _sample(model_dir: Path, out: Path, settings: DemoSettings, progress: bool) -> Path:
    from prdit.generation.pipeline import PRDiTPipeline
    from prdit.generation.run import generate_to_folder

    pipe = PRDiTPipeline.from_pretrained(model_dir, device="auto")
    generate_to_folder(pipe, out, range(settings.num_samples), _sampling_config(settings), progress=progress)
    return out


def _evaluate(real: Path, fake: Path, out: Path, settings: DemoSettings, progress: bool) -> dict:
    from prdit.evaluation.config import CriticConfig, EvaluationConfig
    from prdit.evaluation.ct_resnet import weights_installed
    from prdit.evaluation.report import evaluate, write_report

    if out.is_file():
        return json.loads(out.read_text())
    # FID/MMD on the CT-pretrained network where its weights are installed (`make` installs them),
    # else on a random-init MedicalNet: the demo needs no weights file either way.
    features = "ct-resnet152" if weights_installed() else "random-init"
    config = EvaluationConfig(real_units="hu", fake_units="hu", features=features,
                              seed=settings.seed if features == "random-init" else None,
                              cache_dir=str(out.parent / "feature-cache"), progress=progress,
                              critic=CriticConfig(steps=settings.critic_steps, seed=settings.seed))
    report = evaluate(real, fake, config)
    write_report(report, out)
    return report


def _super_resolution(model_dir: Path, val_list: Path, out: Path, settings: DemoSettings) -> dict:
    """×4 super-resolution of one held-out phantom with the trained prior (docs/method.md §15):
    measurement, trilinear baseline, reconstruction and ground truth, with PSNR/SSIM of both."""
    import numpy as np
    import torch

    from prdit.data.dataset import list_volumes, load_training_array
    from prdit.generation.pipeline import PRDiTPipeline
    from prdit.inverse.guidance import task_settings
    from prdit.inverse.metrics import classical_baseline, psnr, ssim
    from prdit.inverse.tasks import task_operator

    if out.is_file():
        return json.loads(out.read_text())
    pipe = PRDiTPipeline.from_pretrained(model_dir, device="auto")
    truth = torch.from_numpy(load_training_array(list_volumes(val_list)[0], settings.size, pipe.normalization))[None, None]
    operator = task_operator("sr", pipe.volume_shape, pipe.spacing, pipe.normalization)
    measurement = operator(truth)
    baseline = classical_baseline(operator, measurement)
    steps = pipe.guided_settings(task_settings("sr"), steps=settings.sr_steps).steps
    recon = pipe.reconstruct("sr", measurement, steps=steps, seed=settings.seed, output_type="model").volumes
    volumes = {name: pipe.normalization.to_hu(v[0, 0].numpy()) for name, v in
               (("trilinear from ×4 low resolution", baseline), ("PRDiT prior", recon), ("ground truth", truth))}
    figure = out.parent / "figures" / "superres.png"
    from prdit.visualization import save_slices_figure

    save_slices_figure(list(volumes.values()), figure, titles=list(volumes))
    scores = {name: {"psnr": float(psnr(v, truth)), "ssim": float(ssim(v, truth))}
              for name, v in (("baseline", baseline), ("reconstruction", recon))}
    result = {"task": "sr", "steps": steps, "figure": str(figure.relative_to(out.parent)), **scores,
              "hu_range": [float(np.min(volumes["PRDiT prior"])), float(np.max(volumes["PRDiT prior"]))]}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_demo(out: str | Path = "demo_out", minutes: float = DEFAULT_MINUTES, settings: DemoSettings = DemoSettings(),
             progress: bool = True, log: Callable[[str], None] = _say, overrides: list[str] | None = None) -> Path:
    """Run every step of the demo into ``out`` within about ``minutes``; returns the report path.

    ``overrides`` (``section.key=value``) apply to both stages' training configs.
    """
    from prdit.data.dataset import split_volumes
    from prdit.data.phantoms import write_phantoms
    from prdit.demo.report import write_report

    from prdit.diffusion import PROCESSES
    from prdit.errors import ConfigError

    if settings.process not in STAGE_CONFIGS:
        raise ConfigError(f"the demo runs the processes {', '.join(STAGE_CONFIGS)}, not '{settings.process}'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Data and runs are shared (run names differ by process); models, samples and metrics are not.
    results = out if settings.process == "ian" else out / settings.process
    sampling = _sampling_config(settings).resolved(PROCESSES[settings.process]())
    started = time.perf_counter()
    budget = minutes * 60.0
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> None:
        timings[name] = round(time.perf_counter() - since, 1)

    t = time.perf_counter()
    data = out / "data" / f"phantoms-{settings.size}"
    if len(list(data.glob("phantom_*.nii.gz"))) < settings.num_phantoms:
        log(f"phantoms: writing {settings.num_phantoms} synthetic chest CTs of {settings.size}³ to {data}")
        write_phantoms(settings.num_phantoms, settings.size, data, seed=settings.seed)
    if not (data / "train.txt").is_file():
        split_volumes(data, val_fraction=0.25, seed=42, out_dir=data)
    lap("phantoms", t)

    t = time.perf_counter()
    stage1 = _stage(out, 0, data, settings, None, settings.stage1_share * budget, progress, list(overrides or []))
    lap("stage 1 training", t)
    t = time.perf_counter()
    stage2 = _stage(out, 1, data, settings, stage1, settings.stage2_share * budget, progress, list(overrides or []))
    lap("stage 2 training", t)

    t = time.perf_counter()
    models = {"stage1": _export(stage1, results / "models" / "stage1"),
              "prdit": _export(stage2, results / "models" / "prdit")}
    samples = {}
    for name, model_dir in models.items():
        log(f"sampling: {settings.num_samples} volumes from the {name} model, "
            f"{sampling.steps} {sampling.sampler} steps")
        samples[name] = _sample(model_dir, results / "samples" / name, settings, progress)
    lap("sampling", t)

    t = time.perf_counter()
    reports = {}
    for name, fake in samples.items():
        log(f"evaluating the {name} samples against the validation phantoms")
        reports[name] = _evaluate(data / "val.txt", fake, results / "metrics" / f"{name}.json", settings, progress)
    lap("evaluation", t)

    superres = None
    if PROCESSES[settings.process]().supports_guidance:
        t = time.perf_counter()
        log("inverse problem: ×4 super-resolution of a held-out phantom with the trained prior")
        superres = _super_resolution(models["prdit"], data / "val.txt", results / "superres.json", settings)
        lap("super-resolution", t)

    t = time.perf_counter()
    report = write_report(results, data, [stage1, stage2], samples, reports, settings.process, superres)
    lap("report", t)
    timings["total (this call)"] = round(time.perf_counter() - started, 1)
    (results / "timings.json").write_text(json.dumps({"settings": asdict(settings), "minutes": minutes,
                                                  "seconds": timings}, indent=2) + "\n")
    log(f"done in {timings['total (this call)'] / 60:.1f} min: open {report}")
    return report
