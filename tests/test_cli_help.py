"""Every command's --help shows the bracketed text of its help strings (rich markup would eat it)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from prdit.cli import app

BRACKETED = re.compile(r"\\?\[[^\[\]]*\]")


def _commands(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """The command and every subcommand below it (groups have ``commands``), with the arguments that reach each."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _bracketed(command) -> list[str]:
    """Bracketed text in the command's docstring and its parameters' help, as a reader should see it."""
    texts = [command.help or "", command.short_help or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    # A backslash keeps rich from reading the bracket as markup; it is not shown.
    return [_plain(token.lstrip("\\")) for text in texts for token in BRACKETED.findall(text)]


def _plain(text: str) -> str:
    """Text without panel borders, with whitespace (line wrapping included) collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_bracketed_text_is_found_escaped_or_not():
    found = {token for _, command in COMMANDS for token in _bracketed(command)}
    assert {"[ct-features]", "[views, rows, columns]", "[-1, 1]"} <= found


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "prdit" for p, _ in COMMANDS])
def test_help_shows_the_bracketed_text_of_the_help_strings(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    shown = _plain(result.output)
    missing = [token for token in _bracketed(command) if token not in shown]
    assert not missing, f"`prdit {' '.join(path)} --help` drops {missing}"


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "prdit" for p, _ in COMMANDS])
def test_help_has_no_unfilled_placeholders(path, command):
    """A help string meant as an f-string but written without the f shows ``{Name.attribute}`` as it is
    (``PRDiT-{size}/{patch}/{depth}`` is a pattern on purpose)."""
    texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
    unfilled = [m for text in texts for m in re.findall(r"\{[A-Za-z_]\w*\.\w[\w.]*\}", text)]
    assert not unfilled, f"`prdit {' '.join(path)} --help` shows {unfilled}"
