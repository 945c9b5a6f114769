"""Every option of every command reaches prdit when the command runs under torchrun: torchrun's own
parser accepts abbreviations of its options anywhere on the line, so an option of ours that is a
prefix of one of its options (``--num`` of ``--numa-binding``) would stop the launch."""

from __future__ import annotations

import contextlib
import io

import pytest
import typer

from prdit.cli import app

run = pytest.importorskip("torch.distributed.run")


def _options(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(command path, the long spellings of one option) for every option of every command."""
    found = [(path, tuple(o for o in (*param.opts, *getattr(param, "secondary_opts", [])) if o.startswith("--")))
             for param in command.params]
    for name, sub in getattr(command, "commands", {}).items():
        found += _options(sub, (*path, name))
    return [(p, spellings) for p, spellings in found if spellings]


OPTIONS = _options(typer.main.get_command(app))


def _reaches_prdit(path: tuple[str, ...], option: str) -> bool:
    """Whether ``torchrun --standalone --nproc_per_node=2 -m prdit PATH OPTION 1`` hands OPTION to prdit."""
    argv = ["--standalone", "--nproc_per_node=2", "-m", "prdit", *path, option, "1"]
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            args = run.get_args_parser().parse_args(argv)
        except SystemExit:
            return False
    return args.training_script_args == [*path, option, "1"]


def test_the_probe_sees_the_clash_it_guards_against():
    assert not _reaches_prdit(("sample",), "--num")


@pytest.mark.parametrize("path, spellings", OPTIONS, ids=[" ".join((*p, s[0])) for p, s in OPTIONS])
def test_every_option_has_its_first_spelling_survive_torchrun(path, spellings):
    assert _reaches_prdit(path, spellings[0]), f"`torchrun … -m prdit {' '.join(path)} {spellings[0]}` fails"


def test_a_command_that_does_not_share_its_work_runs_on_rank_0_alone(tmp_path, monkeypatch):
    """Under torchrun, `prdit phantoms` (like split, convert, export, view, demo …) writes once: rank 0 does the
    work as a single process (so a training call inside, as in the demo, does not wait for a job the other
    ranks never join), every other rank exits cleanly at once."""
    from typer.testing import CliRunner

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    other = CliRunner().invoke(app, ["phantoms", "--num-volumes", "1", "--size", "16", "--out", str(tmp_path / "a")])
    assert other.exit_code == 0 and "runs on rank 0 alone" in other.output
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("RANK", "0")
    main = CliRunner().invoke(app, ["phantoms", "--num-volumes", "1", "--size", "16", "--out", str(tmp_path / "a")])
    assert main.exit_code == 0, (main.output, main.exception)
    assert len(list((tmp_path / "a").glob("*.nii.gz"))) == 1
    import os

    assert os.environ["WORLD_SIZE"] == "1"  # what setup_distributed reads: a single process from here on


def test_data_commands_under_torchrun_write_once(tmp_path, jobs):
    import sys

    def torchrun(*args):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "prdit",
                *map(str, args)]

    env = {"OMP_NUM_THREADS": "1"}
    made = jobs.run(torchrun("phantoms", "--num-volumes", 2, "--size", 16, "--out", tmp_path / "p"), env, 120)
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stderr.count("runs on rank 0 alone") == 1
    assert len(list((tmp_path / "p").glob("phantom_*.nii.gz"))) == 2
    # `prdit view` refuses an existing page: two ranks writing it would make one of them fail.
    viewed = jobs.run(torchrun("view", tmp_path / "p", "--out", tmp_path / "v.html"), env, 120)
    assert viewed.returncode == 0, viewed.stderr[-2000:]
    assert (tmp_path / "v.html").is_file()
