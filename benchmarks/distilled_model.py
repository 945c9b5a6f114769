"""The distilled reference model: the reference model of ``reference_model.py`` made into a consistency
model by ``prdit distill`` (sCD, docs/method.md §18), on the CPU with one thread and fixed seeds.

    python benchmarks/distilled_model.py                     # -> benchmarks/reference_model/distilled/
    python benchmarks/distilled_model.py --steps 200 --out /tmp/distilled --set optim.lr=3e-4
    python benchmarks/distilled_model.py --out /tmp/cd --set distill.objective=cd --set distill.teacher_steps=4

The output holds ``prdit/`` (the model folder ``benchmarks/distillation.py`` scores: a consistency model, or
an IaN model for DDIM from progressive distillation) and
``training.json`` (the teacher, steps, seconds, final losses and the overrides). The run continues from its
checkpoints when re-run; its phantoms are the teacher's (``reference_model.py --data-only`` writes them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import recorded, set_threads

HERE = Path(__file__).resolve().parent / "reference_model"
DEFAULT_OUT = HERE / "distilled"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=HERE / "prdit", help="the IaN model folder to distil")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="the teacher's phantoms (train.txt, val.txt)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps the run reproducible)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. distill.warmup_steps=1000")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if not (args.data / "train.txt").is_file():
        parser.error(f"{args.data}: no phantoms; run `python benchmarks/reference_model.py --data-only` first")

    from prdit.training.cli import distill_config
    from prdit.training.export import export_run
    from prdit.training.trainer import train

    overrides = [f"data.train={args.data / 'train.txt'}", f"data.val={args.data / 'val.txt'}",
                 f"run.root={args.out / 'runs'}", f"train.steps={args.steps}", *args.overrides]
    config = distill_config("phantoms-tiny-distill", args.teacher, overrides)
    record_path = args.out / "training.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"seconds": 0.0}
    started = time.perf_counter()
    state = train(config, progress=True)
    run = args.out / "runs" / config.run.name
    record.update({"teacher": recorded(args.teacher),
                   "config": "phantoms-tiny-distill", "objective": config.distill.objective,
                   "overrides": args.overrides,
                   "steps": state.step, "threads": args.threads, "final_loss": state.last_loss,
                   "seconds": round(record["seconds"] + time.perf_counter() - started, 1),
                   "run": str(run.relative_to(args.out))})
    export_run(run, args.out / "prdit", overwrite=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
