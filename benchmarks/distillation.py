"""Few-step generation: the distilled reference model at 1, 2 and 4 steps against its teacher's samplers.

The student is a model folder of ``distilled_model.py`` (docs/method.md §18; a consistency model of sCD or CD
is sampled by its re-noising steps, an IaN student of progressive distillation by DDIM, ``dpm++1``); the teacher rows are the reference model at PC@50, PC@100, PC@250 and its
deterministic Heun sampler at 25 steps (49 network calls), or ``--teacher-rows``. Every row is scored as
``sampler_quality.py`` scores it
(``--num`` generated volumes against the same fresh phantoms, KID/FID/MMD/precision/recall/density/coverage
on the CT-pretrained features, W(HU) and MS-SSIM, each with its bootstrap 95 % interval) and shares its
cache, so the teacher rows sampled there are read, not sampled again. Then each student row is judged
against each teacher row: *separates* where the 95 % intervals are disjoint. Seconds per volume are as
sampled (cached rows keep theirs); the distillation's own cost comes from its ``training.json``.

    python benchmarks/distilled_model.py && python benchmarks/distillation.py
    python benchmarks/distillation.py --student /tmp/distilled/prdit --num 64
    python benchmarks/distillation.py --student /tmp/pd/prdit --student-steps 4 --teacher-rows dpm++1:64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import sampler_quality as sq
from benchmarks.common import (add_common_args, parse_int_list, report, resolve_device, set_threads,
                               smoke_model_folder)

NAME = "distillation"
STUDENT = sq.REFERENCE / "distilled" / "prdit"
TEACHER_ROWS = "pc:50,pc:100,pc:250,heun:25"
STUDENT_STEPS = "1,2,4"


def parse_rows(text: str) -> list[tuple[str, int]]:
    """``"pc:50,heun:25"`` -> ``[("pc", 50), ("heun", 25)]``."""
    return [(name, int(steps)) for name, steps in (part.split(":") for part in text.split(",") if part.strip())]


def main(argv: list[str] | None = None) -> None:
    from prdit.evaluation.config import BootstrapConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=sq.DEFAULT_MODEL, help="the IaN model folder")
    parser.add_argument("--student", type=Path, default=STUDENT, help="its distilled model folder")
    parser.add_argument("--teacher-rows", type=parse_rows, default=parse_rows(TEACHER_ROWS),
                        help=f"the teacher's sampler:steps rows (default {TEACHER_ROWS})")
    parser.add_argument("--student-steps", type=parse_int_list, default=parse_int_list(STUDENT_STEPS),
                        help=f"the student's step counts (default {STUDENT_STEPS})")
    parser.add_argument("--num", type=int, default=sq.NUM, help="generated volumes per row")
    parser.add_argument("--batch", type=int, default=8, help="volumes sampled together")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated volumes (same for every row)")
    parser.add_argument("--bootstrap", type=int, default=BootstrapConfig.resamples, help="bootstrap resamples")
    parser.add_argument("--cache", type=Path, default=sq.CACHE, help="sampler_quality.py's cache")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        run(args, parser, device, Path(scratch))


def recorded_overrides(training: dict | None) -> list[str]:
    """The config overrides of a distillation's ``training.json``, its objective first: the overrides omit an
    objective that was the default, and the default may have changed since."""
    if training is None:
        return []
    objective = [f"distill.objective={training['objective']}"] if "objective" in training else []
    return [*objective, *training["overrides"]]


def step_costs(teacher: Path, device, overrides: list[str], batch: int = 8, rounds: int = 5) -> dict:
    """Seconds of one training step (IaN loss, forward and backward) and one distillation step (the objective of
    the distillation ``overrides``: teacher calls, the JVP of sCD or the target of CD/PD, student forward and
    backward) of the teacher's network on ``batch`` random volumes, timed in alternating rounds (median), so
    that a busy machine slows both alike; and their ratio."""
    import statistics
    import time

    import torch

    from benchmarks.common import synchronize
    from prdit.diffusion import IaNDiffusion, create_process
    from prdit.model_folder import load_model_folder
    from prdit.training.cli import distill_config
    from prdit.training.distill import distill_objective

    config = distill_config("phantoms-tiny-distill", teacher, ["data.train=unused", *overrides])
    student = load_model_folder(teacher, device=device).model.train()
    process = IaNDiffusion()
    objective = distill_objective(config, student, create_process(config.process.kind, **config.process.settings),
                                  device)
    objective.step = 10**9  # past any warm-up: sCD's full tangent, progressive distillation's last round
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand((batch, 1, *student.config.input_size), generator=generator, device=device) * 2 - 1

    def training() -> None:
        process.training_losses(student, x0, generator=generator)["loss"].backward()

    def distillation() -> None:
        t = objective.sample_time(batch, device, generator)
        objective.training_losses(student, x0, t, objective.sample_noise(x0.shape, device, generator))["loss"].backward()

    times: dict[str, list[float]] = {"training": [], "distillation": []}
    for _ in range(rounds + 1):
        for name, step in (("training", training), ("distillation", distillation)):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values[1:]) for name, values in times.items()}  # the first round warms up
    return {"objective": config.distill.objective, "batch": batch, "rounds": rounds,
            "training_step_s": median["training"], "distillation_step_s": median["distillation"],
            "ratio": median["distillation"] / median["training"]}


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, device, scratch: Path) -> None:
    from prdit.evaluation.config import BootstrapConfig, EvaluationConfig
    from prdit.evaluation.ct_resnet import weights_installed
    from prdit.generation.pipeline import PRDiTPipeline

    if args.smoke:
        teacher = smoke_model_folder(scratch / "teacher", spacing=(2.0, 2.0, 2.0))
        student = smoke_model_folder(scratch / "student", "consistency", spacing=(2.0, 2.0, 2.0))
        num, cache, teacher_rows = 8, scratch / "cache", (("pc", 4), ("heun", 2))
    else:
        teacher, student, num, cache = args.teacher, args.student, args.num, args.cache
        teacher_rows = args.teacher_rows
    for folder, how in ((teacher, "benchmarks/reference_model.py"), (student, "benchmarks/distilled_model.py")):
        if not folder.is_dir():
            parser.error(f"{folder}: no model folder; run `python {how}` first")
    features = "ct-resnet152" if weights_installed() and not args.smoke else "random-init"
    pipes = {"teacher": PRDiTPipeline.from_pretrained(teacher, device=device),
             "student": PRDiTPipeline.from_pretrained(student, device=device)}
    size = pipes["teacher"].volume_shape[0]
    real, floor = sq.fresh_real_sets(cache, num if args.smoke else sq.REAL_PHANTOMS, num, size, sq.PHANTOM_SEED)
    config = EvaluationConfig(metrics=sq.METRICS, real_units="hu", fake_units="hu",
                              normalization=pipes["teacher"].normalization, features=features, seed=0,
                              device=str(device), progress=False, batch_size=16, cache_dir=str(cache / "features"),
                              bootstrap=BootstrapConfig(resamples=args.bootstrap))
    rows, results, warned = [], [], []
    student_sampler = "consistency" if pipes["student"].process.kind == "consistency" else "dpm++1"
    plan = [("teacher", sampler, steps) for sampler, steps in teacher_rows]
    plan += [("student", student_sampler, steps) for steps in args.student_steps]
    for who, sampler, steps in plan:
        pipe = pipes[who]
        folder = teacher if who == "teacher" else student
        settings = pipe.settings(sampler=sampler, steps=steps, seed=args.seed, batch_size=args.batch, exact=False)
        rows_cache = cache / "rows" / f"{folder.name}-{sq.model_digest(folder)[:12]}" / device.type
        result, seconds = sq.cached_row(pipe, settings, num, 0, rows_cache)
        scores = sq.quiet_evaluate(real, pipe.to_hu(result.volumes), config, warned)
        label = f"{who} {sq.row_label(sampler, 'uniform', steps)}"
        entry = {"label": label, "model": str(folder), "sampler": sampler, "steps": steps,
                 "network_calls": settings.network_calls(), "seconds_per_volume": seconds,
                 "metrics": sq.row_metrics(scores)}
        results.append(entry)
        rows.append([label, settings.network_calls(), f"{seconds:.3g}", *sq.table_cells(entry["metrics"])])
        print(f"{label}: {settings.network_calls()} calls, {seconds:.3g} s/volume, KID×10³ {rows[-1][3]}, "
              f"P/R {rows[-1][6]}", flush=True)
    base = sq.quiet_evaluate(real, list(floor), config, warned)
    results.append({"label": "real", "steps": 0, "network_calls": 0, "metrics": sq.row_metrics(base)})
    rows.append(["real", "-", "-", *sq.table_cells(results[-1]["metrics"])])

    judgements = []
    for s_entry in (e for e in results if e["label"].startswith("student")):
        for t_entry in (e for e in results if e["label"].startswith("teacher")):
            verdict = sq.separated(s_entry["metrics"], t_entry["metrics"])
            line = sq.judgement(s_entry["label"], t_entry["label"], verdict)
            s_entry.setdefault("separation", []).append({"against": t_entry["label"], "verdict": verdict,
                                                         "text": line})
            judgements.append(line)
    record = student / ".." / "training.json"
    training = json.loads(record.read_text()) if record.is_file() else None
    cost = step_costs(teacher, device, recorded_overrides(training), batch=2 if args.smoke else 8,
                      rounds=1 if args.smoke else 5)
    print(f"one {cost['objective']} step on {cost['batch']} volumes: training {cost['training_step_s']:.3g} s, "
          f"distillation {cost['distillation_step_s']:.3g} s ({cost['ratio']:.2f}x)", flush=True)
    notes = [f"teacher {teacher} ({pipes['teacher'].model.name} at {size}³), student {student} "
             f"({pipes['student'].process.kind} model, sampled by {student_sampler})",
             f"{num} volumes per row (seed {args.seed}); real set: {len(real)} fresh phantoms (seed "
             f"{sq.PHANTOM_SEED}); floor ('real'): {len(floor)} further fresh phantoms",
             f"features: {features}; [low, high]: bootstrap {args.bootstrap} resamples, 95 %; P / R: precision / "
             "recall (k = 3), D / C: density / coverage (k = 5)",
             "distillation: " + (f"{training['steps']} {cost['objective']} steps, "
                                 f"{training['seconds'] / 60:.1f} CPU minutes ({training['threads']} thread)"
                                 if training else "no training.json"),
             f"one step on {cost['batch']} volumes (forward and backward, median of {cost['rounds']} alternating "
             f"rounds): training {cost['training_step_s']:.3g} s, distillation {cost['distillation_step_s']:.3g} s, "
             f"{cost['ratio']:.2f}x", *warned]
    columns = ["row", "network calls", "s/volume", "KID x10^3", "FID x10^3", "MMD", "P / R", "D / C", "W(HU)",
               "MS-SSIM"]
    report(NAME, device, args, "few-step sampling: distilled student against its teacher", notes, columns, rows,
           {"rows": results, "distillation": training, "step_costs": cost})
    print("\nseparation (disjoint 95 % intervals):")
    for line in judgements:
        print("  " + line)


if __name__ == "__main__":
    main()
