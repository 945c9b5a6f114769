"""``prdit convert``: volume files to DICOM CT series and DICOM CT series back to NIfTI.

A volume of a ``prdit sample`` folder keeps its model, seed and index in the DICOM header (read
from the folder's ``manifest.json``); any other volume is written as a converted volume,
identified by the SHA-256 of its file. No header field comes from anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

FORMATS = ("dicom", "nifti")


def sample_identity(path: Path) -> tuple[str | None, str, int, int]:
    """(model name, model digest, seed, index) of a volume, from the manifest of its sample folder if it has one."""
    from prdit.data.io import file_sha256

    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (json.JSONDecodeError, OSError):
            data = {}
        if data.get("format") == "prdit-samples":
            for entry in data.get("volumes", []):
                if entry.get("file") == path.name:
                    model = data.get("model", {})
                    return model.get("name"), model.get("weights_sha256", ""), int(entry["seed"]), int(entry["index"])
    return None, file_sha256(path), 0, 0


def volume_to_dicom(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the volume file ``path`` (HU) as the DICOM series folder ``OUT/<file name without suffix>``."""
    from prdit.data.dicom_writer import write_dicom_series
    from prdit.data.io import read_volume, volume_suffix

    path = Path(path)
    volume = read_volume(path)
    model_name, digest, seed, index = sample_identity(path)
    stem = path.name[: len(path.name) - len(volume_suffix(path))]
    return write_dicom_series(volume, Path(out) / stem, model_name=model_name, model_digest=digest, seed=seed,
                              index=index, overwrite=overwrite)


def dicom_to_nifti(folder: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the one CT series in ``folder`` as ``OUT/<folder name>.nii.gz`` in HU with its geometry."""
    from prdit.data.dicom_writer import read_dicom_series
    from prdit.data.io import write_volume
    from prdit.errors import ConfigError
    from prdit.files import atomic_write

    folder = Path(folder)
    target = Path(out) / f"{folder.resolve().name}.nii.gz"
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} exists; choose another --out or pass --overwrite to replace it")
    volume = read_dicom_series(folder)
    return atomic_write(target, lambda tmp: write_volume(tmp, volume))


def register(app: typer.Typer) -> None:
    """Add the convert command to the CLI."""

    @app.command("convert")
    def convert(
        paths: list[Path] = typer.Argument(..., help="--to dicom: volume files (.nii.gz, .nii, .mha, .nrrd, .npz, "
                                           ".npy) in HU; --to nifti: folders that each hold one DICOM CT series."),
        to: str = typer.Option(..., "--to", help="'dicom': one CT series folder per volume, OUT/<name>/; "
                               "'nifti': OUT/<series folder name>.nii.gz."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    ) -> None:
        """Convert CT volumes to DICOM CT series (for PACS, 3D Slicer) and DICOM CT series to NIfTI."""
        from prdit.errors import ConfigError, DataError

        if to not in FORMATS:
            raise ConfigError(f"--to takes {' or '.join(FORMATS)}, got '{to}'")
        for path in paths:
            if to == "dicom":
                if path.is_dir():
                    raise DataError(f"{path}: a folder; --to dicom converts volume files (for a DICOM series "
                                    f"folder use --to nifti)")
                written = volume_to_dicom(path, out, overwrite=overwrite)
            else:
                if not path.is_dir():
                    raise DataError(f"{path}: not a folder; --to nifti converts folders that each hold one "
                                    f"DICOM CT series")
                written = dicom_to_nifti(path, out, overwrite=overwrite)
            typer.echo(f"{path} -> {written}")
