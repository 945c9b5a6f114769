"""Classifier-free guidance: the mix of both IaN heads and the flow velocity, one batched call, the pipeline's labels."""

import numpy as np
import pytest
import torch

from prdit.data.io import Volume
from prdit.data.labels import PHANTOM_LABELS, write_label_map, write_label_table
from prdit.data.normalization import Normalization
from prdit.diffusion import FlowMatching, IaNDiffusion
from prdit.diffusion.guidance import CFGDenoiser
from prdit.errors import ConfigError, DataError
from prdit.generation.pipeline import PRDiTPipeline
from prdit.models import create_model
from prdit.models.conditioning import Conditioning

K = len(PHANTOM_LABELS)
SIZE = 16


def conditional_model(out_channels: int = 2, seed: int = 1):
    """A conditional PRDiT-T/6/1 with every weight off its initialisation (its labels matter)."""
    torch.manual_seed(seed)
    model = create_model("PRDiT-T/6/1", SIZE, out_channels=out_channels,
                         conditioning=Conditioning(PHANTOM_LABELS, "both"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


class Counting:
    """A network that records the batch size of each call."""

    def __init__(self, model) -> None:
        self.model, self.batches = model, []

    def __call__(self, x, t, labels):
        self.batches.append(x.shape[0])
        with torch.no_grad():
            return self.model(x, t, labels)


def inputs(batch: int = 2):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, SIZE, SIZE, SIZE, generator=generator) * 0.5
    labels = torch.randint(0, K, (batch, SIZE, SIZE, SIZE), generator=generator)
    return x, torch.tensor([300.0, 900.0][:batch]), labels


def test_scale_one_is_one_conditional_call_and_scale_zero_the_null_prediction():
    model = conditional_model()
    x, t, labels = inputs()
    network = Counting(model)
    with torch.no_grad():
        conditional = model(x, t, labels)
        null = model(x, t, torch.full_like(labels, K))
    assert torch.equal(CFGDenoiser(network, labels, K, 1.0)(x, t), conditional)
    assert network.batches == [2]
    network.batches.clear()
    torch.testing.assert_close(CFGDenoiser(network, labels, K, 0.0)(x, t), null, rtol=0, atol=1e-5)
    assert network.batches == [4]  # conditional and null rows through one forward
    assert not torch.allclose(conditional, null, atol=1e-3)  # the labels matter to this model


@pytest.mark.parametrize("process, channels", [(IaNDiffusion(), 2), (FlowMatching(), 1)])
def test_guidance_mixes_both_ian_heads_and_the_flow_velocity(process, channels):
    model = conditional_model(channels)
    x, t, labels = inputs()
    scale = 2.5
    guided = CFGDenoiser(Counting(model), labels, K, scale)(x, t)
    with torch.no_grad():
        conditional = model(x, t, labels)
        null = model(x, t, torch.full_like(labels, K))
    process_t = process.process_time(t)
    mixed, cond, uncond = (process.predict(o, x, process_t) for o in (guided, conditional, null))
    for head in ("x0", "noise"):  # IaN: x̂₀ and ε̂ heads; flow: both follow from the velocity
        torch.testing.assert_close(getattr(mixed, head),
                                   getattr(uncond, head) + scale * (getattr(cond, head) - getattr(uncond, head)),
                                   rtol=0, atol=1e-4)
    torch.testing.assert_close(guided, null + scale * (conditional - null), rtol=0, atol=1e-4)


def pipeline(model=None, process=None):
    return PRDiTPipeline(model or conditional_model(), process or IaNDiffusion(), Normalization(), device="cpu")


@pytest.mark.parametrize("sampler", ["pc", "euler", "heun", "dpm++2m"])
def test_every_sampler_takes_label_maps_through_the_pipeline(sampler):
    pipe = pipeline()
    batches = []
    pipe.model.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    _, _, labels = inputs(1)
    settings = dict(steps=3, seed=0, sampler=sampler, output_type="model")
    plain = pipe(2, labels=labels[0], guidance_scale=1.0, **settings).volumes
    calls = pipe.settings(steps=3, sampler=sampler).network_calls()
    assert batches == [1] * 2 * calls  # one volume at a time (exact), one call a step at w = 1
    batches.clear()
    guided = pipe(2, labels=labels[0], guidance_scale=3.0, **settings).volumes
    assert batches == [2] * 2 * calls  # the conditional and null rows of a volume in one call
    assert not torch.equal(plain, guided)
    batches.clear()
    default = pipe(2, labels=labels[0], **settings).volumes  # no scale given: the measured default, w = 2
    assert batches == [2] * 2 * calls
    assert torch.equal(default, pipe(2, labels=labels[0], guidance_scale=2.0, **settings).volumes)


def test_each_volume_follows_its_own_map_and_a_shared_map_fits_all():
    pipe = pipeline()
    _, _, labels = inputs(2)
    both = pipe(2, labels=labels, steps=3, seed=4, output_type="model", guidance_scale=2.0).volumes
    for b in range(2):
        alone = pipe(1, labels=labels[b].numpy(), indices=[b], steps=3, seed=4, output_type="model",
                     guidance_scale=2.0).volumes
        assert torch.equal(alone[0], both[b])
    shared = pipe(2, labels=labels[0], steps=3, seed=4, output_type="model", guidance_scale=2.0).volumes
    assert torch.equal(shared[0], both[0]) and not torch.equal(shared[1], both[1])


def test_a_label_map_file_on_the_model_grid_is_read_through_its_table(tmp_path):
    pipe = pipeline()
    _, _, labels = inputs(1)
    like = Volume(array=np.zeros((SIZE,) * 3, dtype=np.float32), spacing=pipe.spacing, origin=(0.0, 0.0, 0.0),
                  direction=np.eye(3))
    path = write_label_map(tmp_path / "labels" / "map.nii.gz", labels[0].numpy(), like)
    write_label_table(path.parent)
    assert torch.equal(pipe.label_maps(path, 2), labels[0].expand(2, -1, -1, -1))
    coarse = Volume(array=like.array, spacing=(2.0, 2.0, 2.0), origin=like.origin, direction=like.direction)
    other = write_label_map(tmp_path / "coarse.nii.gz", labels[0].numpy(), coarse)
    with pytest.raises(DataError, match="coarse.nii.gz.*spacing"):
        pipe.label_maps(other, 1)


def test_wrong_label_maps_and_an_unconditional_model_raise():
    pipe = pipeline()
    _, _, labels = inputs(1)
    for value in (K, K + 3, -1):
        bad = labels.clone()
        bad[0, 0, 0, 0] = value
        with pytest.raises(DataError, match=f"{value}"):
            pipe(1, labels=bad, steps=2, seed=0)
    with pytest.raises(DataError, match="one per volume"):
        pipe(3, labels=labels.expand(2, -1, -1, -1), steps=2, seed=0)
    with pytest.raises(ConfigError, match="labels="):
        pipe(1, steps=2, seed=0, guidance_scale=3.0)
    plain = pipeline(create_model("PRDiT-T/6/1", SIZE).eval())
    with pytest.raises(ConfigError, match="unconditional"):
        plain(1, labels=labels, steps=2, seed=0)
