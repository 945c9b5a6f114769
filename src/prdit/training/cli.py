"""``prdit train``, ``prdit export``, ``prdit plot``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from prdit.files import input_file, input_folder, output_file, output_folder

if TYPE_CHECKING:
    from prdit.training.config import ExperimentConfig


def register(app: typer.Typer) -> None:
    """Add the training commands to the CLI."""

    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
    def train_command(
        config: str = typer.Argument(..., help="YAML config file, or the name of a shipped config "
                                               "(e.g. lidc-128-stage1, phantoms-tiny-stage1)."),
        overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, "
                                                                   "e.g. train.steps=1000 optim.lr=1e-4."),
        init_from: Optional[str] = typer.Option(None, "--init-from", help="Stage 2: the stage-1 run directory, "
                                                "checkpoint or model folder (or a run to scale up, or a shallower "
                                                "stage-2 model to deepen)."),
        resume: bool = typer.Option(False, "--resume", help="Require a checkpoint to continue from (re-running "
                                    "the same command in the same run directory continues anyway)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Train one stage; the stage follows from the model's depth (0 = local denoiser)."""
        from prdit.training.config import load_config
        from prdit.training.trainer import train

        items = list(overrides or [])
        if init_from:
            items.append(f"train.init_from={init_from}")
        state = train(load_config(config, items), resume=resume, progress=not quiet)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary line
            typer.echo(f"run {state.run_dir}: step {state.step}, loss {state.last_loss:.5f}, "
                       f"checkpoint {state.checkpoint}")

    @app.command("distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
    def distill_command(
        model_dir: Path = typer.Argument(..., help="The IaN model folder to distil (prdit export).",
                                         callback=input_folder),
        overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, "
                                                                   "e.g. train.steps=4000 distill.warmup_steps=1000."),
        config: str = typer.Option("phantoms-tiny-distill", "--config", help="YAML config or shipped config name "
                                   "(phantoms-tiny-distill, lidc-128-distill): data, steps, learning rate, "
                                   "objective settings. Network, size and normalisation are the teacher's."),
        resume: bool = typer.Option(False, "--resume", help="Require a checkpoint to continue from."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Distil an IaN model into a few-step sampler (docs/method.md §18): by default progressive distillation
        into a 4-step DDIM model (`prdit sample --sampler dpm++1 --steps 4`), the objective measured to match the
        teacher's Heun@25; distill.objective=scd (continuous time) or =cd (discrete) for a consistency model that
        samples in 1-4 steps (`prdit sample --steps 1..4`). A teacher conditioned on label maps gives a student
        conditioned the same way (`prdit sample --labels`), its targets the teacher guided at distill.guidance_scale.

        A training run like any other (run directory, checkpoints, exact resume, TensorBoard, torchrun);
        `prdit export RUN --out DIR` then writes the student's model folder.
        """
        from prdit.training.trainer import train

        state = train(distill_config(config, model_dir, overrides or []), resume=resume, progress=not quiet)
        if int(os.environ.get("RANK", "0")) == 0:
            typer.echo(f"run {state.run_dir}: step {state.step}, loss {state.last_loss:.5f}, "
                       f"checkpoint {state.checkpoint}; export it with `prdit export {state.run_dir} --out DIR`")

    @app.command("export")
    def export_command(
        run: Path = typer.Argument(..., help="Run directory (runs/NAME).", callback=input_folder),
        out: Path = typer.Option(..., "--out", help="Model folder to write (config.json + model.safetensors).",
                                 callback=output_folder),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint other than the newest.",
                                                  callback=input_file),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder."),
    ) -> None:
        """Write a run's EMA weights as a model folder for `prdit sample` and `prdit evaluate`."""
        from prdit.training.export import export_run

        typer.echo(f"wrote {export_run(run, out, checkpoint, overwrite)}")

    @app.command("plot")
    def plot_command(
        runs: list[Path] = typer.Argument(..., help="One or more run directories.", callback=input_folder),
        out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: RUN/loss.png).",
                                           callback=output_file),
    ) -> None:
        """Draw training-loss and validation curves to a PNG."""
        from prdit.training.plot import plot_runs

        typer.echo(f"wrote {plot_runs(runs, out or runs[0] / 'loss.png')}")


def distill_config(config: str | Path, model_dir: Path, overrides: list[str]) -> ExperimentConfig:
    """The config of a distillation run: ``config`` <- the teacher's overrides (:func:`teacher_overrides`) <- the
    user's. The student's process follows the objective, wherever it is set (YAML or override): a consistency
    model for sCD and CD, an IaN model for progressive distillation, unless the user names a process kind."""
    from prdit.training.config import load_config, unvalidated_config
    from prdit.training.distill import student_process_kind

    items = [*teacher_overrides(model_dir), *overrides]
    if not any(item.startswith("process.kind=") for item in overrides):
        items.append(f"process.kind={student_process_kind(unvalidated_config(config, items).distill.objective)}")
    return load_config(config, items)


def teacher_overrides(model_dir: Path) -> list[str]:
    """Config overrides that make a distillation run the teacher's: the teacher itself, the network, its size and
    its label-map conditioning, the intensity normalisation and the process settings (as ``section.key=value``)."""
    import json

    from prdit.errors import ConfigError
    from prdit.model_folder import read_model_config

    folder = read_model_config(model_dir)
    model, norm, process = folder["model"], folder["normalization"], dict(folder["process"])
    if process.pop("kind") != "ian":
        raise ConfigError(f"{model_dir}: only IaN models are distilled (docs/method.md §18); this one is "
                          f"{folder['process']['kind']}")
    size = model["input_size"]
    if len(set(size)) != 1:
        raise ConfigError(f"{model_dir}: the training configs take a cube; this model is {size}")
    items = [f"distill.teacher={Path(model_dir).resolve()}", f"model.name={model['name']}",
             f"model.input_size={size[0]}", f"model.in_channels={model.get('in_channels', 1)}",
             f"model.conditioning={(model.get('conditioning') or {}).get('stages', '')}",
             f"process.settings={json.dumps(process)}"]
    items += [f"data.{key}={json.dumps(norm[key])}" for key in ("hu_min", "hu_max", "quantile", "quantile_clip_hu")]
    return [*items, f"data.normalization={norm['kind']}"]
