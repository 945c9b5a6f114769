"""``prdit phantoms``, ``prdit preprocess lidc|rad-chestct`` and ``prdit split``: data on disk."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the data commands to the CLI."""

    @app.command("phantoms")
    def phantoms(
        out: Path = typer.Option(..., "--out", help="Folder to write phantom_00000.nii.gz ... into."),
        num: int = typer.Option(100, "--num", min=1, help="Number of volumes."),
        size: int = typer.Option(64, "--size", min=8, help="Grid size G: each volume is G x G x G voxels."),
        spacing: float = typer.Option(
            None, "--spacing", help="Voxel size in mm (default: 380 mm field of view / size)."
        ),
        seed: int = typer.Option(0, "--seed", help="Base seed; the same seed gives the same volumes."),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes generating volumes in parallel."),
    ) -> None:
        """Write synthetic chest CT phantoms (.nii.gz, Hounsfield units, real affine)."""
        import time

        from prdit.data.phantoms import write_phantoms

        start = time.perf_counter()
        paths = write_phantoms(num, size, out, seed=seed, spacing=spacing, workers=workers)
        typer.echo(f"wrote {len(paths)} phantoms of {size}^3 to {out} in {time.perf_counter() - start:.1f} s")

    @app.command("split")
    def split(
        data: Path = typer.Option(..., "--data", help="Folder of volumes (searched recursively)."),
        val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of volumes held out."),
        val_count: int = typer.Option(None, "--val-count", help="Hold out exactly this many (overrides the fraction)."),
        seed: int = typer.Option(42, "--seed", help="Shuffle seed; the same files and seed give the same split."),
        out: Path = typer.Option(None, "--out", help="Folder for train.txt / val.txt (default: the data folder)."),
    ) -> None:
        """Write train.txt and val.txt: a deterministic shuffle, paths relative to the data folder."""
        from prdit.data.dataset import split_volumes

        train, val = split_volumes(data, val_fraction=val_fraction, seed=seed, out_dir=out, val_count=val_count)
        count = lambda p: sum(1 for line in p.read_text().splitlines() if line and not line.startswith("#"))  # noqa: E731
        typer.echo(f"{train}: {count(train)} volumes, {val}: {count(val)} volumes")
