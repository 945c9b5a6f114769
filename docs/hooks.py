"""MkDocs hooks: the pages' generated parts, rebuilt on every `mkdocs build` so they cannot go stale.

A page asks for a generated part with a marker line of its own:

* ``<!-- generated: configs -->`` — the table of shipped training configs, read from
  ``src/prdit/configs/*.yaml`` through prdit's own config loader (defaults resolved as ``prdit train`` sees them);
* ``<!-- generated: cli -->`` — the command-line reference, written by Typer's documented
  ``typer prdit.cli utils docs`` from the ``prdit`` app itself.

A marker whose generator fails stops the build with the reason, rather than publishing a page without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
CONFIGS = Path(__file__).resolve().parent.parent / "src" / "prdit" / "configs"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each marker line by its generated Markdown."""
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


def configs_table() -> str:
    """One row per shipped config: what `prdit train NAME` (or `prdit distill --config NAME`) runs."""
    from prdit.training.config import unvalidated_config

    rows = ["| config | model | process | trains | lr | steps | global batch | starts from | about |",
            "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(CONFIGS.glob("*.yaml")):
        text = path.read_text()
        config = unvalidated_config(path)
        depth = int(config.model.name.rsplit("/", 1)[-1])
        if re.search(r"^distill:", text, re.MULTILINE):
            objective = config.distill.objective
            model, process = "the teacher's", "ian" if objective == "pd" else "consistency"
            trains, start = f"distilled student (`{objective}`)", "the teacher"
        else:
            model, process = f"{config.model.name}, {config.model.input_size}³", config.process.kind
            trains = "stage 1" if depth == 0 else "stage 2"
            if config.model.conditioning:
                trains += f", label maps (`{config.model.conditioning}`)"
            init = re.search(r"--init-from (\S+)", text)
            start = f"`{init.group(1).rstrip('.,;)')}`" if init else ("—" if depth == 0 else "a stage-1 run")
        schedule = "" if config.optim.schedule == "constant" else f" ({config.optim.schedule})"
        rows.append(f"| `{path.stem}` | {model} | {process} | {trains} | {_number(config.optim.lr)}{schedule} | "
                    f"{config.train.steps:,} | {config.train.global_batch} | {start} | {_about(text)} |")
    return "\n".join(rows) + "\n"


def _number(value: float) -> str:
    """``8e-5``, not ``8e-05`` or ``0.0001``."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _about(text: str) -> str:
    """The YAML header comment's first clause: up to its first colon or full stop outside parentheses."""
    comment = " ".join(line.lstrip("#").strip() for line in text.splitlines()[:3] if line.startswith("#"))
    depth = 0
    for i, char in enumerate(comment):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char in ":." and (i + 1 == len(comment) or comment[i + 1] == " ") \
                and not comment[max(0, i - 3):i + 1].endswith(("e.g.", "i.e.")):
            comment = comment[:i]
            break
    return comment.replace("|", "\\|")


def cli_reference() -> str:
    """Typer's own Markdown for the whole `prdit` app, headings one level down (the page has its title)."""
    result = subprocess.run([sys.executable, "-m", "typer", "prdit.cli", "utils", "docs", "--name", "prdit"],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"typer prdit.cli utils docs failed:\n{result.stderr}")
    return re.sub(r"^(#+) ", r"#\1 ", result.stdout, flags=re.MULTILINE)


GENERATORS = {"configs": configs_table, "cli": cli_reference}
