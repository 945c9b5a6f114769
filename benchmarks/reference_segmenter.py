"""Train the reference segmenter of the adherence metrics and measure its Dice on held-out phantoms.

A MONAI 3D ``UNet`` (channels 16, 32, 64; two residual units a level) learns prdit's labels from
phantoms generated with their label maps at the reference models' size and spacing (read from
``--model``'s config.json: 32³ at 11.875 mm), with Dice + cross-entropy (``DiceCELoss``), AdamW and
a cosine learning rate, seeded, on one CPU thread. No mirroring: the labels know right from left.
Its Dice per label on fresh phantoms (other seeds) is its ceiling on real volumes; the labels whose
Dice reaches ``--mean-threshold`` are the ones ``prdit evaluate --labels`` averages (the others,
too small to segment at this size, are reported per label). Writes the segmenter folder
(``config.json`` + ``model.safetensors``), ``training.json`` beside it (command, data seeds,
curves, held-out Dice) and the result JSON.

    python benchmarks/reference_segmenter.py --threads 1     # ~10 min of one CPU thread
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import REPOSITORY, add_common_args, parameter_count, report, resolve_device, set_threads

NAME = "reference_segmenter"
NETWORK_CLASS = "UNet"


def network_args(num_labels: int, smoke: bool) -> dict:
    """Arguments of the MONAI ``UNet`` (a tiny one under ``--smoke``)."""
    return {"spatial_dims": 3, "in_channels": 1, "out_channels": num_labels,
            "channels": [4, 8] if smoke else [16, 32, 64], "strides": [2] if smoke else [2, 2],
            "num_res_units": 1 if smoke else 2}


def phantom_set(count: int, seed: int, size: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` phantoms of set ``seed``: HU ``[N, D, H, W]`` float32 and label maps ``[N, D, H, W]`` uint8."""
    from prdit.data.phantoms import generate_phantom_with_labels, phantom_seed

    pairs = [generate_phantom_with_labels(size, phantom_seed(seed, i), spacing) for i in range(count)]
    return np.stack([v.array for v, _ in pairs]), np.stack([labels for _, labels in pairs])


def held_out_dice(segmenter, hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-volume Dice of each label ``[N, K]`` (NaN where a volume lacks the label)."""
    from prdit.evaluation.adherence import dice_per_label

    predictions = segmenter.predict(hu, batch_size=8)
    return np.stack([dice_per_label(p, t) for p, t in zip(predictions, labels)])


def main(argv: list[str] | None = None) -> None:
    """Generate the phantoms, train, measure the held-out Dice, write the folder and the results."""
    from prdit.data.labels import PHANTOM_LABELS
    from prdit.data.normalization import Normalization
    from prdit.evaluation.segmenter import Segmenter, build_network, save_segmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--model", type=Path, default=REPOSITORY / "benchmarks/reference_model/xs4/prdit",
                        help="model folder whose volume size, spacing and normalisation the segmenter takes")
    parser.add_argument("--out", type=Path, default=None, help="segmenter folder to write, training.json inside it "
                        "(default: the shipped benchmarks/reference_model/segmenter; --smoke runs need one)")
    parser.add_argument("--train-phantoms", type=int, default=256)
    parser.add_argument("--train-seed", type=int, default=0, help="phantom set of the training volumes")
    parser.add_argument("--val-phantoms", type=int, default=16, help="volumes of the validation curve")
    parser.add_argument("--val-seed", type=int, default=2)
    parser.add_argument("--test-phantoms", type=int, default=64, help="held-out volumes of the reported Dice")
    parser.add_argument("--test-seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between validation Dice points")
    parser.add_argument("--mean-threshold", type=float, default=0.5,
                        help="labels whose held-out Dice reaches this are the ones the mean Dice covers")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    if args.out is None and args.smoke:
        raise SystemExit("--smoke writes a tiny segmenter: give it its own --out, not the shipped folder")
    args.out = args.out or REPOSITORY / "benchmarks/reference_model/segmenter"
    if args.smoke:
        args.train_phantoms, args.val_phantoms, args.test_phantoms, args.steps, args.eval_every = 4, 2, 2, 2, 1

    model_config = json.loads((args.model / "config.json").read_text())
    size = tuple(int(s) for s in model_config["model"]["input_size"])
    spacing = tuple(float(s) for s in model_config["spacing"])
    if args.smoke:
        size, spacing = (16, 16, 16), (2 * spacing[0],) * 3
    normalization = Normalization.from_dict(model_config["normalization"])

    start = time.perf_counter()
    train_hu, train_labels = phantom_set(args.train_phantoms, args.train_seed, size[0], spacing[0])
    val_hu, val_labels = phantom_set(args.val_phantoms, args.val_seed, size[0], spacing[0])
    test_hu, test_labels = phantom_set(args.test_phantoms, args.test_seed, size[0], spacing[0])
    data_seconds = time.perf_counter() - start
    print(f"phantoms generated in {data_seconds:.0f} s", file=sys.stderr, flush=True)

    from monai.losses import DiceCELoss

    torch.manual_seed(args.seed)
    arguments = network_args(len(PHANTOM_LABELS), args.smoke)
    network = build_network(NETWORK_CLASS, arguments).to(device)
    segmenter = Segmenter(network=network, labels=PHANTOM_LABELS, normalization=normalization, input_size=size,
                          spacing=spacing, mean_labels=(), folder=args.out)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    inputs = torch.from_numpy(np.stack([normalization.to_model(v) for v in train_hu])[:, None].astype(np.float32))
    targets = torch.from_numpy(train_labels[:, None].astype(np.int64))
    order = torch.Generator().manual_seed(args.seed)
    losses, curve = [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        network.train()
        batch = torch.randint(0, len(inputs), (args.batch,), generator=order)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(inputs[batch].to(device)), targets[batch].to(device))
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % args.eval_every == 0 or step == args.steps:
            dice = held_out_dice(segmenter, val_hu, val_labels)
            present = np.isfinite(dice[:, 1:]).any(axis=0)  # labels no validation volume holds have no Dice
            foreground = np.nanmean(np.nanmean(dice[:, 1:][:, present], axis=0))
            curve.append({"step": step, "loss": float(np.mean(losses[-args.eval_every:])),
                          "val_mean_dice_all_foreground": float(foreground),
                          "seconds": round(time.perf_counter() - start, 1)})
            print(f"step {step}: loss {curve[-1]['loss']:.4f}, validation Dice (all foreground labels) "
                  f"{foreground:.3f}, {curve[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    train_seconds = time.perf_counter() - start

    dice = held_out_dice(segmenter, test_hu, test_labels)
    per_label = {}
    for k, name in enumerate(PHANTOM_LABELS):
        column = dice[:, k][np.isfinite(dice[:, k])]
        per_label[name] = {"dice": float(column.mean()) if column.size else None, "volumes": int(column.size),
                           "voxels_per_volume": float((test_labels == k).sum() / len(test_labels))}
    mean_labels = tuple(name for name in PHANTOM_LABELS[1:]
                        if per_label[name]["dice"] is not None and per_label[name]["dice"] >= args.mean_threshold)
    left_out = [name for name in PHANTOM_LABELS[1:] if name not in mean_labels]
    covered = [PHANTOM_LABELS.index(name) for name in mean_labels]
    per_volume_mean = np.nanmean(dice[:, covered], axis=1) if covered else np.full(len(dice), np.nan)
    mean_dice = float(np.nanmean(per_volume_mean)) if covered else None
    save_segmenter(args.out, network.cpu(), NETWORK_CLASS, arguments, PHANTOM_LABELS, normalization, size, spacing,
                   mean_labels)

    command = "python benchmarks/reference_segmenter.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {"command": command.strip(), "network": {"class": NETWORK_CLASS, "args": arguments,
                                                       "parameters": parameter_count(network)},
              "size": list(size), "spacing": list(spacing), "normalization": normalization.to_dict(),
              "data": {"generator": "prdit.data.phantoms.generate_phantom_with_labels, phantom i of set s seeded "
                                    "phantom_seed(s, i)",
                       "train": {"seed": args.train_seed, "phantoms": args.train_phantoms},
                       "validation": {"seed": args.val_seed, "phantoms": args.val_phantoms},
                       "test": {"seed": args.test_seed, "phantoms": args.test_phantoms}},
              "training": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "schedule": "cosine to 0",
                           "optimizer": "AdamW", "loss": "monai DiceCELoss(to_onehot_y=True, softmax=True)",
                           "seed": args.seed, "threads": args.threads, "seconds": round(train_seconds, 1),
                           "data_seconds": round(data_seconds, 1)},
              "curves": curve,
              "held_out": {"phantoms": args.test_phantoms, "seed": args.test_seed, "dice": per_label,
                           "mean_dice": mean_dice, "mean_labels": list(mean_labels),
                           "mean_threshold": args.mean_threshold, "left_out_of_mean": left_out,
                           "mean_definition": "per volume the mean Dice over mean_labels present in its map, "
                                              "averaged over volumes"}}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")

    rows = [[name, "-" if e["dice"] is None else f"{e['dice']:.3f}", e["volumes"], f"{e['voxels_per_volume']:.0f}",
             "yes" if name in mean_labels else "no"] for name, e in per_label.items() if name != "background"]
    rows.append(["mean", "-" if mean_dice is None else f"{mean_dice:.3f}", args.test_phantoms, "-",
                 f"{len(mean_labels)} labels"])
    notes = [f"MONAI 3D UNet {arguments['channels']}, {arguments['num_res_units']} residual units, "
             f"{parameter_count(network):,} parameters; {args.train_phantoms} training phantoms (seed "
             f"{args.train_seed}) at {size[0]}³, {spacing[0]} mm; {args.steps} steps of batch {args.batch}, "
             f"DiceCELoss, AdamW lr {args.lr} cosine; {train_seconds:.0f} s",
             f"Dice on {args.test_phantoms} held-out phantoms (seed {args.test_seed}): mean over the volumes holding "
             f"each label; the mean covers the labels with Dice >= {args.mean_threshold}"]
    report(NAME, device, args, f"Reference segmenter: held-out Dice per label ({device.type})", notes,
           ["label", "Dice", "volumes", "voxels/volume", "in mean"], rows, record)


if __name__ == "__main__":
    main()
