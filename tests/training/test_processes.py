"""Training with either process of the family, and run directories of the earlier layout."""

import yaml

from prdit.diffusion import FlowMatching
from prdit.model_folder import load_model_folder
from prdit.training.export import export_run
from prdit.training.metrics import read_metrics
from prdit.training.run_dir import run_directory
from prdit.training.trainer import train


def test_flow_matching_trains_both_stages_and_exports_its_process(tiny_config, tmp_path):
    stage1 = tiny_config("fm1", "PRDiT-T/6/0", 16, "process.kind=flow", "train.steps=40", "log.every=10",
                         "log.val_every=20")
    train(stage1, progress=False)
    losses = [r["loss"] for r in read_metrics(run_directory(stage1)) if r["split"] == "train"]
    assert losses[-1] < 0.9 * losses[0] and losses == sorted(losses, reverse=True), losses
    stage2 = tiny_config("fm2", "PRDiT-T/6/2", 16, "process.kind=flow", "train.steps=2", "log.val_every=0",
                         f"train.init_from={run_directory(stage1)}")
    train(stage2, progress=False)
    folder = load_model_folder(export_run(run_directory(stage2), tmp_path / "model"))
    assert folder.process == FlowMatching() and folder.model.config.out_channels == 1
    val = [r for r in read_metrics(run_directory(stage1)) if r["split"] == "val"]
    assert {"x0_mse", "x0_mse_t0.9", "x0_mse_t0.1"} <= set(val[0])


def test_a_run_directory_of_the_earlier_layout_is_continued(tiny_config):
    config = tiny_config("legacy", "PRDiT-T/6/0", 16, "train.steps=2", "log.val_every=0")
    train(config, progress=False)
    path = run_directory(config) / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    # The first release saved an IaN-only `diffusion` section, learn_sigma and validation timesteps.
    saved.pop("process")
    saved["diffusion"] = {"num_timesteps": 1000, "noise_std": 0.5}
    saved["model"]["learn_sigma"] = True
    saved["log"]["val_timesteps"] = [100, 500, 900]
    saved["log"].pop("val_noise_levels")
    path.write_text(yaml.safe_dump(saved))
    longer = tiny_config("legacy", "PRDiT-T/6/0", 16, "train.steps=3", "log.val_every=0")
    assert train(longer, progress=False).step == 3
