import pytest
import torch

from prdit.errors import CheckpointError, ConfigError
from prdit.model_folder import load_model_folder
from prdit.training.checkpoint import list_checkpoints, load_checkpoint
from prdit.training.distributed import ShardedBatchSampler
from prdit.training.export import export_run
from prdit.training.metrics import read_metrics
from prdit.training.plot import plot_runs
from prdit.training.trainer import train


def test_stage1_trains_validates_checkpoints_and_exports(tiny_config, tmp_path):
    config = tiny_config("stage1", "PRDiT-T/6/0", 16, "log.keep_last=1", "log.milestone_every=3",
                         "log.checkpoint_every=2")
    state = train(config, progress=False)
    assert state.step == 6 and torch.isfinite(torch.tensor(state.last_loss))
    ckpts = list_checkpoints(state.run_dir / "checkpoints")
    assert [s for s, _ in ckpts] == [6]  # keep_last=1; step 6 is also the milestone (3 | 6), 2 and 4 pruned
    rows = read_metrics(state.run_dir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6]
    assert {"x0_mse", "x0_mse_t100", "x0_mse_t900"} <= set(next(r for r in rows if r["split"] == "val"))
    assert (state.run_dir / "train.csv").is_file() and (state.run_dir / "config.yaml").is_file()

    folder = export_run(state.run_dir, tmp_path / "model")
    loaded = load_model_folder(folder)
    ema = load_checkpoint(ckpts[-1][1])["ema"]
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, ema[name])
    assert loaded.spacing == pytest.approx((380.0 / 64 * 4,) * 3)  # phantom spacing, pooled 64³ -> 16³
    with pytest.raises(CheckpointError, match="--overwrite"):
        export_run(state.run_dir, folder)
    assert plot_runs([state.run_dir], tmp_path / "loss.png").stat().st_size > 1000


def test_stage2_starts_from_stage1_and_keeps_it_frozen(tiny_config):
    stage1 = train(tiny_config("s1", "PRDiT-T/6/0", 16), progress=False)
    with pytest.raises(ConfigError, match="--init-from"):
        train(tiny_config("s2-retry", "PRDiT-T/6/2", 16), progress=False)
    # the failed start left nothing behind: the corrected command runs in the same directory
    train(tiny_config("s2-retry", "PRDiT-T/6/2", 16, f"train.init_from={stage1.run_dir}", "optim.lr=2e-3"),
          progress=False)
    with pytest.raises(CheckpointError, match="same size letter"):
        train(tiny_config("s2-wrong", "PRDiT-XS/6/2", 16, f"train.init_from={stage1.run_dir}"), progress=False)
    stage2 = train(tiny_config("s2", "PRDiT-T/6/2", 16, f"train.init_from={stage1.run_dir}", "log.preview_every=6",
                               "log.preview_steps=4"), progress=False)
    assert (stage2.run_dir / "previews" / "step_00000006.png").stat().st_size > 1000
    stage1_ema = load_checkpoint(stage1.checkpoint)["ema"]
    final = load_checkpoint(stage2.checkpoint)
    for key in ("model", "ema"):
        for name, value in final[key].items():
            if name.startswith(("time_embed.shared.", "time_embed.coarse_head.", "local_denoiser.")):
                assert torch.equal(value, stage1_ema[name]), name
    assert not torch.equal(final["model"]["global_refiner.final_layer.linear.weight"],
                           torch.zeros_like(final["model"]["global_refiner.final_layer.linear.weight"]))


def test_a_run_directory_with_another_config_is_not_reused(tiny_config):
    train(tiny_config("same", "PRDiT-T/6/0", 16), progress=False)
    with pytest.raises(ConfigError, match="another config.*optim.lr"):
        train(tiny_config("same", "PRDiT-T/6/0", 16, "optim.lr=5e-4"), progress=False)
    # a longer schedule is a continuation, not another config
    state = train(tiny_config("same", "PRDiT-T/6/0", 16, "train.steps=8"), progress=False)
    assert state.step == 8


def test_resume_flag_needs_a_checkpoint(tiny_config):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(tiny_config("fresh"), resume=True, progress=False)


def test_a_non_finite_step_is_skipped(tiny_config, monkeypatch):
    from prdit.diffusion import IaNDiffusion

    original = IaNDiffusion.training_losses
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(IaNDiffusion, "training_losses", sometimes_nan)
    state = train(tiny_config("nan", "PRDiT-T/6/0", 16), progress=False)
    rows = [r for r in read_metrics(state.run_dir) if r["split"] == "train"]
    assert rows[-1]["skipped"] == 1 and torch.isfinite(torch.tensor(rows[-1]["loss"]))


def test_ranks_get_disjoint_shards_from_one_shared_seed():
    a = ShardedBatchSampler(10, 2, rank=0, world_size=2, seed=7, total_steps=5)
    b = ShardedBatchSampler(10, 2, rank=1, world_size=2, seed=7, total_steps=5)
    epoch_a = sum(list(a)[:2], []) + a.batch(2)[:1]
    epoch_b = sum(list(b)[:2], []) + b.batch(2)[:1]
    assert set(epoch_a).isdisjoint(epoch_b) and sorted(epoch_a + epoch_b) == list(range(10))
    # the order depends on the step alone: a sampler started at step 3 continues the same stream
    late = ShardedBatchSampler(10, 2, rank=0, world_size=2, seed=7, start_step=3, total_steps=5)
    assert list(late) == list(a)[3:]


def test_scale_up_loads_strictly_and_continues_from_the_trained_level(tiny_config):
    # trained at 32³, continued at 64³ (the 128³ -> 256³ scale-up in small)
    small = train(tiny_config("small", "PRDiT-T/6/0", 32, "train.steps=40", "log.every=10",
                              "log.checkpoint_every=40", "log.val_every=0"), progress=False)
    scratch = train(tiny_config("scratch", "PRDiT-T/6/0", 64, "train.steps=4", "log.every=4",
                                "log.val_every=0"), progress=False)
    scaled = train(tiny_config("scaled", "PRDiT-T/6/0", 64, "train.steps=4", "log.every=4", "log.val_every=0",
                               f"train.init_from={small.run_dir}"), progress=False)
    first_small = [r["loss"] for r in read_metrics(small.run_dir) if r["split"] == "train"][0]
    assert small.last_loss < 0.8 * first_small
    assert scaled.last_loss < scratch.last_loss
    assert scaled.last_loss < 1.5 * small.last_loss


def test_a_trained_stage2_model_deepens_into_one_that_starts_as_it(tiny_config, tmp_path):
    from safetensors.torch import save_file

    from prdit.models import create_model
    from prdit.training.setup import initialise_from

    torch.manual_seed(0)
    shallow = create_model("PRDiT-T/6/2", input_size=16, in_channels=1, out_channels=2)
    with torch.no_grad():  # a trained-looking model: every weight non-zero, so the new blocks must be the identity
        for param in shallow.parameters():
            param.copy_(0.05 * torch.randn_like(param))
    save_file(shallow.state_dict(), str(tmp_path / "shallow.safetensors"))
    deep = create_model("PRDiT-T/6/4", input_size=16, in_channels=1, out_channels=2)
    note = initialise_from(deep, tmp_path / "shallow.safetensors")
    assert "2 DiT blocks are this model's first" in note
    x, t = torch.randn(2, 1, 16, 16, 16), torch.tensor([3.0, 800.0])
    with torch.no_grad():
        assert torch.equal(deep(x, t), shallow(x, t))
    state = deep.state_dict()
    for name, value in shallow.state_dict().items():
        assert torch.equal(state[name], value), name
    # a deeper source, or blocks that are not a prefix, does not fit: a strict error, never a partial load
    with pytest.raises(CheckpointError, match="do not fit"):
        initialise_from(create_model("PRDiT-T/6/1", input_size=16, in_channels=1, out_channels=2),
                        tmp_path / "shallow.safetensors")
    gap = {k.replace("blocks.1.", "blocks.2."): v for k, v in shallow.state_dict().items()}
    save_file(gap, str(tmp_path / "gap.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit"):
        initialise_from(create_model("PRDiT-T/6/4", input_size=16, in_channels=1, out_channels=2),
                        tmp_path / "gap.safetensors")
    # only the new blocks are filled in: a source missing any other weight is an error, not a partial load
    headless = {k: v for k, v in shallow.state_dict().items() if not k.startswith("global_refiner.final_layer.")}
    save_file(headless, str(tmp_path / "headless.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit"):
        initialise_from(create_model("PRDiT-T/6/4", input_size=16, in_channels=1, out_channels=2),
                        tmp_path / "headless.safetensors")
    # the trainer takes the deeper model from the shallower one's run (its new blocks learn)
    stage1 = train(tiny_config("d1", "PRDiT-T/6/0", 16, "train.steps=2", "log.val_every=0"), progress=False)
    stage2 = train(tiny_config("d2", "PRDiT-T/6/2", 16, "train.steps=2", "log.val_every=0",
                               f"train.init_from={stage1.run_dir}"), progress=False)
    deeper = train(tiny_config("d4", "PRDiT-T/6/4", 16, "train.steps=3", "log.val_every=0",
                               f"train.init_from={stage2.run_dir}"), progress=False)
    final = load_checkpoint(deeper.checkpoint)["model"]
    assert final["global_refiner.blocks.3.adaLN_modulation.1.weight"].abs().sum() > 0


def test_the_train_command_line(tiny_config, tmp_path):
    from typer.testing import CliRunner

    from prdit.cli import app

    config = tiny_config("cli", "PRDiT-T/6/0", 16)
    args = ["train", "phantoms-tiny-stage1", f"run.root={config.run.root}", "run.name=cli",
            f"data.train={config.data.train}", f"data.val={config.data.val}", "train.steps=2", "model.input_size=16",
            "log.val_every=0", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 2" in result.output
    typo = CliRunner().invoke(app, args[:-1] + ["optim.lrate=1", "--quiet"])
    assert typo.exit_code != 0 and "unknown config key 'optim.lrate'" in str(typo.exception)
