"""What every preprocessing command shares: the canonical grid, the manifest, resumable runs.

Each scan becomes one ``.nii.gz`` in HU (int16) on a canonical grid: LPS orientation
(identity direction), isotropic spacing, ``size^3`` voxels centred on the scan; whatever
lies outside the scan is air (-1000 HU). The affine is the scan's true world geometry.

A run processes cases independently (optionally in a process pool): a failing case is
recorded in ``manifest.csv`` with its reason and never stops the others. Outputs are written
under a temporary name and renamed when complete, so an existing output is a finished case:
re-running skips it unless ``overwrite`` is set. Sources are only ever read.
"""

from __future__ import annotations

import csv
import os
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from prdit.data.io import Volume, read_volume, write_volume
from prdit.errors import DataError

AIR_HU = -1000.0
"""Value of voxels outside the scanned volume."""
MIN_HU = -1024.0
"""Lower clip: scanners store values far below air outside the reconstruction circle."""
MANIFEST_NAME = "manifest.csv"


# ---------------------------------------------------------------------------------------
# Canonical grid
# ---------------------------------------------------------------------------------------


def to_canonical_grid(image, size: int, spacing: float | None) -> Volume:
    """Resample a SimpleITK HU image onto the canonical ``size^3`` LPS grid centred on the scan.

    ``spacing`` None keeps the image's own spacing (no resampling beyond crop/pad). When a
    dimension gets coarser, a Gaussian pre-filter avoids aliasing.
    """
    import SimpleITK as sitk
    from scipy import ndimage

    in_spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    out_spacing = np.full(3, float(spacing)) if spacing else in_spacing.copy()
    array = np.maximum(sitk.GetArrayFromImage(image).astype(np.float32), MIN_HU)  # [D, H, W]
    # Anti-aliasing: blur so the effective resolution matches the output voxel (FWHM = spacing).
    sigma_mm = np.sqrt(np.clip(out_spacing**2 - in_spacing**2, 0.0, None)) / 2.3548
    sigma_vox = (sigma_mm / in_spacing)[::-1]
    if (sigma_vox > 0.3).any():
        array = ndimage.gaussian_filter(array, sigma=np.where(sigma_vox > 0.3, sigma_vox, 0.0), mode="nearest")
    source = sitk.GetImageFromArray(array)
    source.CopyInformation(image)

    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()]))
    origin = centre - out_spacing * (size - 1) / 2.0
    resampled = sitk.Resample(
        source, [int(size)] * 3, sitk.Transform(), sitk.sitkLinear,
        origin.tolist(), out_spacing.tolist(), np.eye(3).reshape(-1).tolist(), AIR_HU, sitk.sitkFloat32,
    )
    hu = np.rint(sitk.GetArrayFromImage(resampled))
    hu = np.clip(hu, np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)
    return Volume(array=hu, spacing=tuple(float(s) for s in out_spacing), origin=tuple(float(o) for o in origin),
                  direction=np.eye(3))


def format_triplet(values, digits: int = 3) -> str:
    """'a x b x c' for sizes and spacings in the manifest."""
    return " x ".join(f"{float(v):.{digits}g}" if isinstance(v, float) else str(v) for v in values)


# ---------------------------------------------------------------------------------------
# Cases and the manifest
# ---------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One row of the manifest: what happened to one case."""

    case: str
    status: str  # "done" or "failed"
    reason: str = ""
    output: str = ""
    source: str = ""  # the source series UID or file
    original_size: str = ""  # x x y x z voxels
    original_spacing: str = ""  # x x y x z mm
    output_size: str = ""
    output_spacing: str = ""
    notes: str = ""  # what else was found and passed over


@dataclass
class CaseJob:
    """One case to preprocess: its name, where it comes from, where it goes."""

    case: str
    source: Path
    output: Path


def read_manifest(path: str | Path) -> dict[str, CaseResult]:
    """Rows of an existing manifest by case name ({} if there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    names = {f.name for f in fields(CaseResult)}
    with path.open(newline="") as handle:
        return {row["case"]: CaseResult(**{k: v for k, v in row.items() if k in names})
                for row in csv.DictReader(handle) if row.get("case")}


def write_manifest(path: str | Path, results: list[CaseResult]) -> Path:
    """Write the manifest CSV atomically (a reader never sees half a file)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(CaseResult)])
        writer.writeheader()
        for result in sorted(results, key=lambda r: r.case):
            writer.writerow(asdict(result))
    os.replace(partial, path)
    return path


def partial_path(output: Path) -> Path:
    """Hidden temporary name an output is written under before it is renamed into place."""
    return output.with_name(f".{output.name[:-len('.nii.gz')]}.partial.nii.gz")


def write_case_volume(output: Path, volume: Volume) -> None:
    """Write a finished case atomically: temporary file, then rename."""
    partial = partial_path(output)
    write_volume(partial, volume)
    os.replace(partial, output)


def check_output_folder(src: Path, out: Path) -> None:
    """Refuse an output folder inside the source tree: sources are never modified."""
    src, out = src.resolve(), out.resolve()
    if out == src or src in out.parents:
        raise DataError(f"{out}: the output folder lies inside the source folder {src}; choose a folder outside it "
                        f"(sources are never modified)")


def run_cases(
    jobs: list[CaseJob],
    process: Callable[[CaseJob], CaseResult],
    out_dir: str | Path,
    workers: int = 1,
    overwrite: bool = False,
    report: Callable[[CaseResult, int, int], None] | None = None,
) -> list[CaseResult]:
    """Run ``process`` on every job (skipping finished ones), keeping ``manifest.csv`` up to date."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    previous = read_manifest(manifest_path)
    results: dict[str, CaseResult] = {}
    todo = []
    for job in jobs:
        if job.output.exists() and not overwrite and _readable(job.output):
            kept = previous.get(job.case)
            if kept is None or kept.status != "done":
                kept = CaseResult(job.case, "done", output=job.output.name)
            kept.reason = "kept from an earlier run (use --overwrite to redo)"
            results[job.case] = kept
        else:
            todo.append(job)
    total = len(jobs)
    for result in results.values():
        if report:
            report(result, len(results), total)
    if results:
        write_manifest(manifest_path, list(results.values()))

    def finish(result: CaseResult) -> None:
        results[result.case] = result
        write_manifest(manifest_path, list(results.values()))
        if report:
            report(result, len(results), total)

    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            finish(_safe_process(process, job))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, initializer=_limit_threads, initargs=(workers,)) as pool:
            futures = {pool.submit(_safe_process, process, job): job for job in todo}
            for future in as_completed(futures):
                try:
                    finish(future.result())
                except Exception as err:  # a worker that died (e.g. out of memory) fails only its case
                    job = futures[future]
                    finish(CaseResult(job.case, "failed", reason=f"worker process failed: {type(err).__name__}: {err}"))
    return [results[job.case] for job in jobs]


def _readable(output: Path) -> bool:
    """Whether an earlier run's output reads whole (a damaged one is redone, not kept)."""
    try:
        read_volume(output)
    except DataError:
        return False
    return True


def _safe_process(process: Callable[[CaseJob], CaseResult], job: CaseJob) -> CaseResult:
    try:
        return process(job)
    except DataError as err:
        return CaseResult(job.case, "failed", reason=str(err))
    except Exception as err:  # one bad case must never stop the run; the reason is recorded
        where = traceback.extract_tb(err.__traceback__)[-1]
        return CaseResult(job.case, "failed",
                          reason=f"unexpected {type(err).__name__}: {err} (at {Path(where.filename).name}:{where.lineno})")
    finally:
        partial = partial_path(job.output)
        if partial.exists():
            partial.unlink()


def _limit_threads(workers: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, (os.cpu_count() or 1) // workers))
