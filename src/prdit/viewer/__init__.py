"""An interactive viewer of CT volumes in one self-contained HTML page: three orthogonal views per volume,
linked crosshair navigation, slice sliders, CT windows and an HU readout; ``prdit view`` writes one.

    from prdit.viewer import write_viewer
    write_viewer(["samples/run/sample_00000.nii.gz", "data/val.txt"], "view.html", window="lung")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prdit.data.io import Volume, read_volume, volume_suffix
from prdit.errors import DataError
from prdit.files import atomic_write
from prdit.viewer.page import MAX_SIZE, PageVolume, build_page, page_volume

__all__ = ["MAX_SIZE", "PageVolume", "build_page", "page_volume", "volume_names", "volume_paths", "write_viewer"]


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


def write_viewer(volumes: Sequence[str | Path | Volume], out: str | Path, names: Sequence[str] | None = None,
                 max_size: int = MAX_SIZE, window: str | tuple[float, float] = "lung", grid: bool = False,
                 title: str = "prdit view", shown: Sequence[int] | None = None) -> Path:
    """Write the viewer page of ``volumes`` (files, folders, list files or ``Volume`` objects in HU) to ``out``.

    Volumes larger than ``max_size`` voxels along any axis are resampled for the page (the page says so);
    ``window`` is a name of ``prdit.visualization.CT_WINDOWS`` or ``(level, width)`` in HU; ``grid`` opens
    the page on a grid of axial views; ``shown`` are the volumes of the three-view layout (default: all).
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
    page_volumes = [page_volume(item if isinstance(item, Volume) else read_volume(item), name, max_size)
                    for name, item in items]
    page = build_page(page_volumes, window=window, grid=grid, title=title,
                      shown=list(shown) if shown is not None else None)
    return atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))

