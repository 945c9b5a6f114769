"""Files on disk: writing them so that a kill at any moment leaves the old file or the new one, never half of
one; and recording paths without the folders of the machine that wrote them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object], fsync: bool = False) -> Path:
    """Call ``write(tmp)`` on a hidden file beside ``path`` (same suffix, so format detection works),
    then rename it over ``path``. ``fsync`` flushes it to disk first (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------------------
# Paths in records
# --------------------------------------------------------------------------------------


def recorded_path(path: str | Path, base: str | Path | None = None) -> str:
    """``path`` as a record (a model's config.json, a benchmark's results) keeps it: relative to ``base``
    (default: the working directory), with ``..`` where it lies outside, so that no record names the folders
    of the machine that wrote it. An empty path stays empty."""
    if not str(path):
        return ""
    return Path(os.path.relpath(path, base if base is not None else os.getcwd())).as_posix()


def is_inside(path: str | Path, base: str | Path) -> bool:
    """Whether ``path`` is ``base`` or lies below it (neither needs to exist)."""
    return not recorded_path(path, base).startswith("..")
