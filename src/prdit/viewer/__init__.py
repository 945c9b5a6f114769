"""An interactive viewer of CT volumes in one self-contained HTML page: three orthogonal views per volume,
linked crosshair navigation, slice sliders, CT windows and an HU readout, and each volume's label map as
a coloured overlay with a legend; ``prdit view`` writes one.

    from prdit.viewer import write_viewer
    write_viewer(["samples/run/sample_00000.nii.gz", "data/val.txt"], "view.html", window="lung")

A volume file's label map is found as everywhere in prdit: ``labels/<volume name>.nii.gz`` beside it,
its values named by ``labels/labels.json`` (``prdit.data.labels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prdit.data.io import Volume, read_volume, volume_suffix
from prdit.data.labels import LabelTable, label_path, read_label_map, stem, table_for
from prdit.errors import ConfigError, DataError
from prdit.files import atomic_write
from prdit.viewer.page import MAX_SIZE, PageVolume, build_page, page_volume

__all__ = ["MAX_SIZE", "PageVolume", "build_page", "label_map_files", "page_volume", "volume_names",
           "volume_paths", "write_viewer"]

LabelSource = str | Path | np.ndarray | None
"""One volume's label map: a NIfTI file, prdit indices ``[D, H, W]`` on its grid, or none."""


def volume_paths(sources: Sequence[str | Path]) -> list[Path]:
    """The volume files of each source in order: a volume file, a folder (sorted, recursive) or a list file."""
    from prdit.data.dataset import list_volumes

    paths: list[Path] = []
    for source in sources:
        paths += list_volumes(source)
    if not paths:
        raise DataError("no volumes to show; pass volume files, folders of them or list files")
    return paths


def volume_names(paths: Sequence[Path]) -> list[str]:
    """Short names of volume files: the file name without its suffix, with its folder where names repeat,
    numbered where they still do (a file given twice)."""
    stems = [p.name[: len(p.name) - len(volume_suffix(p))] or p.name for p in paths]
    names = [f"{p.parent.name}/{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]
    return [f"{n} ({names[:k].count(n) + 1})" if names[:k].count(n) else n for k, n in enumerate(names)]


def label_map_files(volumes: Sequence[Path | Volume], labels: str | Path | None = None) -> list[Path | None]:
    """The label map file of each volume, None where it has none.

    Without ``labels`` a volume file's map is ``labels/<its name>.nii.gz`` beside it, where there is one;
    ``labels`` is the map of the one volume (a file) or a folder of ``<volume name>.nii.gz`` maps. A
    ``Volume`` object has no file, so no map found for it.
    """
    files = [item if isinstance(item, Path) else None for item in volumes]
    if labels is None:
        return [label_path(f) if f is not None and label_path(f).is_file() else None for f in files]
    labels = Path(labels)
    if labels.is_dir():
        found = [labels / f"{stem(f)}.nii.gz" if f is not None else None for f in files]
        found = [path if path is not None and path.is_file() else None for path in found]
        if not any(found):
            raise DataError(f"{labels}: holds no label map of the volumes shown; name each map like its volume "
                            f"(<volume name>.nii.gz)")
        return found
    if not labels.is_file():
        raise DataError(f"{labels}: no such label map file or folder")
    if len(volumes) != 1:
        raise ConfigError(f"{labels}: one label map for {len(volumes)} volumes; give it with its one volume, "
                          f"or give a folder of maps named like their volumes (<volume name>.nii.gz)")
    return [labels]


def write_viewer(volumes: Sequence[str | Path | Volume], out: str | Path, names: Sequence[str] | None = None,
                 max_size: int = MAX_SIZE, window: str | tuple[float, float] = "lung", grid: bool = False,
                 title: str = "prdit view", shown: Sequence[int] | None = None,
                 labels: str | Path | Sequence[LabelSource] | None = None,
                 label_table: str | Path | None = None) -> Path:
    """Write the viewer page of ``volumes`` (files, folders, list files or ``Volume`` objects in HU) to ``out``.

    Volumes larger than ``max_size`` voxels along any axis are resampled for the page (the page says so);
    ``window`` is a name of ``prdit.visualization.CT_WINDOWS`` or ``(level, width)`` in HU; ``grid`` opens
    the page on a grid of axial views; ``shown`` are the volumes of the three-view layout (default: all).
    Label maps (see :func:`label_map_files`; or one per volume: a file, prdit indices or None) are checked
    against their volume's grid and shown as an overlay; their values follow ``label_table`` (a CSV/JSON of
    index -> name, or ``totalsegmentator``), else the ``labels.json`` beside each map.
    The file is written atomically.
    """
    from prdit.data.dataset import list_volumes

    items: list[tuple[str | None, Path | Volume]] = []
    for source in volumes:
        if isinstance(source, Volume):
            items.append((f"volume {len(items)}", source))
        else:
            items += [(None, path) for path in list_volumes(source)]
    if not items:
        raise DataError("no volumes to show; pass volume files, folders of them or list files")
    file_names = iter(volume_names([item for name, item in items if name is None]))
    items = [(name if name is not None else next(file_names), item) for name, item in items]
    if names is not None:
        if len(names) != len(items):
            raise DataError(f"{len(names)} name(s) for {len(items)} volume(s)")
        items = [(name, item) for name, (_, item) in zip(names, items)]
    if labels is None or isinstance(labels, (str, Path)):
        maps: list[LabelSource] = list(label_map_files([item for _, item in items], labels))
    elif isinstance(labels, np.ndarray):
        raise ConfigError("labels= takes a file, a folder or one label map per volume in a list, not one array")
    else:
        maps = list(labels)
        if len(maps) != len(items):
            raise DataError(f"{len(maps)} label map(s) for {len(items)} volume(s)")
    if label_table is not None and not any(isinstance(m, (str, Path)) for m in maps):
        raise DataError(f"a label table ({label_table}) was given but no volume has a label map file; put each "
                        f"map in a 'labels' folder beside its volume (<volume name>.nii.gz) or pass --labels")
    tables: dict[Path, LabelTable] = {}
    page_volumes = []
    for (name, item), label_map in zip(items, maps):
        volume = item if isinstance(item, Volume) else read_volume(item)
        if isinstance(label_map, (str, Path)):
            path = Path(label_map)
            if path.parent not in tables:
                tables[path.parent] = table_for(path, label_table)
            label_map = read_label_map(path, tables[path.parent], volume)
        page_volumes.append(page_volume(volume, name, max_size, labels=label_map))
    page = build_page(page_volumes, window=window, grid=grid, title=title,
                      shown=list(shown) if shown is not None else None)
    return atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))

