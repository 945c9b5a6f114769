"""The volume sets being compared: files or in-memory arrays, mapped to the training range.

A ``VolumeSet`` reads lazily (sets of 256^3 volumes do not fit in memory), keeps what fits
in a memory budget, checks that every volume has one shape and plausible values for its
units, and names its content by a hash so features can be cached.

Volumes reach the compared size the way training data do (the published protocol): HU are
normalised at the stored size, then block-averaged by an integer factor (``size``). A
smoothing resize (``resize``) is available only when asked for, and labelled as such.
Units are ``"hu"``, ``"model"`` (the training range [-1, 1]) or ``"auto"``: read off the first
volume where that is unambiguous (within ±1.5: the model range; reaching -500 HU or below,
as every CT with air in it does: Hounsfield units).

HU reach the model range one of two ways (``hu_mapping``): ``"training"`` normalises them as
training data are (for real scans; per volume under ``quantile`` normalisation), ``"sampling"``
inverts how ``prdit sample`` writes generated volumes, linearly over the nominal window
``[hu_min, hu_max]``. The two agree for ``window`` normalisation; for ``quantile`` only the
linear map gives back the sampled model-range arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from prdit.data.dataset import block_average
from prdit.data.io import file_sha256, is_volume_file, read_volume
from prdit.data.normalization import Normalization
from prdit.errors import DataError
from prdit.evaluation.config import EvaluationConfig

# Model-range volumes may overshoot [-1, 1] a little (samplers do not clip); anything beyond
# this is almost certainly HU passed as model range.
MODEL_RANGE_TOLERANCE = 1.5
# A volume in HU with air in it reaches this low; one that does not is ambiguous for "auto".
HU_AIR_BELOW = -500.0

VolumeSource = str | Path | np.ndarray
HU_MAPPINGS = ("training", "sampling")


def list_volume_files(source: str | Path) -> list[Path]:
    """The volumes of a set: a directory's volume files and DICOM series subfolders (sorted, not
    recursive: a generation folder keeps x̂₀ volumes in a subfolder; a ``labels/`` folder holds label maps,
    DICOM SEG files too, not volumes), a list file (read as training lists are), one file, or one series folder."""
    from prdit.data.dataset import list_volumes
    from prdit.data.dicom import DICOM_SUFFIXES
    from prdit.data.labels import LABELS_FOLDER

    def holds_series(folder: Path) -> bool:
        return any(p.is_file() and p.suffix.lower() in DICOM_SUFFIXES for p in folder.iterdir())

    source = Path(source).expanduser()
    if source.is_dir():
        if holds_series(source):
            return [source]
        files = sorted(p for p in source.iterdir() if not p.name.startswith(".") and p.name != LABELS_FOLDER
                       and ((p.is_file() and is_volume_file(p)) or (p.is_dir() and holds_series(p))))
        if not files:
            raise DataError(f"{source}: no volume files (.nii.gz, .nii, .nrrd, .mha, .npz, .npy) "
                            "or DICOM series folders in this directory")
        return files
    return list_volumes(source)


class VolumeSet:
    """An ordered set of volumes; ``set[i]`` is a float32 ``[D, H, W]`` array in the training range.

    ``size`` block-averages every volume to ``(D, H, W)`` by integer factors after normalising
    at the stored size (how training data are made); ``resize`` resamples to ``(D, H, W)`` with
    an anti-aliased trilinear resize instead (not the published protocol). ``hu_mapping`` says
    how HU files reach the model range: as training data are normalised, or as generated volumes
    were written (see the module docstring).
    """

    def __init__(self, items: Sequence[VolumeSource] | np.ndarray | str | Path, units: str = "model",
                 normalization: Normalization | None = None, resize: tuple[int, int, int] | None = None,
                 memory_budget_gib: float = EvaluationConfig.memory_budget_gib, name: str = "volumes",
                 size: tuple[int, int, int] | None = None, hu_mapping: str = "training") -> None:
        if isinstance(items, (str, Path)):
            items = list_volume_files(items)
        elif isinstance(items, np.ndarray):
            if items.ndim != 4:
                raise DataError(f"{name}: an array of volumes must be [N, D, H, W], got shape {items.shape}")
            items = list(items)
        items = [Path(i).expanduser() if isinstance(i, (str, Path)) else np.asarray(i) for i in items]
        if not items:
            raise DataError(f"{name}: the set is empty")
        for item in items:
            if isinstance(item, np.ndarray) and item.ndim != 3:
                raise DataError(f"{name}: each volume must be [D, H, W], got shape {item.shape}")
        if resize is not None and size is not None:
            raise DataError(f"{name}: give a pooling size or a resize, not both")
        if hu_mapping not in HU_MAPPINGS:
            raise DataError(f"{name}: hu_mapping must be one of {', '.join(HU_MAPPINGS)}, got '{hu_mapping}'")
        self.items = items
        self.units = units
        self.normalization = normalization or Normalization()
        self.hu_mapping = hu_mapping
        self.resize = tuple(resize) if resize is not None else None
        self.size = tuple(size) if size is not None else None
        self.name = name
        self._budget = int(memory_budget_gib * 2**30)
        self._kept: dict[int, np.ndarray] = {}
        self._shape: tuple[int, int, int] | None = self.resize or self.size
        self._stored_shape: tuple[int, ...] | None = None
        self._hash: str | None = None
        if self.units == "auto":
            self.units = self._infer_units()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of every volume in the set (after resizing)."""
        if self._shape is None:
            self[0]
        return self._shape

    def __getitem__(self, index: int) -> np.ndarray:
        if index in self._kept:
            return self._kept[index]
        array = self._to_model_range(index)
        if self._stored_shape is None:
            self._stored_shape = tuple(array.shape)
        if self.resize is not None and tuple(array.shape) != self.resize:
            array = _resize(array, self.resize)
        elif self.size is not None and tuple(array.shape) != self.size:
            if any(a < b for a, b in zip(array.shape, self.size)):
                raise DataError(f"{self._label(index)}: stored at {tuple(array.shape)}, smaller than the compared "
                                f"size {self.size}; volumes are only ever pooled down")
            array = block_average(array, self.size, self._label(index))
        if self._shape is None:
            self._shape = tuple(array.shape)
        elif tuple(array.shape) != self._shape:
            raise DataError(f"{self._label(index)}: shape {tuple(array.shape)} differs from the set's "
                            f"{self._shape}; volumes are compared at one size (--resize D,H,W resamples every "
                            "volume, which is not the published protocol)")
        if (len(self._kept) + 1) * array.nbytes <= self._budget:
            self._kept[index] = array
        return array

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """Volumes ``indices`` stacked: ``[B, 1, D, H, W]`` float32."""
        return np.stack([self[i] for i in indices])[:, None]

    def content_hash(self) -> str:
        """SHA-256 naming the content (file bytes / array values) and how it is mapped to the model range."""
        if self._hash is None:
            digest = hashlib.sha256()
            for item in self.items:
                digest.update(_item_hash(item).encode())
            mapping = self.mapping()
            if mapping["hu_mapping"] != "sampling":
                # Sets mapped the one way there was at first keep their hash, and so their cached features.
                del mapping["hu_mapping"]
            digest.update(json.dumps({"resize": self.resize, "size": self.size, **mapping}, sort_keys=True).encode())
            self._hash = digest.hexdigest()
        return self._hash

    def mapping(self) -> dict:
        """How the files reach the model range: units, and for HU the normalisation and the mapping."""
        if self.units != "hu":
            return {"units": self.units, "normalization": None, "hu_mapping": None}
        return {"units": "hu", "normalization": self.normalization.to_dict(), "hu_mapping": self.hu_mapping}

    def describe(self) -> dict:
        """What the report says about this set."""
        first = self.items[0]
        if self._stored_shape is None:
            self[0]
        shape, stored = self.shape, self._stored_shape
        if self.resize is not None and tuple(stored) != tuple(shape):
            sizing = f"resized from {list(stored)} (anti-aliased trilinear; not the published protocol)"
        elif tuple(stored) != tuple(shape):
            sizing = f"block-averaged from {list(stored)} after normalising at the stored size (as in training)"
        else:
            sizing = "as stored"
        return {"count": len(self), **self.mapping(), "shape": list(shape), "sizing": sizing,
                "sha256": self.content_hash(), "source": str(first.parent) if isinstance(first, Path)
                else "in-memory arrays"}

    def _infer_units(self) -> str:
        """``"model"`` or ``"hu"`` from the first volume's values; an error where they could be either."""
        item = self.items[0]
        array = read_volume(item).array if isinstance(item, Path) else item
        low, high = float(np.min(array)), float(np.max(array))
        if low >= -MODEL_RANGE_TOLERANCE and high <= MODEL_RANGE_TOLERANCE:
            return "model"
        if low <= HU_AIR_BELOW:
            return "hu"
        raise DataError(f"{self._label(0)}: values span [{low:.4g}, {high:.4g}], neither the training range [-1, 1] "
                        f"nor Hounsfield units of a CT with air in it; say which ('hu' or 'model') for the {self.name} "
                        "set (--real-units / --fake-units)")

    def _label(self, index: int) -> str:
        item = self.items[index]
        return str(item) if isinstance(item, Path) else f"{self.name}[{index}]"

    def _to_model_range(self, index: int) -> np.ndarray:
        item = self.items[index]
        array = read_volume(item).array if isinstance(item, Path) else item
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"{self._label(index)}: contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if self.units == "model":
            if low < -MODEL_RANGE_TOLERANCE or high > MODEL_RANGE_TOLERANCE:
                raise DataError(f"{self._label(index)}: values span [{low:.4g}, {high:.4g}], outside the training "
                                "range [-1, 1]; if these are Hounsfield units, say so (units 'hu')")
            return array
        if low >= -MODEL_RANGE_TOLERANCE and high <= MODEL_RANGE_TOLERANCE:
            raise DataError(f"{self._label(index)}: values span [{low:.4g}, {high:.4g}], which looks like the "
                            "training range, not Hounsfield units; if so, say so (units 'model')")
        if self.hu_mapping == "sampling":
            # The inverse of Normalization.to_hu, which is the window mapping over [hu_min, hu_max].
            return replace(self.normalization, kind="window").to_model(array)
        return self.normalization.to_model(array)


def _item_hash(item: Path | np.ndarray) -> str:
    if isinstance(item, Path) and item.is_dir():
        from prdit.data.dicom import find_dicom_files

        digest = hashlib.sha256()
        for path in find_dicom_files(item):  # a DICOM series: its slice files, in order
            digest.update(f"{path.relative_to(item).as_posix()}\0{file_sha256(path)}\0".encode())
        return digest.hexdigest()
    if isinstance(item, Path):
        if not item.is_file():
            raise DataError(f"{item}: no such file")
        return file_sha256(item)
    digest = hashlib.sha256()
    digest.update(f"{item.dtype.str}{item.shape}".encode())
    digest.update(np.ascontiguousarray(item).tobytes())
    return digest.hexdigest()


def _resize(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    from monai.transforms import Resize

    # Anti-aliasing (a Gaussian before downsampling) keeps a resized volume from aliasing fine texture.
    resized = Resize(spatial_size=size, mode="trilinear", anti_aliasing=True)(array[None])
    return np.asarray(resized[0], dtype=np.float32)
