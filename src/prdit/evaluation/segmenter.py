"""A segmentation network as a folder: the reference segmenter of the adherence metrics, and any other.

A segmenter folder holds

    config.json         {"format": "prdit-segmenter", "format_version": 1,
                         "network": {"class": "UNet", "args": {...}},   a class of monai.networks.nets
                         "labels": {"0": "background", ...},            output channel -> prdit label name
                         "normalization": {...},                        HU -> the network's input range
                         "input_size": [D, H, W], "spacing": [z, y, x], the grid it was trained on
                         "mean_labels": [...]}                           the labels its mean Dice covers
    model.safetensors   the network's weights

so any MONAI network a user trains on label maps named as prdit's can stand in for the shipped
one: the network is built as ``monai.networks.nets.<class>(**args)`` and loaded strictly.
``mean_labels`` names the labels the network segments well enough for a mean Dice to mean
something (the shipped folder: the labels whose held-out Dice reached a threshold, recorded in
its ``training.json``); per-label Dice is reported for every label.

The shipped reference segmenter, a small 3D U-Net trained on phantoms at the reference models'
size and spacing by ``benchmarks/reference_segmenter.py``, lives in the repository at
``benchmarks/reference_model/segmenter/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prdit.data.labels import LABELS
from prdit.data.normalization import Normalization
from prdit.errors import CheckpointError
from prdit.files import atomic_write

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "prdit-segmenter"
FORMAT_VERSION = 1
REFERENCE_SEGMENTER = Path(__file__).resolve().parents[3] / "benchmarks" / "reference_model" / "segmenter"
"""The shipped reference segmenter (in a checkout of the repository)."""


@dataclass
class Segmenter:
    """A loaded segmentation network with its label table, input normalisation and grid."""

    network: torch.nn.Module
    labels: tuple[str, ...]
    normalization: Normalization
    input_size: tuple[int, int, int] | None
    spacing: tuple[float, float, float] | None
    mean_labels: tuple[str, ...]
    folder: Path

    @property
    def prdit_indices(self) -> np.ndarray:
        """prdit index of each output channel ``[K]``."""
        return np.array([LABELS[name] for name in self.labels], dtype=np.uint8)

    def describe(self) -> dict:
        """What the report says about the segmenter."""
        from prdit.data.io import file_sha256

        weights = self.folder / WEIGHTS_FILE
        return {"folder": str(self.folder), "weights_sha256": file_sha256(weights) if weights.is_file() else None,
                "labels": list(self.labels), "mean_labels": list(self.mean_labels),
                "input_size": None if self.input_size is None else list(self.input_size),
                "spacing": None if self.spacing is None else list(self.spacing)}

    @torch.no_grad()
    def predict(self, hu: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 4) -> np.ndarray:
        """Label maps ``[B, D, H, W]`` (uint8 prdit indices) of volumes in HU ``[B, D, H, W]``."""
        device = torch.device(device)
        self.network.to(device).eval()
        to_prdit = torch.from_numpy(self.prdit_indices).to(device)
        out = []
        for start in range(0, len(hu), batch_size):
            x = np.stack([self.normalization.to_model(v) for v in hu[start:start + batch_size]])[:, None]
            logits = self.network(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
            out.append(to_prdit[logits.argmax(dim=1)].cpu().numpy())
        return np.concatenate(out).astype(np.uint8)


def build_network(network_class: str, args: dict, source: str | Path = "segmenter") -> torch.nn.Module:
    """``monai.networks.nets.<network_class>(**args)``; an unknown class or arguments it refuses name ``source``."""
    from monai.networks import nets

    cls = getattr(nets, str(network_class), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise CheckpointError(f"{source}: network class {network_class!r} is not a network of monai.networks.nets; "
                              f"name one (e.g. 'UNet', 'SegResNet')")
    try:
        return cls(**args)
    except (TypeError, ValueError, AssertionError) as err:
        raise CheckpointError(f"{source}: monai.networks.nets.{network_class} refuses the arguments {args} "
                              f"({type(err).__name__}: {err}); fix network.args") from err


def save_segmenter(folder: str | Path, network: torch.nn.Module, network_class: str, args: dict,
                   labels: tuple[str, ...], normalization: Normalization, input_size: tuple[int, int, int],
                   spacing: tuple[float, float, float], mean_labels: tuple[str, ...]) -> Path:
    """Write ``model.safetensors`` then ``config.json`` (each atomically) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "network": {"class": network_class, "args": args},
              "labels": {str(i): name for i, name in enumerate(labels)},
              "normalization": normalization.to_dict(), "input_size": list(input_size),
              "spacing": [float(s) for s in spacing], "mean_labels": list(mean_labels)}
    atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=1) + "\n"))
    return folder


def load_segmenter(folder: str | Path | None = None) -> Segmenter:
    """The segmenter in ``folder`` (None: the shipped reference segmenter), built and loaded strictly on the CPU.

    Raises ``CheckpointError`` naming the file for a missing or malformed config, a network class
    MONAI does not have, labels that are not prdit's, or weights that do not fit the network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if folder is None:
        folder = REFERENCE_SEGMENTER
        if not (folder / CONFIG_FILE).is_file():
            raise CheckpointError(f"{folder}: the shipped reference segmenter is not here (it ships with a checkout "
                                  f"of the repository); pass a segmenter folder (--segmenter DIR)")
    folder = Path(folder).expanduser()
    config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: not a segmenter folder (no {CONFIG_FILE}); it needs {CONFIG_FILE} naming "
                              f"the MONAI network and its labels, and {WEIGHTS_FILE}")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_file}: not readable JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_file}: not a segmenter config (\"format\" must be {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_file}: segmenter format version {config.get('format_version')!r}; this "
                              f"prdit reads version {FORMAT_VERSION}")
    network_entry = config.get("network")
    if (not isinstance(network_entry, dict) or not isinstance(network_entry.get("class"), str)
            or not isinstance(network_entry.get("args", {}), dict)):
        raise CheckpointError(f"{config_file}: \"network\" must be {{\"class\": <monai.networks.nets class>, "
                              f"\"args\": {{...}}}}")
    labels = _labels(config.get("labels"), config_file)
    mean_labels = config.get("mean_labels", [name for name in labels if name != "background"])
    unknown = [name for name in mean_labels if name not in labels] if isinstance(mean_labels, list) else [mean_labels]
    if unknown:
        raise CheckpointError(f"{config_file}: mean_labels {unknown} are not among its labels")
    try:
        normalization = Normalization.from_dict(config.get("normalization", {}))
    except Exception as err:  # noqa: BLE001 — any malformed entry is the file's fault
        raise CheckpointError(f"{config_file}: \"normalization\" is malformed ({err})") from err
    network = build_network(network_entry["class"], network_entry.get("args", {}), config_file)
    if not weights_file.is_file():
        raise CheckpointError(f"{folder}: missing {WEIGHTS_FILE}, the segmenter's weights")
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights_file}: not a readable safetensors file ({err})") from err
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_file}: weights do not fit the network of {config_file} "
                              f"({str(err).splitlines()[0]})") from err
    size, spacing = config.get("input_size"), config.get("spacing")
    return Segmenter(network=network.eval(), labels=labels, normalization=normalization,
                     input_size=None if size is None else tuple(int(s) for s in size),
                     spacing=None if spacing is None else tuple(float(s) for s in spacing),
                     mean_labels=tuple(mean_labels), folder=folder)


def _labels(entry: object, config_file: Path) -> tuple[str, ...]:
    """Output channel -> prdit label name from the config's ``labels`` (index -> name, indices 0..K-1)."""
    if not isinstance(entry, dict) or not entry:
        raise CheckpointError(f"{config_file}: \"labels\" must map each output channel (\"0\", \"1\", ...) to a "
                              f"prdit label name")
    try:
        table = {int(index): name for index, name in entry.items()}
    except ValueError:
        raise CheckpointError(f"{config_file}: \"labels\" keys must be channel indices 0..K-1") from None
    if sorted(table) != list(range(len(table))):
        raise CheckpointError(f"{config_file}: \"labels\" must number the channels 0..{len(table) - 1}, "
                              f"got {sorted(table)}")
    names = tuple(table[i] for i in range(len(table)))
    unknown = [name for name in names if name not in LABELS]
    if unknown:
        raise CheckpointError(f"{config_file}: labels {unknown} are not prdit labels ({', '.join(LABELS)})")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{config_file}: a label names two channels")
    return names
