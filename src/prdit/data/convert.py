"""``prdit convert``: volume files in HU to DICOM CT series and DICOM CT series back to NIfTI.

A volume of a ``prdit sample`` folder keeps its model, seed and index in the DICOM header and the
UIDs its run gives it (read from the folder's ``manifest.json``), so it becomes the series that
``prdit sample --format dicom`` writes. Any other volume is written as a converted volume that
nothing links back to its input: the folder ``OUT/converted_NNNNN`` (the first number free),
fresh random UIDs, no file name, no content hash. ``keep_name`` (``--keep-name``) names the folder
and the Patient ID after the input file and derives the UIDs from its name and content, so the
same file converts to the same series. No header field comes from anywhere else. A sample with a label
map (``labels/<name>.nii.gz``, listed by the manifest) also gets its map as the DICOM SEG
``OUT/labels/<name>.dcm`` that ``--format dicom`` writes.

Only volumes in HU are written: a sample's x̂₀ in the model range (listed under ``x0/`` by the
manifest beside that folder) and any volume whose values all lie in [-1, 1] are refused, as are
values a CT series cannot hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from prdit.files import output_folder

FORMATS = ("dicom", "nifti")
SAMPLES_FORMAT = "prdit-samples"  # the format of a `prdit sample` manifest.json
MODEL_RANGE = (-1.0, 1.0)  # a volume in the model's normalised range, not HU
CONVERTED_FOLDER = "converted_{:05d}"


def _samples_manifest(folder: Path) -> dict | None:
    """The ``prdit sample`` manifest in ``folder``, or None if it has none (or one that does not read)."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SAMPLES_FORMAT else None


def sample_identity(path: Path) -> dict | None:
    """The :func:`write_dicom_series` keywords naming a volume of a sample folder (model, seed, index and the
    run's UID key), from the folder's manifest; None for a file no manifest lists."""
    from prdit.data.dicom_writer import uid_key

    data = _samples_manifest(path.parent) or {}
    for entry in data.get("volumes", []):
        if entry.get("file") == path.name:
            model = data.get("model", {})
            # Manifests written before the run recorded its key: the run's settings stand for it.
            key = data.get("uid_key") or uid_key({k: v for k, v in data.items() if k != "volumes"})
            return {"key": key, "model_name": model.get("name"), "model_digest": model.get("weights_sha256", ""),
                    "seed": int(entry["seed"]), "index": int(entry["index"])}
    return None


def sample_label_map(path: Path) -> tuple[Path, list[str]] | None:
    """The label map a sample folder's manifest lists for the volume file ``path`` and the run's label names
    (index order); None for a volume without one."""
    data = _samples_manifest(path.parent) or {}
    names = list(((data.get("labels") or {}).get("label_table") or {}))
    for entry in data.get("volumes", []):
        if entry.get("file") == path.name and (entry.get("label_map") or {}).get("file") and names:
            return path.parent / entry["label_map"]["file"], names
    return None


def check_hu_units(path: Path, array: np.ndarray) -> None:
    """Raise a ``DataError`` naming ``path`` if the volume is not in HU: a sample's x̂₀ in the model range, or
    values that all lie in [-1, 1] (a CT in HU spans air at about -1000 to bone above 300)."""
    from prdit.errors import DataError

    samples = _samples_manifest(path.parent.parent)
    listed = f"{path.parent.name}/{path.name}"
    for entry in (samples or {}).get("volumes", []):
        if entry.get("x0_file") == listed:
            hu = f"; its volume in HU is {path.parent.parent / entry['file']}" if entry.get("file") else ""
            raise DataError(f"{path}: a sample in the model range, not HU ({path.parent.parent / 'manifest.json'} "
                            f"lists it under x0_file){hu}; convert volumes in HU")
    lo, hi = float(np.min(array)), float(np.max(array))
    if MODEL_RANGE[0] <= lo and hi <= MODEL_RANGE[1]:
        raise DataError(f"{path}: every value lies in [{lo:g}, {hi:g}], the model's normalised range, not HU "
                        f"(air is about -1000 HU); convert the volume in HU")


def _free_folder(out: Path) -> Path:
    """The first ``OUT/converted_NNNNN`` that does not exist."""
    k = 0
    while (out / CONVERTED_FOLDER.format(k)).exists():
        k += 1
    return out / CONVERTED_FOLDER.format(k)


def volume_to_dicom(path: str | Path, out: str | Path, overwrite: bool = False, keep_name: bool = False) -> Path:
    """Write the volume file ``path`` (HU) as a DICOM series folder in ``out`` (see the module docstring):
    ``OUT/<file name without suffix>`` for a sample or with ``keep_name``, else ``OUT/converted_NNNNN``."""
    import uuid

    from prdit.data.dicom_writer import check_hu_range, uid_key, write_dicom_series
    from prdit.data.io import file_sha256, read_volume, volume_suffix

    path, out = Path(path), Path(out)
    volume = read_volume(path)
    check_hu_units(path, volume.array)
    check_hu_range(volume.array, path)
    stem = path.name[: len(path.name) - len(volume_suffix(path))]
    sample = sample_identity(path)
    if sample is not None:
        series = write_dicom_series(volume, out / stem, overwrite=overwrite, **sample)
        paired = sample_label_map(path)
        if paired is not None:
            from prdit.data.dicom_seg import SEG_SUFFIX, write_dicom_seg
            from prdit.data.labels import LABELS_FOLDER, check_same_grid

            labels = read_volume(paired[0])
            check_same_grid(paired[0], labels, volume)
            write_dicom_seg(labels.array, paired[1], series, out / LABELS_FOLDER / f"{stem}{SEG_SUFFIX}",
                            key=sample["key"], index=sample["index"], model_name=sample["model_name"])
        return series
    converted = {"model_name": None, "model_digest": "", "seed": 0, "index": 0}
    if keep_name:
        return write_dicom_series(volume, out / stem, key=uid_key("converted", stem, file_sha256(path)),
                                  source_name=stem, overwrite=overwrite, **converted)
    return write_dicom_series(volume, _free_folder(out), key=uuid.uuid4().hex, **converted)


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
        to: str = typer.Option(..., "--to", help="'dicom': one CT series folder per volume (see --keep-name); "
                               "'nifti': OUT/<series folder name>.nii.gz."),
        out: Path = typer.Option(..., "--out", help="Output folder.", callback=output_folder),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
        keep_name: bool = typer.Option(False, "--keep-name", help="--to dicom: name the series folder and the "
                                       "Patient ID after the input file, with UIDs from its name and content (the "
                                       "same file gives the same series). Default: OUT/converted_NNNNN and fresh "
                                       "UIDs, nothing that links the series to its input. Volumes of a `prdit "
                                       "sample` folder always keep their name, model, seed and index."),
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
                written = volume_to_dicom(path, out, overwrite=overwrite, keep_name=keep_name)
            else:
                if not path.is_dir():
                    raise DataError(f"{path}: not a folder; --to nifti converts folders that each hold one "
                                    f"DICOM CT series")
                written = dicom_to_nifti(path, out, overwrite=overwrite)
            typer.echo(f"{path} -> {written}")
