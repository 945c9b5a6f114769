"""Adherence to label maps: median HU inside each label, a segmenter's Dice, the mask-swap gap, their intervals."""

import json

import numpy as np
import pytest
import torch

from prdit.data.labels import LABELS, PHANTOM_LABELS, write_label_map, write_label_table
from prdit.data.io import Volume, write_volume
from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom_with_labels, phantom_seed, write_phantoms
from prdit.errors import DataError
from prdit.evaluation import adherence as adherence_module
from prdit.evaluation.adherence import (derangement, dice_per_label, label_medians, mean_entry,
                                        pooled_proportion_entry, proportion_entry)
from prdit.evaluation.config import AdherenceConfig, BootstrapConfig, EvaluationConfig
from prdit.evaluation.segmenter import Segmenter, build_network, save_segmenter
from prdit.evaluation.volumes import VolumeSet

SIZE = 16
LUNGS = (LABELS["lung_right"], LABELS["lung_left"])


def painted_hu(k: np.ndarray | int) -> np.ndarray:
    """The HU every label is painted with: one value a label, 40 HU apart."""
    return -950.0 + 40.0 * np.asarray(k, dtype=np.float32)


class NearestValue(torch.nn.Module):
    """A perfect segmenter of painted volumes: each voxel is the label (of the first ``count``) whose painted value
    is nearest."""

    def __init__(self, count: int = len(PHANTOM_LABELS)) -> None:
        super().__init__()
        self.values = torch.from_numpy(Normalization().to_model(painted_hu(np.arange(count))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, D, H, W] model range -> [B, K, D, H, W]
        return -(x - self.values.view(1, -1, 1, 1, 1)) ** 2


def _write_set(folder, seeds, jitter_rng=None, lungs_hu=None):
    """Volumes painted exactly as their phantom maps (``jitter_rng``: each label's value moved a little per volume;
    ``lungs_hu``: the lungs of the first volume filled with that HU) and the maps in ``folder/labels``."""
    write_label_table(folder / "labels")
    for i, seed in enumerate(seeds):
        like, labels = generate_phantom_with_labels(SIZE, seed)
        values = painted_hu(np.arange(len(PHANTOM_LABELS)))
        if jitter_rng is not None:
            values = values + jitter_rng.uniform(-5.0, 5.0, len(values)).astype(np.float32)
        hu = values[labels]
        if lungs_hu is not None and i == 0:
            hu[np.isin(labels, LUNGS)] = lungs_hu
        name = f"volume_{i:03d}.nii.gz"
        write_volume(folder / name, Volume(array=hu, spacing=like.spacing, origin=like.origin,
                                           direction=like.direction))
        write_label_map(folder / "labels" / name, labels, like)
    return folder


def _perfect_segmenter(monkeypatch, folder, labels=PHANTOM_LABELS):
    """Every segmenter folder loads as the stand-in (its folder is only reported)."""
    segmenter = Segmenter(network=NearestValue(len(labels)), labels=labels, normalization=Normalization(),
                          input_size=None, spacing=None, mean_labels=("lung_right", "lung_left", "heart", "liver"),
                          folder=folder)
    monkeypatch.setattr("prdit.evaluation.segmenter.load_segmenter", lambda folder=None: segmenter)


def _evaluate(real, fake, labels, resamples=50):
    config = EvaluationConfig(metrics=("adherence",), adherence=AdherenceConfig(labels=str(labels)),
                              bootstrap=BootstrapConfig(resamples=resamples), progress=False)
    return adherence_module.adherence(VolumeSet(real, units="hu", name="real"),
                                      VolumeSet(fake, units="hu", name="generated", hu_mapping="sampling"), config)


@pytest.fixture
def painted(tmp_path, monkeypatch):
    """Real painted volumes (8, values jittered per volume) and generated ones (6, exact, other anatomy)."""
    _perfect_segmenter(monkeypatch, tmp_path)
    real = _write_set(tmp_path / "real", [phantom_seed(0, i) for i in range(8)], np.random.default_rng(0))
    fake = _write_set(tmp_path / "fake", [phantom_seed(1, i) for i in range(6)])
    return real, fake


def test_volume_painted_as_its_map_adheres_and_a_swapped_map_scores_lower(painted):
    real, fake = painted
    entry = _evaluate(real, fake, fake / "labels")
    assert entry["hu"]["inside"]["value"] == 1.0
    assert all(e["inside"]["value"] == 1.0 for e in entry["hu"]["per_label"].values()
               if e["inside"]["value"] is not None)
    assert entry["dice"]["generated"]["value"] == 1.0 and entry["dice"]["real"]["value"] == 1.0
    assert all(e["generated"]["value"] == 1.0 for e in entry["dice"]["per_label"].values()
               if e["generated"]["value"] is not None)
    swapped = entry["mask_swap"]["swapped_dice"]["value"]
    assert swapped < 0.95 and entry["mask_swap"]["gap"]["value"] == pytest.approx(1.0 - swapped)
    assert entry["mask_swap"]["gap"]["low"] > 0.0
    names = sorted(p.name for p in fake.glob("volume_*.nii.gz"))
    assert sorted(entry["mask_swap"]["partner"]) == names
    assert all(partner != own for partner, own in zip(entry["mask_swap"]["partner"], names))


def test_lung_filled_with_soft_tissue_falls_outside_the_lung_range(tmp_path, monkeypatch):
    _perfect_segmenter(monkeypatch, tmp_path)
    real = _write_set(tmp_path / "real", [phantom_seed(0, i) for i in range(8)], np.random.default_rng(0))
    fake = _write_set(tmp_path / "fake", [phantom_seed(1, i) for i in range(6)], lungs_hu=40.0)
    entry = _evaluate(real, fake, fake / "labels")
    for name in ("lung_right", "lung_left"):
        inside = entry["hu"]["per_label"][name]["inside"]
        assert inside["value"] == pytest.approx(5 / 6) and inside["low"] < 5 / 6 < inside["high"]
    assert entry["hu"]["per_label"]["heart"]["inside"]["value"] == 1.0
    assert entry["hu"]["inside"]["value"] < 1.0
    assert entry["dice"]["per_label"]["lung_right"]["generated"]["value"] < 1.0


def test_label_map_on_another_grid_or_unknown_to_the_segmenter_is_refused_naming_the_file(painted, monkeypatch):
    real, fake = painted
    path = fake / "labels" / "volume_002.nii.gz"
    like, labels = generate_phantom_with_labels(SIZE, 5, spacing=30.0)
    write_label_map(path, labels, like)
    with pytest.raises(DataError, match="spacing") as error:
        _evaluate(real, fake, fake / "labels")
    assert str(path) in str(error.value)

    _write_set(fake, [phantom_seed(1, i) for i in range(6)])
    _perfect_segmenter(monkeypatch, fake, labels=PHANTOM_LABELS[:-1])  # no sternum
    with pytest.raises(DataError, match="sternum, which the segmenter") as error:
        _evaluate(real, fake, fake / "labels")
    assert "volume_000.nii.gz" in str(error.value)

    _perfect_segmenter(monkeypatch, fake)
    (fake / "labels" / "volume_001.nii.gz").unlink()
    with pytest.raises(DataError, match="no label map for"):
        _evaluate(real, fake, fake / "labels")


def test_measurements_on_known_cases():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 3
    hu = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    medians = label_medians(hu, labels, 5)
    assert medians[3] == np.median(hu[:2]) and medians[0] == np.median(hu[2:]) and np.isnan(medians[1])
    prediction = labels.copy()
    prediction[0] = 0  # half of label 3 lost
    dice = dice_per_label(prediction, labels, 5)
    assert dice[3] == pytest.approx(2 * 16 / (16 + 32)) and dice[0] == pytest.approx(2 * 32 / (48 + 32))
    assert np.isnan(dice[1])
    partner = derangement(7, seed=3)
    assert sorted(partner) == list(range(7)) and not np.any(partner == np.arange(7))
    assert np.array_equal(partner, derangement(7, seed=3))


def test_intervals_cover_the_population_value_in_at_least_90_percent_of_100_trials():
    """Coverage simulation (docs/method.md §17) at N = 64 and 256 volumes: Dice-like per-volume values (a skewed
    Beta, mean known), a per-label fraction inside at 97 %, and the fraction over (volume, label) pairs whose
    volumes differ in quality (each volume's labels inside with its own probability, mean 0.95)."""
    rng = np.random.default_rng(0)
    config = BootstrapConfig(resamples=200)
    for n in (64, 256):
        covered = {"mean": 0, "proportion": 0, "pooled": 0}
        for trial in range(100):
            boot = BootstrapConfig(resamples=200, seed=trial)
            dice = mean_entry(rng.beta(8.0, 2.0, n), boot)
            covered["mean"] += dice["low"] <= 0.8 <= dice["high"]
            inside = proportion_entry((rng.random(n) < 0.97).astype(float), config.level)
            covered["proportion"] += inside["low"] <= 0.97 <= inside["high"]
            quality = rng.beta(19.0, 1.0, n)  # mean 0.95
            pairs = (rng.random((n, 20)) < quality[:, None]).astype(float)
            pairs[rng.random((n, 20)) < 0.1] = np.nan  # labels some maps lack
            pooled = pooled_proportion_entry(pairs, config.level)
            covered["pooled"] += pooled["low"] <= 0.95 <= pooled["high"]
        assert min(covered.values()) >= 90, (n, covered)


def test_evaluate_cli_reports_adherence_on_tiny_phantoms(tmp_path, evaluate_cli):
    real, fake = tmp_path / "real", tmp_path / "fake"
    write_phantoms(6, SIZE, real, seed=0, labels=True)
    write_phantoms(4, SIZE, fake, seed=1, labels=True)
    torch.manual_seed(0)
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": len(PHANTOM_LABELS), "channels": [4, 8],
            "strides": [2], "num_res_units": 1}
    segmenter = save_segmenter(tmp_path / "segmenter", build_network("UNet", args), "UNet", args, PHANTOM_LABELS,
                               Normalization(), (SIZE,) * 3, (380.0 / SIZE,) * 3, ("lung_right", "heart"))
    out = tmp_path / "report.json"
    result = evaluate_cli(["--real", str(real), "--fake", str(fake), "--labels", str(fake / "labels"),
                           "--segmenter", str(segmenter), "--metrics", "hu_wasserstein", "--bootstrap", "20",
                           "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Dice (generated)" in result.output and "mask-swap gap" in result.output
    report = json.loads(out.read_text())
    assert report["metrics"] == ["hu_wasserstein", "adherence"]
    entry = report["adherence"]
    assert entry["labels"]["generated_maps"] == 4 and entry["labels"]["real_maps"] == 6
    assert entry["dice"]["mean_labels"] == ["lung_right", "heart"]
    assert 0.0 <= entry["hu"]["inside"]["value"] <= 1.0 and entry["hu"]["inside"]["low"] is not None
    assert set(entry["hu"]["per_label"]) >= {"lung_right", "heart", "liver"}
    assert report["protocol"]["adherence"]["published"] is False

    wrong = save_segmenter(tmp_path / "segmenter32", build_network("UNet", args), "UNet", args, PHANTOM_LABELS,
                           Normalization(), (32,) * 3, (380.0 / 32,) * 3, ("heart",))
    result = evaluate_cli(["--real", str(real), "--fake", str(fake), "--labels", str(fake / "labels"),
                           "--segmenter", str(wrong), "--metrics", "adherence", "--quiet"])
    assert result.exit_code != 0 and "trained on [32, 32, 32] volumes" in str(result.exception)
