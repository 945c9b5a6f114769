"""Segmenter folders: the MONAI network, its label table and weights round-trip; malformed folders are refused."""

import json

import numpy as np
import pytest
import torch

from prdit.data.labels import LABELS, PHANTOM_LABELS
from prdit.data.normalization import Normalization
from prdit.errors import CheckpointError
from prdit.evaluation.segmenter import (CONFIG_FILE, REFERENCE_SEGMENTER, WEIGHTS_FILE, build_network,
                                        load_segmenter, save_segmenter)

ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
        "num_res_units": 1}
LABEL_NAMES = ("background", "lung_right", "heart")


def _folder(tmp_path):
    torch.manual_seed(0)
    network = build_network("UNet", ARGS)
    folder = save_segmenter(tmp_path / "segmenter", network, "UNet", ARGS, LABEL_NAMES, Normalization(),
                            (8, 8, 8), (2.0, 2.0, 2.0), ("lung_right",))
    return folder, network


def test_segmenter_folder_round_trip(tmp_path):
    folder, network = _folder(tmp_path)
    segmenter = load_segmenter(folder)
    assert segmenter.labels == LABEL_NAMES and segmenter.mean_labels == ("lung_right",)
    assert segmenter.input_size == (8, 8, 8) and segmenter.spacing == (2.0, 2.0, 2.0)
    for key, value in network.state_dict().items():
        assert torch.equal(segmenter.network.state_dict()[key], value)
    hu = np.random.default_rng(0).uniform(-1000, 1000, (2, 8, 8, 8)).astype(np.float32)
    predicted = segmenter.predict(hu)
    assert predicted.shape == (2, 8, 8, 8) and predicted.dtype == np.uint8
    # the network's channels are reported as prdit's indices
    with torch.no_grad():
        channels = network.eval()(torch.from_numpy(Normalization().to_model(hu))[:, None]).argmax(1).numpy()
    expected = np.array([LABELS[name] for name in LABEL_NAMES])[channels]
    assert np.array_equal(predicted, expected)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("network"), "\"network\" must be"),
    (lambda c: c["network"].update({"class": "NoSuchNet"}), "is not a network of monai.networks.nets"),
    (lambda c: c["network"]["args"].update({"out_channels": 4}), "weights do not fit"),
    (lambda c: c["network"]["args"].update({"no_such_argument": 1}), "refuses the arguments"),
    (lambda c: c["labels"].update({"2": "spleen_of_mars"}), "are not prdit labels"),
    (lambda c: c["labels"].pop("1"), "must number the channels"),
    (lambda c: c.update({"format": "prdit-model"}), "not a segmenter config"),
    (lambda c: c.update({"mean_labels": ["aorta"]}), "mean_labels"),
])
def test_malformed_segmenter_folder_is_refused_naming_the_file(tmp_path, change, message):
    folder, _ = _folder(tmp_path)
    config = json.loads((folder / CONFIG_FILE).read_text())
    change(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as error:
        load_segmenter(folder)
    assert str(folder) in str(error.value)


def test_segmenter_folder_without_weights_or_config_is_refused(tmp_path):
    folder, _ = _folder(tmp_path)
    (folder / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_segmenter(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {WEIGHTS_FILE}"):
        load_segmenter(folder)
    with pytest.raises(CheckpointError, match="not a segmenter folder"):
        load_segmenter(tmp_path)


@pytest.mark.skipif(not (REFERENCE_SEGMENTER / CONFIG_FILE).is_file(), reason="no shipped segmenter in this checkout")
def test_shipped_reference_segmenter_loads_with_prdit_labels():
    segmenter = load_segmenter()
    assert segmenter.labels == PHANTOM_LABELS
    assert segmenter.mean_labels and "background" not in segmenter.mean_labels
    assert sum(p.numel() for p in segmenter.network.parameters()) < 1_000_000


def test_reference_segmenter_benchmark_writes_a_folder_that_loads(tmp_path):
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    script = importlib.import_module("benchmarks.reference_segmenter")
    out = tmp_path / "segmenter"
    script.main(["--smoke", "--device", "cpu", "--threads", "1", "--out", str(out), "--json", str(tmp_path / "r.json")])
    segmenter = load_segmenter(out)
    assert segmenter.labels == PHANTOM_LABELS and segmenter.input_size == (16, 16, 16)
    record = json.loads((out / "training.json").read_text())
    assert record["command"].startswith("python benchmarks/reference_segmenter.py --smoke")
    assert record["data"]["train"]["seed"] != record["data"]["test"]["seed"]
    assert record["curves"] and set(record["held_out"]["dice"]) == set(PHANTOM_LABELS)
    assert json.loads((tmp_path / "r.json").read_text())["benchmark"] == "reference_segmenter"
    with pytest.raises(SystemExit, match="--out"):
        script.main(["--smoke", "--device", "cpu"])  # never over the shipped folder
