"""``prdit reconstruct``: super-resolution, infill, deblurring and X-ray → CT with a trained model as the prior."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.diffusion import IaNDiffusion
from prdit.generation.config import PRECISIONS, PREVIEW_WINDOWS, SamplingConfig
from prdit.generation.run import VOLUME_FORMATS

DEFAULTS = SamplingConfig()
MASK_PATTERNS = ("centre_cube", "random_voxels", "axial_slab")


def register(app: typer.Typer) -> None:
    """Add the reconstruction command to the CLI."""

    @app.command("reconstruct")
    def reconstruct_command(
        model_dir: Path = typer.Argument(..., help="Model folder (config.json + model.safetensors) of an IaN model."),
        task: str = typer.Option(..., "--task", help="sr (x4 super-resolution), infill, deblur (Gaussian, kernel 5, "
                                 "sigma 2), xray (cone-beam projections -> CT)."),
        out: Path = typer.Option(..., "--out", help="Output folder; a finished one of the same run is kept."),
        measurement: Path = typer.Option(None, "--measurement", help="The measurement: a volume in HU (sr: the "
                                         "low-resolution volume; infill: the volume, missing voxels any value; "
                                         "deblur: the blurred volume), or projections \\[views, rows, columns] in "
                                         "water-equivalent mm (xray; .npy or NIfTI)."),
        simulate_from: Path = typer.Option(None, "--simulate-from", help="A ground-truth CT (HU, the model's size): "
                                           "make the measurement with the task's operator, reconstruct, and report "
                                           "PSNR/SSIM next to the classical baseline."),
        mask: Path = typer.Option(None, "--mask", help="infill: mask volume, 1 = known voxel, 0 = missing."),
        mask_pattern: str = typer.Option(None, "--mask-pattern", help=f"infill without --mask: "
                                         f"{', '.join(MASK_PATTERNS)} (reference patterns; with --simulate-from "
                                         f"and neither, the benchmark's pattern)."),
        views: int = typer.Option(2, "--views", help="xray: 1 (0°), 2 (0° and 90°) or N angles."),
        angles: str = typer.Option(None, "--angles", help="xray: the projections' angles in degrees, e.g. 0,90 "
                                   "(overrides --views)."),
        noise_std: float = typer.Option(0.0, "--noise-std", help="--simulate-from: measurement noise std (model "
                                        "range; xray: mm)."),
        scale: float = typer.Option(None, "--scale", help="Guidance weight rho (default: the task's, docs/method.md §15)."),
        decay: bool = typer.Option(None, "--decay/--no-decay", help="Decay the guidance weight towards the data."),
        jump: int = typer.Option(None, "--jump", help="Predictor jump p in grid steps."),
        corrector_noise: float = typer.Option(None, "--corrector-noise", help="Corrector noise scale w."),
        cutoff: float = typer.Option(None, "--cutoff", help="Guidance while t > cutoff (timesteps of the "
                                    "reference's T = 1000; a noise level of cutoff/1000)."),
        steps: int = typer.Option(None, "--steps", help=f"Sampler steps (default: the reference's, "
                                  f"{IaNDiffusion.guided_steps})."),
        seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the sampler (and of a random mask)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished or different run in --out."),
        volume_format: str = typer.Option(VOLUME_FORMATS[0], "--format", help="The reconstruction as "
                                          f"{', '.join(VOLUME_FORMATS)}: nifti is OUT/reconstruction.nii.gz, "
                                          "dicom a CT series in OUT/dicom/reconstruction/ with the model, seed "
                                          "and index 0 in its header."),
        previews: bool = typer.Option(True, "--previews/--no-previews", help="PNGs of measurement, reconstruction, "
                                      "baseline and ground truth in OUT/previews/."),
        preview_window: str = typer.Option(DEFAULTS.preview_window, "--preview-window",
                                           help=f"CT window of the previews: {', '.join(PREVIEW_WINDOWS)}."),
        device: str = typer.Option("auto", "--device", help="'auto', 'cpu', 'cuda', 'cuda:1', ..."),
        precision: str = typer.Option(DEFAULTS.precision, "--precision", help=f"{', '.join(PRECISIONS)}."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Reconstruct a CT volume from a measurement by guided predictor-corrector sampling (TF-PRDiT)."""
        from prdit.errors import ConfigError
        from prdit.generation.pipeline import PRDiTPipeline
        from prdit.inverse.guidance import task_settings
        from prdit.inverse.operators import DEFAULT_MASK_PATTERN, make_mask
        from prdit.inverse.run import MANIFEST, reconstruct_to_folder
        from prdit.inverse.tasks import read_mask, task_operator

        guidance = task_settings(task, scale=scale, decay=decay, jump=jump, corrector_noise=corrector_noise,
                                 cutoff=cutoff)
        pipe = PRDiTPipeline.from_pretrained(model_dir, device=device, precision=precision)
        shape = pipe.volume_shape
        known, notes = None, []
        if task == "infill":
            if mask is not None and mask_pattern is not None:
                raise ConfigError("infill takes one mask: give --mask FILE or --mask-pattern, not both")
            if mask is None and mask_pattern is None:
                if simulate_from is None:
                    raise ConfigError("infill of a measurement needs its mask: give --mask FILE (1 = known voxel) "
                                      "or --mask-pattern")
                mask_pattern = DEFAULT_MASK_PATTERN
                notes.append(f"no --mask or --mask-pattern: infill of the {mask_pattern} pattern (the benchmark's)")
                typer.echo(f"note: {notes[-1]}")
            if mask is not None:
                known = read_mask(mask, shape)
            else:
                extra = {"seed": seed} if mask_pattern == "random_voxels" else {}
                known = make_mask(mask_pattern, shape, **extra)
        angle_list = None
        if angles is not None:
            try:
                angle_list = [float(a) for a in angles.split(",")]
            except ValueError:
                raise ConfigError(f"--angles takes degrees separated by commas (e.g. 0,90), got '{angles}'") from None
        operator = task_operator(task, shape, pipe.spacing, pipe.normalization, mask=known, views=views,
                                 angles=angle_list)
        settings = pipe.guided_settings(guidance, SamplingConfig(steps=steps, seed=seed, precision=precision,
                                                                 preview_window=preview_window))
        typer.echo(f"{pipe.model.name} at {'x'.join(map(str, shape))} on {pipe.device}: {task}, {settings.steps} "
                   f"guided pc steps, seed {seed} -> {out}")
        bar = None
        if not quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=settings.steps, desc="reconstructing", unit="step")
        try:
            summary = reconstruct_to_folder(pipe, task, out, operator, guidance, settings, measurement, simulate_from,
                                            noise_std, seed, overwrite, previews,
                                            progress=(lambda done, total: bar.update(1)) if bar else None,
                                            notes=notes, volume_format=volume_format)
        finally:
            if bar is not None:
                bar.close()
        if not summary.reconstructed:
            typer.echo(f"{out} already holds this reconstruction (--overwrite redoes it)")
        else:
            typer.echo(f"reconstructed in {summary.seconds:.1f} s")
        for name, values in summary.metrics.items():
            typer.echo(f"{name:>15}: PSNR {values['psnr']:.2f} dB  SSIM {values['ssim']:.4f}")
        typer.echo(f"manifest: {summary.out / MANIFEST}")
