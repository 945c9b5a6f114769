"""What every preprocessing command shares: the canonical grid, the manifest, resumable runs.

Each scan becomes one ``.nii.gz`` in HU (int16) on a canonical grid: LPS orientation
(identity direction), isotropic spacing, ``size^3`` voxels centred on the scan; whatever
lies outside the scan is air (-1000 HU). The affine is the scan's true world geometry.

A scan may come with a label map (``labels/<scan name>.nii.gz`` beside the scan, see
:mod:`prdit.data.labels`): it is checked against the scan's grid, its values mapped onto prdit's
label set through its table, and resampled with nearest neighbour onto the same canonical grid
as the image, written as ``OUT/labels/<case>.nii.gz`` beside ``OUT/labels/labels.json``.

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
from prdit.data.labels import (
    LABELS_FOLDER,
    LabelTable,
    find_label_maps,
    label_path,
    read_label_map,
    table_for,
    write_label_map,
    write_label_table,
)
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


def labels_to_grid(labels: np.ndarray, image, grid: Volume) -> np.ndarray:
    """A uint8 label map ``[D, H, W]`` on ``image``'s grid, resampled by nearest neighbour onto ``grid``'s.

    ``grid`` is the image's canonical volume, so the two stay aligned voxel for voxel; whatever
    lies outside the scan is background (0).
    """
    import SimpleITK as sitk

    source = sitk.GetImageFromArray(labels.astype(np.uint8))
    source.CopyInformation(image)
    resampled = sitk.Resample(
        source, list(grid.array.shape[::-1]), sitk.Transform(), sitk.sitkNearestNeighbor, list(grid.origin),
        list(grid.spacing), np.asarray(grid.direction).reshape(-1).tolist(), 0, sitk.sitkUInt8,
    )
    return sitk.GetArrayFromImage(resampled)


def image_grid(image) -> Volume:
    """The grid of a SimpleITK image as a ``Volume`` (its array a view, for the shape)."""
    import SimpleITK as sitk

    return Volume(array=sitk.GetArrayViewFromImage(image), spacing=tuple(image.GetSpacing()),
                  origin=tuple(image.GetOrigin()), direction=np.asarray(image.GetDirection()).reshape(3, 3))


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
    labels: str = ""  # the label map written beside the output, if the scan has one


@dataclass
class CaseJob:
    """One case to preprocess: its name, where it comes from, where it goes, its label map if any."""

    case: str
    source: Path
    output: Path
    label: Path | None = None
    label_table: LabelTable | None = None

    @property
    def label_output(self) -> Path:
        """Where the case's label map goes: ``OUT/labels/<case>.nii.gz``."""
        return label_path(self.output)


def with_label_maps(src: Path, jobs: list[CaseJob], table: str | Path | None = None) -> list[CaseJob]:
    """``jobs`` with the label map of each scan that has one, and the table its values follow.

    ``table`` (a CSV/JSON file of index -> name, or ``totalsegmentator``) applies to every label
    map; without it each map follows the ``labels.json`` beside it.
    """
    pairs = find_label_maps(src, [job.source for job in jobs])
    if table is not None and not pairs:
        raise DataError(f"{src}: a label table was given but no scan has a label map; put each one in a "
                        f"'{LABELS_FOLDER}' folder beside its scan, named like the scan (<name>.nii.gz)")
    tables: dict[Path, LabelTable] = {}
    for job in jobs:
        job.label = pairs.get(job.source)
        if job.label is not None:
            if job.label.parent not in tables:
                tables[job.label.parent] = table_for(job.label, table)
            job.label_table = tables[job.label.parent]
    return jobs


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


def write_case(job: CaseJob, image, volume: Volume) -> None:
    """Write a case's canonical ``volume`` of SimpleITK ``image`` and its label map, if it has one.

    The label map is checked before anything is written, so a bad map fails the case whole; the
    volume is written last, so a case with a volume is finished.
    """
    if job.label is not None:
        labels = read_label_map(job.label, job.label_table, image_grid(image))
        partial = partial_path(job.label_output)
        write_label_map(partial, labels_to_grid(labels, image, volume), volume)
        os.replace(partial, job.label_output)
    write_case_volume(job.output, volume)


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
    if any(job.label is not None for job in jobs):
        write_label_table(jobs[0].label_output.parent)
    results: dict[str, CaseResult] = {}
    todo = []
    for job in jobs:
        if not overwrite and _finished(job):
            kept = previous.get(job.case)
            if kept is None or kept.status != "done":
                kept = CaseResult(job.case, "done", output=job.output.name)
            kept.reason = "kept from an earlier run (use --overwrite to redo)"
            kept.labels = _labels_entry(job) if job.label is not None else ""
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


def _labels_entry(job: CaseJob) -> str:
    """The manifest's ``labels`` entry of a case: its label map, relative to the output folder."""
    return job.label_output.relative_to(job.output.parent).as_posix()


def _finished(job: CaseJob) -> bool:
    """Whether an earlier run wrote the case whole: its volume and, if it has one, its label map."""
    return job.output.exists() and _readable(job.output) and (job.label is None or _readable(job.label_output))


def _readable(output: Path) -> bool:
    """Whether an earlier run's output reads whole (a damaged one is redone, not kept)."""
    try:
        read_volume(output)
    except DataError:
        return False
    return True


def _safe_process(process: Callable[[CaseJob], CaseResult], job: CaseJob) -> CaseResult:
    try:
        result = process(job)
        if job.label is not None and result.status == "done":
            result.labels = _labels_entry(job)
        return result
    except DataError as err:
        return CaseResult(job.case, "failed", reason=str(err))
    except Exception as err:  # one bad case must never stop the run; the reason is recorded
        where = traceback.extract_tb(err.__traceback__)[-1]
        return CaseResult(job.case, "failed",
                          reason=f"unexpected {type(err).__name__}: {err} (at {Path(where.filename).name}:{where.lineno})")
    finally:
        for partial in (partial_path(job.output), partial_path(job.label_output)):
            if partial.exists():
                partial.unlink()


def _limit_threads(workers: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, (os.cpu_count() or 1) // workers))
