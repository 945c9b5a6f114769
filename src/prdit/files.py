"""Files on disk: writing them so that a kill at any moment leaves the old file or the new one, never half of
one; recording paths without the folders of the machine that wrote them; and checking, before a command does
anything, that each path it is given is the kind it needs (an existing folder, a file, a folder it can write).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from prdit.errors import ConfigError


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
    return Path(recorded_path(path, base)).parts[:1] != ("..",)  # a name such as "..cache" lies inside


# --------------------------------------------------------------------------------------
# Path arguments of the command line
# --------------------------------------------------------------------------------------


def check_output_folder(path: Path, what: str = "--out") -> Path:
    """``path`` can be a folder the command writes into: an existing folder, or one it can make (every part
    that exists is a folder it may write in). Raises ``ConfigError`` naming ``path`` otherwise."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: a file, not a folder; give a folder to write into (it is made if "
                          f"missing)")
    _check_can_make(path, what)
    return path


def check_output_file(path: Path, what: str = "--out") -> Path:
    """``path`` can be a file the command writes: not a folder, and its folder exists or can be made."""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: a folder, not a file; give the file to write, e.g. "
                          f"{path / 'NAME'}")
    _check_can_make(path.parent, what, path)
    return path


def check_input_folder(path: Path, what: str) -> Path:
    """``path``, if it exists, is a folder (a missing one is left to the command, which says what belongs in it)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: a file, not a folder; give the folder")
    return path


def check_input_file(path: Path, what: str) -> Path:
    """``path``, if it exists, is a file (a missing one is left to the command, which says what it should be)."""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: a folder, not a file; give the file")
    return path


def _check_can_make(folder: Path, what: str, named: Path | None = None) -> None:
    """``folder`` exists as a writable folder, or can be made: its nearest existing ancestor is a folder this
    process may write in (a regular file on the way, or a read-only ancestor, means it cannot)."""
    named = named or folder
    existing = folder
    while not existing.exists() and existing != existing.parent:  # up to "." (relative) or "/"
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {named}: cannot be made, {existing} is a file; give a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {named}: cannot write in {existing}; give a folder you can write to")


PathValue = TypeVar("PathValue", Path, list[Path], None)


def _each(ctx: typer.Context, param: typer.CallbackParam, value: PathValue,
          check: Callable[[Path, str], Path]) -> PathValue:
    """Apply ``check`` to the path (or every path of a list) a command line gave ``param``, at parse time,
    before the command runs."""
    if value is None or ctx.resilient_parsing:  # not given, or shell completion
        return value
    what = param.opts[0] if param.opts[0].startswith("-") else (param.name or "PATH").upper()
    for path in value if isinstance(value, list) else [value]:
        check(Path(path), what)
    return value


def output_folder(ctx: typer.Context, param: typer.CallbackParam, value: PathValue) -> PathValue:
    """Typer callback of an option naming a folder the command writes into."""
    return _each(ctx, param, value, check_output_folder)


def output_file(ctx: typer.Context, param: typer.CallbackParam, value: PathValue) -> PathValue:
    """Typer callback of an option naming a file the command writes."""
    return _each(ctx, param, value, check_output_file)


def input_folder(ctx: typer.Context, param: typer.CallbackParam, value: PathValue) -> PathValue:
    """Typer callback of an argument or option naming a folder the command reads."""
    return _each(ctx, param, value, check_input_folder)


def input_file(ctx: typer.Context, param: typer.CallbackParam, value: PathValue) -> PathValue:
    """Typer callback of an option naming a file the command reads."""
    return _each(ctx, param, value, check_input_file)


# Every path check a command-line parameter can carry, by the kind of path it asks for.
PATH_CALLBACKS = {"output folder": output_folder, "output file": output_file, "input folder": input_folder,
                  "input file": input_file}
