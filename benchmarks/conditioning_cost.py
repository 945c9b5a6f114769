"""What label-map conditioning costs a training step: unconditional vs the global refiner conditioned
(``stage2``) vs both stages (``both``), per model.

Each step is forward + backward + gradient clip + AdamW with the IaN loss on a fixed batch and a
fixed random label map per volume, as ``prdit train`` runs it: a stage-2 model with stage 1 frozen
(with ``both``, the local denoiser's label modulation is frozen with it), a stage-1 model whole.
All configurations of a model are timed in alternating rounds in one process, so drift of the
machine hits them alike.

    python benchmarks/conditioning_cost.py --threads 1                 # batch 8 at 32³
    python benchmarks/conditioning_cost.py --models PRDiT-T/6/2 --size 64 --batch 2
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (add_common_args, fmt_number, make_optimizer, parameter_count, precision_note, report,
                               resolve_device, set_threads, time_alternating, training_volume)

NAME = "conditioning_cost"
CONDITIONINGS = ("none", "stage2", "both")


def build_step(name: str, conditioning: str, size: int, batch: int, device: torch.device):
    """The network and a closure running one training step of it on a fixed batch with label maps."""
    from prdit.data.labels import PHANTOM_LABELS
    from prdit.diffusion import create_process
    from prdit.models import create_model
    from prdit.models.conditioning import Conditioning

    torch.manual_seed(0)
    model = create_model(name, size, conditioning=None if conditioning == "none"
                         else Conditioning(PHANTOM_LABELS, conditioning)).to(device).train()
    if model.stage == 2:
        model.freeze_stage1()
    x0 = training_volume(batch, size, device)
    labels = torch.randint(0, len(PHANTOM_LABELS), (batch, size, size, size),
                           generator=torch.Generator().manual_seed(0)).to(device)
    network = model if conditioning == "none" else functools.partial(model, labels=labels)
    process = create_process("ian")
    optimizer = make_optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        process.training_losses(network, x0)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return model, step


def applicable(name: str, conditioning: str) -> bool:
    """``stage2`` conditions the global refiner, which a stage-1 model (depth 0) lacks."""
    return not (conditioning == "stage2" and name.endswith("/0"))


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, time every conditioning of each model alternately, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, repeats=5)
    parser.add_argument("--models", default="PRDiT-T/6/0,PRDiT-T/6/2,PRDiT-XS/6/4",
                        help="PRDiT names, comma-separated")
    parser.add_argument("--size", type=int, default=32, help="volume edge")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    size, batch = (8, 2) if args.smoke else (args.size, args.batch)
    names = ["PRDiT-T/6/1"] if args.smoke else [n for n in args.models.split(",") if n]

    rows, results = [], []
    for name in names:
        print(f"timing {name}: alternating rounds …", file=sys.stderr, flush=True)
        steps, parameters = {}, {}
        for conditioning in CONDITIONINGS:
            if applicable(name, conditioning):
                model, steps[conditioning] = build_step(name, conditioning, size, batch, device)
                parameters[conditioning] = (parameter_count(model), parameter_count(model, trainable_only=True))
        timings = time_alternating(steps, device, args.warmup, args.repeats, args.time_budget)
        base = timings["none"].median
        for conditioning, timing in timings.items():
            total, trainable = parameters[conditioning]
            ratio = timing.median / base
            rows.append([name, conditioning, f"{total / 1e6:.2f}", f"{trainable / 1e6:.2f}", fmt_number(timing.median),
                         f"{ratio:.2f}", timing.to_dict()["runs"]])
            results.append({"model": name, "conditioning": conditioning, "size": size, "batch": batch,
                            "parameters": total, "trainable": trainable, "time_ratio": ratio, **timing.to_dict()})
    notes = [f"{size}³, batch {batch}, {precision_note(device)}; forward + backward + clip + AdamW with the IaN loss "
             f"and a label map per volume; stage-2 models with stage 1 frozen; median of alternating rounds after "
             f"{args.warmup} warm-up round(s)",
             "× unconditional = this step's median time / the unconditional model's (same rounds)"]
    report(NAME, device, args, f"Training-step cost of label-map conditioning ({device.type})", notes,
           ["model", "conditioning", "params M", "trainable M", "step s", "× unconditional", "runs"], rows, results)


if __name__ == "__main__":
    main()
