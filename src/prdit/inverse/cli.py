"""``prdit reconstruct``: super-resolution, infill, deblurring and X-ray → CT with a trained model as the prior."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.diffusion import IaNDiffusion
from prdit.files import input_file, input_folder, output_folder
from prdit.generation.config import PRECISIONS, PREVIEW_WINDOWS, SamplingConfig
from prdit.generation.run import VOLUME_FORMATS

DEFAULTS = SamplingConfig()
MASK_PATTERNS = ("centre_cube", "random_voxels", "axial_slab")


def register(app: typer.Typer) -> None:
    """Add the reconstruction command to the CLI."""

    @app.command("reconstruct")
    def reconstruct_command(
        model_dir: Path = typer.Argument(..., help="Model folder (config.json + model.safetensors) of an IaN model.",
                                         callback=input_folder),
        task: str = typer.Option(..., "--task", help="sr (x4 super-resolution), infill, deblur (Gaussian, kernel 5, "
                                 "sigma 2), xray (cone-beam projections -> CT)."),
        out: Path = typer.Option(..., "--out", help="Output folder; a finished one of the same run is kept.",
                                 callback=output_folder),
        measurement: Path = typer.Option(None, "--measurement", help="The measurement: a volume in HU (sr: the "
                                         "low-resolution volume; infill: the volume, missing voxels any value; "
                                         "deblur: the blurred volume), or projections \\[views, rows, columns] in "
                                         "water-equivalent mm (xray; .npy or NIfTI). A folder or .txt list of them "
                                         "reconstructs each into OUT/<case>/ with a summary table."),
        simulate_from: Path = typer.Option(None, "--simulate-from", help="A ground-truth CT (HU, the model's size): "
                                           "make the measurement with the task's operator, reconstruct, and report "
                                           "PSNR/SSIM next to the classical baseline. A folder or .txt list of them "
                                           "reconstructs each into OUT/<case>/ and reports mean ± std over the "
                                           "cases (OUT/summary.json, OUT/summary.csv)."),
        mask: Path = typer.Option(None, "--mask", help="infill: mask volume, 1 = known voxel, 0 = missing.",
                                  callback=input_file),
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
        labels: Path = typer.Option(None, "--labels", help="A conditional model's label map (NIfTI on the model's "
                                    "grid) for every case, or a folder with <case>.nii.gz for each case; the prior "
                                    "follows it. Without it a conditional model's prior has no map (the null "
                                    "condition)."),
        label_table: str = typer.Option(None, "--label-table", help="--labels: the table the maps' values follow "
                                        "(CSV or JSON of index -> name, or 'totalsegmentator'; default: labels.json "
                                        "beside the map, else the model's indices)."),
        guidance_scale: float = typer.Option(DEFAULTS.guidance_scale, "--guidance-scale", help="--labels: "
                                             "classifier-free guidance scale w of the label map (1: the plain "
                                             "conditional model)."),
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
        """Reconstruct a CT volume from a measurement by guided predictor-corrector sampling (TF-PRDiT).

        Many cases (a folder or list given to --measurement or --simulate-from) are shared by the processes of
        ``torchrun --nproc_per_node=N -m prdit reconstruct …``.
        """
        from prdit.distributed import INFERENCE_TIMEOUT, on_main, rank_device, setup_distributed, shard, teardown
        from prdit.errors import ConfigError
        from prdit.generation.pipeline import PRDiTPipeline
        from prdit.inverse.guidance import task_settings
        from prdit.inverse.operators import DEFAULT_MASK_PATTERN, make_mask
        from prdit.inverse.run import (MANIFEST, case_inputs, case_label_map, case_names, reconstruct_cases,
                                       reconstruct_to_folder)
        from prdit.inverse.tasks import read_mask, task_operator

        guidance = task_settings(task, scale=scale, decay=decay, jump=jump, corrector_noise=corrector_noise,
                                 cutoff=cutoff)
        info = setup_distributed(INFERENCE_TIMEOUT, device)
        echo = typer.echo if info.is_main else (lambda *args, **kwargs: None)
        source = measurement if measurement is not None else simulate_from
        cases = case_inputs(source) if source is not None else None
        pipe = PRDiTPipeline.from_pretrained(model_dir, device=rank_device(device, info), precision=precision)
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
                echo(f"note: {notes[-1]}")
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
                                                                 preview_window=preview_window,
                                                                 guidance_scale=guidance_scale))
        conditioning = pipe.model.config.conditioning
        if labels is not None and conditioning is None:
            raise ConfigError(f"{model_dir} is an unconditional model and cannot follow a label map: leave --labels "
                              f"out, or use a model trained with model.conditioning set")
        if labels is None and (label_table is not None or guidance_scale != DEFAULTS.guidance_scale):
            raise ConfigError("--label-table and --guidance-scale go with --labels: give the label map to follow")
        if labels is None and conditioning is not None:
            notes.append("no --labels: the conditional model's prior without a label map (the null condition)")
            echo(f"note: {notes[-1]}")
        ranks = f" ({info.world_size} processes)" if info.enabled else ""
        many_cases = f", {len(cases)} cases" if cases is not None else ""
        echo(f"{pipe.model.name} at {'x'.join(map(str, shape))} on {pipe.device}{ranks}: {task}{many_cases}, "
             f"{settings.steps} guided pc steps, seed {seed} -> {out}")
        mine = len(shard(cases, info)) if cases is not None else 1
        bar = None
        if not quiet and info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=settings.steps * mine, unit="step",
                       desc="reconstructing" + (f" {mine} case(s)" if cases is not None else ""))
        step = (lambda done, total: bar.update(1)) if bar else None
        common = dict(noise_std=noise_std, noise_seed=seed, overwrite=overwrite, previews=previews, progress=step,
                      notes=notes, volume_format=volume_format, label_table=label_table)
        try:
            if cases is not None:
                given = {"measurements": cases} if measurement is not None else {"simulate_from": cases}
                many = reconstruct_cases(pipe, task, out, operator, guidance, settings, **given, **common,
                                         labels=labels)
            else:  # one case: rank 0 alone
                case_map = case_label_map(labels, case_names([source])[0]) if labels is not None else None
                summary = on_main(lambda: reconstruct_to_folder(pipe, task, out, operator, guidance, settings,
                                                                measurement, simulate_from, **common,
                                                                labels=case_map), info)
        finally:
            if bar is not None:
                bar.close()
        teardown()
        if cases is not None:
            _print_cases(echo, many)
            return
        if not summary.reconstructed:
            echo(f"{out} already holds this reconstruction (--overwrite redoes it)")
        else:
            echo(f"reconstructed in {summary.seconds:.1f} s")
        for name, values in summary.metrics.items():
            echo(f"{name:>15}: PSNR {values['psnr']:.2f} dB  SSIM {values['ssim']:.4f}")
        echo(f"manifest: {summary.out / MANIFEST}")


def _print_cases(echo, many) -> None:
    """One line per case, then mean ± std over the cases."""
    from prdit.inverse.run import SUMMARY

    done = sum(c["reconstructed"] for c in many.cases)
    echo(f"{len(many.cases)} cases: {done} reconstructed now, {len(many.cases) - done} found finished")
    for case in many.cases:
        scores = "  ".join(f"{name} PSNR {v['psnr']:.2f} dB SSIM {v['ssim']:.4f}" for name, v in case["metrics"].items())
        echo(f"  {case['case']}: {scores or 'no ground truth'}")
    for name, metrics in many.table.items():
        if name == "seconds":
            continue
        psnr, ssim = metrics["psnr"], metrics["ssim"]
        echo(f"{name:>15}: PSNR {psnr['mean']:.2f} ± {psnr['std']:.2f} dB  SSIM {ssim['mean']:.4f} ± "
             f"{ssim['std']:.4f}  (mean ± std over {psnr['cases']} cases)")
    echo(f"summary: {many.out / SUMMARY}")
