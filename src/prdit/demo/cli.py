"""``prdit demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.demo.run import DEFAULT_MINUTES
from prdit.files import output_folder


def register(app: typer.Typer) -> None:
    """Add the demo command to the CLI."""

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for data, runs, samples and the report.",
                              callback=output_folder),
        minutes: float = typer.Option(DEFAULT_MINUTES, "--minutes", help="Time budget of the whole demo; each "
                                      "training stage stops early (with a checkpoint) at its share of it."),
        process: str = typer.Option("ian", "--process", help="'ian' (PRDiT's diffusion) or 'flow' (PRDiT-FM, "
                                    "flow matching; its models, samples and report go to OUT/flow)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Phantoms -> stage 1 -> stage 2 -> samples -> metrics -> report, on the CPU in minutes."""
        from prdit.demo.run import DemoSettings, run_demo

        run_demo(out, minutes, settings=DemoSettings(process=process), progress=not quiet)
