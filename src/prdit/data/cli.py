"""``prdit phantoms``, ``prdit preprocess lidc|rad-chestct`` and ``prdit split``: data on disk."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.files import input_folder, output_folder

LABEL_TABLE_HELP = (
    "Label maps (labels/<scan name>.nii.gz beside the scans) follow this table: a CSV or JSON of index -> name "
    "(prdit's or TotalSegmentator's names), or 'totalsegmentator' for TotalSegmentator's 'total' output "
    "(default: labels/labels.json beside the maps). They are written to OUT/labels/ in prdit's indices."
)


def register(app: typer.Typer) -> None:
    """Add the data commands to the CLI."""

    @app.command("phantoms")
    def phantoms(
        out: Path = typer.Option(..., "--out", help="Folder to write phantom_00000.nii.gz ... into.",
                                  callback=output_folder),
        num: int = typer.Option(100, "--num-volumes", "--num", min=1, help="Number of volumes."),
        size: int = typer.Option(64, "--size", min=8, help="Grid size G: each volume is G x G x G voxels."),
        spacing: float = typer.Option(
            None, "--spacing", help="Voxel size in mm (default: 380 mm field of view / size)."
        ),
        seed: int = typer.Option(0, "--seed", help="Base seed; the same seed gives the same volumes."),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes generating volumes in parallel."),
        labels: bool = typer.Option(
            False, "--labels",
            help="Also write each anatomical label map as labels/<name>.nii.gz and the name table labels/labels.json."),
    ) -> None:
        """Write synthetic chest CT phantoms (.nii.gz, Hounsfield units, real affine)."""
        import time

        from prdit.data.phantoms import write_phantoms

        start = time.perf_counter()
        paths = write_phantoms(num, size, out, seed=seed, spacing=spacing, workers=workers, labels=labels)
        with_labels = f" with label maps in {out / 'labels'}" if labels else ""
        typer.echo(f"wrote {len(paths)} phantoms of {size}^3 to {out}{with_labels} in "
                   f"{time.perf_counter() - start:.1f} s")

    @app.command("split")
    def split(
        data: Path = typer.Option(..., "--data", help="Folder of volumes (searched recursively).",
                                   callback=input_folder),
        val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of volumes held out."),
        val_count: int = typer.Option(None, "--val-count", help="Hold out exactly this many (overrides the fraction)."),
        seed: int = typer.Option(42, "--seed", help="Shuffle seed; the same files and seed give the same split."),
        out: Path = typer.Option(None, "--out", help="Folder for train.txt / val.txt (default: the data folder).",
                                  callback=output_folder),
    ) -> None:
        """Write train.txt and val.txt: a deterministic shuffle, paths relative to the data folder."""
        from prdit.data.dataset import split_volumes

        train, val = split_volumes(data, val_fraction=val_fraction, seed=seed, out_dir=out, val_count=val_count)
        typer.echo(f"{train}: {_count_entries(train)} volumes, {val}: {_count_entries(val)} volumes")

    preprocess = typer.Typer(help="Turn raw CT archives into canonical HU volumes (.nii.gz) with a manifest.",
                             no_args_is_help=True)
    app.add_typer(preprocess, name="preprocess")

    @preprocess.command("lidc")
    def lidc(
        src: Path = typer.Option(..., "--src", help="TCIA download: one folder per patient (patient/study/series/*.dcm). Only read.",
                                  callback=input_folder),
        out: Path = typer.Option(..., "--out", help="Output folder (outside --src): <patient>.nii.gz and manifest.csv.",
                                  callback=output_folder),
        size: int = typer.Option(256, "--size", min=8, help="Output grid: size^3 voxels, centre-cropped or padded with air."),
        spacing: float = typer.Option(1.0, "--spacing", min=0.05, help="Isotropic output spacing in mm."),
        workers: int = typer.Option(1, "--workers", min=1, help="Cases processed in parallel (processes)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases whose output already exists."),
        label_table: str = typer.Option(None, "--label-table", help=LABEL_TABLE_HELP),
    ) -> None:
        """LIDC-IDRI DICOM to HU volumes: diagnostic CT series, ordered slices, isotropic, canonical LPS.

        Exit status 1 if any case failed (each failure's reason is in manifest.csv).
        """
        from prdit.data.lidc import preprocess_lidc

        results = preprocess_lidc(src, out, size=size, spacing=spacing, workers=workers, overwrite=overwrite,
                                  report=_report, label_table=label_table)
        _summarise(results, out)

    @preprocess.command("rad-chestct")
    def rad_chestct(
        src: Path = typer.Option(..., "--src", help="Folder of RAD-ChestCT .npz files (key 'ct', HU). Only read.",
                                  callback=input_folder),
        out: Path = typer.Option(..., "--out", help="Output folder (outside --src): <name>.nii.gz and manifest.csv.",
                                  callback=output_folder),
        size: int = typer.Option(256, "--size", min=8, help="Output grid: size^3 voxels, centre-cropped or padded with air."),
        spacing: float = typer.Option(
            None, "--spacing", min=0.05,
            help="Resample to this isotropic spacing in mm (default: keep the data set's 0.8 mm, as the paper does)."),
        source_spacing: float = typer.Option(
            0.8, "--source-spacing", min=0.05,
            help="Spacing of the .npz volumes: 0.8 mm isotropic, as documented by RAD-ChestCT."),
        workers: int = typer.Option(1, "--workers", min=1, help="Cases processed in parallel (processes)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases whose output already exists."),
        label_table: str = typer.Option(None, "--label-table", help=LABEL_TABLE_HELP),
    ) -> None:
        """RAD-ChestCT .npz to HU volumes on the canonical grid.

        The released volumes are in HU, axes (slices, rows, columns), resampled by the data
        set's authors to 0.8 x 0.8 x 0.8 mm; the files hold no geometry, so that documented
        spacing is used. Exit status 1 if any case failed.
        """
        from prdit.data.rad_chestct import preprocess_rad_chestct

        results = preprocess_rad_chestct(src, out, size=size, spacing=spacing, source_spacing=source_spacing,
                                         workers=workers, overwrite=overwrite, report=_report,
                                         label_table=label_table)
        _summarise(results, out)


def _count_entries(list_file: Path) -> int:
    return sum(1 for line in list_file.read_text().splitlines() if line.strip() and not line.startswith("#"))


def _report(result, done: int, total: int) -> None:
    line = f"[{done}/{total}] {result.case}: {result.status}"
    if result.reason:
        line += f" ({result.reason})"
    typer.secho(line, fg=typer.colors.RED if result.status == "failed" else None, err=result.status == "failed")


def _summarise(results: list, out: Path) -> None:
    failed = [r for r in results if r.status == "failed"]
    typer.echo(f"{len(results) - len(failed)} of {len(results)} cases done, {len(failed)} failed; "
               f"manifest: {out / 'manifest.csv'}")
    if failed:
        raise typer.Exit(code=1)
