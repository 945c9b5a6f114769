"""``prdit train``, ``prdit export``, ``prdit plot``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the training commands to the CLI."""

    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
    def train_command(
        config: str = typer.Argument(..., help="YAML config file, or the name of a shipped config "
                                               "(e.g. lidc-128-stage1, phantoms-tiny-stage1)."),
        overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides, "
                                                                   "e.g. train.steps=1000 optim.lr=1e-4."),
        init_from: Optional[str] = typer.Option(None, "--init-from", help="Stage 2: the stage-1 run directory, "
                                                "checkpoint or model folder (or a run to scale up)."),
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

    @app.command("export")
    def export_command(
        run: Path = typer.Argument(..., help="Run directory (runs/NAME)."),
        out: Path = typer.Option(..., "--out", help="Model folder to write (config.json + model.safetensors)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint other than the newest."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder."),
    ) -> None:
        """Write a run's EMA weights as a model folder for `prdit sample` and `prdit evaluate`."""
        from prdit.training.export import export_run

        typer.echo(f"wrote {export_run(run, out, checkpoint, overwrite)}")

    @app.command("plot")
    def plot_command(
        runs: list[Path] = typer.Argument(..., help="One or more run directories."),
        out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: RUN/loss.png)."),
    ) -> None:
        """Draw training-loss and validation curves to a PNG."""
        from prdit.training.plot import plot_runs

        typer.echo(f"wrote {plot_runs(runs, out or runs[0] / 'loss.png')}")
