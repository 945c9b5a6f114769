"""Train the reference segmenter of the adherence metrics and measure its Dice on held-out phantoms.

A MONAI 3D ``UNet`` (channels 16, 32, 64; two residual units a level) learns prdit's labels from
phantoms generated with their label maps at the reference models' size and spacing (read from
``--model``'s config.json: 32³ at 11.875 mm), with Dice + cross-entropy (``DiceCELoss``), AdamW and
a cosine learning rate, seeded, on one CPU thread. No mirroring: the labels know right from left.
Its Dice per label on fresh phantoms (other seeds) is its ceiling on real volumes; the labels whose
Dice reaches ``--mean-threshold`` are the ones ``prdit evaluate --labels`` averages (the others,
too small to segment at this size, are reported per label). Writes the segmenter folder
(``config.json`` + ``model.safetensors``), ``training.json`` beside it (command, data seeds,
curves, held-out Dice) and the result JSON. The recipe (``Recipe``, ``train_segmenter``) and the Dice
(``held_out_dice``, ``per_volume_mean``) are the ones benchmarks/downstream_segmentation.py trains and scores
its segmenters with.

    python benchmarks/reference_segmenter.py --threads 1     # ~10 min of one CPU thread
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import REPOSITORY, add_common_args, parameter_count, report, resolve_device, set_threads

NAME = "reference_segmenter"
NETWORK_CLASS = "UNet"
# Phantom sets by seed: the segmenter's training volumes, its held-out test volumes (also the real set of
# benchmarks/conditional_reference.py) and its validation curve's volumes.
TRAIN_SEED, TEST_SEED, VAL_SEED = 0, 1, 2
MEAN_DEFINITION = "per volume the mean Dice over mean_labels present in its map, averaged over volumes"


@dataclass(frozen=True)
class Recipe:
    """How a segmenter trains: ``steps`` of ``batch`` volumes drawn with replacement (seeded by ``seed``, which
    also seeds the initialisation), AdamW at ``lr`` with a cosine schedule to 0, a validation Dice point every
    ``eval_every`` steps."""

    steps: int = 600
    batch: int = 4
    lr: float = 2e-3
    seed: int = 0
    eval_every: int = 100

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Recipe":
        """The recipe of ``add_recipe_args``' options."""
        return cls(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, eval_every=args.eval_every)

    def describe(self, threads: int) -> dict:
        """What a record says about the training."""
        return {"steps": self.steps, "batch": self.batch, "lr": self.lr, "schedule": "cosine to 0",
                "optimizer": "AdamW", "loss": "monai DiceCELoss(to_onehot_y=True, softmax=True)", "seed": self.seed,
                "threads": threads}


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    """``--steps``, ``--batch``, ``--lr``, ``--seed``, ``--eval-every``, defaults from :class:`Recipe`."""
    defaults = Recipe()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="initialisation and batch order")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every,
                        help="steps between validation Dice points")


def add_held_out_args(parser: argparse.ArgumentParser) -> None:
    """``--val-phantoms``, ``--val-seed``, ``--test-phantoms``, ``--test-seed``: the phantom sets a segmenter is
    validated and tested on."""
    parser.add_argument("--val-phantoms", type=int, default=16, help="volumes of the validation curve")
    parser.add_argument("--val-seed", type=int, default=VAL_SEED)
    parser.add_argument("--test-phantoms", type=int, default=64, help="held-out volumes of the reported Dice")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED)


def network_args(num_labels: int, smoke: bool) -> dict:
    """Arguments of the MONAI ``UNet`` (a tiny one under ``--smoke``)."""
    return {"spatial_dims": 3, "in_channels": 1, "out_channels": num_labels,
            "channels": [4, 8] if smoke else [16, 32, 64], "strides": [2] if smoke else [2, 2],
            "num_res_units": 1 if smoke else 2}


def recipe_grid(model: Path, smoke: bool) -> tuple[tuple[int, int, int], tuple[float, float, float], object]:
    """Volume size ``(D, H, W)``, spacing and normalisation of the model folder ``model`` (``smoke``: 16³ at twice
    the spacing)."""
    from prdit.data.normalization import Normalization

    model_config = json.loads((model / "config.json").read_text())
    size = tuple(int(s) for s in model_config["model"]["input_size"])
    spacing = tuple(float(s) for s in model_config["spacing"])
    if smoke:
        size, spacing = (16, 16, 16), (2 * spacing[0],) * 3
    return size, spacing, Normalization.from_dict(model_config["normalization"])


def phantom_set(count: int, seed: int, size: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` phantoms of set ``seed``: HU ``[N, D, H, W]`` float32 and label maps ``[N, D, H, W]`` uint8."""
    from prdit.data.phantoms import generate_phantom_with_labels, phantom_seed

    pairs = [generate_phantom_with_labels(size, phantom_seed(seed, i), spacing) for i in range(count)]
    return np.stack([v.array for v, _ in pairs]), np.stack([labels for _, labels in pairs])


def held_out_dice(segmenter, hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-volume Dice of each label ``[N, K]`` (NaN where a volume lacks the label)."""
    from prdit.evaluation.adherence import dice_per_label

    device = next(segmenter.network.parameters()).device  # where it trains: predicting must not move it
    predictions = segmenter.predict(hu, device, batch_size=8)
    return np.stack([dice_per_label(p, t) for p, t in zip(predictions, labels)])


def per_volume_mean(dice: np.ndarray, mean_labels: tuple[str, ...]) -> np.ndarray:
    """Per volume the mean Dice ``[N]`` over the labels ``mean_labels`` its map holds, from Dice ``[N, K]``."""
    from prdit.data.labels import PHANTOM_LABELS

    covered = [PHANTOM_LABELS.index(name) for name in mean_labels]
    return np.nanmean(dice[:, covered], axis=1) if covered else np.full(len(dice), np.nan)


@dataclass
class Trained:
    """A segmenter the recipe trained, with its network's arguments, validation curve and training seconds."""

    segmenter: object
    arguments: dict
    curve: list[dict]
    seconds: float


def train_segmenter(train_hu: np.ndarray, train_labels: np.ndarray, val_hu: np.ndarray, val_labels: np.ndarray,
                    normalization, size: tuple[int, int, int], spacing: tuple[float, float, float], recipe: Recipe,
                    smoke: bool, device: torch.device, folder: Path) -> Trained:
    """Train a MONAI ``UNet`` by ``recipe`` on volumes in HU ``[N, D, H, W]`` and their label maps ``[N, D, H, W]``,
    with a validation Dice point (all foreground labels) every ``recipe.eval_every`` steps."""
    from monai.losses import DiceCELoss

    from prdit.data.labels import PHANTOM_LABELS
    from prdit.evaluation.segmenter import Segmenter, build_network

    torch.manual_seed(recipe.seed)
    arguments = network_args(len(PHANTOM_LABELS), smoke)
    network = build_network(NETWORK_CLASS, arguments).to(device)
    segmenter = Segmenter(network=network, labels=PHANTOM_LABELS, normalization=normalization, input_size=size,
                          spacing=spacing, mean_labels=(), folder=folder)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda s: 0.5 * (1 + math.cos(math.pi * s / recipe.steps)))
    inputs = torch.from_numpy(np.stack([normalization.to_model(v) for v in train_hu])[:, None].astype(np.float32))
    targets = torch.from_numpy(train_labels[:, None].astype(np.int64))
    order = torch.Generator().manual_seed(recipe.seed)
    losses, curve = [], []
    start = time.perf_counter()
    for step in range(1, recipe.steps + 1):
        network.train()
        batch = torch.randint(0, len(inputs), (recipe.batch,), generator=order)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(inputs[batch].to(device)), targets[batch].to(device))
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % recipe.eval_every == 0 or step == recipe.steps:
            dice = held_out_dice(segmenter, val_hu, val_labels)
            present = np.isfinite(dice[:, 1:]).any(axis=0)  # labels no validation volume holds have no Dice
            foreground = np.nanmean(np.nanmean(dice[:, 1:][:, present], axis=0))
            curve.append({"step": step, "loss": float(np.mean(losses[-recipe.eval_every:])),
                          "val_mean_dice_all_foreground": float(foreground),
                          "seconds": round(time.perf_counter() - start, 1)})
            print(f"step {step}: loss {curve[-1]['loss']:.4f}, validation Dice (all foreground labels) "
                  f"{foreground:.3f}, {curve[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    return Trained(segmenter=segmenter, arguments=arguments, curve=curve, seconds=time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Generate the phantoms, train, measure the held-out Dice, write the folder and the results."""
    from prdit.data.labels import PHANTOM_LABELS
    from prdit.evaluation.segmenter import save_segmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--model", type=Path, default=REPOSITORY / "benchmarks/reference_model/xs4/prdit",
                        help="model folder whose volume size, spacing and normalisation the segmenter takes")
    parser.add_argument("--out", type=Path, default=None, help="segmenter folder to write, training.json inside it "
                        "(default: the shipped benchmarks/reference_model/segmenter; --smoke runs need one)")
    parser.add_argument("--train-phantoms", type=int, default=256)
    parser.add_argument("--train-seed", type=int, default=TRAIN_SEED, help="phantom set of the training volumes")
    add_held_out_args(parser)
    add_recipe_args(parser)
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
    size, spacing, normalization = recipe_grid(args.model, args.smoke)
    recipe = Recipe.from_args(args)

    start = time.perf_counter()
    train_hu, train_labels = phantom_set(args.train_phantoms, args.train_seed, size[0], spacing[0])
    val_hu, val_labels = phantom_set(args.val_phantoms, args.val_seed, size[0], spacing[0])
    test_hu, test_labels = phantom_set(args.test_phantoms, args.test_seed, size[0], spacing[0])
    data_seconds = time.perf_counter() - start
    print(f"phantoms generated in {data_seconds:.0f} s", file=sys.stderr, flush=True)

    trained = train_segmenter(train_hu, train_labels, val_hu, val_labels, normalization, size, spacing, recipe,
                              args.smoke, device, args.out)
    network, arguments, curve, train_seconds = (trained.segmenter.network, trained.arguments, trained.curve,
                                                trained.seconds)

    dice = held_out_dice(trained.segmenter, test_hu, test_labels)
    per_label = {}
    for k, name in enumerate(PHANTOM_LABELS):
        column = dice[:, k][np.isfinite(dice[:, k])]
        per_label[name] = {"dice": float(column.mean()) if column.size else None, "volumes": int(column.size),
                           "voxels_per_volume": float((test_labels == k).sum() / len(test_labels))}
    mean_labels = tuple(name for name in PHANTOM_LABELS[1:]
                        if per_label[name]["dice"] is not None and per_label[name]["dice"] >= args.mean_threshold)
    left_out = [name for name in PHANTOM_LABELS[1:] if name not in mean_labels]
    mean_dice = float(np.nanmean(per_volume_mean(dice, mean_labels))) if mean_labels else None
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
              "training": {**recipe.describe(args.threads), "seconds": round(train_seconds, 1),
                           "data_seconds": round(data_seconds, 1)},
              "curves": curve,
              "held_out": {"phantoms": args.test_phantoms, "seed": args.test_seed, "dice": per_label,
                           "mean_dice": mean_dice, "mean_labels": list(mean_labels),
                           "mean_threshold": args.mean_threshold, "left_out_of_mean": left_out,
                           "mean_definition": MEAN_DEFINITION}}
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
