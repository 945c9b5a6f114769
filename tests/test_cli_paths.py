"""Every command checks the kind of each path it is given before it does anything: an --out that is an
existing file where a folder is written (or a folder where a file is), an --out that cannot be made, and an
input file where a folder is read (or the reverse) each end with one line naming the path and exit status 2,
and leave the file system as it was.

The commands are enumerated from the Typer app, so a new command is covered as soon as its path parameters
carry a check of prdit.files (and a new --out without one fails the first test). "Cannot be made" is an --out
below a regular file: that fails for root as well, where a folder without write permission would not (root
writes anyway); the permission check (``os.access``) itself is not exercised when the tests run as root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import typer

from prdit.cli import app, main
from prdit.files import PATH_CALLBACKS


def _commands(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command that runs (no groups), with the words that reach it."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, command)]
    return [found for name, sub in subcommands.items() for found in _commands(sub, (*path, name))]


COMMANDS = _commands(typer.main.get_command(app))


def _kind(param) -> str | None:
    """The kind of path ``param`` is checked as (a key of PATH_CALLBACKS), or None."""
    callback = getattr(param.callback, "__wrapped__", param.callback)
    return next((kind for kind, check in PATH_CALLBACKS.items() if check is callback), None)


def _cases(tmp_path: Path) -> dict[str, list[Path]]:
    """Wrong paths for each kind of path parameter."""
    a_file, a_folder = tmp_path / "notes.txt", tmp_path / "folder"
    below_a_file = a_file / "sub"  # a folder nobody can make, root included
    return {"output folder": [a_file, below_a_file], "output file": [a_folder, below_a_file / "page.html"],
            "input folder": [a_file], "input file": [a_folder]}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: kind, size, modification time and, for files, content."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns,
                                       None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


CHECKED = [(path, param) for path, command in COMMANDS for param in command.params if _kind(param)]


def test_every_out_is_checked():
    unchecked = [" ".join(path) for path, command in COMMANDS for param in command.params
                 if "--out" in getattr(param, "opts", []) and _kind(param) not in ("output folder", "output file")]
    assert not unchecked, f"--out without a check from prdit.files: {unchecked}"
    assert {" ".join(path) for path, _ in CHECKED} >= {"sample", "reconstruct", "evaluate", "export", "view", "demo"}


@pytest.mark.parametrize("path, param", CHECKED, ids=[f"{' '.join(p)} {q.opts[0]}" for p, q in CHECKED])
def test_a_wrong_path_is_one_line_with_status_2_and_changes_nothing(path, param, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("kept\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.txt").write_text("kept\n")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    for wrong in _cases(tmp_path)[_kind(param)]:
        # The wrong path comes first: it is checked before any other parameter is looked at.
        given = [param.opts[0], str(wrong)] if param.opts[0].startswith("-") else [str(wrong)]
        monkeypatch.setattr(sys, "argv", ["prdit", *path, *given])
        with pytest.raises(SystemExit) as exited:
            main()
        error = capsys.readouterr().err.strip()
        assert exited.value.code == 2, (wrong, error)
        assert "\n" not in error and str(wrong) in error and error.startswith("error: "), error
        assert _snapshot(tmp_path) == before, wrong


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_out_in_a_folder_without_write_permission_is_refused(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        monkeypatch.setattr(sys, "argv", ["prdit", "phantoms", "--out", str(locked / "new"), "--num", "1"])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 2 and "cannot write in" in capsys.readouterr().err
        assert not (locked / "new").exists()
    finally:
        locked.chmod(0o700)
