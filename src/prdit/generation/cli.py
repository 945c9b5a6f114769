"""``prdit sample``: generate CT volumes from a model folder into NIfTI files in Hounsfield units."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.diffusion import ConsistencyModel, FlowMatching, IaNDiffusion
from prdit.diffusion.samplers import DEFAULT_OUTPUT
from prdit.files import input_folder, output_folder
from prdit.generation.config import PRECISIONS, PREVIEW_WINDOWS, SamplingConfig
from prdit.generation.run import VOLUME_FORMATS

DEFAULTS = SamplingConfig()


def register(app: typer.Typer) -> None:
    """Add the sampling command to the CLI."""

    @app.command("sample")
    def sample_command(
        model_dir: Path = typer.Argument(..., help="Model folder (config.json + model.safetensors).",
                                         callback=input_folder),
        out: Path = typer.Option(..., "--out", help="Output folder; an existing one is resumed.",
                                 callback=output_folder),
        num: int = typer.Option(None, "--num-volumes", "--num", help="Number of volumes, indices "
                                 "0..N-1 (default 1; with --labels maps x --per-map). --num is the same option, but a "
                                 "command line that torchrun parses must spell it --num-volumes (torchrun reads --num "
                                 "as its --numa-binding)."),
        labels: Path = typer.Option(None, "--labels", help="A conditional model's label maps (NIfTI on the model's "
                                    "grid): a folder of maps (its labels.json is their table), one map, or a .txt "
                                    "list of paths. Volume i is generated from map i // --per-map and written with "
                                    "it: OUT/labels/sample_*.nii.gz and OUT/labels/labels.json (the model's table)."),
        per_map: int = typer.Option(1, "--per-map", help="--labels: volumes per label map."),
        label_table: str = typer.Option(None, "--label-table", help="--labels: the table the maps' values follow, "
                                        "a CSV or JSON of index -> name (prdit's or TotalSegmentator's names), or "
                                        "'totalsegmentator' (default: labels.json beside the maps, else the model's "
                                        "indices)."),
        guidance_scale: float = typer.Option(DEFAULTS.guidance_scale, "--guidance-scale", help="--labels: "
                                             "classifier-free guidance scale w; 1 is the plain conditional model "
                                             "(one network call a step), any other w two (batched together); the "
                                             "default was chosen by measured adherence (docs/conditioning.md)."),
        unconditional: bool = typer.Option(False, "--unconditional", help="Sample a conditional model without "
                                           "label maps: the null map ('no label' everywhere), as training drops "
                                           "maps. Without it a conditional model needs --labels."),
        index: list[int] = typer.Option(None, "--index", help="Generate only volume I of the run (repeatable); "
                                        "bit-identical to volume I of a full run with the same --seed."),
        batch: int = typer.Option(DEFAULTS.batch_size, "--batch", help="Volumes sampled together (memory grows "
                                  "with it). On CPU it saves no time: batch 1, 4 and 16 of the demo model at 32³ "
                                  "cost the same per volume to within 10 % (benchmarks/batched_sampling.py); not "
                                  "measured on a GPU."),
        steps: int = typer.Option(None, "--steps", help=f"Sampler steps (default: IaN {IaNDiffusion.sample_steps} "
                                  "predictor-corrector steps, which no other step count beats on the benchmark's "
                                  "reference model (the reference samples with 1000); flow matching "
                                  f"{FlowMatching.sample_steps}; a distilled consistency model "
                                  f"{ConsistencyModel.sample_steps}, 1-4 its range); network calls per volume, twice "
                                  "that for 'heun'."),
        sampler: str = typer.Option(None, "--sampler", help="IaN: 'pc' (predictor-corrector, default), 'euler', "
                                    "'heun', 'dpm++1' (DDIM), 'dpm++2m', 'dpm++3m' (DPM-Solver++, for 10-50 "
                                    "steps); flow matching: 'euler' (default), 'heun', 'dpm++2m', 'dpm++3m'; a "
                                    "consistency model (prdit distill): 'consistency'."),
        schedule: str = typer.Option(DEFAULTS.schedule, "--schedule", help="'uniform' (in the process's time) "
                                     "or 'lambda' (uniform in log-SNR between the first and last step; lower "
                                     "error for dpm++2m/3m on IaN at 10-40 steps)."),
        output: str = typer.Option(None, "--output", help="Which tensor is the volume: 'state' (the final state; for "
                                   "the ODE samplers their solution of the sampling ODE) or 'x0' (the network's last "
                                   "x0 prediction, one step before the data end). Default per sampler: "
                                   + ", ".join(f"{name} {choice}" for name, choice in DEFAULT_OUTPUT.items())
                                   + " (docs/sampling.md, 'What a sampler returns')."),
        seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the run; volume i has its own seed "
                                 "derived from (seed, i), listed in manifest.json."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing volumes (default: skip them)."),
        save_x0: bool = typer.Option(False, "--save-x0", help="Also keep the volume in the model range, "
                                     "unclipped, as OUT/x0/sample_*.nii.gz."),
        previews: bool = typer.Option(True, "--previews/--no-previews", help="PNG mid-slices per volume "
                                      "(OUT/previews/), OUT/grid.png and OUT/view.html (the first volumes, "
                                      "downsampled, in the interactive viewer of `prdit view`)."),
        preview_window: str = typer.Option(DEFAULTS.preview_window, "--preview-window", help=f"CT window of the "
                                           f"previews: {', '.join(PREVIEW_WINDOWS)} ('full' = the normalisation "
                                           f"window)."),
        size: str = typer.Option(None, "--size", help="Sample at another size than trained: D or D,H,W "
                                 "(e.g. 256 for a 128³ model)."),
        device: str = typer.Option("auto", "--device", help="'auto', 'cpu', 'cuda', 'cuda:1', ..."),
        precision: str = typer.Option(DEFAULTS.precision, "--precision", help=f"{', '.join(PRECISIONS)}: 'auto' "
                                      "samples as trained (CUDA: TF32 matmuls, bf16 attention); 'bf16' runs the "
                                      "whole network in bf16 (CUDA only); the sampler stays fp32."),
        exact: bool = typer.Option(DEFAULTS.exact, "--exact/--no-exact", help="One network call per volume, so a "
                                   "volume is bit-identical in any batch; --no-exact batches the network call "
                                   "(equal up to float rounding; on CPU no faster, see --batch)."),
        compile: bool = typer.Option(DEFAULTS.compile, "--compile", help="Run the network through torch.compile "
                                     "(compiles on the first step; falls back to eager with a warning where it "
                                     "fails; results equal up to float rounding, not bit for bit)."),
        volume_format: str = typer.Option(VOLUME_FORMATS[0], "--format", help="'nifti' (OUT/sample_*.nii.gz), 'dicom' (a "
                                          "CT series per volume in OUT/dicom/sample_*/, for PACS and 3D Slicer) "
                                          "or 'both'."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Generate CT volumes as .nii.gz in Hounsfield units, with a manifest and previews; resumable.

        Under torchrun (``torchrun --nproc_per_node=N -m prdit sample …``) the processes share the volumes; the
        files are the ones one process writes.
        """
        from prdit.distributed import INFERENCE_TIMEOUT, rank_device, setup_distributed, teardown
        from prdit.errors import ConfigError
        from prdit.generation.pipeline import PRDiTPipeline
        from prdit.generation.run import MANIFEST, generate_to_folder

        num_given = num
        if index:
            bad = [i for i in index if i < 0 or (num is not None and i >= num)]
            if bad:
                limit = f" and < --num {num}" if num is not None else ""
                raise ConfigError(f"--index {bad[0]} is not a volume of this run (indices are >= 0{limit})")
            indices = list(index)
        else:
            num = 1 if num is None else num
            if num < 1:
                raise ConfigError(f"--num must be >= 1, got {num}")
            indices = list(range(num))
        input_size = _parse_size(size)
        info = setup_distributed(INFERENCE_TIMEOUT, device)
        pipe = PRDiTPipeline.from_pretrained(model_dir, device=rank_device(device, info), input_size=input_size,
                                             precision=precision)
        settings = pipe.settings(SamplingConfig(steps=steps, sampler=sampler, schedule=schedule, output=output,
                                                batch_size=batch, seed=seed, precision=precision, exact=exact,
                                                preview_window=preview_window, compile=compile,
                                                guidance_scale=guidance_scale))
        plan = _label_plan(pipe, model_dir, labels, per_map, label_table, guidance_scale, unconditional, info)
        if plan is not None:
            if num_given is not None and num_given != plan.num_volumes:
                raise ConfigError(f"--num-volumes {num_given} conflicts with --labels: {len(plan.files)} map(s) x "
                                  f"--per-map {per_map} make {plan.num_volumes} volumes; leave --num-volumes out")
            if not index:
                indices = list(range(plan.num_volumes))
            elif max(indices) >= plan.num_volumes:
                raise ConfigError(f"--index {max(indices)} is not a volume of this run ({len(plan.files)} map(s) x "
                                  f"--per-map {per_map}: indices 0..{plan.num_volumes - 1})")
        echo = typer.echo if info.is_main else (lambda *args, **kwargs: None)
        if pipe.normalization.kind == "quantile" and info.is_main:
            typer.secho(f"warning: the model was trained with per-volume quantile normalisation, so HU are nominal "
                        f"(model range mapped onto [{pipe.normalization.hu_min:g}, {pipe.normalization.hu_max:g}])",
                        fg=typer.colors.YELLOW, err=True)
        shape = "x".join(map(str, pipe.volume_shape))
        ranks = f" ({info.world_size} processes)" if info.enabled else ""
        maps = (f" from {len(plan.files)} label map(s) x {per_map}, guidance scale {guidance_scale:g}"
                if plan is not None else "")
        echo(f"{pipe.model.name} ({pipe.process.kind}) at {shape} on {pipe.device}{ranks}: {len(indices)} volume(s)"
             f"{maps}, {settings.steps} {settings.sampler} steps (volumes: {settings.output}), seed {seed} -> {out}")
        summary = generate_to_folder(pipe, out, indices, settings, overwrite=overwrite, save_x0=save_x0,
                                     previews=previews, progress=not quiet,
                                     log=lambda line: typer.secho(f"warning: {line}", fg=typer.colors.YELLOW,
                                                                  err=True),
                                     volume_format=volume_format, labels=plan)
        echo(f"generated {len(summary.generated)}, skipped {len(summary.skipped)} existing"
             + (" (--overwrite replaces them)" if summary.skipped else ""))
        echo(f"manifest: {summary.out / MANIFEST}" + (f"  grid: {summary.grid}" if summary.grid else "")
             + (f"  viewer: {summary.view}" if summary.view else ""))
        teardown()


def _label_plan(pipe, model_dir: Path, labels: Path | None, per_map: int, label_table: str | None,
                guidance_scale: float, unconditional: bool, info):
    """The run's label maps (read and checked by rank 0, before anything is written), or None; the label options
    checked against each other and against whether the model is conditional."""
    from prdit.distributed import on_main
    from prdit.errors import ConfigError
    from prdit.generation.run import LabelPlan

    conditioning = pipe.model.config.conditioning
    if labels is None:
        given = [flag for flag, used in (("--per-map", per_map != 1), ("--label-table", label_table is not None),
                                         ("--guidance-scale", guidance_scale != DEFAULTS.guidance_scale)) if used]
        if given:
            raise ConfigError(f"{', '.join(given)} go(es) with --labels: give the label maps to generate from")
        if conditioning is not None and not unconditional:
            raise ConfigError(f"{model_dir} is conditioned on label maps ({conditioning.num_labels} labels, table in "
                              f"its config.json): give --labels DIR|FILE|LIST, or --unconditional to sample with the "
                              f"null map ('no label' everywhere)")
        if conditioning is None and unconditional:
            raise ConfigError(f"--unconditional is for a model conditioned on label maps; {model_dir} is "
                              f"unconditional, sample it without the option")
        return None
    if unconditional:
        raise ConfigError("--labels and --unconditional exclude each other: give one")
    if conditioning is None:
        raise ConfigError(f"{model_dir} is an unconditional model and cannot follow label maps: leave --labels out, "
                          f"or use a model trained with model.conditioning set")
    return on_main(lambda: LabelPlan.read(pipe, labels, per_map, label_table), info)


def _parse_size(size: str | None) -> tuple[int, int, int] | None:
    from prdit.errors import ConfigError

    if size is None:
        return None
    try:
        values = tuple(int(s) for s in size.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--size takes D or D,H,W (e.g. 256), got '{size}'") from None
    if len(values) not in (1, 3):
        raise ConfigError(f"--size takes D or D,H,W (e.g. 256), got '{size}'")
    return values * 3 if len(values) == 1 else values
