"""A generation run written to a folder, resumable and never overwriting.

Layout of ``OUT``::

    manifest.json               run settings and one entry per volume (index, seed, files)
    .journal/rank0.jsonl        while a run is in flight: each entry as recorded, a line each (merged on resume)
    sample_00000.nii.gz         volume 0 in Hounsfield units, training spacing, centred origin
    x0/sample_00000.nii.gz      with ``save_x0``: the volume in the model range, unclipped (float32)
    labels/sample_00000.nii.gz  with label maps: the map volume 0 was generated from (the model's indices, uint8,
                                the volume's geometry); labels/labels.json the model's label table
    dicom/sample_00000/         with format ``dicom`` or ``both``: volume 0 as a DICOM CT series (UIDs from the
                                run's key, ``uid_key`` in the manifest, and the index)
    dicom/labels/sample_00000.dcm  with label maps and format ``dicom`` or ``both``: its map as a DICOM SEG that
                                references the series
    previews/sample_00000.png   three orthogonal mid-slices
    grid.png                    every preview in one image
    view.html                   the first 16 volumes in the viewer of ``prdit view``, at most 64³

Volumes in HU and in the model range sit in different folders, so ``prdit evaluate --fake OUT`` reads the HU
volumes only. Each file is written under ``OUT/.partial`` (a subfolder per rank) and renamed into place, so a killed
run never leaves a half-written file that a resumed run would take for done. Existing volumes
are skipped (their files are not touched) unless ``overwrite``; ``manifest.json`` and
``grid.png``/``view.html`` are summaries and are brought up to date by every run. Format
``dicom`` writes the DICOM series instead of the NIfTI files (then there is no ``view.html``).

A run with label maps (a conditional model, :class:`LabelPlan`) generates volume ``i`` from map ``i // per_map``
and writes each volume with its map (the pairing of :mod:`prdit.data.labels`); the maps' content, the volumes
per map and the guidance scale are part of the run's key, so a folder is resumed only with the same maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prdit.data.dataset import read_list_file
from prdit.data.dicom_seg import SEG_SUFFIX, write_dicom_seg
from prdit.data.dicom_writer import uid_key, write_dicom_series
from prdit.data.io import ITK_SUFFIXES, Volume, file_sha256, read_volume, volume_suffix, write_volume
from prdit.data.labels import LABELS_FOLDER, TABLE_NAME, write_label_map, write_label_table
from prdit.data.normalization import Normalization
from prdit.errors import ConfigError, DataError
from prdit.generation.config import SamplingConfig
from prdit.generation.pipeline import PRDiTPipeline
from prdit.generation.previews import save_grid, save_preview
from prdit.generation.sampling import SEED_RULE, resolve_precision, volume_seed
from prdit.visualization import window_range

MANIFEST = "manifest.json"
FORMAT = "prdit-samples"
FORMAT_VERSION = 1
X0_DIR = "x0"
DICOM_DIR = "dicom"
VOLUME_FORMATS = ("nifti", "dicom", "both")
PREVIEW_DIR = "previews"
PARTIAL_DIR = ".partial"
# Every rank appends each manifest entry it records to .journal/rank{r}.jsonl (a line each, O(1) per volume), so a
# killed run keeps them; rank 0 rewrites manifest.json once the entries recorded since its last write reach this
# fraction of all (amortised linear I/O in the number of volumes), and whole at the end.
JOURNAL_DIR = ".journal"
MANIFEST_REWRITE_FRACTION = 0.1
GRID = "grid.png"
VIEW = "view.html"
VIEW_MAX_SIZE = 64  # voxels per axis in view.html: 2 bytes per voxel as base64, 0.7 MB per volume
VIEW_MAX_VOLUMES = 16  # view.html holds the first ones; `prdit view OUT` shows them all
# Settings that fix what a volume of a given index is; a folder is resumed only if they match.
RUN_KEYS = ("model.weights_sha256", "model.input_size", "seed", "steps", "sampler", "schedule", "output",
            "normalization", "spacing", "labels.sha256", "labels.per_map", "guidance_scale")


def sample_name(index: int) -> str:
    """File stem of volume ``index``: ``sample_00042``."""
    return f"sample_{index:05d}"


def label_map_files(source: str | Path) -> list[Path]:
    """The label maps ``source`` names: a folder's NIfTI files (sorted; its ``labels.json`` is their table, not a
    map), a ``.txt`` list (one path a line, relative to the list; ``#`` starts a comment) or one file."""
    source = Path(source).expanduser()
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                       and volume_suffix(p) in ITK_SUFFIXES)
        if not files:
            raise DataError(f"{source}: no label maps (.nii.gz, .nii, .nrrd, .mha) in this folder")
        return files
    if not source.is_file():
        raise DataError(f"{source}: no such label map, folder or list of label maps")
    if source.suffix.lower() != ".txt":
        return [source]
    return read_list_file(source, what="label map")


def label_map_digest(indices: np.ndarray) -> str:
    """SHA-256 of a label map as the model's indices (its shape and values)."""
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    return hashlib.sha256(repr(indices.shape).encode() + indices.tobytes()).hexdigest()


@dataclass(frozen=True)
class LabelPlan:
    """The label maps of a run: volume ``i`` is generated from map ``i // per_map`` of ``files``, read through
    ``table`` (None: the ``labels.json`` beside each map, else the model's indices)."""

    files: tuple[Path, ...]
    sha256: tuple[str, ...]  # of each file
    digests: tuple[str, ...]  # of each map as the model's indices: what its volumes depend on
    per_map: int
    table: str | None = None

    @classmethod
    def read(cls, pipe: PRDiTPipeline, source: str | Path, per_map: int = 1,
             table: str | Path | None = None) -> "LabelPlan":
        """Every map of ``source`` (see :func:`label_map_files`) read and checked against ``pipe``'s model."""
        if per_map < 1:
            raise ConfigError(f"--per-map must be >= 1, got {per_map}")
        pipe.model.require_conditioning()
        files = tuple(Path(f).resolve() for f in label_map_files(source))
        digests = tuple(label_map_digest(pipe.read_label_map(f, table)) for f in files)
        return cls(files, tuple(file_sha256(f) for f in files), digests, per_map,
                   None if table is None else str(table))

    @property
    def num_volumes(self) -> int:
        """Volumes of the run: maps x volumes per map."""
        return len(self.files) * self.per_map

    def map_of(self, index: int) -> int:
        """The map volume ``index`` is generated from."""
        if not 0 <= index < self.num_volumes:
            raise ConfigError(f"volume {index} has no label map: {len(self.files)} map(s) x {self.per_map} per map "
                              f"make volumes 0..{self.num_volumes - 1}")
        return index // self.per_map

    def indices(self, pipe: PRDiTPipeline, index: int) -> np.ndarray:
        """The map of volume ``index`` as the model's indices ``[D, H, W]``, as it was when the run was planned."""
        k = self.map_of(index)
        indices = pipe.read_label_map(self.files[k], self.table)
        if label_map_digest(indices) != self.digests[k]:
            raise DataError(f"{self.files[k]}: the label map changed while the run was going; restart the run")
        return indices

    def source(self, index: int) -> dict:
        """The manifest's record of the map of volume ``index``: its file and the file's SHA-256."""
        k = self.map_of(index)
        return {"source": str(self.files[k]), "sha256": self.sha256[k]}

    def to_dict(self, names: Sequence[str]) -> dict:
        """JSON-ready, with the model's label table ``names``; ``sha256`` keys the maps' content in order."""
        return {"maps": [{"file": str(f), "sha256": h} for f, h in zip(self.files, self.sha256)],
                "per_map": self.per_map, "table": self.table, "label_table": {n: i for i, n in enumerate(names)},
                "sha256": hashlib.sha256("".join(self.digests).encode()).hexdigest()}


@dataclass
class RunSummary:
    """What one call of :func:`generate_to_folder` did."""

    out: Path
    generated: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # volume files in OUT that the manifest does not list
    grid: Path | None = None
    view: Path | None = None


def weights_digest(model_folder: str | Path) -> str:
    """SHA-256 of the folder's ``model.safetensors``, which identifies the weights of a run."""
    from prdit.model_folder import WEIGHTS_FILE

    return file_sha256(Path(model_folder) / WEIGHTS_FILE)


def hu_file_array(hu: np.ndarray, normalization: Normalization) -> np.ndarray:
    """HU as stored in the file: rounded int16 like scanner CT when the window allows it, else float32."""
    lo, hi = normalization.hu_min, normalization.hu_max
    if float(lo).is_integer() and float(hi).is_integer() and -32768 <= lo and hi <= 32767:
        return np.clip(np.rint(hu), lo, hi).astype(np.int16)
    return hu.astype(np.float32)


def volume_on_disk(volume_format: str, nifti: Path, dicom: Path, series: bool = True) -> bool:
    """True if a volume is on disk in every format ``volume_format`` asks for: the NIfTI file ``nifti``,
    the DICOM series folder ``dicom`` (a single DICOM file where not ``series``)."""
    dicom_there = dicom.is_dir() if series else dicom.is_file()
    return (volume_format == "dicom" or nifti.is_file()) and (volume_format == "nifti" or dicom_there)


def write_volume_formats(volume: Volume, volume_format: str, nifti: Path, dicom: Path,
                         write_nifti: Callable[[Path, Callable[[Path], object]], object], remove_other: bool,
                         scratch: Path, **identity) -> None:
    """Write ``volume`` (HU) as ``volume_format`` asks: the NIfTI file ``nifti`` through ``write_nifti(path,
    writer)`` (a write by rename), the DICOM series ``dicom`` built in the run's ``scratch`` folder
    (``identity``: the keywords of :func:`write_dicom_series` that name UID key, model, seed, index and task),
    or both; with ``remove_other`` a copy in the format not asked for is removed (it belongs to the volume being
    replaced)."""
    if volume_format != "dicom":
        write_nifti(nifti, lambda tmp: write_volume(tmp, volume))
    elif remove_other:
        nifti.unlink(missing_ok=True)
    if volume_format != "nifti":
        write_dicom_series(volume, dicom, overwrite=True, scratch=scratch, **identity)
    elif remove_other:
        shutil.rmtree(dicom, ignore_errors=True)


class SampleFolder:
    """The output folder of a run: file paths, the manifest, and writes by rename."""

    def __init__(self, out: str | Path, settings: dict, overwrite: bool,
                 volume_format: str = VOLUME_FORMATS[0], rank: int = 0, manifest: dict | None = None,
                 labels: LabelPlan | None = None) -> None:
        """Open ``out`` for a run with ``settings`` (checked against its manifest), or, on the other ranks of a
        job, join the folder rank 0 opened with its ``manifest``. Each rank writes through its own ``.partial``
        subfolder. ``labels``: the run's label maps, written with their volumes."""
        self.out = Path(out)
        self.volume_format, self.rank, self.labels = volume_format, rank, labels
        opening = manifest is None
        if opening:
            self.out.mkdir(parents=True, exist_ok=True)
            manifest = _open_manifest(self.out, settings, overwrite)
            shutil.rmtree(self.out / PARTIAL_DIR, ignore_errors=True)  # leftovers of a killed run
        self.manifest = manifest
        self.entries: dict[int, dict] = {e["index"]: e for e in self.manifest["volumes"]}
        self.unsaved = 0  # rank 0: entries recorded since manifest.json was last written
        self.partial = self.out / PARTIAL_DIR / f"rank{rank}"
        self.partial.mkdir(parents=True, exist_ok=True)
        if opening:
            if labels is not None and volume_format != "dicom":
                names = list(settings["labels"]["label_table"])
                self.write(self.out / LABELS_FOLDER / TABLE_NAME, lambda tmp: write_label_table(tmp.parent, names))
            self.save_manifest()  # the run's settings, and a killed run's journal, on disk before the first volume
            shutil.rmtree(self.out / JOURNAL_DIR, ignore_errors=True)  # merged into the manifest, or of another run

    def hu_path(self, index: int) -> Path:
        """The volume in HU."""
        return self.out / f"{sample_name(index)}.nii.gz"

    def x0_path(self, index: int) -> Path:
        """The volume in the model range (unclipped)."""
        return self.out / X0_DIR / f"{sample_name(index)}.nii.gz"

    def dicom_path(self, index: int) -> Path:
        """The volume as a DICOM CT series folder."""
        return self.out / DICOM_DIR / sample_name(index)

    def label_path(self, index: int) -> Path:
        """The label map the volume was generated from, on its grid."""
        return self.out / LABELS_FOLDER / f"{sample_name(index)}.nii.gz"

    def seg_path(self, index: int) -> Path:
        """The label map as a DICOM SEG beside the volume's series."""
        return self.out / DICOM_DIR / LABELS_FOLDER / f"{sample_name(index)}{SEG_SUFFIX}"

    def has_volume(self, index: int) -> bool:
        """True if the volume is on disk in every format of this run, with its label map where it has one."""
        return volume_on_disk(self.volume_format, self.hu_path(index), self.dicom_path(index)) and (
            self.labels is None or volume_on_disk(self.volume_format, self.label_path(index), self.seg_path(index),
                                                  series=False))

    def read_hu(self, index: int) -> np.ndarray:
        """The volume in HU ``[D, H, W]`` from its NIfTI file, else from its DICOM series."""
        return read_volume(self.hu_path(index) if self.hu_path(index).is_file() else self.dicom_path(index)).array

    def preview_path(self, index: int) -> Path:
        """The three-slice preview."""
        return self.out / PREVIEW_DIR / f"{sample_name(index)}.png"

    def write(self, path: Path, writer: Callable[[Path], object]) -> Path:
        """Write ``path`` through a file of the same name in ``.partial``, then rename it into place."""
        tmp = self.partial / path.name
        writer(tmp)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        return path

    def record(self, index: int, seed: int, save: bool = True, **fields) -> None:
        """Add or update the manifest entry of a volume, listing the files it has now."""
        entry = self.entries.setdefault(index, {"index": index, "seed": seed, "file": None, "x0_file": None,
                                                "preview": None})
        entry.update(fields)
        entry["file"] = self.hu_path(index).name if self.hu_path(index).is_file() else None
        entry["dicom"] = self.dicom_path(index).relative_to(self.out).as_posix() \
            if self.dicom_path(index).is_dir() else None
        for key, path in (("x0_file", self.x0_path(index)), ("preview", self.preview_path(index))):
            entry[key] = path.relative_to(self.out).as_posix() if path.is_file() else None
        if self.labels is not None:  # the source of a volume found on disk is the one it was generated from
            entry.setdefault("label_map", self.labels.source(index)).update({
                key: path.relative_to(self.out).as_posix() if path.is_file() else None
                for key, path in (("file", self.label_path(index)), ("dicom_seg", self.seg_path(index)))})
        if not save:
            return
        journal = self.out / JOURNAL_DIR / f"rank{self.rank}.jsonl"
        journal.parent.mkdir(exist_ok=True)
        with open(journal, "a") as f:  # one write of one line: a kill leaves whole lines
            f.write(json.dumps(entry) + "\n")
        if self.rank == 0:
            self.unsaved += 1
            if self.unsaved >= MANIFEST_REWRITE_FRACTION * len(self.entries):
                self.save_manifest()

    def save_manifest(self) -> None:
        """Write ``manifest.json``."""
        self.manifest["volumes"] = [self.entries[k] for k in sorted(self.entries)]
        self.write(self.out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(self.manifest, indent=2) + "\n"))
        self.unsaved = 0

    def unlisted(self) -> list[str]:
        """Volume files in the folder that the manifest does not list."""
        listed = {e.get("file") for e in self.manifest["volumes"]}
        return sorted(p.name for p in self.out.glob("sample_*.nii.gz") if p.name not in listed)

    def todo(self, indices: Sequence[int], overwrite: bool, save_x0: bool) -> list[int]:
        """The volumes of ``indices`` still to generate: all with ``overwrite``, else those missing a file."""
        return [i for i in indices if overwrite or not self.has_volume(i)
                or (save_x0 and not self.x0_path(i).is_file())]

    def close(self, last: bool = True) -> None:
        """Remove this rank's ``.partial`` folder, and with ``last`` the ``.partial`` folder itself."""
        shutil.rmtree(self.partial.parent if last else self.partial, ignore_errors=True)


def generate_to_folder(pipe: PRDiTPipeline, out: str | Path, indices: Sequence[int], settings: SamplingConfig,
                       overwrite: bool = False, save_x0: bool = False, previews: bool = True, progress: bool = True,
                       log: Callable[[str], None] | None = None, volume_format: str = VOLUME_FORMATS[0],
                       labels: LabelPlan | None = None) -> RunSummary:
    """Generate volumes ``indices`` of the run ``settings`` describe into ``out`` (see the module docstring).

    ``volume_format``: ``nifti`` (``.nii.gz``), ``dicom`` (a CT series folder) or ``both``. ``labels``: the label
    maps of a conditional model's run, each volume guided by its map with ``settings.guidance_scale`` and written
    with it (None: a conditional model samples with the null map, "no label" everywhere). In a torchrun job
    (:mod:`prdit.distributed`) every rank calls this with the same arguments: rank 0 opens the folder and
    decides what is still to do, the ranks share those volumes round-robin (each volume from its own seed,
    so the files are the ones a single process writes), and rank 0 writes the manifest, grid and viewer page
    once every rank is done. Progress and ``log`` are rank 0's.
    """
    from prdit.distributed import barrier, current, gather_in_order, on_main, shard

    if volume_format not in VOLUME_FORMATS:
        raise ConfigError(f"unknown volume format '{volume_format}'; choose one of {', '.join(VOLUME_FORMATS)}")
    if pipe.source is None:
        raise ConfigError("a generation folder records its model folder; load the pipeline with from_pretrained")
    if pipe.model.config.in_channels != 1:
        raise ConfigError(f"CT volumes in HU need a one-channel model, this one has {pipe.model.config.in_channels}")
    indices = sorted(set(int(i) for i in indices))
    if not indices or indices[0] < 0:
        raise ConfigError(f"volume indices must be >= 0, got {indices[:3]}")
    settings = pipe.settings(settings)
    if labels is not None:
        labels.map_of(indices[-1])  # every volume has its map
    info = current()
    run_settings = {**_run_settings(pipe, settings, labels), "volume_format": volume_format}
    run_settings["uid_key"] = run_uid_key(run_settings)

    def open_folder() -> tuple[dict, list[int]]:
        folder = SampleFolder(out, run_settings, overwrite, volume_format, labels=labels)
        return folder.manifest, folder.todo(indices, overwrite, save_x0)

    manifest, todo = on_main(open_folder, info)
    folder = SampleFolder(out, run_settings, overwrite, volume_format, info.rank, manifest, labels)
    summary = RunSummary(out=folder.out, skipped=sorted(set(indices) - set(todo)))
    try:
        mine = _generate(pipe, folder, shard(todo, info), settings, overwrite, save_x0, previews,
                         progress and info.is_main, len(todo))
        done = gather_in_order(mine, info)  # (index, manifest entry) of every rank's volumes, in todo's order
        summary.generated = [i for i, _ in done]
        if info.is_main:
            folder.entries.update({i: entry for i, entry in done})
            _finish(pipe, folder, summary, settings, previews)
    finally:
        folder.close(last=not info.enabled)
    barrier()
    if info.enabled and info.is_main:
        folder.close()
    if info.is_main:
        summary.stale = folder.unlisted()
        if log is not None and summary.stale:
            log(f"{len(summary.stale)} volume file(s) in {folder.out} are not in its manifest (left by an "
                f"overwritten or interrupted run), e.g. {summary.stale[0]}; `prdit evaluate --fake {folder.out}` "
                "would read them")
    return summary


def _preview_window(pipe: PRDiTPipeline, settings: SamplingConfig) -> tuple[float, float]:
    return window_range(settings.preview_window, (pipe.normalization.hu_min, pipe.normalization.hu_max))


def _write_preview(pipe: PRDiTPipeline, folder: SampleFolder, settings: SamplingConfig, i: int, hu: np.ndarray,
                   seed_of_volume: int) -> None:
    window = _preview_window(pipe, settings)
    title = f"{sample_name(i)}  seed {seed_of_volume}  ({window[0]:.0f} to {window[1]:.0f} HU)"
    folder.write(folder.preview_path(i), lambda tmp: save_preview(tmp, hu, pipe.spacing, window, title))


def _generate(pipe: PRDiTPipeline, folder: SampleFolder, todo: list[int], settings: SamplingConfig,
              overwrite: bool, save_x0: bool, previews: bool, progress: bool, total: int) -> list[tuple[int, dict]]:
    """Generate and write the volumes ``todo`` (this rank's share of ``total``); returns their manifest entries."""
    batch_size = settings.batch_size
    generated_on = {"device": str(pipe.device), "precision": resolve_precision(settings.precision, pipe.device),
                    "exact": settings.exact}
    done: list[tuple[int, dict]] = []
    bar = None
    if todo and progress:
        from tqdm.auto import tqdm

        share = "" if len(todo) == total else f" (this rank's share of {total})"
        bar = tqdm(total=-(-len(todo) // batch_size) * settings.steps,
                   desc=f"sampling {len(todo)} volume(s){share}", unit="step")
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            maps = None
            if folder.labels is not None:  # each map read once a batch, however many of its volumes are in it
                plan = folder.labels
                read = {k: plan.indices(pipe, k * plan.per_map) for k in {plan.map_of(i) for i in batch}}
                maps = np.stack([read[plan.map_of(i)] for i in batch])
            result = pipe(num_volumes=len(batch), settings=settings, indices=batch, batch_size=len(batch),
                          output_type="model", progress=(lambda step, total: bar.update(1)) if bar is not None else False,
                          labels=maps)
            for k, i in enumerate(batch):
                x0 = result.volumes[k:k + 1]
                hu = hu_file_array(pipe.to_hu(x0)[0], pipe.normalization)
                fresh = overwrite or not folder.has_volume(i)  # else only the x̂₀ file was missing
                # The entry first: a run killed after the volume is written still knows where it came from.
                source = {"label_map": folder.labels.source(i)} if fresh and folder.labels is not None else {}
                folder.record(i, result.seeds[k], generated_on=generated_on, **source)
                if fresh:
                    volume = pipe.to_volume(hu)
                    write_volume_formats(volume, folder.volume_format, folder.hu_path(i),
                                         folder.dicom_path(i), folder.write, remove_other=overwrite,
                                         scratch=folder.partial, key=folder.manifest["uid_key"],
                                         model_name=pipe.model.name,
                                         model_digest=folder.manifest["model"]["weights_sha256"],
                                         seed=result.seeds[k], index=i)
                    _write_label_formats(pipe, folder, i, None if maps is None else maps[k], volume)
                if save_x0 and (fresh or not folder.x0_path(i).is_file()):
                    volume = pipe.to_volume(x0[0, 0].numpy().astype(np.float32))
                    folder.write(folder.x0_path(i), lambda tmp: write_volume(tmp, volume))
                elif fresh:
                    folder.x0_path(i).unlink(missing_ok=True)  # an x̂₀ of the replaced volume
                if previews and (fresh or not folder.preview_path(i).is_file()):
                    _write_preview(pipe, folder, settings, i, hu, result.seeds[k])
                elif fresh:
                    folder.preview_path(i).unlink(missing_ok=True)
                # Every rank journals its entries as it goes; rank 0 brings the manifest up to date now and then.
                folder.record(i, result.seeds[k])
                done.append((i, folder.entries[i]))
                if bar is not None:
                    bar.set_postfix_str(f"{len(done)}/{len(todo)} volumes written")
    finally:
        if bar is not None:
            bar.close()
    return done


def _write_label_formats(pipe: PRDiTPipeline, folder: SampleFolder, index: int, labels: np.ndarray | None,
                         volume: Volume) -> None:
    """The label map of volume ``index`` beside it in the run's formats (NIfTI on the volume's grid, a DICOM SEG
    referencing its series); ``labels`` None (a run without maps) removes a replaced volume's map."""
    nifti, seg = folder.label_path(index), folder.seg_path(index)
    if labels is not None and folder.volume_format != "dicom":
        folder.write(nifti, lambda tmp: write_label_map(tmp, labels, volume))
    else:
        nifti.unlink(missing_ok=True)
    if labels is not None and folder.volume_format != "nifti":
        folder.write(seg, lambda tmp: write_dicom_seg(labels, pipe.model.config.conditioning.labels,
                                                       folder.dicom_path(index), tmp, key=folder.manifest["uid_key"],
                                                       index=index, model_name=pipe.model.name))
    else:
        seg.unlink(missing_ok=True)


def _finish(pipe: PRDiTPipeline, folder: SampleFolder, summary: RunSummary, settings: SamplingConfig,
            previews: bool) -> None:
    """The run's summaries, once every volume is written: entries and previews of skipped volumes, the
    manifest, ``grid.png`` and ``view.html``."""
    for i in summary.skipped:
        # Volumes of an interrupted run may lack a preview or a manifest entry.
        if previews and not folder.preview_path(i).is_file():
            _write_preview(pipe, folder, settings, i, folder.read_hu(i), volume_seed(settings.seed, i))
        folder.record(i, volume_seed(settings.seed, i), save=False)
    folder.save_manifest()
    shutil.rmtree(folder.out / JOURNAL_DIR, ignore_errors=True)  # every rank's entries are in the manifest now
    if previews:
        shown = [folder.out / e["preview"] for e in folder.manifest["volumes"]
                 if e.get("preview") and (folder.out / e["preview"]).is_file()]
        if shown:
            summary.grid = folder.write(folder.out / GRID, lambda tmp: save_grid(tmp, shown))
        summary.view = _write_view(folder, _preview_window(pipe, settings))


def _write_view(folder: SampleFolder, window: tuple[float, float]) -> Path | None:
    """``view.html``: the first volumes of the folder in the viewer, in the previews' window."""
    from prdit.viewer import write_viewer

    files = [folder.out / e["file"] for e in folder.manifest["volumes"]
             if e.get("file") and (folder.out / e["file"]).is_file()]
    if not files:
        return None
    shown = files[:VIEW_MAX_VOLUMES]
    title = f"{folder.out.name}: {len(shown)} of {len(files)} volume(s)" if len(shown) < len(files) else \
        f"{folder.out.name}: {len(files)} volume(s)"
    return folder.write(folder.out / VIEW, lambda tmp: write_viewer(
        shown, tmp, max_size=VIEW_MAX_SIZE, window=((window[0] + window[1]) / 2, window[1] - window[0]),
        grid=len(shown) > 3, title=title, shown=list(range(min(len(shown), 3)))))


def _run_settings(pipe: PRDiTPipeline, settings: SamplingConfig, labels: LabelPlan | None = None) -> dict:
    norm = pipe.normalization
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"folder": str(Path(pipe.source).resolve()), "name": pipe.model.name,
                  "input_size": list(pipe.volume_shape), "weights_sha256": weights_digest(pipe.source)},
        "process": pipe.process.to_dict(),
        "seed": settings.seed,
        "seed_rule": SEED_RULE,
        "steps": settings.steps,
        "sampler": settings.sampler,
        "schedule": settings.schedule,
        "output": settings.output,
        "units": "HU",
        "hu_range": [norm.hu_min, norm.hu_max],
        "dtype": str(hu_file_array(np.zeros(1, np.float32), norm).dtype),
        "normalization": norm.to_dict(),
        "spacing": list(pipe.spacing),
        "direction": "identity (LPS)",
        "origin": "volume centre at (0, 0, 0) mm",
        "labels": None if labels is None else labels.to_dict(pipe.model.config.conditioning.labels),
        "guidance_scale": None if labels is None else settings.guidance_scale,
    }


def run_uid_key(settings: dict) -> str:
    """The key of the DICOM UIDs of a run's volumes: the settings that fix what a volume of an index is
    (``RUN_KEYS``), so runs that differ in any of them share no UID and the same run gives the same UIDs. A key a
    run does not have (the labels of a run without maps) is left out, so such a run keeps the UIDs it had before
    label maps existed."""
    keys = {k: _lookup(settings, k) for k in RUN_KEYS}
    return uid_key({k: v for k, v in keys.items() if v is not None})


def _lookup(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _open_manifest(out: Path, settings: dict, overwrite: bool) -> dict:
    """The folder's manifest with this run's settings; a folder of another run is an error
    unless ``overwrite`` (then its entries are dropped)."""
    path = out / MANIFEST
    existing = sorted(p.name for p in out.glob("sample_*.nii.gz"))
    if not path.is_file():
        if existing and not overwrite:
            raise ConfigError(f"{out} holds {len(existing)} sample file(s) but no {MANIFEST}, so they cannot be "
                              f"checked against this run; choose another --out or pass --overwrite")
        return {**settings, "volumes": []}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); choose another --out or pass --overwrite") from err
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a manifest of `prdit sample` (format {manifest.get('format')!r})")
    manifest.setdefault("schedule", "uniform")  # manifests written before the option sampled on this grid
    manifest.setdefault("output", "x0")  # and returned the last x̂₀ of every sampler
    differ = [k for k in RUN_KEYS if _lookup(manifest, k) != _lookup(settings, k)]
    if differ:
        if not overwrite:
            details = "; ".join(f"{k}: folder has {_lookup(manifest, k)!r}, now {_lookup(settings, k)!r}"
                                for k in differ)
            raise ConfigError(f"{out} holds volumes of another run ({details}); choose another --out or pass "
                              f"--overwrite to replace them")
        return {**settings, "volumes": []}
    entries = {e["index"]: e for e in manifest.get("volumes", [])}
    for journal in sorted((out / JOURNAL_DIR).glob("rank*.jsonl")):  # entries a killed run recorded since
        entries.update({e["index"]: e for e in _journal_entries(journal)})
    return {**settings, "volumes": [entries[i] for i in sorted(entries)]}


def _journal_entries(path: Path) -> list[dict]:
    """The entries of a journal, in the order written; a line that does not parse (cut by a crash, or edited by
    hand) is passed over, and its volume gets a new entry."""
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            int(entry["index"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        entries.append(entry)
    return entries
