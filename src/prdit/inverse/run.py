"""``prdit reconstruct`` as a folder: the reconstruction in HU, the classical baseline, previews
and a manifest with every setting; a finished folder is kept, another run's is refused.

The reconstruction is ``reconstruction.nii.gz``, the DICOM CT series ``dicom/reconstruction/``
(format ``dicom``: instead of the NIfTI file; built in ``.partial/``, which the next run clears) or both;
everything else is NIfTI/NumPy/PNG. The series' UIDs come from every setting of the run (model, task,
measurement, operator, guidance, sampler, seed, a conditional model's label map and guidance scale) and the
case's name.

Many cases (a folder or list file of measurements or ground truths) make one such folder per case,
``OUT/<case>/``, and ``OUT/summary.json``/``summary.csv`` with every case's PSNR/SSIM and their mean
± standard deviation (:func:`reconstruct_cases`). Every case is sampled with the run's seed, so a case
equals its reconstruction on its own; under torchrun the ranks share the cases."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prdit.data.dicom_writer import uid_key
from prdit.data.io import Volume, file_sha256, read_volume, write_volume
from prdit.errors import ConfigError, DataError
from prdit.files import atomic_write
from prdit.generation.config import SamplingConfig
from prdit.generation.pipeline import PRDiTPipeline
from prdit.generation.previews import save_preview
from prdit.generation.run import (PARTIAL_DIR, VOLUME_FORMATS, hu_file_array, label_map_digest, volume_on_disk,
                                 weights_digest, write_volume_formats)
from prdit.generation.sampling import resolve_precision
from prdit.inverse.guidance import GuidanceSettings
from prdit.inverse.metrics import classical_baseline, psnr, ssim
from prdit.inverse.operators import Downsample, Mask, Operator, simulate_measurement
from prdit.inverse.projector import ConeBeamProjector
from prdit.inverse.tasks import read_measurement, reconstruction_geometry
from prdit.visualization import window_range

FORMAT, FORMAT_VERSION = "prdit-reconstruct", 1
MANIFEST = "manifest.json"
SUMMARY, SUMMARY_CSV = "summary.json", "summary.csv"
SCORED = ("reconstruction", "baseline")
RECONSTRUCTION = "reconstruction.nii.gz"
DICOM_RECONSTRUCTION = "dicom/reconstruction"


@dataclass
class ReconstructionSummary:
    """What a call did: the folder, whether it reconstructed or found the result there, and the metrics."""

    out: Path
    reconstructed: bool
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None


def reconstruct_to_folder(pipe: PRDiTPipeline, task: str, out: str | Path, operator: Operator,
                          guidance: GuidanceSettings, settings: SamplingConfig, measurement_file: Path | None = None,
                          simulate_from: Path | None = None, noise_std: float = 0.0, noise_seed: int = 0,
                          overwrite: bool = False, previews: bool = True, progress=None,
                          notes: list[str] | None = None, volume_format: str = VOLUME_FORMATS[0],
                          case: str | None = None, labels: Path | None = None,
                          label_table: str | Path | None = None) -> ReconstructionSummary:
    """Reconstruct from ``measurement_file``, or from the measurement ``operator`` makes of the CT
    ``simulate_from`` (HU, the model's shape; plus ``noise_std`` noise drawn with ``noise_seed``),
    into ``out``; with ``simulate_from`` also PSNR/SSIM of reconstruction and baseline against it.
    ``notes`` (choices made for the user) go into the manifest. ``volume_format``: the reconstruction
    as ``nifti``, a DICOM CT series (``dicom``) or ``both``; ``case``: its name among the cases of
    :func:`reconstruct_cases` (with the run's settings, the key of the series' UIDs). ``labels``: a conditional
    model's label map of the case (NIfTI on the model's grid, values through ``label_table`` or the ``labels.json``
    beside it), the prior guided by it with ``settings.guidance_scale``. ``out`` is created only once every input
    has been read and checked."""
    if volume_format not in VOLUME_FORMATS:
        raise ConfigError(f"unknown volume format '{volume_format}'; choose one of {', '.join(VOLUME_FORMATS)}")
    if (measurement_file is None) == (simulate_from is None):
        raise ConfigError("give either --measurement FILE or --simulate-from CT, not both or neither")
    out = Path(out)
    if measurement_file is not None and not Path(measurement_file).is_file():
        raise DataError(f"{measurement_file}: no such measurement file; check the path given to --measurement")
    if simulate_from is not None and not Path(simulate_from).is_file():
        raise DataError(f"{simulate_from}: no such CT file; check the path given to --simulate-from")
    label_map = pipe.read_label_map(labels, label_table) if labels is not None else None
    run = _run_settings(pipe, task, operator, guidance, settings, measurement_file, simulate_from, noise_std,
                        noise_seed, volume_format)
    if label_map is not None:
        run["labels"] = {"file": str(Path(labels).resolve()), "sha256": file_sha256(labels),
                         "table": None if label_table is None else str(label_table),
                         "indices_sha256": label_map_digest(label_map)}
        run["guidance_scale"] = settings.guidance_scale
    manifest = _finished(out, run, overwrite)
    if manifest is not None:
        return ReconstructionSummary(out, False, manifest.get("metrics", {}), manifest.get("seconds"))

    truth = None
    if simulate_from is not None:
        volume = read_volume(simulate_from)
        if tuple(volume.array.shape) != pipe.volume_shape:
            raise ConfigError(f"{simulate_from}: the model reconstructs volumes of shape {pipe.volume_shape}, the "
                              f"file holds {volume.array.shape}; resample it first")
        truth = torch.from_numpy(pipe.normalization.to_model(volume.array))[None, None]
        measurement = simulate_measurement(operator, truth, noise_std, noise_seed)
        geometry = volume
        measured_volume = _measurement_volume(measurement, operator, pipe, volume)
    else:
        measurement, measured_volume = read_measurement(measurement_file, operator, pipe.volume_shape,
                                                        pipe.normalization)
        measurement = measurement if isinstance(operator, ConeBeamProjector) else measurement[:, None]
        geometry = reconstruction_geometry(measured_volume, operator, pipe.to_volume(np.zeros(pipe.volume_shape)))
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)  # what a killed run was writing
    start = time.perf_counter()
    result = pipe.reconstruct(task, measurement, operator=operator, guidance=guidance, settings=settings,
                              output_type="model", progress=progress, labels=label_map)
    seconds = time.perf_counter() - start
    x0 = result.volumes
    baseline = classical_baseline(operator, measurement)

    files = {"reconstruction": RECONSTRUCTION if volume_format != "dicom" else None,
             "dicom": DICOM_RECONSTRUCTION if volume_format != "nifti" else None, "baseline": "baseline.nii.gz"}
    # A copy in the other format belongs to a replaced run.
    write_volume_formats(_hu_volume(pipe, x0, geometry), volume_format, out / RECONSTRUCTION,
                         out / DICOM_RECONSTRUCTION, atomic_write, remove_other=True, scratch=out / PARTIAL_DIR,
                         key=uid_key({k: v for k, v in run.items() if k != "volume_format"}, case),
                         model_name=pipe.model.name, model_digest=run["model"]["weights_sha256"],
                         seed=result.seeds[0], index=0, task=task)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    atomic_write(out / files["baseline"], lambda tmp: write_volume(tmp, _hu_volume(pipe, baseline, geometry)))
    if simulate_from is not None:
        files["measurement"] = _write_measurement(out, measurement, operator, pipe, measured_volume)
    if isinstance(operator, Mask):
        files["mask"] = "mask.nii.gz"
        atomic_write(out / files["mask"], lambda tmp: write_volume(
            tmp, _like(geometry, operator.known.numpy().astype(np.uint8))))
    metrics = {}
    if truth is not None:
        metrics = {name: {"psnr": float(psnr(v, truth)), "ssim": float(ssim(v, truth))}
                   for name, v in (("reconstruction", x0), ("baseline", baseline))}
    if previews:
        files["previews"] = _previews(out, pipe, measurement, operator, measured_volume, x0, baseline, truth,
                                      geometry, settings.preview_window)
    manifest = {**run, "seed_of_volume": result.seeds[0], "notes": list(notes or []), "metrics": metrics,
                "seconds": round(seconds, 3),
                "device": {"device": str(pipe.device), "precision": resolve_precision(settings.precision, pipe.device)},
                "files": files}
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return ReconstructionSummary(out, True, metrics, seconds)


@dataclass
class CasesSummary:
    """What :func:`reconstruct_cases` did: per case its input, folder, whether it was reconstructed now and its
    metrics; ``table``: mean and standard deviation of each metric over the scored cases."""

    out: Path
    cases: list[dict]
    table: dict


def case_inputs(source: str | Path) -> list[Path] | None:
    """The cases of ``source`` when it names many: a folder of volume files (and DICOM series subfolders) or a
    ``.txt`` list (one path a line, relative to the list); None for one case (a file or one DICOM series)."""
    from prdit.evaluation.volumes import list_volume_files

    source = Path(source).expanduser()
    if not (source.is_dir() or source.suffix.lower() == ".txt"):
        return None
    files = list_volume_files(source)
    return None if files == [source] else files


def case_label_map(labels: str | Path, case: str) -> Path:
    """The label map of ``case``: ``labels`` itself (one map for every case), or ``labels/<case>.nii.gz``."""
    labels = Path(labels)
    if not labels.is_dir():
        return labels
    path = labels / f"{case}.nii.gz"
    if not path.is_file():
        raise DataError(f"{path}: no label map for case {case}; a folder given to --labels holds <case>.nii.gz for "
                        f"every case (or give one map file for all)")
    return path


def case_names(files: list[Path]) -> list[str]:
    """A folder name per case: the file's name without its volume suffix, numbered where names repeat."""
    from prdit.data.io import volume_suffix

    stems = [f.name[:len(f.name) - len(volume_suffix(f))] if volume_suffix(f) else f.name for f in files]
    return [stem if stems.count(stem) == 1 else f"{stem}-{k:05d}" for k, stem in enumerate(stems)]


def reconstruct_cases(pipe: PRDiTPipeline, task: str, out: str | Path, operator: Operator,
                      guidance: GuidanceSettings, settings: SamplingConfig, measurements: list[Path] | None = None,
                      simulate_from: list[Path] | None = None, noise_std: float = 0.0, noise_seed: int = 0,
                      overwrite: bool = False, previews: bool = True, progress=None,
                      notes: list[str] | None = None, volume_format: str = VOLUME_FORMATS[0],
                      labels: Path | None = None, label_table: str | Path | None = None) -> CasesSummary:
    """:func:`reconstruct_to_folder` for each of many ``measurements`` or ground truths ``simulate_from`` into
    ``out/<case>/`` (finished cases are kept, so a stopped run resumes), then ``out/summary.json`` and
    ``summary.csv``. ``labels``: one label map for every case, or a folder with ``<case>.nii.gz`` for each. Under torchrun the ranks share the cases round-robin and rank 0 writes the summary; every
    rank returns it. ``progress(done, total)`` is called per sampler step of this rank's cases."""
    from prdit.distributed import barrier, current, gather_in_order, on_main, shard

    if (measurements is None) == (simulate_from is None):
        raise ConfigError("give either measurements or ground truths to simulate from, not both or neither")
    files = list(measurements if measurements is not None else simulate_from)
    names = case_names(files)
    out = Path(out)
    info = current()

    maps = [case_label_map(labels, name) for name in names] if labels is not None else [None] * len(files)

    def check() -> None:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
        missing = [f for f in files if not f.exists()]
        if missing:
            flag = "--measurement" if measurements is not None else "--simulate-from"
            raise DataError(f"{missing[0]}: no such file ({len(missing)} of the {len(files)} cases given to {flag} "
                            "are missing)")
        for path in dict.fromkeys(m for m in maps if m is not None):  # every map checked before any case runs
            pipe.read_label_map(path, label_table)

    on_main(check, info)
    results = []
    for k in shard(range(len(files)), info):
        source = {"measurement_file": files[k]} if measurements is not None else {"simulate_from": files[k]}
        done = reconstruct_to_folder(pipe, task, out / names[k], operator, guidance, settings, **source,
                                     noise_std=noise_std, noise_seed=noise_seed, overwrite=overwrite,
                                     previews=previews, progress=progress, notes=notes, volume_format=volume_format,
                                     case=names[k], labels=maps[k], label_table=label_table)
        results.append({"case": names[k], "input": str(files[k]), "folder": names[k],
                        "reconstructed": done.reconstructed, "metrics": done.metrics, "seconds": done.seconds})
    cases = gather_in_order(results, info)
    table = summary_table(cases)
    if info.is_main:
        summary = {"format": "prdit-reconstruct-cases", "task": task, "cases": cases, "mean_std": table,
                   "processes": info.world_size}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / SUMMARY, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
        atomic_write(out / SUMMARY_CSV, lambda tmp: _write_summary_csv(tmp, cases))
    barrier()
    return CasesSummary(out, cases, table)


def summary_table(cases: list[dict]) -> dict:
    """Per scored output (reconstruction, baseline) and metric (psnr, ssim): mean, standard deviation (ddof 1;
    0 for one case) and count over the cases that have a ground truth; and the mean seconds per case."""
    table: dict = {}
    for name in SCORED:
        for metric in ("psnr", "ssim"):
            values = np.array([c["metrics"][name][metric] for c in cases if name in c["metrics"]], dtype=np.float64)
            if len(values):
                table.setdefault(name, {})[metric] = {
                    "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "cases": int(len(values))}
    seconds = [c["seconds"] for c in cases if c["seconds"] is not None]
    if seconds:
        table["seconds"] = {"mean": float(np.mean(seconds)), "cases": len(seconds)}
    return table


def _write_summary_csv(path: Path, cases: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "input", *(f"{n}_{m}" for n in SCORED for m in ("psnr", "ssim")), "seconds"])
        for case in cases:
            scores = [case["metrics"].get(n, {}).get(m, "") for n in SCORED for m in ("psnr", "ssim")]
            writer.writerow([case["case"], case["input"], *scores, "" if case["seconds"] is None else case["seconds"]])


def _run_settings(pipe: PRDiTPipeline, task: str, operator: Operator, guidance: GuidanceSettings,
                  settings: SamplingConfig, measurement_file: Path | None, simulate_from: Path | None,
                  noise_std: float, noise_seed: int, volume_format: str) -> dict:
    """Every setting of the run, JSON-ready."""
    if measurement_file is not None:
        measurement = {"file": str(Path(measurement_file).resolve()), "sha256": file_sha256(measurement_file)}
    else:
        measurement = {"simulated_from": str(Path(simulate_from).resolve()), "sha256": file_sha256(simulate_from),
                       "noise_std": noise_std, "noise_seed": noise_seed}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": task,
        "model": {"folder": str(Path(pipe.source).resolve()), "name": pipe.model.name,
                  "input_size": list(pipe.volume_shape), "weights_sha256": weights_digest(pipe.source)},
        "process": pipe.process.to_dict(), "normalization": pipe.normalization.to_dict(),
        "measurement": measurement, "operator": operator.describe(), "guidance": guidance.to_dict(),
        "sampler": {"sampler": settings.sampler, "steps": settings.steps, "jump": settings.jump,
                    "corrector_noise": settings.corrector_noise, "exact": settings.exact},
        "seed": settings.seed, "seed_rule": "volume_seed(seed, 0)", "units": "HU", "volume_format": volume_format,
    }


def _finished(out: Path, run: dict, overwrite: bool) -> dict | None:
    """The finished manifest of this very run (then nothing is to do), else None if ``out`` may be written;
    a ``ConfigError`` if it holds something else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
    path = out / MANIFEST
    if not path.is_file():
        for name in (RECONSTRUCTION, DICOM_RECONSTRUCTION):
            if (out / name).exists() and not overwrite:
                raise ConfigError(f"{out} holds {name} but no {MANIFEST}; choose another --out or pass --overwrite")
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); choose another --out or pass --overwrite") from err
    if manifest.get("format") != FORMAT and not overwrite:
        raise ConfigError(f"{path}: not a manifest of `prdit reconstruct` (format {manifest.get('format')!r}); "
                          f"choose another --out")
    differ = sorted(k for k in run if manifest.get(k) != run[k])
    if overwrite:
        return None
    if differ:
        raise ConfigError(f"{out} holds a reconstruction with other settings ({', '.join(differ)} differ); "
                          f"choose another --out or pass --overwrite to replace it")
    finished = volume_on_disk(run["volume_format"], out / RECONSTRUCTION, out / DICOM_RECONSTRUCTION)
    return manifest if finished else None


def _like(geometry: Volume, array: np.ndarray) -> Volume:
    return Volume(array=array, spacing=geometry.spacing, origin=geometry.origin, direction=geometry.direction)


def _hu_volume(pipe: PRDiTPipeline, x: torch.Tensor, geometry: Volume) -> Volume:
    """``x`` ``[1, 1, D, H, W]`` (model range) as the HU volume a file holds, on ``geometry``'s grid."""
    return _like(geometry, hu_file_array(pipe.to_hu(x)[0], pipe.normalization))


def _measurement_volume(measurement: torch.Tensor, operator: Operator, pipe: PRDiTPipeline, truth: Volume) -> Volume:
    """A simulated measurement as a file would hold it: HU on its own voxel grid, or projections in mm."""
    if isinstance(operator, ConeBeamProjector):
        return Volume(array=measurement[0].numpy())
    array = pipe.to_hu(measurement)[0]
    if isinstance(operator, Downsample):  # the same field of view in coarser voxels
        f = operator.factor
        spacing = np.asarray(truth.spacing) * f
        origin = np.asarray(truth.origin) + np.asarray(truth.direction).reshape(3, 3) @ (
            np.asarray(truth.spacing) * (f - 1) / 2)
        return Volume(array=array, spacing=tuple(spacing), origin=tuple(origin), direction=truth.direction)
    return _like(truth, array)


def _write_measurement(out: Path, measurement: torch.Tensor, operator: Operator, pipe: PRDiTPipeline,
                       volume: Volume) -> str:
    if isinstance(operator, ConeBeamProjector):
        atomic_write(out / "measurement.npy", lambda tmp: np.save(tmp, measurement[0].numpy()))
        return "measurement.npy"
    array = hu_file_array(volume.array, pipe.normalization)
    atomic_write(out / "measurement.nii.gz", lambda tmp: write_volume(tmp, _like(volume, array)))
    return "measurement.nii.gz"


def _previews(out: Path, pipe: PRDiTPipeline, measurement: torch.Tensor, operator: Operator, measured: Volume,
              x0: torch.Tensor, baseline: torch.Tensor, truth: torch.Tensor | None, geometry: Volume,
              window_name: str) -> dict:
    window = window_range(window_name, (pipe.normalization.hu_min, pipe.normalization.hu_max))
    folder = out / "previews"
    written = {}
    images = {"reconstruction": x0, "baseline": baseline, **({"ground_truth": truth} if truth is not None else {})}
    for name, x in images.items():
        path = folder / f"{name}.png"
        atomic_write(path, lambda tmp, x=x, name=name: save_preview(tmp, pipe.to_hu(x)[0], geometry.spacing, window,
                                                                    name.replace("_", " ")))
        written[name] = path.relative_to(out).as_posix()
    path = folder / "measurement.png"
    if isinstance(operator, ConeBeamProjector):
        atomic_write(path, lambda tmp: _save_projections(tmp, measurement[0].numpy(), operator.angles))
    else:
        atomic_write(path, lambda tmp: save_preview(tmp, measured.array, measured.spacing, window, "measurement"))
    written["measurement"] = path.relative_to(out).as_posix()
    return written


def _save_projections(path: Path, projections: np.ndarray, angles: list[float]) -> None:
    """One grey image per view ``[V, rows, columns]`` (water-equivalent mm)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(angles), 3.4), dpi=100)
    for k, angle in enumerate(angles):
        ax = fig.add_subplot(1, len(angles), k + 1)
        ax.imshow(projections[k], cmap="gray", origin="lower", interpolation="nearest")
        ax.set_title(f"{angle:g}°", fontsize=9)
        ax.axis("off")
    fig.suptitle("measurement (water-equivalent mm)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", facecolor="white")
