import json

import pytest

from prdit.demo.run import DemoSettings, run_demo
from prdit.evaluation.ct_resnet import weights_installed
from prdit.viewer.page import read_page_data

pytestmark = pytest.mark.slow

TINY = DemoSettings(num_phantoms=8, size=16, num_samples=4, sample_steps=4, critic_steps=4, sr_steps=8)
FAST = ["train.steps=4", "log.every=2", "log.val_every=2", "log.checkpoint_every=2", "log.preview_every=0"]


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    report = run_demo(tmp_path, minutes=5, settings=TINY, progress=False, log=lambda s: None, overrides=FAST)
    page = report.read_text()
    for figure in ("coronal", "axial", "views", "loss", "histogram", "superres"):
        assert f"figures/{figure}.png" in page
        assert (tmp_path / "figures" / f"{figure}.png").stat().st_size > 1000
    assert "stage 1 only" in page and "PRDiT (local denoiser + global residual DiT)" in page
    assert "NOT comparable with published numbers" in page
    # Every set-level metric but FID with its interval, and the caveat on the demo's small N.
    table = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| PRDiT")][0]
    cells = [cell.strip() for cell in table.split("|")[1:-1]]
    assert "[" not in cells[1] and cells[1] != "-", table  # FID: the estimate, no interval covers it
    assert table.count(" [") >= 3 and "±" in table, table  # MS-SSIM twice, W(HU); MMD has none with 2 real volumes
    assert "4 generated and 2 real volumes" in page and "95 % bootstrap intervals" in page
    assert (tmp_path / "report.md").is_file()
    assert "Scroll through the volumes" in page and "href='viewer.html'" in page
    assert "(viewer.html)" in (tmp_path / "report.md").read_text()
    viewer = read_page_data((tmp_path / "viewer.html").read_text())
    names = [v["name"] for v in viewer["volumes"]]
    assert len(names) == 2 + 3 + 3 and names[0].startswith("real phantoms: phantom_")  # the validation set has 2
    assert names[2].startswith("stage 1 only: sample_") and names[5].startswith("PRDiT: sample_")
    assert viewer["shown"] == [0, 2, 5]
    superres = json.loads((tmp_path / "superres.json").read_text())
    assert "×4 super-resolution" in page and superres["steps"] == 8
    assert {"psnr", "ssim"} <= set(superres["reconstruction"]) and superres["baseline"]["psnr"] > 0
    for name in ("stage1", "prdit"):
        metrics = json.loads((tmp_path / "metrics" / f"{name}.json").read_text())
        assert metrics["samples"] == {"real": 2, "fake": 4}
        assert not metrics["feature_network"]["comparable_with_published"]
        # The CT-pretrained network where its weights are installed, else a random-init MedicalNet.
        assert metrics["feature_network"]["kind"] == ("ct-resnet152" if weights_installed() else "random-init")
        assert len(list((tmp_path / "samples" / name).glob("sample_*.nii.gz"))) == 4
    stage2_ckpts = sorted((tmp_path / "runs" / "phantoms-tiny-stage2" / "checkpoints").glob("*.pt"))
    mtimes = [p.stat().st_mtime_ns for p in stage2_ckpts]

    # A second run finds every step done and only rewrites the report.
    run_demo(tmp_path, minutes=5, settings=TINY, progress=False, log=lambda s: None, overrides=FAST)
    assert [p.stat().st_mtime_ns for p in stage2_ckpts] == mtimes
    timings = json.loads((tmp_path / "timings.json").read_text())["seconds"]
    assert timings["stage 1 training"] < 5 and timings["stage 2 training"] < 5


def test_demo_with_flow_matching_says_so_and_keeps_its_results_apart(tmp_path):
    from dataclasses import replace

    report = run_demo(tmp_path, minutes=5, settings=replace(TINY, process="flow"), progress=False,
                      log=lambda s: None, overrides=FAST)
    assert report == tmp_path / "flow" / "report.html"
    page = report.read_text()
    assert "flow matching (PRDiT-FM)" in page and "Euler sampler" in page
    manifest = json.loads((tmp_path / "flow" / "samples" / "prdit" / "manifest.json").read_text())
    assert manifest["process"]["kind"] == "flow" and manifest["sampler"] == "euler"
    assert (tmp_path / "runs" / "phantoms-tiny-fm-stage2" / "checkpoints").is_dir()
