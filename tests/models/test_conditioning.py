"""Label-map conditioning of the network: zero-initialised start, locality, checks, the model folder."""

import json

import pytest
import torch
from safetensors.torch import save_file

from prdit.data.labels import PHANTOM_LABELS
from prdit.diffusion import IaNDiffusion
from prdit.errors import CheckpointError, ConfigError, DataError
from prdit.model_folder import load_model_folder, save_model_folder
from prdit.data.normalization import Normalization
from prdit.models import create_model
from prdit.models.conditioning import Conditioning
from prdit.training.setup import initialise_from

K = len(PHANTOM_LABELS)
SIZE = 16


def conditional(name: str, stages: str):
    return create_model(name, SIZE, conditioning=Conditioning(PHANTOM_LABELS, stages))


def trained(model, scale: float = 0.05, seed: int = 1):
    """``model`` with every weight moved off its initialisation, as training would (zeroed layers included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model.eval()


def inputs(batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, SIZE, SIZE, SIZE, generator=generator) * 0.5
    labels = torch.randint(0, K, (batch, SIZE, SIZE, SIZE), generator=generator)
    return x, torch.tensor([100.0, 800.0][:batch]), labels


def saved(model, tmp_path):
    path = tmp_path / "source.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("name, stages", [("PRDiT-T/6/2", "stage2"), ("PRDiT-T/6/0", "both")])
def test_a_conditional_model_initialised_from_an_unconditional_one_returns_its_output_bitwise(name, stages, tmp_path):
    source = trained(create_model(name, SIZE))
    model = conditional(name, stages)
    initialise_from(model, saved(source, tmp_path))
    model.eval()
    x, t, labels = inputs()
    with torch.no_grad():
        expected = source(x, t)
        for maps in (labels, torch.zeros_like(labels), torch.full_like(labels, K), None):
            got = model(x, t, maps)
            assert torch.equal(got[:, 0], expected[:, 0]), "ε̂ head"
            assert torch.equal(got[:, 1], expected[:, 1]), "x̂₀ head"
    # every existing weight came from the source; only the conditioning is new
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_fresh_conditional_model_outputs_what_it_does_without_labels():
    model = conditional("PRDiT-T/6/2", "both").eval()
    for linear in model.label_conditioning.projections():
        assert not linear.weight.any() and not linear.bias.any()
    x, t, labels = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, labels), model(x, t))


def test_a_map_shifted_by_one_voxel_changes_the_output_where_it_moved_and_at_zero_init_nowhere():
    x, t, _ = inputs(1)
    labels = torch.zeros(1, SIZE, SIZE, SIZE, dtype=torch.long)
    labels[:, 4:9, 4:9, 4:9] = PHANTOM_LABELS.index("heart")
    shifted = labels.roll(1, dims=-1)
    moved = (labels != shifted)[0]
    fresh = conditional("PRDiT-T/6/0", "both").eval()
    with torch.no_grad():
        assert torch.equal(fresh(x, t, labels), fresh(x, t, shifted))
    model = trained(conditional("PRDiT-T/6/0", "both"))
    with torch.no_grad():
        change = (model(x, t, labels) - model(x, t, shifted)).abs().amax(dim=(0, 1))
    assert (change[moved] > 0).all()
    # stage 1 sees one patch (4³ core, one voxel of halo) at a time: tokens whose patch misses the move stay
    near = torch.nn.functional.max_pool3d(moved[None, None].float(), 3, 1, 1)[0, 0] > 0
    tokens_near = torch.nn.functional.max_pool3d(near[None, None].float(), 4, 4)[0, 0] > 0
    untouched = ~tokens_near.repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert untouched.any() and (change[untouched] == 0).all()
    stage2 = trained(conditional("PRDiT-T/6/2", "stage2"))
    with torch.no_grad():
        change = (stage2(x, t, labels) - stage2(x, t, shifted)).abs().amax(dim=(0, 1))
    assert (change[moved] > 0).all()


@pytest.mark.parametrize("value", [K + 1, -1])
def test_label_values_outside_the_label_set_raise(value):
    model = conditional("PRDiT-T/6/1", "stage2")
    x, t, labels = inputs()
    labels[0, 3, 3, 3] = value
    with pytest.raises(DataError, match=rf"{value}.*labels 0\.\.{K - 1}"):
        model(x, t, labels)
    with pytest.raises(DataError, match="integer"):
        model(x, t, labels.float())
    with pytest.raises(DataError, match="shape"):
        model(x, t, labels[:, :8])


def test_an_unconditional_model_given_labels_raises():
    model = create_model("PRDiT-T/6/1", SIZE)
    x, t, labels = inputs()
    with pytest.raises(ConfigError, match="unconditional"):
        model(x, t, labels)


def test_stage2_conditioning_needs_a_global_refiner():
    with pytest.raises(ConfigError, match="both"):
        conditional("PRDiT-T/6/0", "stage2")


def test_both_stages_fine_tuned_from_an_unconditional_model_start_as_it_and_train_the_denoisers_labels(tmp_path):
    plain = trained(create_model("PRDiT-T/6/2", SIZE))
    model = conditional("PRDiT-T/6/2", "both")
    initialise_from(model, saved(plain, tmp_path))
    model.freeze_stage1()
    x, t, labels = inputs()
    with torch.no_grad():
        assert torch.equal(model.eval()(x, t, labels), plain.eval()(x, t))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "label_conditioning.stage1.projection.weight" in trainable
    assert not any(n.startswith(("local_denoiser.", "time_embed.shared.")) for n in trainable)


def test_the_model_folder_records_the_conditioning_and_loads_it(tmp_path):
    model = trained(conditional("PRDiT-T/6/1", "both"))
    folder = save_model_folder(tmp_path / "model", model, IaNDiffusion(), Normalization())
    recorded = json.loads((folder / "config.json").read_text())["model"]["conditioning"]
    assert recorded["stages"] == "both" and recorded["labels"]["heart"] == PHANTOM_LABELS.index("heart")
    loaded = load_model_folder(folder).model
    assert loaded.config.conditioning == model.config.conditioning
    x, t, labels = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, labels), model(x, t, labels))


def test_init_from_refuses_sources_whose_conditioning_does_not_fit(tmp_path):
    (tmp_path / "c").mkdir()
    labelled = saved(trained(conditional("PRDiT-T/6/2", "stage2")), tmp_path / "c")
    with pytest.raises(CheckpointError, match="conditioned on label maps"):
        initialise_from(create_model("PRDiT-T/6/2", SIZE), labelled)
