import pytest

from prdit.errors import ConfigError
from prdit.training.config import SHIPPED_CONFIGS, ExperimentConfig, load_config


def test_defaults_are_the_reference_settings():
    config = ExperimentConfig()
    assert (config.optim.lr, config.optim.betas, config.optim.eps, config.optim.weight_decay) == (1e-4, [0.9, 0.999], 1e-8, 0.0)
    assert (config.optim.grad_clip, config.optim.ema_decay, config.train.global_batch) == (1.0, 0.9999, 64)
    from prdit.diffusion import IaNDiffusion
    from prdit.training.setup import process_of

    assert process_of(config) == IaNDiffusion(num_timesteps=1000, noise_std=0.5)


@pytest.mark.parametrize("path", sorted(SHIPPED_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.run.name == path.stem


def test_shipped_configs_are_found_by_name_and_overrides_apply():
    config = load_config("lidc-128-stage2-4l", ["optim.lr=2e-5", "train.steps=10", "log.val_noise_levels=[0.1, 0.2]"])
    assert config.model.name == "PRDiT-B/12/4"
    assert config.optim.lr == 2e-5 and config.train.steps == 10 and config.log.val_noise_levels == [0.1, 0.2]


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("train.steps=many", "'train.steps' needs a int"),
    ("data.flip=[1]", "'data.flip' needs a bool"),
    ("optim=3", "is a section"),
    ("train.precision=fp8", "train.precision must be fp32 or bf16"),
    ("novalue", "not of the form"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("phantoms-tiny-stage1", [override])


def test_unknown_config_file_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="lidc-128-stage1"):
        load_config("no-such-config")
