"""The ``prdit`` commands of the documentation, checked against the command line they document.

Every fenced shell block (```` ```bash ````, ``sh``, ``shell``, ``console``) of README.md and docs/**/*.md is
read; each ``prdit`` command in it (``\\`` continuations joined, comments dropped, ``$`` prompts of console
blocks and ``NAME=value`` prefixes taken off, ``torchrun … -m prdit …`` and ``python -m prdit …`` included, and
each command of a ``&&``, ``;`` or ``|`` chain) is parsed by prdit's own command line: the Click command built
from the Typer app, with every callback taken out, so that nothing runs and no path needs to exist. An unknown
option, a missing required option or argument, a value of the wrong type and a command that no longer exists
are each an error.

A block whose previous non-blank line is ``<!-- runnable -->`` is also run, as a bash script with ``set -e``,
by ``run_blocks`` (``--run``): every runnable block of one file in order, in one fresh working directory (a
copy of the repository's tracked files, or an empty one), with the ``prdit`` of this Python environment first
on the PATH, so that a page may build on its earlier blocks as a reader following it does.

    python tools/doc_commands.py           # parse every documented command; exit 1 listing the broken ones
    python tools/doc_commands.py --run     # and run the runnable blocks
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
RUNNABLE = "<!-- runnable -->"
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
WRAPPERS = ("time", "nice", "env", "exec", "command")  # words that run the command after them


@dataclass(frozen=True)
class Block:
    """A fenced shell block of a markdown file."""

    path: Path
    line: int  # of the opening fence, from 1
    language: str
    text: str
    runnable: bool

    def logical_lines(self) -> list[tuple[int, str]]:
        """(line number, command line) with continuations joined; a console block's output lines left out and
        its ``$`` prompts taken off."""
        lines, start, current = [], 0, ""
        for number, raw in enumerate(self.text.splitlines(), start=self.line + 1):
            if not current:
                start = number
                if self.language == "console":
                    if not raw.lstrip().startswith("$ "):
                        continue
                    raw = raw.lstrip()[2:]
            if raw.rstrip().endswith("\\"):
                current += raw.rstrip()[:-1]
                continue
            lines.append((start, current + raw))
            current = ""
        if current:
            lines.append((start, current))
        return lines

    def script(self) -> str:
        """The block as a bash script: its text, or a console block's commands."""
        if self.language != "console":
            return self.text
        return "\n".join(line for _, line in self.logical_lines()) + "\n"

    def commands(self) -> list[Command]:
        """Every ``prdit`` command of the block."""
        return [Command(self.path, number, line, argv) for number, line in self.logical_lines()
                for argv in prdit_argvs(line)]


@dataclass(frozen=True)
class Command:
    """One documented ``prdit`` command: where it is, its text and the arguments after ``prdit``."""

    path: Path
    line: int
    text: str
    argv: tuple[str, ...]

    @property
    def where(self) -> str:
        with contextlib.suppress(ValueError):
            return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"
        return f"{self.path}:{self.line}"


# --------------------------------------------------------------------------------------
# Markdown and shell
# --------------------------------------------------------------------------------------


def blocks(markdown: str, path: Path = Path("<text>")) -> list[Block]:
    """The fenced shell blocks of ``markdown`` (nested in lists and quotes too), in order."""
    from markdown_it import MarkdownIt

    lines = markdown.splitlines()
    found = []
    for token in MarkdownIt("commonmark").parse(markdown):
        language = token.info.split()[0].lower() if token.type == "fence" and token.info.strip() else ""
        if language not in SHELL_LANGUAGES or token.map is None:
            continue
        start = token.map[0]
        before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        found.append(Block(path, start + 1, language, token.content, before == RUNNABLE))
    return found


def documented_files(root: Path = REPO) -> list[Path]:
    """README.md and every markdown file under docs/."""
    return [path for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if path.is_file()]


def _simple_commands(line: str) -> list[list[str]]:
    """The words of each simple command of a shell line (split at ``&&``, ``||``, ``;``, ``|``, ``&`` and
    redirections; comments dropped)."""
    line = re.sub(r"(^|\s)\d+(?=[<>])", r"\1", line)  # a file descriptor before a redirection is no word
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: take the line as plain words
        words = line.split()
    commands, current = [], []
    for word in words:
        if word and set(word) <= set(lexer.punctuation_chars):
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [command for command in [*commands, current] if command]


def prdit_argvs(line: str) -> list[tuple[str, ...]]:
    """The arguments after ``prdit`` of every prdit command on a shell line: ``prdit …``, ``…/bin/prdit …``,
    ``python -m prdit …`` and ``torchrun … -m prdit …``, after any ``NAME=value`` prefixes."""
    found = []
    for words in _simple_commands(line):
        while words and (ASSIGNMENT.match(words[0]) or words[0] in WRAPPERS):
            words = words[1:]
        if not words:
            continue
        if Path(words[0]).name == "prdit":
            found.append(tuple(words[1:]))
        elif Path(words[0]).name in ("torchrun", "python", "python3") or words[0].endswith("/python"):
            for i in range(len(words) - 1):
                if words[i] == "-m" and words[i + 1] == "prdit":
                    found.append(tuple(words[i + 2:]))
                    break
    return found


# --------------------------------------------------------------------------------------
# Parsing with the real command line
# --------------------------------------------------------------------------------------


def _inert(command) -> None:
    """Take every callback out of ``command`` and the commands below it: the function a command runs and each
    parameter's check (prdit.files' path checks), on this private copy of the command line."""
    command.callback = None
    for param in command.params:
        param.callback = None
    for sub in getattr(command, "commands", {}).values():
        _inert(sub)


@lru_cache(maxsize=1)
def parsing_command():
    """prdit's command line as Click builds it from the Typer app, every callback taken out."""
    import typer

    from prdit.cli import app

    command = typer.main.get_command(app)  # built anew on each call: the app's own commands are untouched
    _inert(command)
    return command


def parse_error(argv: Sequence[str]) -> str | None:
    """Why ``prdit ARGV`` does not parse (Click's message), or None where it does. Nothing runs: the commands and
    the parameter checks are taken out, and ``--help`` output is swallowed."""
    import typer

    # Typer's Click (vendored in recent versions, click itself in older ones): its base of usage errors.
    click_exception = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parsing_command().main(list(argv), prog_name="prdit", standalone_mode=False)
    except click_exception as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare `prdit`: the help
            return None
        return error.format_message()
    except typer.Exit as exit_:
        return None if exit_.exit_code == 0 else f"exits with status {exit_.exit_code}"
    except typer.Abort:
        return "aborted"
    return None


@dataclass(frozen=True)
class Problem:
    """A documented command that does not parse, or a runnable block that failed."""

    where: str
    text: str
    error: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text.strip()}\n    {self.error}"


def check_commands(commands: Iterable[Command]) -> list[Problem]:
    """Each command that does not parse, with Click's error."""
    problems = []
    for command in commands:
        error = parse_error(command.argv)
        if error is not None:
            problems.append(Problem(command.where, command.text, error))
    return problems


def check_files(paths: Iterable[Path]) -> list[Problem]:
    """Every documented command of ``paths`` that does not parse."""
    return check_commands(command for path in paths
                          for block in blocks(path.read_text(encoding="utf-8"), path)
                          for command in block.commands())


# --------------------------------------------------------------------------------------
# Running the runnable blocks
# --------------------------------------------------------------------------------------


def copy_repository(destination: Path, root: Path = REPO) -> Path:
    """The tracked files of ``root`` (as they are in the working tree) copied into ``destination``."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = root / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def block_environment() -> dict[str, str]:
    """The environment of a runnable block: this one, with this Python environment's ``prdit`` first on the
    PATH."""
    bin_dir = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@dataclass(frozen=True)
class BlockRun:
    """A runnable block and what running it gave."""

    block: Block
    returncode: int
    output: str

    @property
    def where(self) -> str:
        with contextlib.suppress(ValueError):
            return f"{self.block.path.relative_to(REPO).as_posix()}:{self.block.line}"
        return f"{self.block.path}:{self.block.line}"


def run_blocks(runnable: Sequence[Block], workdir: Path, timeout: float = 600) -> list[BlockRun]:
    """Run ``runnable`` in order in ``workdir`` (each with bash ``set -e -o pipefail``), every one even after a
    failure; stdout and stderr together in each result."""
    runs = []
    for block in runnable:
        try:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.script()], cwd=workdir,
                                  env=block_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
            runs.append(BlockRun(block, done.returncode, done.stdout))
        except subprocess.TimeoutExpired as expired:
            output = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
            runs.append(BlockRun(block, -1, f"{output}\n(stopped after {timeout:g} s)"))
    return runs


def run_files(paths: Iterable[Path], timeout: float = 600) -> list[Problem]:
    """Run every runnable block of each file in a fresh copy of the repository; the blocks that failed."""
    problems = []
    for path in paths:
        runnable = [block for block in blocks(path.read_text(encoding="utf-8"), path) if block.runnable]
        if not runnable:
            continue
        with tempfile.TemporaryDirectory(prefix="prdit-docs-") as scratch:
            for run in run_blocks(runnable, copy_repository(Path(scratch)), timeout):
                if run.returncode != 0:
                    problems.append(Problem(run.where, run.block.script(),
                                            f"exit status {run.returncode}:\n{run.output[-3000:]}"))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/**/*.md)")
    parser.add_argument("--run", action="store_true", help="also run the blocks marked <!-- runnable -->")
    args = parser.parse_args(argv)
    files = args.files or documented_files()
    problems = check_files(files) + (run_files(files) if args.run else [])
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
