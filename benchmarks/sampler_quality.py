"""Quality and time against the number of sampler steps, for every sampler of each model's
process: how few network calls keep the quality of the reference's predictor–corrector sampler,
and which differences between rows the statistics can tell apart.

By default the model is the reference model of ``benchmarks/reference_model.py`` (the phantom
demo model trained longer) and the real set is 256 fresh phantoms, written with a seed whose
phantoms are none of the model's training phantoms (its 64 held-out phantoms are too few for
256 volumes a row; ``--real`` takes them or any other set). Each sampler runs 5, 10, 15, 25, 50,
100 and 250 steps from the same seeds, so only the solver and step count change. Per row, scored
by the evaluation of ``prdit evaluate`` (``prdit.evaluation.report.evaluate``) against the real set:

* **KID** ×10³ (mean ± std over its subsets; with at most 1,000 volumes a side every subset is
  the whole set and the std is 0) with its bootstrap 95 % interval, **FID** ×10³ and **MMD** with
  theirs, **precision/recall** (k = 3) and **density/coverage** (k = 5), all on the CT-pretrained
  ResNet-152 features where installed (else a random-init network: rankings only);
* **W(HU)**, the 1D Wasserstein distance between the HU histograms, and **MS-SSIM** diversity,
  with their intervals;
* **error against the ODE solution**: for deterministic samplers, the mean absolute difference
  (model range) between the row's volumes — what a user gets: the final state, the row's solution
  of the sampling ODE at t = 0, or the last x̂₀, by the row's output — and the final states of a
  1,000-step Heun solution from the same noise, on the first ``--ode-volumes`` volumes (8: the
  reference costs 1,999 network calls a volume). The stochastic predictor–corrector sampler has none;
* seconds per volume (when the volumes were sampled) and network calls per volume.

``--outputs state,x0`` runs each row with both outputs (default: each sampler's own,
``prdit.diffusion.samplers.DEFAULT_OUTPUT``); a row whose output is not its sampler's default is
labelled so, e.g. ``dpm++2m@25:x0``. A real-vs-real row is the floor: ``--num`` further fresh phantoms (or ``--real-baseline``, or with
``--real`` alone the two halves of the real set) scored like a row. After the table each row is
compared with the best row by KID (or the pairs of ``--compare``): two rows *separate* on a metric
when their 95 % intervals are disjoint (a conservative test; both rows share the real set).

Generated volumes are cached per batch under ``--cache`` (default
``benchmarks/reference_model/sampler_quality_cache/``, about 32 MiB a row of 256 volumes at 32³),
keyed by the model's weights, the sampler settings (the output among them) and the device: an
interrupted run resumes, and
a re-score (other metrics, features or real set) samples nothing. Features are cached there too.

    python benchmarks/sampler_quality.py
    python benchmarks/sampler_quality.py --samplers pc,dpm++2m:lambda --steps 25,50 --compare pc@50,pc@25
    python benchmarks/sampler_quality.py --samplers dpm++2m,heun --steps 25 --outputs state,x0
    python benchmarks/sampler_quality.py --rows pc@50,pc@100,dpm++2m@25,dpm++2m@25:x0
    python benchmarks/sampler_quality.py --models models/lidc-128-4l --real data/lidc/val.txt --weights resnet_50.pth
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (add_common_args, parse_int_list, report, resolve_device, set_threads,
                               smoke_model_folder, synchronize)
from prdit.diffusion import SampleResult
from prdit.errors import ConfigError

if TYPE_CHECKING:
    from prdit.generation.config import SamplingConfig
    from prdit.generation.pipeline import PRDiTPipeline

NAME = "sampler_quality"
REFERENCE = Path(__file__).resolve().parent / "reference_model"
DEFAULT_MODEL = REFERENCE / "prdit"
HELD_OUT = REFERENCE / "data" / "val.txt"
CACHE = REFERENCE / "sampler_quality_cache"
STEPS = [5, 10, 15, 25, 50, 100, 250]
NUM = 256
REAL_PHANTOMS = 256
# The reference model's training phantoms were written with seed 0 (training.json); phantoms of seed 1 are others.
PHANTOM_SEED = 1
METRICS = ("fid", "mmd", "kid", "prdc", "msssim", "hu_wasserstein")
# What ``separated`` compares: the KID band, then each metric's bootstrap interval (row ``metrics`` keys).
SEPARATION = {"KID ± 2 std": "kid_x1e3", "KID": "kid_x1e3", "FID-inf": "fid_infinity_x1e3", "MMD": "mmd",
              "W(HU)": "hu_wasserstein", "MS-SSIM": "msssim"}


# ---------------------------------------------------------------------------------------
# The real set: fresh phantoms that are not training phantoms
# ---------------------------------------------------------------------------------------


def check_not_training_phantoms(seed: int, count: int, training: dict | None) -> None:
    """Raise ConfigError when any of ``count`` phantoms written with ``seed`` would repeat a training phantom
    (the same generator seed; ``training``: the ``seed`` and ``phantoms`` count of ``training.json``)."""
    from prdit.data.phantoms import phantom_seed

    if training is None:
        return
    used = {phantom_seed(training["seed"], i) for i in range(training["phantoms"])}
    repeats = [i for i in range(count) if phantom_seed(seed, i) in used]
    if repeats:
        raise ConfigError(f"--phantom-seed {seed}: phantom {repeats[0]} (and {len(repeats) - 1} more) would repeat a "
                          f"training phantom of the reference model (written with seed {training['seed']}, "
                          f"{REFERENCE / 'training.json'}); choose another seed")


def fresh_real_sets(folder: Path, real_count: int, floor_count: int, size: int,
                    seed: int) -> tuple[list[Path], list[Path]]:
    """The real set (phantoms 0 … ``real_count`` − 1 of ``seed`` at ``size``³) and the floor's real volumes
    (the next ``floor_count``), written into ``folder`` where missing."""
    from prdit.data.phantoms import phantom_name, write_phantoms

    folder = folder / f"phantoms-{size}-seed{seed}"
    record = folder / "phantoms.json"
    total = real_count + floor_count
    written = json.loads(record.read_text())["count"] if record.is_file() else 0
    if written < total:  # the record is written last: an interrupted write is redone
        write_phantoms(total, size, folder, seed=seed)
        record.write_text(json.dumps({"count": total, "size": size, "seed": seed}) + "\n")
    paths = [folder / phantom_name(i) for i in range(total)]
    return paths[:real_count], paths[real_count:]


def training_record() -> dict | None:
    """The reference model's ``training.json`` (the seed and count of its training phantoms), if present."""
    path = REFERENCE / "training.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------
# Sampling, cached per batch
# ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """A row's generated volumes (its settings' output) ``[num, C, D, H, W]`` and the final states of its first
    volumes ``[n, C, D, H, W]``, in the model range."""

    volumes: torch.Tensor
    state: torch.Tensor


def sample_row(pipe: PRDiTPipeline, settings: SamplingConfig, num: int, first: int = 0) -> SampleResult:
    """Volumes ``first`` … ``first + num − 1`` with the seeds of ``pipe(num_volumes=…, settings=settings)``, in
    batches of ``settings.batch_size``: the generated volumes, the last x̂₀ and the final state, all
    ``[num, C, D, H, W]`` in the model range, on the CPU."""
    from prdit.generation.sampling import sample_volumes, volume_generators, volume_seed

    generators = volume_generators([volume_seed(settings.seed, first + i) for i in range(num)], pipe.device)
    parts = [sample_volumes(pipe.model, pipe.process, generators[lo:lo + settings.batch_size], settings, pipe.device)
             for lo in range(0, num, settings.batch_size)]
    return SampleResult(*(torch.cat([getattr(p, name).cpu() for p in parts]) for name in ("volumes", "x0", "state")))


def model_digest(model_dir: Path) -> str:
    """SHA-256 of a model folder's config and weights: what names its cached rows."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()


def row_folder(cache: Path, settings: SamplingConfig) -> Path:
    """Where the batches of one row live under a model's cache folder: named by the sampler, schedule, steps,
    output, seed and batch, and a hash of all the settings."""
    key = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache / (f"{settings.sampler}-{settings.schedule}-{settings.steps}steps-{settings.output}-"
                    f"seed{settings.seed}-batch{settings.batch_size}-{key}")


def cached_row(pipe: PRDiTPipeline, settings: SamplingConfig, num: int, state_volumes: int,
               cache: Path) -> tuple[Row, float]:
    """The ``num`` generated volumes of :func:`sample_row` with the final states of the first ``state_volumes``,
    and the seconds per volume their sampling took. Each batch is read from ``cache`` where a run saved it,
    else sampled and saved (atomically), so a stopped run resumes. The output does not change the sampling:
    a batch sampled for one output is saved for the rows of the others too, where they lack it."""
    from prdit.diffusion.samplers import OUTPUTS
    from prdit.files import atomic_write

    volumes, states, seconds = [], [], 0.0
    for lo in range(0, num, settings.batch_size):
        hi = min(num, lo + settings.batch_size)
        name = f"volumes-{lo:05d}-{hi:05d}.pt"
        path = row_folder(cache, settings) / name
        batch = torch.load(path) if path.is_file() else None
        if batch is None or (lo < state_volumes and batch["state"] is None):
            synchronize(pipe.device)
            start = time.perf_counter()
            part = sample_row(pipe, settings, hi - lo, first=lo)
            synchronize(pipe.device)
            batches = {output: {"volumes": getattr(part, output), "state": part.state if lo < state_volumes else None,
                                "seconds": time.perf_counter() - start} for output in OUTPUTS}
            for output, filed in batches.items():
                sibling = row_folder(cache, replace(settings, output=output)) / name
                if output == settings.output or not sibling.is_file():
                    atomic_write(sibling, lambda tmp, filed=filed: torch.save(filed, tmp))
            batch = batches[settings.output]
        volumes.append(batch["volumes"])
        if lo < state_volumes:
            states.append(batch["state"])
        seconds += batch["seconds"]
    state = torch.cat(states)[:state_volumes] if states else volumes[0][:0]
    return Row(volumes=torch.cat(volumes), state=state), seconds / num


def ode_error(row: Row, reference: Row) -> float:
    """Mean |x − x_ref| (model range) between the row's volumes — what a user gets, by the row's output — and
    the reference's final states, its solution of the sampling ODE at t = 0, from the same noise."""
    return float((row.volumes[:len(reference.state)] - reference.state).abs().mean())


# ---------------------------------------------------------------------------------------
# Scores and their separation
# ---------------------------------------------------------------------------------------


def row_metrics(scores: dict) -> dict[str, dict]:
    """The numbers of a row out of an evaluation report: per metric its ``value`` and bootstrap ``interval``
    ``[low, high]`` (None without one); KID and FID ×10³, KID with its ``std`` over subsets."""
    def entry(value: float, interval: dict | None, scale: float = 1.0) -> dict:
        bounds = None if interval is None or interval["low"] is None else [interval["low"] * scale,
                                                                            interval["high"] * scale]
        return {"value": value * scale, "interval": bounds}

    kid, prdc = scores["kid"], scores["prdc"]
    # With every subset the whole set, the subsets' spread is rounding (1e-14), not a spread.
    whole_sets = kid["subset_size"] >= min(scores["samples"]["real"], scores["samples"]["fake"])
    metrics = {"kid_x1e3": {**entry(kid["value"], kid.get("interval"), 1e3), "std": kid["std"] * 1e3,
                            "whole_sets": whole_sets},
               "fid_x1e3": entry(scores["fid"]["value"], None, 1e3),  # FID's bias depends on N: no interval
               "mmd": entry(scores["mmd"]["value"], scores["mmd"].get("interval")),
               "hu_wasserstein": entry(scores["hu_wasserstein"]["value"], scores["hu_wasserstein"].get("interval")),
               "msssim": entry(scores["msssim"]["fake"]["mean"], scores["msssim"]["fake"].get("interval"))}
    for name in ("precision", "recall", "density", "coverage"):
        metrics[name] = entry(prdc[name], prdc.get("intervals", {}).get(name)) if name in prdc else None
    if "infinity" in scores["fid"] and scores["fid"]["infinity"]["value"] is not None:
        metrics["fid_infinity_x1e3"] = entry(scores["fid"]["infinity"]["value"], scores["fid"]["infinity"], 1e3)
    return metrics


def kid_band(kid: dict) -> list[float] | None:
    """KID ×10³ ± 2 std over its subsets; None without a spread (every subset the whole set, or std 0)."""
    if kid.get("whole_sets") or not kid.get("std"):
        return None
    return [kid["value"] - 2 * kid["std"], kid["value"] + 2 * kid["std"]]


def separated(a: dict, b: dict) -> dict[str, bool | None]:
    """Per metric of ``SEPARATION``, whether two rows' ``metrics`` (:func:`row_metrics`) have disjoint
    intervals (True), overlapping ones (False), or no verdict (None: an interval is missing)."""
    verdict = {}
    for label, key in SEPARATION.items():
        if a.get(key) is None or b.get(key) is None:
            verdict[label] = None
            continue
        one, two = ((kid_band(a[key]), kid_band(b[key])) if label == "KID ± 2 std"
                    else (a[key]["interval"], b[key]["interval"]))
        verdict[label] = None if one is None or two is None else bool(one[1] < two[0] or two[1] < one[0])
    return verdict


def judgement(label_a: str, label_b: str, verdict: dict[str, bool | None]) -> str:
    """One printed line: on which metrics two rows separate, on which their intervals overlap."""
    names = {value: [m for m, v in verdict.items() if v is value] for value in (True, False, None)}
    parts = [f"separates on {', '.join(names[True])}" if names[True] else "separates on nothing",
             f"intervals overlap on {', '.join(names[False])}" if names[False] else ""]
    if names[None]:
        parts.append(f"no interval for {', '.join(names[None])}")
    return f"{label_a} vs {label_b}: " + "; ".join(p for p in parts if p)


def _number(value: float) -> str:
    """Four significant digits, whole numbers with separators from 1,000 on."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _with_interval(metric: dict) -> str:
    """``value [low, high]``."""
    if metric["interval"] is None:
        return _number(metric["value"])
    return f"{_number(metric['value'])} [{_number(metric['interval'][0])}, {_number(metric['interval'][1])}]"


def _pair(metrics: dict, first: str, second: str) -> str:
    """``first / second`` values (``-`` where too few volumes for the k-NN balls)."""
    if metrics[first] is None:
        return "-"
    return f"{metrics[first]['value']:.3f} / {metrics[second]['value']:.3f}"


def table_cells(metrics: dict) -> list[str]:
    """The metric cells of a row."""
    kid = metrics["kid_x1e3"]
    kid_cell = f"{_number(kid['value'])} ± {0 if kid['whole_sets'] else kid['std']:.2g}" + (
        f" [{_number(kid['interval'][0])}, {_number(kid['interval'][1])}]" if kid["interval"] else "")
    return [kid_cell, _with_interval(metrics["fid_x1e3"]), _with_interval(metrics["mmd"]),
            _pair(metrics, "precision", "recall"), _pair(metrics, "density", "coverage"),
            _with_interval(metrics["hu_wasserstein"]), _with_interval(metrics["msssim"])]


def parse_rows(text: str) -> list[tuple[str, str, int, str | None]]:
    """``pc@100,dpm++2m:lambda@25:x0`` -> ``[(sampler, schedule, steps, output or None)]``: the names
    :func:`row_label` gives rows, read back."""
    rows = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        head, at, tail = item.partition("@")
        sampler, _, schedule = head.partition(":")
        steps, _, output = tail.partition(":")
        if not at or not sampler or not steps.isdigit():
            raise argparse.ArgumentTypeError(f"row {item!r}: expected sampler[:schedule]@steps[:output], "
                                             "e.g. pc@100 or dpm++2m:lambda@25:x0")
        rows.append((sampler, schedule or "uniform", int(steps), output or None))
    return rows


def row_label(sampler: str, schedule: str, steps: int, prefix: str = "", output: str | None = None) -> str:
    """``pc@50``, ``dpm++2m:lambda@25``, ``dpm++2m@25:x0`` where ``output`` is not the sampler's default
    (``--compare`` names rows so), after ``prefix`` with several models."""
    from prdit.diffusion.samplers import DEFAULT_OUTPUT

    suffix = "" if output in (None, DEFAULT_OUTPUT[sampler]) else f":{output}"
    return f"{prefix}{sampler}{'' if schedule == 'uniform' else ':' + schedule}@{steps}{suffix}"


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, sample (or read) every row, score it, report and compare."""
    from prdit.evaluation.config import BootstrapConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda text: [Path(p) for p in text.split(",")], default=None,
                        help=f"comma-separated model folders (prdit export); default {DEFAULT_MODEL}")
    parser.add_argument("--real", type=Path, default=None, help="real volumes in HU: folder or list file (e.g. the "
                        f"reference model's 64 held-out phantoms, {HELD_OUT}); default: --real-phantoms fresh phantoms")
    parser.add_argument("--real-phantoms", type=int, default=REAL_PHANTOMS, help="fresh phantoms in the real set "
                        "when --real is not given (phantom models such as the reference model)")
    parser.add_argument("--phantom-seed", type=int, default=PHANTOM_SEED, help="seed of the fresh phantoms; none may "
                        "repeat a training phantom of the reference model (checked against its training.json)")
    parser.add_argument("--real-baseline", type=Path, default=None, help="other real volumes, --num of them scored "
                        "like a row (the floor); default: --num further fresh phantoms, or with --real the halves "
                        "of the real set")
    parser.add_argument("--num", type=int, default=NUM, help="generated volumes per row")
    parser.add_argument("--batch", type=int, default=8, help="volumes sampled together (one call per batch)")
    parser.add_argument("--steps", type=parse_int_list, default=STEPS)
    parser.add_argument("--samplers", default="", help="comma-separated sampler[:schedule] (schedule uniform or "
                        "lambda); default: every sampler of the process, DPM-Solver++ on both schedules")
    parser.add_argument("--outputs", default="", help="comma-separated outputs each row is run with: state (the "
                        "final state), x0 (the last x̂₀); default: each sampler's own")
    parser.add_argument("--reference-steps", type=int, default=1000, help="Heun steps of the ODE solution "
                        "(0: no ODE error column, e.g. to repeat rows with other seeds)")
    parser.add_argument("--ode-volumes", type=int, default=8, help="volumes of each row (the first ones) whose final "
                        "state is compared with the Heun solution")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated volumes (same for every row)")
    parser.add_argument("--features", default="auto", help="feature network: ct-resnet152, random-init, medicalnet "
                        "(with --weights); auto: ct-resnet152 where installed, else random-init")
    parser.add_argument("--weights", type=Path, default=None, help="MedicalNet ResNet-50 weights for the features")
    parser.add_argument("--feature-seed", type=int, default=0, help="seed of the random-init feature network")
    parser.add_argument("--bootstrap", type=int, default=BootstrapConfig.resamples,
                        help="bootstrap resamples of each interval (0: none)")
    parser.add_argument("--rows", type=parse_rows, default=None, metavar="ROW,ROW",
                        help="comma-separated rows named as the table names them, sampler[:schedule]@steps[:output] "
                        "(e.g. pc@100,dpm++2m@25,dpm++2m@25:x0): one table of rows of different step counts; "
                        "replaces --samplers, --steps and --outputs")
    parser.add_argument("--compare", action="append", default=[], metavar="ROW,ROW",
                        help="a pair of rows to judge, e.g. pc@50,pc@250 or dpm++2m:lambda@25,real (repeatable); "
                        "default: every row against the best row by KID")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where generated volumes, fresh phantoms and "
                        "features are kept")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    compare = [tuple(pair.split(",")) for pair in args.compare]
    if any(len(pair) != 2 for pair in compare):
        parser.error("--compare takes two row names separated by a comma, e.g. pc@50,pc@250")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            run(args, device, compare, parser, Path(scratch))
        except ConfigError as error:
            parser.error(str(error))


def run(args: argparse.Namespace, device: torch.device, compare: list[tuple[str, str]],
        parser: argparse.ArgumentParser, scratch: Path) -> None:
    """Sample and score every row of every model, report the table and the separation judgements."""
    from prdit.evaluation.config import BootstrapConfig, EvaluationConfig
    from prdit.evaluation.ct_resnet import weights_installed
    from prdit.evaluation.volumes import list_volume_files
    from prdit.generation.pipeline import PRDiTPipeline

    features = args.features
    if args.weights is not None:
        features = "medicalnet"
    elif features == "auto":
        features = "ct-resnet152" if weights_installed() and not args.smoke else "random-init"
    if args.smoke:
        model_dirs, cache = [smoke_model_folder(scratch / "model")], scratch / "cache"
        num, steps_list, reference_steps, real_phantoms = 8, [2, 4], 8, 8
        ode_volumes = 2
        samplers = args.samplers or "pc,euler,dpm++2m:lambda"
    else:
        model_dirs, cache = args.models or [DEFAULT_MODEL], args.cache
        num, steps_list, reference_steps, real_phantoms = args.num, args.steps, args.reference_steps, args.real_phantoms
        ode_volumes, samplers = min(args.ode_volumes, args.num), args.samplers
    missing = [m for m in model_dirs if not m.is_dir()]
    if missing:
        parser.error(f"{missing[0]}: no model folder; run `python benchmarks/reference_model.py` first "
                     "(or pass --models)")
    if args.real is None and not args.smoke:
        check_not_training_phantoms(args.phantom_seed, real_phantoms + num, training_record())
    elif args.real is not None and not args.real.exists():
        parser.error(f"{args.real}: no real volumes (`python benchmarks/reference_model.py --data-only` writes the "
                     f"reference model's held-out phantoms, {HELD_OUT})")

    rows, results, described, warned = [], [], [], []
    prefix_models = len(model_dirs) > 1
    for model_dir in model_dirs:
        pipe = PRDiTPipeline.from_pretrained(model_dir, device=device)
        process, shape = pipe.process.kind, tuple(pipe.volume_shape)
        prefix = f"{model_dir.name}/" if prefix_models else ""
        if args.real is None:
            if len(set(shape)) != 1:
                parser.error(f"{model_dir}: phantoms are cubes, the model samples {shape}; pass --real")
            real, floor = fresh_real_sets(cache, real_phantoms, num, shape[0], args.phantom_seed)
            real_note = f"{len(real)} fresh phantoms (seed {args.phantom_seed}, {cache})"
            floor_note = f"{len(floor)} further fresh phantoms"
        else:
            real = list_volume_files(args.real)
            real_note = f"{len(real)} real volumes ({args.real})"
            if args.real_baseline is not None:
                floor = list_volume_files(args.real_baseline)[:num]
                floor_note = f"{len(floor)} real volumes of {args.real_baseline}"
            else:
                half = len(real) // 2
                real, floor = real[:half], real[half:2 * half]
                real_note = f"the first half of {args.real}, {half} volumes"
                floor_note = f"its second half, {half} volumes (generated rows have {num})"
        described.append(f"{prefix}{process}: {pipe.model.name} at {'x'.join(map(str, shape))} ({model_dir}), "
                         f"real set: {real_note}")
        config = EvaluationConfig(
            metrics=METRICS, real_units="hu", fake_units="hu", normalization=pipe.normalization, features=features,
            weights=str(args.weights) if args.weights else None,
            seed=args.feature_seed if features == "random-init" else None, device=str(device), progress=False,
            batch_size=16, cache_dir=str(cache / "features"),
            bootstrap=BootstrapConfig(resamples=args.bootstrap))
        if samplers:
            runs = [tuple(f"{item}:uniform".split(":")[:2]) for item in samplers.split(",") if item]
        else:
            runs = [(s, "uniform") for s in pipe.process.samplers]
            runs += [(s, "lambda") for s in pipe.process.samplers if s.startswith("dpm++") and s != "dpm++1"]
        runs = [(s, sch) for s, sch in runs if s in pipe.process.samplers]
        rows_cache = cache / "rows" / f"{model_dir.name}-{model_digest(model_dir)[:12]}" / device.type

        def settings_of(sampler: str, steps: int, schedule: str = "uniform",
                        output: str | None = None) -> SamplingConfig:
            return pipe.settings(sampler=sampler, steps=steps, schedule=schedule, seed=args.seed,
                                 batch_size=args.batch, exact=False, output=output)

        reference = None
        if reference_steps > 0:
            started = time.perf_counter()
            reference, _ = cached_row(pipe, settings_of("heun", reference_steps, output="state"), ode_volumes,
                                      ode_volumes, rows_cache)
            print(f"{prefix}{process}: {reference_steps}-step Heun solution of {ode_volumes} volumes ready in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        outputs = [item for item in args.outputs.split(",") if item] or [None]
        table_rows = args.rows if args.rows and not args.smoke else [
            (sampler, schedule, steps, output) for sampler, schedule in runs
            for steps in steps_list for output in outputs]
        unknown = sorted({sampler for sampler, *_ in table_rows} - set(pipe.process.samplers))
        if unknown:
            parser.error(f"--rows: {model_dir} ({process}) has no sampler {', '.join(unknown)}; it has "
                         f"{', '.join(pipe.process.samplers)}")
        for sampler, schedule, steps, output in table_rows:
            settings = settings_of(sampler, steps, schedule, output)
            result, seconds = cached_row(pipe, settings, num, ode_volumes if reference is not None else 0,
                                         rows_cache)
            started = time.perf_counter()
            scores = quiet_evaluate(real, pipe.to_hu(result.volumes), config, warned)
            error = None if sampler == "pc" or reference is None else ode_error(result, reference)
            entry = {"label": row_label(sampler, schedule, steps, prefix, settings.output), "process": process,
                     "model": str(model_dir), "sampler": sampler, "schedule": schedule, "steps": steps,
                     "output": settings.output,
                     "network_calls": settings.network_calls(), "seconds_per_volume": seconds,
                     "ode_error": error, "ode_volumes": ode_volumes if error is not None else 0,
                     "metrics": row_metrics(scores), "evaluation_seconds": time.perf_counter() - started,
                     "evaluation_timings_s": scores["timings_s"]}
            results.append(entry)
            rows.append([entry["label"], settings.network_calls(), f"{seconds:.3g}",
                         "-" if error is None else f"{error:.2e}", *table_cells(entry["metrics"])])
            print(f"{entry['label']}: {seconds:.3g} s/volume, ODE error {rows[-1][3]}, "
                  f"KID×10³ {rows[-1][4]}, FID×10³ {rows[-1][5]}, W(HU) {rows[-1][9]} "
                  f"(scored in {entry['evaluation_seconds']:.0f} s)", flush=True)
        base = quiet_evaluate(real, list(floor), config, warned)
        entry = {"label": f"{prefix}real", "process": "-", "model": str(model_dir), "sampler": "real volumes",
                 "schedule": "-", "steps": 0, "network_calls": 0, "seconds_per_volume": 0.0, "ode_error": None,
                 "ode_volumes": 0, "metrics": row_metrics(base), "floor": floor_note}
        results.append(entry)
        rows.append([entry["label"], "-", "-", "-", *table_cells(entry["metrics"])])
        described[-1] += f"; floor ('{entry['label']}'): {floor_note}"
        real_msssim = base["msssim"]["real"]["mean"]
        network = base["feature_network"]

    judgements = separation_judgements(results, compare, parser)
    notes = [*described,
             f"{num} volumes per row (seed {args.seed}, batches of {args.batch}); seconds per volume as sampled "
             f"(cached batches keep theirs; cache {cache})",
             f"ODE error: mean |x - x_ref| between the first {ode_volumes} generated volumes (the row's output: the "
             f"final state, the ODE's solution at t = 0, or the last x0-hat) and the final states x_ref of "
             f"{reference_steps} Heun steps from the same noise, model range ('-': stochastic sampler)",
             f"features: {network.get('label')}{'' if network['comparable_with_published'] else ' (rankings only)'}; "
             f"[low, high]: bootstrap {args.bootstrap} resamples, 95 %; KID: mean ± std over its subsets; "
             "P / R: precision / recall (k = 3), D / C: density / coverage (k = 5); W(HU): 1D Wasserstein "
             f"between the HU histograms; MS-SSIM of the real set for reference: {real_msssim:.4f}",
             "separates: disjoint 95 % intervals (KID ± 2 std, and the bootstrap interval of each metric)",
             *warned]
    columns = ["row", "network calls", "s/volume", "ODE error", "KID x10^3", "FID x10^3", "MMD", "P / R",
               "D / C", "W(HU)", "MS-SSIM"]
    for entry, line in judgements:
        entry.setdefault("separation", []).append(line)
    report(NAME, device, args, "sampler quality against steps", notes, columns, rows, results)
    print("\nseparation (disjoint 95 % intervals):")
    for _, line in judgements:
        print("  " + line["text"])


def quiet_evaluate(real: list[Path], fake, config, warned: list[str]) -> dict:
    """``evaluate(real, fake, config)`` with its warnings collected once into ``warned`` instead of printed per row."""
    import warnings

    from prdit.evaluation.report import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = evaluate(real, fake, config)
    warned += [w for w in scores["warnings"] if w not in warned]
    return scores


def separation_judgements(results: list[dict], compare: list[tuple[str, str]],
                          parser: argparse.ArgumentParser) -> list[tuple[dict, dict]]:
    """The pairs of ``--compare``, or every row against the best generated row by KID: (the first row's
    entry, its judgement: the other row, the verdict per metric and the printed line)."""
    by_label = {entry["label"]: entry for entry in results}
    if compare:
        unknown = [label for pair in compare for label in pair if label not in by_label]
        if unknown:
            parser.error(f"--compare: no row '{unknown[0]}'; rows: {', '.join(by_label)}")
        pairs = [(by_label[a], by_label[b]) for a, b in compare]
    else:
        generated = [entry for entry in results if entry["steps"]]
        if not generated:
            return []
        best = min(generated, key=lambda entry: entry["metrics"]["kid_x1e3"]["value"])
        pairs = [(entry, best) for entry in results if entry is not best]
    judgements = []
    for a, b in pairs:
        verdict = separated(a["metrics"], b["metrics"])
        judgements.append((a, {"against": b["label"], "verdict": verdict,
                               "text": judgement(a["label"], b["label"], verdict)}))
    return judgements


if __name__ == "__main__":
    main()
