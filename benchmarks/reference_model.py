"""The reference model of the sampler benchmark: the phantom demo model, trained longer.

The demo trains PRDiT-T/6/2 on 32³ phantoms for about ten minutes, too briefly for a ranking of
samplers to mean much. This script trains the same two stages (the shipped
``phantoms-tiny-stage1/2`` configs) on more phantoms and for a fixed number of steps, on the CPU
with one thread and fixed seeds, and exports the stage-2 EMA weights:

    python benchmarks/reference_model.py                       # -> benchmarks/reference_model/
    python benchmarks/reference_model.py --stage1-steps 500 --stage2-steps 500 --out /tmp/ref
    python benchmarks/reference_model.py --out /tmp/ref-noflip --set data.flip=false   # a config override

``--set`` overrides a config value in both stages, ``--stage1-set``/``--stage2-set`` in one; the
overrides of each stage are kept in ``training.json``.

The output holds ``prdit/`` (the model folder ``benchmarks/sampler_quality.py`` uses by default),
``data/`` (the phantoms and their label maps in ``labels/``, with ``val.txt`` as the held-out set) and
``training.json`` (steps, seconds and final training losses of both stages). Re-running continues an
interrupted run from its checkpoints; a finished run is not trained again. The repository holds
``prdit/`` and ``training.json``; ``--data-only`` writes the (ignored) phantoms, label maps and split
the benchmarks and the conditional reference model need:

    python benchmarks/reference_model.py --data-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import set_threads

DEFAULT_OUT = Path(__file__).resolve().parent / "reference_model"
STAGES = ("phantoms-tiny-stage1", "phantoms-tiny-stage2")


def train_stage(name: str, steps: int, data: Path, out: Path, seed: int, init_from: Path | None,
                extra: list[str] = ()) -> dict:
    """Train one stage to ``steps`` (continuing its run directory), ``extra`` config overrides last; returns steps,
    seconds and last losses."""
    from prdit.training.config import load_config
    from prdit.training.trainer import train

    overrides = [f"run.root={out / 'runs'}", f"data.train={data / 'train.txt'}", f"data.val={data / 'val.txt'}",
                 f"train.steps={steps}", f"train.seed={seed}"]
    if init_from is not None:
        overrides.append(f"train.init_from={init_from}")
    config = load_config(name, [*overrides, *extra])
    started = time.perf_counter()
    state = train(config, progress=True)
    run = out / "runs" / config.run.name
    return {"config": name, "overrides": list(extra), "steps": state.step,
            "final_loss": _last_logged_loss(run / "train.csv"),
            "seconds_this_call": round(time.perf_counter() - started, 1), "run": str(run.relative_to(out))}


def _last_logged_loss(path: Path) -> float | None:
    """The training loss of the run's last log line (the mean over its last ``log.every`` steps)."""
    import csv

    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "train"]
    return round(float(rows[-1]["loss"]), 5) if rows else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--phantoms", type=int, default=256, help="phantoms written; a quarter is held out")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--stage1-steps", type=int, default=8000)
    parser.add_argument("--stage2-steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps the run reproducible)")
    parser.add_argument("--set", dest="both", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both stages (repeatable), e.g. data.flip=false")
    parser.add_argument("--stage1-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for stage 1 only (repeatable), e.g. model.name=PRDiT-XS/6/0")
    parser.add_argument("--stage2-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for stage 2 only (repeatable), e.g. optim.ema_decay=0.999")
    parser.add_argument("--val-count", type=int, default=None, help="phantoms held out (default: a quarter)")
    parser.add_argument("--data-only", action="store_true", help="only write the phantoms and their split (the "
                        "model folder is in the repository; this gives the benchmark its held-out phantoms)")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from prdit.data.dataset import split_volumes
    from prdit.data.phantoms import write_phantoms
    from prdit.training.export import export_run

    out = args.out
    data = out / "data"
    # with their label maps (labels/), which the conditional reference model trains on; the volumes are
    # the same bit for bit with or without them
    if len(list(data.glob("phantom_*.nii.gz"))) < args.phantoms or \
            len(list((data / "labels").glob("phantom_*.nii.gz"))) < args.phantoms:
        write_phantoms(args.phantoms, args.size, data, seed=args.seed, labels=True)
    if not (data / "train.txt").is_file():
        split_volumes(data, val_fraction=0.25, seed=42, out_dir=data, val_count=args.val_count)
    if args.data_only:
        print(f"phantoms and split in {data}")
        return
    record_path = out / "training.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.update({"phantoms": args.phantoms, "size": args.size, "seed": args.seed, "threads": args.threads})
    stage1 = train_stage(STAGES[0], args.stage1_steps, data, out, args.seed, None, [*args.both, *args.stage1_set])
    record.setdefault("stages", {})[STAGES[0]] = _merged(record, STAGES[0], stage1)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    stage2 = train_stage(STAGES[1], args.stage2_steps, data, out, args.seed, out / stage1["run"],
                         [*args.both, *args.stage2_set])
    record["stages"][STAGES[1]] = _merged(record, STAGES[1], stage2)
    export_run(out / stage2["run"], out / "prdit", overwrite=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _merged(record: dict, name: str, stage: dict) -> dict:
    """``stage`` with the seconds of earlier (interrupted) calls added."""
    before = record.get("stages", {}).get(name, {})
    stage["seconds"] = round(before.get("seconds", 0.0) + stage.pop("seconds_this_call"), 1)
    return stage


if __name__ == "__main__":
    main()
