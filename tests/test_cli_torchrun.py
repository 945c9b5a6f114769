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
