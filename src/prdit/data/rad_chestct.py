"""RAD-ChestCT preprocessing: ``.npz`` volumes (key ``ct``, HU) to canonical HU volumes.

The data set ships each scan as ``<name>.npz`` holding one array ``ct`` in Hounsfield units,
axes ``[slices, rows, columns]``, already resampled by its authors to 0.8 x 0.8 x 0.8 mm
(Draelos et al., Medical Image Analysis 2021). The files carry no geometry, so the spacing is
that documented value (overridable) and the orientation is taken as the canonical one.
By default nothing is resampled, as in the paper; the volume is centre-cropped or padded with
air to ``size^3``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from prdit.data.io import NPZ_READ_ERRORS
from prdit.data.preprocess import (
    CaseJob,
    CaseResult,
    check_output_folder,
    format_triplet,
    run_cases,
    to_canonical_grid,
    with_label_maps,
    write_case,
)
from prdit.errors import DataError

DOCUMENTED_SPACING_MM = 0.8
"""Voxel spacing of the released RAD-ChestCT volumes (isotropic), as documented by the data set."""


def find_cases(src: str | Path) -> list[tuple[str, Path]]:
    """(case name, file) for every ``.npz`` under ``src``, sorted."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: not a folder")
    files = sorted(p for p in src.rglob("*.npz") if not p.name.startswith("."))
    return [(p.relative_to(src).with_suffix("").as_posix().replace("/", "_"), p) for p in files]


def read_rad_chestct(path: str | Path, source_spacing: float = DOCUMENTED_SPACING_MM):
    """One RAD-ChestCT file as a float32 SimpleITK image in HU with isotropic ``source_spacing``."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "ct" not in archive:
                raise DataError(f"{path}: no array 'ct' in the archive (it holds {list(archive.keys())})")
            array = archive["ct"]
    except NPZ_READ_ERRORS as err:
        raise DataError(f"{path}: not a readable .npz archive; the file is truncated or corrupt "
                        f"({type(err).__name__}: {err})") from err
    if array.ndim != 3:
        raise DataError(f"{path}: 'ct' has shape {array.shape}, expected 3D [slices, rows, columns]")
    if array.dtype.kind not in "fiu":
        raise DataError(f"{path}: 'ct' has voxel type {array.dtype}, expected numbers in HU")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: 'ct' contains NaN or infinite values")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((source_spacing,) * 3)
    return image


def preprocess_case(
    job: CaseJob, size: int = 256, spacing: float | None = None, source_spacing: float = DOCUMENTED_SPACING_MM
) -> CaseResult:
    """Preprocess one ``.npz``; failures raise DataError with the reason."""
    image = read_rad_chestct(job.source, source_spacing)
    volume = to_canonical_grid(image, size, spacing)
    write_case(job, image, volume)
    return CaseResult(
        case=job.case,
        status="done",
        output=job.output.name,
        source=str(job.source),
        original_size=format_triplet(image.GetSize()),
        original_spacing=format_triplet(image.GetSpacing()),
        output_size=format_triplet(volume.array.shape[::-1]),
        output_spacing=format_triplet(volume.spacing),
    )


def preprocess_rad_chestct(
    src: str | Path,
    out: str | Path,
    size: int = 256,
    spacing: float | None = None,
    source_spacing: float = DOCUMENTED_SPACING_MM,
    workers: int = 1,
    overwrite: bool = False,
    report: Callable[[CaseResult, int, int], None] | None = None,
    label_table: str | Path | None = None,
) -> list[CaseResult]:
    """Preprocess every RAD-ChestCT ``.npz`` under ``src``; writes volumes and ``manifest.csv``.

    A scan with a label map ``labels/<name>.nii.gz`` beside it gets it carried along (see
    :func:`prdit.data.preprocess.with_label_maps` for ``label_table``).
    """
    src, out = Path(src), Path(out)
    check_output_folder(src, out)
    jobs = [CaseJob(name, path, out / f"{name}.nii.gz") for name, path in find_cases(src)]
    jobs = with_label_maps(src, jobs, label_table)
    process = partial(preprocess_case, size=size, spacing=spacing, source_spacing=source_spacing)
    return run_cases(jobs, process, out, workers, overwrite, report)
