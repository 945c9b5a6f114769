"""Training data: volume lists, the train/validation split, and ``VolumeDataset``.

A data source is either a folder of volume files or a list file with one path per line. A
folder holding a DICOM series counts as one volume wherever a volume file does.
Relative paths in a list file are resolved against, in this order: the ``root`` given by the
caller, the ``# root: DIR`` line written by :func:`split_volumes` (itself relative to the list
file), the list file's own folder.

``VolumeDataset`` turns each file into a training tensor ``[1, S, S, S]`` in [-1, 1]: HU are
normalised at the stored resolution, then average-pooled by an integer factor down to S
(256 -> 128 -> 64), as the paper does. With ``labels`` each volume comes with its label map
(``labels/<name>.nii.gz`` beside it, docs/method.md §10), taken down to S by nearest neighbour.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prdit.data.dicom import DICOM_SUFFIXES
from prdit.data.io import is_volume_file, read_volume, volume_suffix
from prdit.data.labels import LABELS_FOLDER, label_path, read_label_map, table_for
from prdit.data.normalization import Normalization
from prdit.errors import ConfigError, DataError

ROOT_PREFIX = "# root:"


# ---------------------------------------------------------------------------------------
# Listing volumes
# ---------------------------------------------------------------------------------------


def list_volumes(source: str | Path, root: str | Path | None = None) -> list[Path]:
    """Volumes of a folder (sorted, recursive), of a list file (in file order), or the one file or series given.

    In a folder, volume files and DICOM series folders (folders holding ``.dcm``/``.dicom``/``.ima``
    files) are volumes; the slice files of a series and the label maps of a ``labels/`` folder are not.
    A series folder named like a volume file of the same folder tree (``dicom/sample_00000/`` next to
    ``sample_00000.nii.gz``, as ``prdit sample --format both`` writes them) is the same volume, listed
    once as the file.
    """
    source = Path(source)
    if source.is_dir():
        visible = [p for p in source.rglob("*") if p.is_file()
                   and not any(part.startswith(".") or part == LABELS_FOLDER for part in p.relative_to(source).parts)]
        files = [p for p in visible if is_volume_file(p)]
        stems = {p.name[: len(p.name) - len(volume_suffix(p))] for p in files}
        series = {p.parent for p in visible if p.suffix.lower() in DICOM_SUFFIXES}
        paths = sorted(files + [s for s in series if s == source or s.name not in stems])
        if not paths:
            raise DataError(f"{source}: folder holds no volume files (.nii.gz, .npz, .npy) or DICOM series")
        return paths
    if not source.is_file():
        raise DataError(f"{source}: no such file or folder")
    if is_volume_file(source):
        return [source]
    return read_list_file(source, root)


def read_list_file(path: Path, root: str | Path | None = None, what: str = "volume") -> list[Path]:
    """The paths a list file names, one a line (``#`` starts a comment), relative to the list (or to a
    ``ROOT_PREFIX`` line, or ``root``); every path must exist. ``what`` names the entries in errors."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as a list of {what} paths ({err})") from err
    base = path.parent
    entries = []
    for line in lines:
        line = line.strip()
        if line.startswith(ROOT_PREFIX):
            base = (path.parent / line[len(ROOT_PREFIX):].strip())
        elif line and not line.startswith("#"):
            entries.append(line)
    if root is not None:
        base = Path(root)
    if not entries:
        raise DataError(f"{path}: the list file names no {what}s")
    paths = [Path(entry) if Path(entry).is_absolute() else base / entry for entry in entries]
    missing = [p for p in paths if not (p.is_file() or p.is_dir())]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{path}: listed {what} {missing[0]} does not exist{more} "
                        f"(relative paths resolve against {base}; pass root= to change that)")
    return paths


# ---------------------------------------------------------------------------------------
# Train/validation split
# ---------------------------------------------------------------------------------------


def split_volumes(
    data: str | Path,
    val_fraction: float = 0.1,
    seed: int = 42,
    out_dir: str | Path | None = None,
    val_count: int | None = None,
) -> tuple[Path, Path]:
    """Write ``train.txt``/``val.txt`` (paths relative to ``data``); returns their paths.

    The split is a deterministic shuffle of the sorted file list: the same files and seed
    always give the same split. ``val_count`` (a fixed number) overrides ``val_fraction``.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: not a folder of volumes")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = [p.relative_to(data).as_posix() for p in list_volumes(data)]
    if val_count is None:
        val_count = int(round(val_fraction * len(names)))
        if val_fraction > 0 and len(names) >= 2:
            val_count = max(val_count, 1)
    if not 0 <= val_count < len(names):
        raise ConfigError(f"cannot hold out {val_count} of {len(names)} volumes for validation")
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:val_count])
    train = sorted(names[i] for i in order[val_count:])

    out_dir = Path(out_dir) if out_dir is not None else data
    out_dir.mkdir(parents=True, exist_ok=True)
    root_line = f"{ROOT_PREFIX} {Path(os.path.relpath(data.resolve(), out_dir.resolve())).as_posix()}\n"
    written = []
    for name, entries in (("train.txt", train), ("val.txt", val)):
        target = out_dir / name
        target.write_text(root_line + "".join(f"{entry}\n" for entry in entries))
        written.append(target)
    return written[0], written[1]


# ---------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------


def pool_factor(shape: tuple[int, ...], size: int, path: str | Path = "volume") -> int:
    """The integer average-pooling factor taking a cubic ``shape`` down to ``size``."""
    if len(set(shape)) != 1:
        raise DataError(f"{path}: stored volume is {tuple(shape)}, not a cube; "
                        f"preprocess it to a cubic grid (prdit preprocess) first")
    stored = int(shape[0])
    if stored < size or stored % size != 0:
        raise DataError(f"{path}: stored size {stored} cannot be average-pooled to {size} "
                        f"(it must be an integer multiple of {size})")
    return stored // size


def block_average(x: np.ndarray, shape: tuple[int, int, int], path: str | Path = "volume") -> np.ndarray:
    """Average-pool ``[D, H, W]`` by integer factors per axis down to ``shape`` (the paper's 256 -> 128 -> 64).

    Never a smoothing resize: that would make the volumes blurrier than what the model learns from.
    """
    shape = tuple(int(s) for s in shape)
    if any(s < 1 or stored < s or stored % s for stored, s in zip(x.shape, shape)):
        raise DataError(f"{path}: stored size {tuple(x.shape)} cannot be average-pooled to {shape} "
                        f"(each side must be an integer multiple of the target)")
    factors = [stored // s for stored, s in zip(x.shape, shape)]
    if max(factors) > 1:
        x = x.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(
            axis=(1, 3, 5), dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_training_array(path: str | Path, size: int, normalization: Normalization) -> np.ndarray:
    """One file as a float32 array ``[size, size, size]`` in [-1, 1]: normalised at the stored size, then pooled."""
    array = read_volume(path).array  # finite numbers, 3D, or a DataError naming the file
    pool_factor(array.shape, size, path)
    return block_average(normalization.to_model(array), (size, size, size), path)


def load_training_pair(path: str | Path, size: int, normalization: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """A volume as :func:`load_training_array` does, and its label map as int64 prdit indices ``[size, size, size]``:
    of each pooled block of voxels, the label of the voxel at its centre (a label is a class, never averaged)."""
    volume = read_volume(path)
    labels_file = label_path(path)
    if not labels_file.is_file():
        raise DataError(f"{path}: no label map at {labels_file}; a conditional model trains on (volume, label map) "
                        f"pairs (prdit phantoms --labels writes them), or set model.conditioning= (empty)")
    labels = read_label_map(labels_file, table_for(labels_file, None), volume)
    factor = pool_factor(volume.array.shape, size, path)
    array = block_average(normalization.to_model(volume.array), (size, size, size), path)
    centre = factor // 2
    return array, np.ascontiguousarray(labels[centre::factor, centre::factor, centre::factor], dtype=np.int64)


class VolumeDataset:
    """CT volumes as training tensors ``[1, S, S, S]`` in [-1, 1] (a map-style torch dataset); with ``labels``,
    pairs of a volume and its label map ``[S, S, S]`` (int64).

    ``cache`` keeps the pooled arrays in memory after the first read. ``normalization`` (an
    instance or the name ``"window"``/``"quantile"``) is kept on the dataset so generated volumes
    can be mapped back to HU. (Training-time mirroring is the trainer's, drawn from its own
    generator so that a resumed run mirrors the same volumes.)
    """

    def __init__(
        self,
        source: str | Path,
        size: int,
        normalization: Normalization | str = Normalization(),
        root: str | Path | None = None,
        cache: bool = False,
        labels: bool = False,
    ) -> None:
        if isinstance(normalization, str):
            normalization = Normalization(kind=normalization)
        if int(size) < 1:
            raise ConfigError(f"training size must be positive, got {size}")
        self.source = Path(source)
        self.size = int(size)
        self.normalization = normalization
        self.paths = list_volumes(source, root)
        self.labels = labels
        self._cache: dict[int, np.ndarray | tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self._spacing: tuple[float, float, float] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing ``(x, y, z)`` in mm of the training tensors (the stored spacing times the pooling
        factor), from the first volume: what generated volumes are written with."""
        if self._spacing is None:
            volume = read_volume(self.paths[0])
            factor = pool_factor(volume.array.shape, self.size, self.paths[0])
            self._spacing = tuple(float(s) * factor for s in volume.spacing)
        return self._spacing

    def __getitem__(self, index: int):
        """Sample ``index`` as a float32 tensor ``[1, S, S, S]`` (with ``labels``: and its map ``[S, S, S]``)."""
        import torch

        if self._cache is not None and index in self._cache:
            item = self._cache[index]
        else:
            item = (load_training_pair if self.labels else load_training_array)(
                self.paths[index], self.size, self.normalization)
            if self._cache is not None:
                self._cache[index] = item
        copy = (lambda a: a.copy()) if self._cache is not None else (lambda a: a)
        if self.labels:
            array, labels = item
            return torch.from_numpy(copy(array))[None].contiguous(), torch.from_numpy(copy(labels))
        return torch.from_numpy(copy(item))[None].contiguous()
