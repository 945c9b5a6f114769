"""Adherence of the conditional reference model: how well its samples obey the label maps they were drawn from.

The conditional reference model (``benchmarks/reference_model/xs4-cond/prdit``, PRDiT-XS/6/4 with both stages
conditioned, fine-tuned from the unconditional ``xs4`` on the phantoms of ``reference_model.py --data-only`` and
their label maps; see its ``training.json``, which also records the stage-2-only model it was compared with)
samples one volume from each map of fresh phantoms, which ``prdit evaluate --labels`` then scores against those
maps and fresh real phantoms (docs/method.md §20). The two stored results:

    # stage2 against both, and the table over w (64 maps)
    python benchmarks/conditional_reference.py --models stage2=STAGE2_DIR,both=benchmarks/reference_model/xs4-cond/prdit \
        --rows stage2@1,both@1,both@2,both@3 --num 64 --quality --threads 1 \
        --json benchmarks/results/adherence-xs4-cond-cpu.json
    # the acceptance run: 256 maps at the default w, with KID and precision/recall
    python benchmarks/conditional_reference.py --models both=benchmarks/reference_model/xs4-cond/prdit --guidance 2 \
        --num 256 --quality --no-baseline --threads 1 --json benchmarks/results/adherence-xs4-cond-256-cpu.json

(STAGE2_DIR: the stage-2-only model, exported from the run its ``training.json`` records.)
Rows: the conditional model at each guidance scale w; the unconditional model's samples scored against the same
maps (random chests paired with unrelated maps: what Dice and the mask-swap gap read without control); and the
maps' own phantoms (a generator that obeys every map exactly, the best a row can read against this real set).
Every step is the CLI (``prdit phantoms``, ``prdit sample``, ``prdit evaluate``); the commands are recorded. The
work folder keeps the phantoms, samples and reports, so a stopped run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import report, set_threads

REFERENCE = Path(__file__).resolve().parent / "reference_model"
DEFAULT_MODEL = REFERENCE / "xs4-cond" / "prdit"
DEFAULT_BASELINE = REFERENCE / "xs4" / "prdit"
DEFAULT_WORK = REFERENCE / "runs" / "adherence"
# the training phantoms are seed 0: the maps and the real set are phantoms no training volume was drawn from
MAPS_SEED, REAL_SEED = 3, 1
LUNGS = ("lung_right", "lung_left")


def run(command: list[str], threads: int) -> None:
    """Run one ``prdit`` command, its output passed through; a failure stops the benchmark."""
    print("$ prdit " + " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "prdit", *command], check=True, env=env)


def phantoms(folder: Path, num: int, size: int, seed: int, threads: int) -> Path:
    """``num`` phantoms with their label maps in ``folder`` (written once)."""
    if len(list((folder / "labels").glob("phantom_*.nii.gz"))) < num:
        run(["phantoms", "--num", str(num), "--size", str(size), "--seed", str(seed), "--labels",
             "--out", str(folder)], threads)
    return folder


def samples(model: Path, out: Path, num: int, seed: int, threads: int, labels: Path | None = None,
            guidance: float = 1.0, sampling: tuple[str, ...] = ()) -> tuple[Path, float | None]:
    """Sample ``num`` volumes (from ``labels``, one a map, for a conditional model) into ``out``; returns the
    folder and the seconds this call sampled (None when an earlier call had filled the folder). ``prdit sample``
    resumes a folder it began, so a larger ``num`` adds only the volumes that are missing; ``sampling`` adds
    options such as ``--sampler heun --steps 25`` (none: the CLI's defaults)."""
    command = ["sample", str(model), "--num", str(num), "--seed", str(seed), "--out", str(out), *sampling]
    if labels is not None:
        command += ["--labels", str(labels), "--guidance-scale", f"{guidance:g}"]
    if len(list(out.glob("sample_*.nii.gz"))) >= num:
        return out, None
    started = time.perf_counter()
    run(command, threads)
    return out, time.perf_counter() - started


def paired_maps(volumes: Path, maps: Path, out: Path) -> Path:
    """The maps of ``maps`` under the names of the volumes in ``volumes``, in order, with their table: pairs an
    unconditional model's samples with the maps a conditional one was given."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in volumes.glob("sample_*.nii.gz"))
    for name, source in zip(names, sorted(maps.glob("phantom_*.nii.gz")), strict=True):
        shutil.copyfile(source, out / name)
    shutil.copyfile(maps / "labels.json", out / "labels.json")
    return out


def evaluate(real: Path, fake: Path, labels: Path, out: Path, threads: int, quality: bool = False) -> dict:
    """``prdit evaluate --metrics adherence`` of ``fake`` against its ``labels`` (with ``quality``, KID and
    precision/recall/density/coverage on the CT-ResNet features too); returns the report."""
    metrics = "adherence,kid,prdc" if quality else "adherence"
    if out.is_file() and (not quality or "kid" in json.loads(out.read_text())):
        return json.loads(out.read_text())
    command = ["evaluate", "--real", str(real), "--fake", str(fake), "--labels", str(labels), "--metrics", metrics,
               "--out", str(out)]
    if quality:
        command += ["--features", "ct-resnet152", "--real-units", "hu", "--fake-units", "hu"]
    run(command, threads)
    return json.loads(out.read_text())


def _rounded(value: float, bounds: dict | None, scale: float = 1.0) -> dict:
    """``{"value", "interval": [low, high]}`` of a report's number and its bounds (``low``/``high``), scaled and
    rounded to 4 decimals; the interval None where the report has none."""
    low_high = None if not bounds or bounds.get("low") is None else [round(bounds["low"] * scale, 4),
                                                                      round(bounds["high"] * scale, 4)]
    return {"value": round(value * scale, 4), "interval": low_high}


def quality_summary(report_: dict) -> dict:
    """KID ×10³ and precision/recall/density/coverage with their intervals, where the report has them."""
    if "kid" not in report_:
        return {}
    kid, prdc = report_["kid"], report_["prdc"]
    entry = {"kid_x1e3": _rounded(kid["value"], kid.get("interval"), 1e3)}
    for name in ("precision", "recall", "density", "coverage"):
        if name in prdc:
            entry[name] = _rounded(prdc[name], prdc.get("intervals", {}).get(name))
    return {"quality": entry}


def summary(report_: dict) -> dict:
    """The numbers the acceptance targets read, each with its 95 % interval, from one evaluation report."""
    entry = report_["adherence"]
    dice, swap, inside = entry["dice"], entry["mask_swap"], entry["hu"]["inside"]

    def interval(value: dict) -> dict:  # an adherence entry holds its own bounds
        return _rounded(value["value"], value)

    lungs = {name: {"generated": interval(dice["per_label"][name]["generated"]),
                    "ceiling": interval(dice["per_label"][name]["real"]),
                    "fraction_of_ceiling": round(dice["per_label"][name]["generated"]["value"]
                                                 / dice["per_label"][name]["real"]["value"], 4)}
             for name in LUNGS}
    return {"hu_inside": interval(inside), "dice": interval(dice["generated"]), "dice_ceiling": interval(dice["real"]),
            "dice_fraction_of_ceiling": round(dice["generated"]["value"] / dice["real"]["value"], 4),
            "lungs": lungs, "mask_swap_gap": interval(swap["gap"]), "swapped_dice": interval(swap["swapped_dice"]),
            "hu_per_label": {name: {"range_hu": None if e["range_hu"] is None else [round(v, 1) for v in e["range_hu"]],
                                    "generated_median_hu": None if e["generated_median_hu"] is None
                                    else round(e["generated_median_hu"], 1),
                                    "inside": round(e["inside"]["value"], 3)}
                             for name, e in entry["hu"]["per_label"].items()},
            **quality_summary(report_)}


def _seconds(seconds: float | None) -> dict:
    """The sampling time of a row, where this call sampled it."""
    return {} if seconds is None else {"sampling_seconds": round(seconds, 1)}


def _cell(value: dict, spec: str = ".3f") -> str:
    if value["interval"] is None:
        return f"{value['value']:{spec}}"
    low, high = value["interval"]
    return f"{value['value']:{spec}} [{low:{spec}}, {high:{spec}}]"


def parse_models(text: str) -> list[tuple[str, Path]]:
    """``name=DIR,name=DIR`` (or a bare ``DIR``, named after its parent folder) -> [(name, folder)]."""
    models = []
    for item in filter(None, text.split(",")):
        name, _, folder = item.rpartition("=")
        models.append((name or Path(folder).parent.name, Path(folder)))
    return models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=str(DEFAULT_MODEL),
                        help="conditional model folders, comma-separated, each optionally NAME=DIR")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                        help="an unconditional model folder, scored against the same maps (the no-control row)")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the unconditional row")
    parser.add_argument("--rows", default=None, help="NAME@W,... : only these (model, guidance scale) rows, e.g. "
                        "stage2@1,both@1,both@2 (default: every model at every --guidance)")
    parser.add_argument("--guidance", default="1", help="comma-separated guidance scales w, e.g. 1,2")
    parser.add_argument("--num", type=int, default=64, help="label maps, generated volumes and real volumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling runs")
    parser.add_argument("--sampler", default=None, help="sampler of every row (default: the CLI's)")
    parser.add_argument("--steps", type=int, default=None, help="its steps (default: the CLI's)")
    parser.add_argument("--quality", action="store_true",
                        help="KID and precision/recall/density/coverage against the real set too (CT-ResNet-152 "
                        "features, as benchmarks/sampler_quality.py)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="phantoms, samples and reports (resumable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/adherence-xs4-cond-cpu.json)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    models = parse_models(args.models)
    sampling = (*(["--sampler", args.sampler] if args.sampler else []),
                *(["--steps", str(args.steps)] if args.steps else []))
    tag = "".join(filter(None, [args.sampler, str(args.steps) if args.steps else None])) or "default"
    sampler_note = " ".join(sampling) or "the CLI's default sampler (PC, 100 steps)"
    size = json.loads((models[0][1] / "config.json").read_text())["model"]["input_size"]
    size = int(size[0] if isinstance(size, list) else size)  # [D, H, W] of a cube, as phantoms are
    # phantom i of a seed is the same in every folder: a folder per count keeps each run's set exactly its count
    maps = phantoms(args.work / f"phantoms-{size}-seed{MAPS_SEED}-n{args.num}", args.num, size, MAPS_SEED,
                    args.threads)
    real = phantoms(args.work / f"phantoms-{size}-seed{REAL_SEED}-n{args.num}", args.num, size, REAL_SEED,
                    args.threads)
    quality = "-quality" if args.quality else ""

    results = []
    scales = [float(text) for text in args.guidance.split(",")]
    rows = ([(name, model, w) for name, model in models for w in scales] if args.rows is None else
            [(name, dict(models)[name], float(w)) for name, w in (item.split("@") for item in args.rows.split(","))])
    for name, model, w in rows:
        fake, seconds = samples(model, args.work / f"cond-{name}-{tag}-w{w:g}-n{args.num}", args.num, args.seed,
                                args.threads, labels=maps / "labels", guidance=w, sampling=sampling)
        entry = evaluate(real, fake, fake / "labels",
                         args.work / f"adherence-{name}-{tag}-w{w:g}-{args.num}{quality}.json", args.threads,
                         args.quality)
        results.append({"row": f"{name}, w = {w:g}", "model": model, "guidance_scale": w,
                        "sampling": sampler_note, **_seconds(seconds), **summary(entry)})
    if not args.no_baseline:
        fake, seconds = samples(args.baseline, args.work / f"unconditional-{tag}-n{args.num}", args.num, args.seed,
                                args.threads, sampling=sampling)
        labels = paired_maps(fake, maps / "labels", args.work / f"unconditional-{tag}-n{args.num}-maps")
        entry = evaluate(real, fake, labels, args.work / f"adherence-unconditional-{tag}-{args.num}{quality}.json",
                         args.threads, args.quality)
        results.append({"row": "unconditional model vs the same maps", "model": args.baseline,
                        "sampling": sampler_note, **_seconds(seconds), **summary(entry)})
    entry = evaluate(real, maps, maps / "labels", args.work / f"adherence-phantoms-{args.num}.json", args.threads)
    results.append({"row": "the maps' own phantoms", **summary(entry)})

    columns = ["row", "HU inside", "Dice", "ceiling", "Dice / ceiling", "lungs R/L / ceiling", "mask-swap gap"]
    if args.quality:
        columns += ["KID x10^3", "precision", "recall"]
    rows = []
    for r in results:
        row = [r["row"], _cell(r["hu_inside"]), _cell(r["dice"]), _cell(r["dice_ceiling"]),
               f"{r['dice_fraction_of_ceiling']:.3f}",
               " / ".join(f"{r['lungs'][name]['fraction_of_ceiling']:.3f}" for name in LUNGS),
               _cell(r["mask_swap_gap"])]
        if args.quality:
            q = r.get("quality")
            row += ["-", "-", "-"] if q is None else [_cell(q["kid_x1e3"], ".1f"), _cell(q["precision"]),
                                                        _cell(q["recall"])]
        rows.append(row)
    notes = [f"{args.num} label maps of fresh phantoms (seed {MAPS_SEED}) -> one volume each ({sampler_note}, seed "
             f"{args.seed}); real set: {args.num} fresh phantoms (seed {REAL_SEED}) with their maps; training "
             "phantoms are seed 0",
             "targets: Dice >= 0.9 x ceiling (lungs >= 0.95), >= 95 % of median-HU values inside the real range, "
             "mask-swap gap >= 0.3; intervals 95 % (Wilson for HU inside, percentile bootstrap over volumes else)"]
    if args.quality:
        notes.append("KID x10^3 and precision/recall (k = 3) on CT-ResNet-152 features against the same real set, "
                     "intervals as benchmarks/sampler_quality.py (the unconditional PC@100 row there: KID 111.0 "
                     "[95.9, 126.3], precision 0.215, recall 0.328, 256 vs 256 of the same seed-1 phantoms)")
    report("adherence-xs4-cond", torch.device("cpu"), args, "Adherence of the conditional reference model", notes,
           columns, rows, results)


if __name__ == "__main__":
    main()
