"""The ``prdit`` command line: one Typer app, each capability adds its own subcommands.

Command modules import their heavy dependencies inside the command functions, so
``prdit --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="prdit",
    help="PRDiT: voxel-level 3D CT generation with a local denoiser and a global residual DiT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)



@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    """PRDiT: voxel-level 3D CT generation with a local denoiser and a global residual DiT."""
    if version:
        from prdit import __version__

        typer.echo(f"prdit {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
    elif ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        _one_process_under_torchrun(ctx.invoked_subcommand)


# Commands that share their work over the processes of a torchrun job; every other command runs once, on rank 0.
DISTRIBUTED_COMMANDS = ("train", "distill", "sample", "reconstruct", "evaluate")


def _one_process_under_torchrun(command: str) -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1) a command that does not share its work runs on rank 0 alone, as one
    process (so nothing is written twice, and nothing it calls waits for a job the other ranks never join); the
    other ranks say so and exit cleanly."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        typer.echo(f"prdit {command}: runs on rank 0 alone; rank {rank} has nothing to do", err=True)
        raise typer.Exit()
    os.environ["WORLD_SIZE"] = "1"


# Each module defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = [  # in the order of the workflow, as `prdit --help` lists them
    "prdit.data.cli",
    "prdit.data.convert",
    "prdit.models.cli",
    "prdit.training.cli",
    "prdit.generation.cli",
    "prdit.inverse.cli",
    "prdit.evaluation.cli",
    "prdit.viewer.cli",
    "prdit.demo.cli",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console-script entry point; the project's own errors print as one clear line."""
    import os

    from prdit.errors import PRDiTError

    try:
        app()
    except PRDiTError as err:
        from prdit.distributed import ReportedOnMain

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if not isinstance(err, ReportedOnMain):  # else rank 0 printed it
            where = f" (rank {os.environ.get('RANK', '0')} of {world})" if world > 1 else ""
            typer.secho(f"error{where}: {err}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
