"""LIDC-IDRI preprocessing: TCIA DICOM folders to canonical HU volumes.

Layout read: ``SRC/<patient>/<study>/<series>/*.dcm`` (the TCIA download). Each patient
folder is one case: every DICOM file under it is read, the diagnostic CT series is chosen
(see :mod:`prdit.data.dicom`; the archive also holds CR/DX radiographs and localisers),
stacked in HU, resampled to isotropic spacing on the canonical LPS grid, centre-cropped or
padded with air to ``size^3`` and written as ``OUT/<patient>.nii.gz`` with its affine.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from prdit.data.dicom import describe_series, find_dicom_files, read_series, scan_headers, select_series
from prdit.data.labels import LABELS_FOLDER
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


def find_cases(src: str | Path) -> list[tuple[str, Path]]:
    """(case name, folder) for every patient folder of ``src``; ``src`` itself if it holds DICOM files directly.

    A ``labels/`` folder holds the patients' label maps, not a patient.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: not a folder")
    folders = sorted(p for p in src.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name != LABELS_FOLDER)
    cases = [(p.name, p) for p in folders]
    if not cases:
        cases = [(src.name, src)]
    return cases


def preprocess_case(job: CaseJob, size: int = 256, spacing: float = 1.0) -> CaseResult:
    """Preprocess one patient folder; failures raise DataError with the reason."""
    files = find_dicom_files(job.source)
    if not files:
        raise DataError(f"{job.source}: no DICOM files")
    series, unreadable = scan_headers(files)
    uid, passed_over = select_series(series)
    notes = [f"passed over {describe_series(other, series[other])}: {why}" for other, why in sorted(passed_over.items())]
    notes += [f"unreadable: {reason}" for _, reason in unreadable]
    if uid is None:
        found = "; ".join(notes) if notes else "nothing"
        raise DataError(f"{job.source}: no axial CT series found ({found})")
    headers = series[uid]
    try:
        image = read_series(headers)
    except DataError as err:
        # An unreadable file in the chosen series' folder is the likely cause of a gap.
        near = [str(path) for path, _ in unreadable if path.parent in {h.path.parent for h in headers}]
        extra = f"; unreadable file(s) in that folder: {', '.join(near)}" if near else ""
        raise DataError(f"series {uid}: {err}{extra}") from err
    volume = to_canonical_grid(image, size, spacing)
    write_case(job, image, volume)
    return CaseResult(
        case=job.case,
        status="done",
        output=job.output.name,
        source=uid,
        original_size=format_triplet(image.GetSize()),
        original_spacing=format_triplet(image.GetSpacing()),
        output_size=format_triplet(volume.array.shape[::-1]),
        output_spacing=format_triplet(volume.spacing),
        notes=" | ".join(notes),
    )


def preprocess_lidc(
    src: str | Path,
    out: str | Path,
    size: int = 256,
    spacing: float = 1.0,
    workers: int = 1,
    overwrite: bool = False,
    report: Callable[[CaseResult, int, int], None] | None = None,
    label_table: str | Path | None = None,
) -> list[CaseResult]:
    """Preprocess every patient of a TCIA LIDC-IDRI download; writes volumes and ``manifest.csv``.

    A patient with a label map ``SRC/labels/<patient>.nii.gz`` gets it carried along (see
    :func:`prdit.data.preprocess.with_label_maps` for ``label_table``).
    """
    src, out = Path(src), Path(out)
    check_output_folder(src, out)
    jobs = [CaseJob(name, folder, out / f"{name}.nii.gz") for name, folder in find_cases(src)]
    jobs = with_label_maps(src, jobs, label_table)
    return run_cases(jobs, partial(preprocess_case, size=size, spacing=spacing), out, workers, overwrite, report)
