"""The documentation's result tables, rendered from the JSON files the benchmarks write, so that no number in
them is typed by hand.

Each table has a name and is written to ``docs/tables/<name>.md``, which the docs pages include
(``--8<-- "docs/tables/<name>.md"``); a markdown file may also hold a table between the lines
``<!-- table: <name> -->`` and ``<!-- /table -->`` (the README's headline table), and the region between them is
rewritten. Every table ends with one line per result file it read: ``Source: <file>; reproduce: <command>``, the
command taken from the file where it records one, else rebuilt from the arguments it records with the options
of the benchmark script that wrote it (parsed back by that script's own parser to prove it). A distillation
record that scored scratch folders, gone since, gets the folder its student ships in, the ``distilled_model.py``
command that makes it again, or the commit that holds its teacher's weights (``distillation_reproduce``).

    python tools/render_tables.py            # rewrite docs/tables/*.md and every marked region
    python tools/render_tables.py --check    # exit 1, listing every table that differs from its JSON

Numbers: intervals as ``value [low, high]`` (95 %, where the file has one); KID ×10³, FID, W(HU) with one
decimal; precision, recall, density and coverage with two; MMD, MS-SSIM and Dice with three; times with three
significant digits (long ones in minutes or hours); memory in MiB or GiB; large counts in k or M.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TABLES_DIR = REPO / "docs" / "tables"
MARKED = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
MINUS = "\u2212"
SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class RenderError(Exception):
    """A result file the tables cannot be rendered from (missing, or without a field a table needs)."""


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def fixed(value: float | None, decimals: int) -> str:
    """``value`` with ``decimals`` decimals and a true minus sign; ``-`` for none. Values that round to zero lose
    their sign."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", MINUS)


def significant(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, never in exponent notation below 10^digits."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return fixed(round(value, decimals), decimals)


def with_interval(entry: dict | None, decimals: int, scale: float = 1.0) -> str:
    """``{"value": v, "interval": [low, high]}`` (or ``"low"`` and ``"high"``) as ``v [low, high]``; the value
    alone where there is no interval."""
    if entry is None:
        return "-"
    value = entry["value"] * scale if entry.get("value") is not None else None
    interval = entry.get("interval", [entry.get("low"), entry.get("high")])
    if not interval or interval[0] is None or interval[1] is None:
        return fixed(value, decimals)
    low, high = (bound * scale for bound in interval)
    return f"{fixed(value, decimals)} [{fixed(low, decimals)}, {fixed(high, decimals)}]"


def magnitude(value: float) -> str:
    """Three significant digits, as ``2.85 × 10⁶`` from 10⁵ on."""
    if abs(value) < 1e5:
        return significant(value)
    exponent = math.floor(math.log10(abs(value)))
    return f"{fixed(value / 10**exponent, 2)} × 10{str(exponent).translate(SUPERSCRIPTS)}"


def exponent(value: float, digits: int = 2) -> str:
    """``2.1e-6``: a small number in exponent notation without padding zeros."""
    mantissa, power = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(power)}".replace("-", MINUS)


def seconds(value: float | None) -> str:
    """A time in seconds, three significant digits."""
    return significant(value, 3)


def duration(value: float) -> str:
    """A long time with its unit: seconds below 100 s, then minutes below 100 min, then hours."""
    if value < 100:
        return f"{significant(value)} s"
    if value < 6000:
        return f"{significant(value / 60, 2)} min"
    return f"{significant(value / 3600, 2)} h"


def memory(n_bytes: float | None) -> str:
    """Bytes as MiB, or GiB from 1,024 MiB on."""
    if n_bytes is None:
        return "-"
    mib = n_bytes / 2**20
    return f"{significant(mib / 1024, 2)} GiB" if mib >= 1024 else f"{significant(mib)} MiB"


def count(value: float) -> str:
    """A large count in k or M (three significant digits)."""
    if value >= 1e6:
        return f"{significant(value / 1e6)} M"
    if value >= 1e4:
        return f"{significant(value / 1e3)} k"
    return f"{value:.0f}"


def ratio(value: float) -> str:
    """A speed-up or cost factor: ``2.63×``, ``101×``."""
    return f"{significant(value)}×"


# --------------------------------------------------------------------------------------
# Result files
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One result file: where it lies and what it holds."""

    path: Path
    data: dict

    @property
    def name(self) -> str:
        """The path the documentation names it by (``benchmarks/results/<file>``)."""
        return f"benchmarks/results/{self.path.relative_to(RESULTS).as_posix()}"

    @property
    def results(self) -> Any:
        return self.data.get("results")

    def notes(self) -> str:
        return "\n".join(self.data.get("notes", []))


def load(file: str) -> Record:
    """``benchmarks/results/<file>``, read; a missing or unreadable file is an error naming it."""
    path = RESULTS / file
    if not path.is_file():
        raise RenderError(f"benchmarks/results/{file}: no such result file")
    try:
        return Record(path, json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise RenderError(f"benchmarks/results/{file}: not JSON ({error})") from None


def model_name(record: Record, role: str = "") -> str:
    """The registry name (``PRDiT-XS/6/4``) the record's notes give the model of ``role`` (``teacher``) or the
    first model they name."""
    pattern = rf"{role}\s+\S+\s+\((PRDiT-[\w]+/\d+/\d+)" if role else r"(PRDiT-[\w]+/\d+/\d+)"
    found = re.search(pattern, record.notes())
    if not found:
        raise RenderError(f"{record.name}: its notes name no {role or 'model'} (PRDiT-<size>/<patch>/<depth>)")
    return found.group(1)


def teacher_folder(record: Record) -> str:
    """The teacher's model folder as a distillation record's notes name it (a scratch folder whose weights are in
    git history: the folder that held them and the commit)."""
    found = re.search(r"teacher (\S+)", record.notes())
    if not found:
        raise RenderError(f"{record.name}: its notes name no teacher")
    if found.group(1) in FORMER_TEACHERS:
        commit, folder, _ = FORMER_TEACHERS[found.group(1)]
        return f"{folder}` at commit `{commit}"
    return found.group(1)


# --------------------------------------------------------------------------------------
# How to reproduce a result file
# --------------------------------------------------------------------------------------

# Result files named otherwise than the script that writes them.
SCRIPTS = {"adherence-xs4-cond": "conditional_reference"}
# Options a script has renamed since it wrote a record: (script, recorded argument) -> today's destination.
RENAMED = {("conditional_reference", "model"): "models"}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def script_parser(script: str) -> argparse.ArgumentParser:
    """The argument parser ``benchmarks/<script>.py`` builds in its ``main``, caught as it is asked to parse (so
    the script runs nothing)."""
    if script not in _PARSERS:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        module = importlib.import_module(f"benchmarks.{script}")

        def capture(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
            raise _Captured(parser)

        original = argparse.ArgumentParser.parse_args
        argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
        try:
            module.main([]) if inspect.signature(module.main).parameters else module.main()
        except _Captured as captured:
            _PARSERS[script] = captured.parser
        finally:
            argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        if script not in _PARSERS:
            raise RenderError(f"benchmarks/{script}.py: its main() parsed no command line")
    return _PARSERS[script]


def plain(value: Any) -> Any:
    """A parsed or default argument as the results record it: paths relative to the repository, tuples as lists."""
    if isinstance(value, Path):
        if value.is_absolute():
            with contextlib.suppress(ValueError):
                return value.relative_to(REPO).as_posix()
        return value.as_posix()
    if isinstance(value, str) and value.startswith(f"{REPO}/"):
        return value[len(f"{REPO}/"):]
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def _sampler_rows(rows: list) -> str:
    from benchmarks.sampler_quality import row_label

    return ",".join(row_label(sampler, schedule, steps, output=output) for sampler, schedule, steps, output in rows)


# Arguments whose text is not the generic join of their parsed value: (script, destination) -> formatter.
FORMATTERS: dict[tuple[str, str], Callable[[Any], str]] = {("sampler_quality", "rows"): _sampler_rows}


def _as_text(value: Any) -> str:
    """The generic command-line text of a parsed value: a list joined by commas, a row of a list by colons."""
    if isinstance(value, list):
        return ",".join(":".join(map(str, item)) if isinstance(item, list) else str(item) for item in value)
    return str(value)


def _option_words(script: str, action: argparse.Action, value: Any) -> list[str]:
    """The words that give ``action`` the recorded ``value``."""
    option = max(action.option_strings, key=len)
    if isinstance(action, argparse.BooleanOptionalAction):
        return [option if value else f"--no-{option[2:]}"]
    if action.nargs == 0:  # store_true, store_false, store_const
        return [option]
    if isinstance(action, argparse._AppendAction):
        return [word for item in value for word in (option, _as_text(item))]
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [option, *map(str, value)]
    return [option, FORMATTERS.get((script, action.dest), _as_text)(value)]


def script_command(record: Record, script: str, arguments: dict | None = None) -> str:
    """``python benchmarks/<script>.py`` with every recorded argument (or every one of ``arguments``) that is not
    the script's default, checked by parsing it back with the script's parser."""
    parser = script_parser(script)
    actions = {action.dest: action for action in parser._actions if action.option_strings and action.dest != "help"}
    arguments = record.data.get("arguments", {}) if arguments is None else arguments
    recorded = {RENAMED.get((script, key), key): value for key, value in arguments.items()}
    # --json: where the record lies now (where its script wrote it may have been a scratch file), unless that is
    # the script's default.
    default_json = f"benchmarks/results/{record.data.get('benchmark')}-{record.data.get('machine', {}).get('device')}.json"
    if "json" in recorded:
        recorded["json"] = None if record.name == default_json else record.name
    words, gone = [], []
    for dest, value in recorded.items():
        action = actions.get(dest)
        if action is None:
            gone.append(f"{dest}={value}")
        elif plain(value) != plain(action.default):
            words += _option_words(script, action, value)
    command = " ".join(["python", f"benchmarks/{script}.py", *(_quoted(word) for word in words)])
    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused):
            parsed = vars(parser.parse_args(words))
        wrong = [dest for dest in recorded if dest in actions and plain(parsed[dest]) != plain(recorded[dest])]
        why = f"it gives other {', '.join(wrong)}" if wrong else ""
    except SystemExit:
        why = f"it does not parse ({refused.getvalue().strip().splitlines()[-1]})"
    if why:
        raise RenderError(f"{record.name}: no command line of benchmarks/{script}.py gives the recorded arguments: "
                          f"`{command}`: {why}; add a formatter to FORMATTERS in tools/render_tables.py")
    if gone:
        command += f" (recorded by an earlier version of the script, with arguments it no longer takes: {', '.join(gone)})"
    return command


def _quoted(word: str) -> str:
    return word if re.fullmatch(r"[\w@%+=:,./-]+", word) else "'" + word.replace("'", "'\\''") + "'"


def reproduce(record: Record) -> str:
    """How to make the record again: the command it records, or its arguments as a command of its script."""
    results = record.results
    command = record.data.get("command") or (results.get("command") if isinstance(results, dict) else None)
    if command:
        return f"`{command}`"
    if "commands" in record.data:
        return f"the {len(record.data['commands'])} commands of its `commands` list, in order"
    benchmark = record.data["benchmark"]
    if benchmark == "distillation":
        return distillation_reproduce(record)
    return f"`{script_command(record, SCRIPTS.get(benchmark, benchmark))}`"


# distillation.py records the model folders it scored, and several were scratch folders, gone since.
# A student that ships: the result file -> its folder (the training record there must be the one the file holds).
SHIPPED_STUDENTS = {"distillation-cpu.json": "benchmarks/reference_model/distilled",
                    "distillation-pd-xs-cpu.json": "benchmarks/reference_model/xs/distilled-pd"}
# A teacher whose weights git keeps: the recorded folder -> (commit, the folder that held them there, what they are).
FORMER_TEACHERS = {"xs2/prdit": ("d2e8859", "benchmarks/reference_model/xs/prdit",
                                 "the XS weights of commit d2e8859, before their cosine anneal")}
# A student that is not kept, trained before a default it did not have: the overrides that train it as it was.
FORMER_DEFAULTS = {"distillation-pd-cpu.json": ["distill.ema_warmup=false"]}


def distillation_reproduce(record: Record) -> str:
    """How to make a distillation record again where it scored folders that are gone: a teacher from git history
    (where it lies once extracted, and the command that extracts it), a student from the folder it ships in or
    from ``distilled_model.py`` with the training record the file holds (run first, into a folder of its own)."""
    arguments = dict(record.data.get("arguments", {}))
    trained = record.results.get("distillation") if isinstance(record.results, dict) else None
    before, after = [], []
    teacher = str(arguments.get("teacher", ""))
    if teacher and not (REPO / teacher).exists():
        if teacher not in FORMER_TEACHERS:
            raise RenderError(f"{record.name}: its teacher {teacher} is no folder of the repository; say where its "
                              "weights are in FORMER_TEACHERS in tools/render_tables.py")
        commit, folder, what = FORMER_TEACHERS[teacher]
        arguments["teacher"] = f"{commit}/{folder}"
        after.append(f"teacher: {what} (recorded as the scratch folder `{teacher}`; `mkdir {commit} && git archive "
                     f"{commit} {folder} | tar -x -C {commit}` writes them where the command reads them)")
    student = str(arguments.get("student", ""))
    if not (REPO / student).exists():
        if not isinstance(trained, dict):
            raise RenderError(f"{record.name}: its student {student} is no folder of the repository and the file "
                              "holds no training record ('distillation') to make it again")
        shipped = SHIPPED_STUDENTS.get(record.path.name)
        if shipped:
            kept = json.loads((REPO / shipped / "training.json").read_text(encoding="utf-8"))
            if any(kept.get(key) != trained.get(key) for key in ("seconds", "steps", "final_loss")):
                raise RenderError(f"{record.name}: {shipped}/training.json is not the training record of its "
                                  f"student {student}")
            arguments["student"] = f"{shipped}/prdit"
        else:
            name = re.fullmatch(r"([\w.-]+)/prdit", student)
            out = name.group(1) if name else re.sub(r"^distillation-|-\w+$", "", record.path.stem)
            overrides = [*trained.get("overrides", []), *FORMER_DEFAULTS.get(record.path.name, [])]
            noted = re.search(r"distillation: \d+ (\w+) steps", record.notes())
            objective = trained.get("objective") or (noted.group(1).lower() if noted else None)
            if objective is None:
                raise RenderError(f"{record.name}: neither its training record nor its notes say the objective")
            if not any(item.startswith("distill.objective=") for item in overrides):
                overrides.insert(0, f"distill.objective={objective}")
            made = {"teacher": arguments.get("teacher"), "out": out, "steps": trained.get("steps"),
                    "threads": trained.get("threads", 1), "overrides": overrides}
            before.append(f"`{script_command(record, 'distilled_model', made)}` (makes the student, which was "
                          "not kept), then ")
            arguments["student"] = f"{out}/prdit"
    command = f"`{script_command(record, 'distillation', arguments)}`"
    return "".join(before) + command + "".join(f", {note}" for note in after)


def source_line(record: Record, which: str = "") -> str:
    """``Source: <file>; reproduce: <command>`` (``which``: the rows the file gave, where a table has several)."""
    return f"Source: `{record.name}`{f' ({which})' if which else ''}; reproduce: {reproduce(record)}"


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub/MkDocs pipe table (``|`` inside a cell escaped)."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(columns), "|" + "---|" * len(columns), *(line(row) for row in rows)])


def section(table: str, sources: Sequence[str], caption: str = "") -> str:
    """A table with its caption (bold, above) and source lines (below)."""
    return "\n\n".join([*([f"**{caption}**"] if caption else []), table, *sources]) + "\n"


# --------------------------------------------------------------------------------------
# Sample quality (sampler_quality.py, distillation.py)
# --------------------------------------------------------------------------------------

SAMPLER_NAMES = {"pc": "PC", "heun": "Heun", "euler": "Euler", "dpm++1": "DDIM", "dpm++2m": "DPM-Solver++ 2M",
                 "dpm++3m": "DPM-Solver++ 3M", "consistency": "consistency"}
OBJECTIVES = {"pd": "progressive distillation", "scd": "continuous-time consistency distillation (sCD)",
              "cd": "discrete-time consistency distillation"}


def quality_rows(entries: Sequence[dict], label: Callable[[dict], str]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of generated sets scored by ``prdit evaluate``'s metrics; a column no row has is left
    out."""
    def metric(entry: dict, key: str) -> dict | None:
        return (entry.get("metrics") or {}).get(key)

    def pair(entry: dict, first: str, second: str) -> str:
        a, b = metric(entry, first), metric(entry, second)
        return "-" if a is None or b is None else f"{fixed(a['value'], 2)} / {fixed(b['value'], 2)}"

    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("row (network calls)", lambda e: label(e)),
        ("s/volume", lambda e: seconds(e.get("seconds_per_volume")) if e["label"] != "real" else "-"),
        ("ODE error", lambda e: exponent(ode) if (ode := e.get("ode_error", e.get("ode_state_error"))) is not None
         else None),
        ("KID ×10³", lambda e: with_interval(metric(e, "kid_x1e3"), 1)),
        ("FID", lambda e: with_interval(metric(e, "fid_x1e3"), 1, scale=1e-3)),
        ("MMD", lambda e: with_interval(metric(e, "mmd"), 3)),
        ("precision", lambda e: with_interval(metric(e, "precision"), 2)),
        ("recall", lambda e: with_interval(metric(e, "recall"), 2)),
        ("density / coverage", lambda e: pair(e, "density", "coverage")),
        ("W(HU)", lambda e: with_interval(metric(e, "hu_wasserstein"), 1)),
        ("MS-SSIM", lambda e: with_interval(metric(e, "msssim"), 3)),
    ]
    cells = [[cell(entry) for _, cell in columns] for entry in entries]
    keep = [i for i in range(len(columns)) if any(row[i] not in (None, "-") for row in cells)]
    return [columns[i][0] for i in keep], [[row[i] if row[i] is not None else "-" for i in keep] for row in cells]


def _sampler_row_label(entry: dict) -> str:
    if entry["label"] == "real":
        return "real phantoms (the floor)"
    return f"`{entry['label']}` ({entry['network_calls']})"


def sampler_quality_entries(record: Record) -> list[dict]:
    """Every row of a sampler_quality.py record, the floor last."""
    results = record.results
    if not isinstance(results, list) or not all("label" in entry and "metrics" in entry for entry in results):
        raise RenderError(f"{record.name}: expected sampler_quality.py's list of rows with 'label' and 'metrics'")
    return results


def distillation_entries(record: Record) -> list[dict]:
    """Every row of a distillation.py record, the floor last."""
    results = record.results
    if not isinstance(results, dict) or "rows" not in results:
        raise RenderError(f"{record.name}: expected distillation.py's results with 'rows'")
    return results["rows"]


def headline() -> str:
    """The shipped reference model's default sampler and its fast alternatives, with the 4-call student."""
    from prdit.diffusion.ian import IaNDiffusion

    default = f"{IaNDiffusion.default_sampler}@{IaNDiffusion.sample_steps}"
    record = load("sampler_quality-xs4-cpu.json")
    entries = {entry["label"]: entry for entry in sampler_quality_entries(record)}
    wanted = [default] + [label for label in ("pc@100", "pc@50", "heun@25", "dpm++2m@25") if label != default]
    missing = [label for label in wanted + ["real"] if label not in entries]
    if missing:
        raise RenderError(f"{record.name}: no rows {missing}")
    name = model_name(record)

    def row(model: str, entry: dict, sampler: str) -> list[str]:
        metrics = entry["metrics"]
        return [model, sampler, str(entry.get("network_calls", "-")), with_interval(metrics["kid_x1e3"], 1),
                with_interval(metrics["precision"], 2), with_interval(metrics["recall"], 2),
                seconds(entry.get("seconds_per_volume"))]

    rows = []
    for label in wanted:
        entry = entries[label]
        sampler = f"{SAMPLER_NAMES.get(entry['sampler'], entry['sampler'])}, {entry['steps']} steps"
        rows.append(row(name, entry, sampler + (" (default)" if label == default else "")))
    sources = [source_line(record)]
    student_file = RESULTS / "distillation-pd-xs-cpu.json"
    if student_file.exists():
        student_record = load(student_file.name)
        students = [e for e in distillation_entries(student_record) if e["label"].startswith("student")
                    and e.get("network_calls") == 4]
        if not students:
            raise RenderError(f"{student_record.name}: no 4-call student row")
        student = students[0]
        teacher = model_name(student_record, "teacher")
        rows.append(row(f"4-step student of {teacher} (progressive distillation)", student,
                        f"{SAMPLER_NAMES.get(student['sampler'], student['sampler'])}, {student['steps']} steps"))
        sources.append(source_line(student_record, "the student"))
    real = row("real phantoms (the floor)", entries["real"], "-")
    rows.append(real[:2] + ["-"] + real[3:6] + ["-"])
    columns = ["model", "sampler", "network calls", "KID ×10³", "precision", "recall", "s/volume"]
    return section(markdown_table(columns, rows), sources)


def quality_section(records: Sequence[tuple[Record, list[dict]]], label: Callable[[dict], str],
                    caption: str) -> str:
    """One table of the rows of several records of the same model and real set: each record's rows in order (a
    label seen before is left out), then the floor of the first record that has one; a source line per record,
    naming its rows where there are several records."""
    rows, floor, given, shown = [], None, [], set()
    for record, entries in records:
        labels = []
        for entry in entries:
            if entry["label"] == "real":
                floor = floor or entry
            elif label(entry) not in shown:
                shown.add(label(entry))
                rows.append(entry)
                labels.append(entry["label"])
        given.append((record, labels))
    columns, cells = quality_rows(rows + ([floor] if floor else []), label)
    sources = [source_line(record, ", ".join(labels) if len(records) > 1 else "") for record, labels in given]
    return section(markdown_table(columns, cells), sources, caption)


# The sampler tables, one per reference model: its result files in the order of their rows.
SAMPLER_TABLES = [
    ("sampler_quality-pc-cpu.json", "sampler_quality-ode25-cpu.json", "sampler_quality-euler50-cpu.json"),
    ("sampler_quality-xsanneal-pc25-cpu.json", "sampler_quality-xsanneal-pc100-cpu.json",
     "sampler_quality-xsanneal-ode25-cpu.json"),
    ("sampler_quality-xs4-cpu.json",),
]


def sampler_quality() -> str:
    """Quality against network calls on each reference model, every row of its sampler records."""
    parts = []
    for files in SAMPLER_TABLES:
        records = [load(file) for file in files]
        arguments = records[0].data["arguments"]
        real = (f"{arguments['real_phantoms']} fresh phantoms" if arguments.get("real") is None
                else f"`{arguments['real']}`")
        model = re.search(r"\(([\w/.-]+/prdit)\)", records[0].notes())
        where = f" (`{model.group(1)}`)" if model and (REPO / model.group(1)).is_dir() else ""
        caption = f"{model_name(records[0])}{where}: {arguments['num']} volumes a row against {real}"
        parts.append(quality_section([(record, sampler_quality_entries(record)) for record in records],
                                     _sampler_row_label, caption))
    return "\n".join(parts)


# The distillation tables, one per teacher: its result files in the order of their rows.
DISTILLATION_TABLES = [
    ("distillation-cpu.json", "distillation-pd-cpu.json"),
    ("distillation-pd-xs-cpu.json",),
    ("distillation-scd-xs-cpu.json",),
]
SHORT_OBJECTIVES = {"scd": "sCD", "pd": "PD", "cd": "CD"}


def distillation() -> str:
    """Each distilled student against its teacher's rows, one table per teacher."""
    parts = []
    for files in DISTILLATION_TABLES:
        records, students = [load(file) for file in files], []
        for record in records:
            steps = re.search(r"distillation: (\d+) (\w+) steps", record.notes())
            if not steps:
                raise RenderError(f"{record.name}: its notes do not say 'distillation: <N> <objective> steps'")
            objective = SHORT_OBJECTIVES.get(steps.group(2).lower(), steps.group(2))
            students.append((record, objective, int(steps.group(1))))

        def shown(entry: dict, objective: str) -> str:
            who, _, rest = entry["label"].partition(" ")
            who = f"{objective} student" if who == "student" else who
            return f"{who} `{rest}` ({entry['network_calls']})"

        entries = [(record, [{**entry, "shown": shown(entry, objective)} if entry["label"] != "real" else entry
                             for entry in distillation_entries(record)]) for record, objective, _ in students]
        teachers = {f"{model_name(record, 'teacher')} (`{teacher_folder(record)}`)" for record in records}
        trained = "; ".join(f"{steps:,} {objective} steps" for _, objective, steps in students)
        caption = f"Teacher {', '.join(sorted(teachers))}; student{'s' if len(students) > 1 else ''}: {trained}"
        parts.append(quality_section(entries, lambda entry: entry.get("shown", "real phantoms (the floor)"),
                                     caption))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# Label maps (conditional_reference.py, reference_segmenter.py)
# --------------------------------------------------------------------------------------


ADHERENCE_256 = "adherence-xs4-cond-256-cpu.json"
"""The acceptance run of the conditional reference model (256 maps), a table of its own."""


def adherence(files: list[Path] | None = None) -> str:
    """Every row of every adherence record but the 256-map acceptance run: HU inside the real range, segmenter
    Dice against its ceiling, the lungs, the mask-swap gap (and KID, precision and recall where recorded)."""
    files = [p for p in sorted(RESULTS.glob("adherence-*.json")) if p.name != ADHERENCE_256] if files is None else files
    if not files:
        raise RenderError("benchmarks/results/adherence-*.json: no adherence record")
    parts = []
    for path in files:
        record = load(path.name)
        entries = record.results
        if not isinstance(entries, list) or not all("row" in entry for entry in entries):
            raise RenderError(f"{record.name}: expected conditional_reference.py's list of rows with 'row'")
        lungs = list(dict.fromkeys(name for entry in entries for name in entry.get("lungs", {})))
        short = "/".join(name.removeprefix("lung_")[:1].upper() for name in lungs)
        columns: list[tuple[str, Callable[[dict], str]]] = [
            ("row", lambda e: e["row"]),
            ("HU inside the real range", lambda e: with_interval(e.get("hu_inside"), 1, scale=100) + " %"
             if e.get("hu_inside") else "-"),
            ("Dice", lambda e: with_interval(e.get("dice"), 3)),
            ("ceiling", lambda e: with_interval(e.get("dice_ceiling"), 3)),
            ("Dice / ceiling", lambda e: fixed(e.get("dice_fraction_of_ceiling"), 2)),
            (f"lungs {short}", lambda e: " / ".join(fixed(e["lungs"][n]["generated"]["value"], 3) for n in lungs)
             if e.get("lungs") else "-"),
            (f"lungs {short} / ceiling", lambda e: " / ".join(fixed(e["lungs"][n]["fraction_of_ceiling"], 2)
                                                              for n in lungs) if e.get("lungs") else "-"),
            ("mask-swap gap", lambda e: with_interval(e.get("mask_swap_gap"), 3)),
        ]
        if any("quality" in entry for entry in entries):  # KID and precision/recall against the real set
            columns += [(title, lambda e, key=key, decimals=decimals: with_interval(e["quality"].get(key), decimals)
                         if e.get("quality") else "-")
                        for title, key, decimals in (("KID ×10³", "kid_x1e3", 1), ("precision", "precision", 2),
                                                     ("recall", "recall", 2))]
        rows = [[cell(entry) for _, cell in columns] for entry in entries]
        caption = model_name(record) if len(files) > 1 and re.search(r"PRDiT-", record.notes()) else ""
        parts.append(section(markdown_table([name for name, _ in columns], rows), [source_line(record)], caption))
    return "\n".join(parts)


def adherence_256() -> str | None:
    """The conditional reference model's acceptance run (256 maps), absent until measured."""
    path = RESULTS / ADHERENCE_256
    return adherence([path]) if path.exists() else None


def reference_segmenter() -> str:
    """The reference segmenter's Dice per label on held-out phantoms, and the mean that is its ceiling."""
    record = load("reference_segmenter-cpu.json")
    held_out = record.results["held_out"]
    in_mean = set(held_out["mean_labels"])
    rows = [[f"`{label}`", fixed(entry["dice"], 3), str(entry["volumes"]), significant(entry["voxels_per_volume"]),
             "yes" if label in in_mean else "no"]
            for label, entry in held_out["dice"].items() if label != "background"]
    rows.append([f"mean of the {len(in_mean)} labels with Dice ≥ {held_out['mean_threshold']}",
                 f"**{fixed(held_out['mean_dice'], 3)}**", str(held_out["phantoms"]), "-", "-"])
    columns = ["label", "Dice", "volumes", "voxels / volume", "in the mean"]
    return section(markdown_table(columns, rows), [source_line(record)])


def downstream_segmentation() -> str | None:
    """Segmenters trained on real, real + synthetic and synthetic pairs, by arm and n: mean Dice with its interval,
    the comparisons against their targets, and Dice per label (absent until measured)."""
    path = RESULTS / "downstream_segmentation-cpu.json"
    if not path.exists():
        return None
    record = load(path.name)
    results = record.results
    arms = results.get("arms") if isinstance(results, dict) else None
    if not arms or not all("arm" in entry and "n" in entry and "mean_dice" in entry for entry in arms):
        raise RenderError(f"{record.name}: expected downstream_segmentation.py's results.arms with 'arm', 'n' and "
                          "'mean_dice'")
    reference = results.get("reference_segmenter")

    def pairs(entry: dict) -> str:
        return " + ".join(f"{entry[key]} {kind}" for key, kind in (("real_pairs", "real"),
                                                                    ("synthetic_pairs", "synthetic")) if entry.get(key))

    summary = [[str(entry["n"]), f"{entry['arm']}: {entry.get('training', '')}".rstrip(": "), pairs(entry),
                with_interval(entry["mean_dice"], 3),
                seconds((entry.get("seconds") or {}).get("training"))] for entry in arms]
    if reference:
        trained = (reference.get("trained_on") or {}).get("phantoms", "?")
        summary.append(["-", "the reference segmenter", f"{trained} real", with_interval(reference["mean_dice"], 3),
                        "-"])
    parts = [section(markdown_table(["n", "training arm", "training pairs", "mean Dice", "training s"], summary),
                     [source_line(record)], "Mean Dice on the held-out phantoms")]
    comparisons = results.get("comparisons") or []
    if comparisons:
        def verdict(entry: dict | None) -> str:
            if entry is None:
                return "-"
            holds = "" if entry.get("holds") is None else " (holds)" if entry["holds"] else " (does not hold)"
            # "interval" there is the verdict on the interval (e.g. "interval above the target"), not its bounds
            bounds = {key: entry.get(key) for key in ("value", "low", "high")}
            return with_interval(bounds, 3) + holds

        rows = [[str(c["n"]), verdict(c.get("synthetic_over_real")), verdict(c.get("mixed_minus_real"))]
                for c in comparisons]
        parts.append(section(markdown_table(["n", "(c) / (a)", "(b) − (a)"], rows), [source_line(record)],
                             "Synthetic against real training pairs, paired intervals"))
    columns = [f"{entry['arm']}, n = {entry['n']}" for entry in arms] + (["reference"] if reference else [])
    labelled = arms + ([reference] if reference else [])
    labels = list(dict.fromkeys(name for entry in labelled for name in entry.get("dice", {})))
    rows = [[f"`{name}`", *(fixed((entry.get("dice", {}).get(name) or {}).get("value"), 3) for entry in labelled)]
            for name in labels]
    if labels:
        parts.append(section(markdown_table(["label", *columns], rows), [source_line(record)], "Dice per label"))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# Inverse problems (inverse_problems.py)
# --------------------------------------------------------------------------------------

TASKS = {"sr": "×4 super-resolution", "infill": "infill (centre cube)", "deblur": "deblur",
         "xray": "X-ray → CT, two views"}
BASELINES = {"sr": "trilinear", "infill": "mean fill", "deblur": "blurred input", "xray": "back-projection"}


def inverse_problems() -> str:
    """Guided reconstruction against each task's classical baseline; a later file's row replaces an earlier
    file's row of the same task and step count (re-measurements)."""
    rows: dict[tuple[str, int], tuple[dict, Record]] = {}
    records = [load(file) for file in ("inverse_problems-cpu.json", "inverse_problems-infill-cpu.json",
                                       "inverse_problems-xray-100-cpu.json")]
    for record in records:
        for entry in record.results:
            rows[(entry["task"], entry["steps"])] = (entry, record)
    order = sorted(rows, key=lambda key: (list(TASKS).index(key[0]) if key[0] in TASKS else len(TASKS), -key[1]))
    table = []
    for key in order:
        entry, _ = rows[key]
        ours, base = entry["mean"]["reconstruction"], entry["mean"]["baseline"]
        task = entry["task"]
        table.append([TASKS.get(task, task), f"{entry['steps']:,}", fixed(ours["psnr"], 2),
                      f"{fixed(base['psnr'], 2)} ({BASELINES.get(task, 'baseline')})", fixed(ours["ssim"], 3),
                      fixed(base["ssim"], 3), seconds(entry["seconds_per_reconstruction"])])
    sources = []
    for record in records:
        given = [f"{task} @ {steps}" for (task, steps), (_, source) in rows.items() if source is record]
        if given:
            sources.append(source_line(record, ", ".join(given)))
    columns = ["task", "steps", "PSNR ours", "PSNR baseline", "SSIM ours", "SSIM baseline", "s / reconstruction"]
    return section(markdown_table(columns, table), sources)


# --------------------------------------------------------------------------------------
# Cost (train_step.py, sampling.py, attention_scaling.py, forward_memory.py, conditioning_cost.py,
# torchrun_scaling.py, efficiency.py, evaluation_speed.py)
# --------------------------------------------------------------------------------------


def train_step() -> str:
    """Training-step time and memory of PRDiT against the voxel-space U-Net."""
    record = load("train_step-cpu.json")
    rows = []
    for entry in record.results:
        params = f"{significant(entry['parameters'] / 1e6)} M"
        if entry["trainable"] != entry["parameters"]:
            params += f" ({significant(entry['trainable'] / 1e6)} M)"
        rows.append([entry["model"], f"{entry['size']}³", params, seconds(entry["median_s"]),
                     count(entry["voxels_per_s"]), memory(entry["peak_bytes"]), ratio(entry["unet_time_ratio"])])
    columns = ["model", "volume", "parameters (trainable)", "step s", "voxels/s", "peak memory", "speed-up"]
    return section(markdown_table(columns, rows), [source_line(record)])


def sampling_speed() -> str:
    """Seconds per sampler step and per 1,000-step volume, PRDiT against the U-Net."""
    record = load("sampling-cpu.json")
    rows = [[entry["model"], f"{entry['size']}³", f"{significant(entry['parameters'] / 1e6)} M",
             seconds(entry["median_step_s"]), duration(entry["seconds_per_volume"]), memory(entry["peak_bytes"])]
            for entry in record.results]
    steps = {entry["target_steps"] for entry in record.results}
    columns = ["model (sampler)", "volume", "parameters", "s/step", f"{'/'.join(f'{s:,}' for s in steps)}-step volume",
               "peak memory"]
    return section(markdown_table(columns, rows), [source_line(record)])


def attention_scaling() -> str:
    """One DiT block's memory and time by token count, fused attention against explicit softmax attention."""
    record = load("attention_scaling-cpu.json")
    rows = []
    for entry in record.results:
        status = entry["status"]
        if status != "ok":
            status = (f"not run: estimated {memory(entry['estimated_bytes'])}, {memory(entry['available_bytes'])} "
                      f"available")
        rows.append([f"{entry['tokens']:,}", entry["attention"], memory(entry["estimated_bytes"]),
                     memory(entry.get("peak_bytes")), seconds(entry.get("median_s")), status])
    columns = ["tokens", "attention", "estimated memory", "peak memory", "time s", "status"]
    return section(markdown_table(columns, rows), [source_line(record)])


def forward_memory() -> str:
    """One network call (one sampler step) of the B model by volume size, and what 1,000 of them take."""
    records = [load("forward_memory-cpu.json"), load("forward_memory-256-cpu.json")]
    rows = [[entry["model"], f"{entry['size']}³", f"{entry['tokens']:,}", seconds(entry["median_s"]),
             memory(entry["peak_bytes"]), memory(entry["weights_bytes"]), duration(1000 * entry["median_s"])]
            for record in records for entry in record.results]
    columns = ["model", "volume", "tokens", "s/step", "peak memory", "of it weights", "1,000 steps"]
    return section(markdown_table(columns, rows), [source_line(record) for record in records])


def conditioning_cost() -> str:
    """Training-step time of label-map conditioning against the unconditional model."""
    record = load("conditioning_cost-cpu.json")
    rows = [[entry["model"], entry["conditioning"], f"{significant(entry['parameters'] / 1e6)} M",
             f"{significant(entry['trainable'] / 1e6)} M", seconds(entry["median_s"]), ratio(entry["time_ratio"])]
            for entry in record.results]
    columns = ["model", "conditioning", "parameters", "trainable", "step s", "× unconditional"]
    return section(markdown_table(columns, rows), [source_line(record)])


def torchrun_scaling() -> str:
    """The whole command as one process and as a torchrun job, and whether the results are the same."""
    record = load("torchrun_scaling-cpu.json")
    processes = sorted({entry["processes"] for entry in record.results})
    rows = []
    for command in dict.fromkeys(entry["command"] for entry in record.results):
        entries = {entry["processes"]: entry for entry in record.results if entry["command"] == command}
        first = entries[processes[0]]
        work = (f"{first['volumes']} volumes" if command == "sample"
                else f"{first['volumes'] // 2} + {first['volumes'] // 2} volumes")
        last = entries[processes[-1]]
        if "identical_files" in last:
            same = f"{last['identical_files']}/{last['files']} files bit-identical"
        else:
            same = f"within {exponent(last['largest_relative_difference'])} relative ({last['where']})"
        rows.append([f"`prdit {command}`", work, *(seconds(entries[p]["seconds"]) if p in entries else "-"
                                                   for p in processes), same])
    columns = ["command", "work", *(f"{p} process{'es' if p > 1 else ''} (s)" for p in processes), "same result"]
    return section(markdown_table(columns, rows), [source_line(record)])


def efficiency() -> str:
    """FLOPs of a training step over its time, as a fraction of a large matmul's rate on the same machine."""
    record = load("efficiency-cpu.json")
    matmul = record.results["matmul"]["flops_per_s"]
    rows = [[entry["model"], f"{entry['size']}³", significant(entry["flops_per_step"] / 1e9),
             seconds(entry["median_s"]), significant(entry["achieved_flops"] / 1e9),
             f"{entry['fraction_of_matmul'] * 100:.0f} %"] for entry in record.results["models"]]
    columns = ["model", "volume", "GFLOP / step", "step s", "GFLOP/s",
               f"of the matmul rate ({significant(matmul / 1e9)} GFLOP/s)"]
    return section(markdown_table(columns, rows), [source_line(record)])


def evaluation_speed() -> str:
    """Seconds of each evaluation statistic and of its bootstrap; the memorisation search and its projection."""
    record = load("evaluation_speed-cpu.json")
    labels = [row[0].replace(" x ", " × ").replace("^3", "³") for row in record.data["table"]["rows"]]
    resamples = record.data["arguments"]["bootstrap"]
    rows = []
    for label, entry in zip(labels, record.results):
        if "projected_1000x1000_128_s" in entry:  # evaluation_speed.py projects 2,000 x 1,000 volumes under this key
            value = record.data["table"]["rows"][labels.index(label)][-1].split(":")[0]
            value = value.replace(" x ", " × ").replace("^3", "³")
            rows.append([label, seconds(entry["seconds"]), "-", "-",
                         f"{value}: {duration(entry['projected_1000x1000_128_s'])}"])
            continue
        bootstrap = entry.get("bootstrap_s")
        interval = entry.get("interval")
        if "value" not in entry:
            value = "(per-volume values)"
        elif interval and None not in interval:
            value = f"{significant(entry['value'], 3)} [{significant(interval[0], 3)}, {significant(interval[1], 3)}]"
        else:
            value = f"{significant(entry['value'], 4)} (no interval)"
        rows.append([label, seconds(entry.get("point_s")), seconds(bootstrap),
                     significant(bootstrap / resamples * 1e3, 2) if bootstrap is not None else "-", value])
    columns = ["statistic", "point s", f"bootstrap s (B = {resamples})", "ms / resample", "value [95 % interval]"]
    return section(markdown_table(columns, rows), [source_line(record)])


# --------------------------------------------------------------------------------------
# Features and memorisation (feature_separation.py, the memorisation check)
# --------------------------------------------------------------------------------------

CORRUPTIONS = {"noise": ("noise σ", lambda level: f"{level:g}", " HU"),
               "blur": ("blur σ", lambda level: f"{level:g}", " voxels"),
               "shuffle": ("blocks shuffled", lambda level: f"{level * 100:g}", " %")}


def feature_separation() -> str:
    """FID(real, corrupted) / FID(real, clean) per feature network and corruption (1: not seen), then the
    networks' extraction time and memory by volume size."""
    parts = []
    for file in ("feature_separation-cpu.json", "feature_separation-64-cpu.json"):
        record = load(file)
        separation = record.results["separation"]
        kinds = list(dict.fromkeys(kind for entry in separation.values() for kind in entry["ratios"]))
        columns, rows = ["network", "FID real vs clean"], {}
        for kind in kinds:
            title, level, unit = CORRUPTIONS.get(kind, (kind, str, ""))
            levels = [item["level"] for item in next(iter(separation.values()))["ratios"][kind]]
            columns.append(f"{title} {' / '.join(level(value) for value in levels)}{unit}")
        for network, entry in separation.items():
            rows[network] = [f"`{network}`", magnitude(entry["fid_clean"])] + [
                " / ".join(significant(item["ratio"]) for item in entry["ratios"][kind])
                + ("" if entry["monotonic"][kind] else " (not monotonic)") for kind in kinds]
        arguments = record.data["arguments"]
        caption = f"{arguments['size']}³, {arguments['volumes']} phantoms per set"
        parts.append(section(markdown_table(columns, rows.values()), [source_line(record)], caption))
        timing = record.results.get("timing") or {}
        if timing:
            rows_t = [[f"`{key.split('@')[0]}`", f"{key.split('@')[1]}³", seconds(value["seconds"]),
                       memory(value["peak_bytes"])] for key, value in timing.items()]
            parts.append(section(markdown_table(["network", "volume", "s / volume", "peak memory"], rows_t),
                                 [source_line(record)], "Feature extraction, one volume, one thread"))
    return "\n".join(parts)


def memorisation() -> str:
    """The memorisation check on a model trained long on 4 phantoms: held-out and generated similarity to the
    training set, and what each test flags."""
    record = load("memorisation_check-cpu.json")
    check = record.data["memorisation"]
    generated = check["generated_volumes"]
    rows = []
    for key, name in (("correlation", f"voxel correlation, ±{check['correlation']['shift_voxels']} voxel "
                                       f"({check['correlation']['translations']} translations)"),
                      ("features", "feature distance")):
        test = check[key]
        decimals = 3 if key == "correlation" else 2

        def spread(side: dict) -> str:
            return (f"{fixed(side['median'], decimals)} [{fixed(side['min'], decimals)}, "
                    f"{fixed(side['max'], decimals)}]")

        rows.append([name, f"{fixed(test['threshold'], decimals)} ({test['threshold_from']})",
                     spread(test["held_out"]), spread(test["generated"]), f"{test['flagged']} of {generated}"])
    columns = ["test", "threshold", f"{check['held_out_volumes']} held-out volumes: median [min, max]",
               f"{generated} generated volumes: median [min, max]", "flagged"]
    caption = (f"{generated} samples of a model trained on {check['training_volumes']} phantoms, against "
               f"{check['held_out_volumes']} fresh phantoms")
    return section(markdown_table(columns, rows), [source_line(record)], caption)


# --------------------------------------------------------------------------------------
# All tables, and the files that show them
# --------------------------------------------------------------------------------------

TABLES: dict[str, Callable[[], str | None]] = {
    "headline": headline,
    "sampler-quality": sampler_quality,
    "distillation": distillation,
    "adherence": adherence,
    "adherence-256": adherence_256,
    "reference-segmenter": reference_segmenter,
    "conditioning-cost": conditioning_cost,
    "inverse-problems": inverse_problems,
    "train-step": train_step,
    "sampling-speed": sampling_speed,
    "attention-scaling": attention_scaling,
    "forward-memory": forward_memory,
    "torchrun-scaling": torchrun_scaling,
    "feature-separation": feature_separation,
    "evaluation-speed": evaluation_speed,
    "memorisation": memorisation,
    "efficiency": efficiency,
    "downstream-segmentation": downstream_segmentation,
}


def render_all() -> dict[str, str]:
    """Every table whose result files exist, by name."""
    rendered = {name: render() for name, render in TABLES.items()}
    return {name: text for name, text in rendered.items() if text is not None}


def marked_files(root: Path = REPO) -> list[Path]:
    """The markdown files that may hold marked tables: README.md, docs/**/*.md (but docs/tables/), benchmarks'."""
    candidates = [root / "README.md", *sorted((root / "docs").rglob("*.md")),
                  *sorted((root / "benchmarks").glob("*.md")), *sorted((root / "benchmarks" / "results").rglob("*.md"))]
    tables = root / "docs" / "tables"
    return [path for path in candidates if path.is_file() and tables not in path.parents]


def fill_markers(text: str, tables: dict[str, str], where: str) -> str:
    """``text`` with the region between each ``<!-- table: NAME -->`` and ``<!-- /table -->`` replaced by table
    NAME; a name that is no table is an error (a table whose files are absent keeps its region as it is)."""
    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise RenderError(f"{where}: <!-- table: {name} --> names no table (known: {', '.join(TABLES)})")
        if name not in tables:
            return match.group(0)
        return f"{match.group(1)}\n{tables[name]}\n{match.group(4)}"

    return MARKED.sub(replace, text)


def expected_files(root: Path = REPO) -> dict[Path, str]:
    """Every file the tables decide: docs/tables/<name>.md and each markdown file with marked tables, with the
    content it should have."""
    tables = render_all()
    expected = {root / "docs" / "tables" / f"{name}.md": text for name, text in tables.items()}
    for path in marked_files(root):
        text = path.read_text(encoding="utf-8")
        if MARKED.search(text):
            expected[path] = fill_markers(text, tables, path.relative_to(root).as_posix())
    return expected


def stale(root: Path = REPO) -> list[str]:
    """What differs from the JSON: each file whose tables are out of date (with the tables), and each file in
    docs/tables/ that no table writes."""
    problems = []
    tables = render_all()
    for path, text in expected_files(root).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        where = path.relative_to(root).as_posix()
        if path.parent == root / "docs" / "tables":
            problems.append(f"{where}: {'missing' if current is None else 'out of date'}")
        else:
            names = [m.group(2) for m in MARKED.finditer(current) if m.group(2) in tables
                     and m.group(0) != f"{m.group(1)}\n{tables[m.group(2)]}\n{m.group(4)}"]
            problems.append(f"{where}: marked table(s) out of date: {', '.join(names)}")
    known = {f"{name}.md" for name in TABLES}
    problems += [f"{path.relative_to(root).as_posix()}: no table of this name (known: {', '.join(TABLES)})"
                 for path in sorted((root / "docs" / "tables").glob("*.md")) if path.name not in known]
    return problems


def write(root: Path = REPO) -> list[Path]:
    """Rewrite every file whose tables differ from the JSON; returns the files written."""
    written = []
    for path, text in expected_files(root).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 listing every stale table")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = stale()
            for problem in problems:
                print(problem)
            return 1 if problems else 0
        for path in write():
            print(f"wrote {path.relative_to(REPO).as_posix()}")
    except RenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
