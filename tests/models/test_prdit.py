import pytest
import torch

import prdit
from prdit.errors import CheckpointError, ConfigError
from prdit.models import count_parameters, create_model, model_names
from prdit.models.embeddings import positional_encoding_3d
from prdit.models.patches import patchify, unpatchify

# docs/method.md §7: total parameters, and trainable ones once stage 1 is frozen
PARAMETER_COUNTS = {
    "PRDiT-B/12/0": (39_156_160, None),
    "PRDiT-XL/12/0": (39_918_400, None),
    "PRDiT-B/12/4": (93_228_992, 54_072_832),
    "PRDiT-XL/12/4": (155_974_208, 116_055_808),
    "PRDiT-B/12/12": (178_255_808, 139_099_648),
}


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised layers random values so outputs are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)


@pytest.mark.parametrize("name", list(PARAMETER_COUNTS))
def test_parameter_counts_match_spec(name):
    total, trainable = PARAMETER_COUNTS[name]
    with torch.device("meta"):
        model = create_model(name, input_size=128)
    assert count_parameters(model) == total
    if trainable is not None:
        model.freeze_stage1()
        assert count_parameters(model, trainable_only=True) == trainable


def test_every_registry_name_constructs_with_the_right_output_shape():
    names = model_names()
    assert len(names) == 5 * 4 * 8 + 2 * 4
    for name in names:
        stride = 4 if "/6/" in name else 8
        with torch.device("meta"):
            model = create_model(name, input_size=2 * stride)
            out = model(torch.empty(2, 1, 2 * stride, 2 * stride, 2 * stride), torch.zeros(2))
        assert out.shape == (2, 2, 2 * stride, 2 * stride, 2 * stride), name


@pytest.mark.parametrize("name", ["PRDiT-XS/10/1", "PRDiT-S/14/1", "PRDiT-B/16/1", "PRDiT-L/12/1",
                                  "PRDiT-XL/12/1", "PRDiT-T/6/2", "PRDiT-XS/6/1"])
def test_each_size_runs_for_real(name):
    torch.manual_seed(0)
    model = create_model(name, input_size=16)
    perturb(model)
    out = model(torch.randn(1, 1, 16, 16, 16), torch.tensor([500]))
    assert out.shape == (1, 2, 16, 16, 16)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_top_level_create_model_and_non_cubic_input():
    model = prdit.create_model("PRDiT-T/6/1", input_size=(16, 24, 32), in_channels=1)
    out = model(torch.randn(2, 1, 16, 24, 32), torch.tensor([0, 1000]))
    assert out.shape == (2, 2, 16, 24, 32)
    assert create_model("PRDiT-T/6/0", input_size=16, out_channels=1).config.out_channels == 1


def test_unknown_name_and_impossible_shapes_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"PRDiT-\{XS,S,B,L,XL\}"):
        create_model("PRDiT-M/12/4")
    with pytest.raises(ConfigError, match="not divisible by the patch stride 8"):
        create_model("PRDiT-B/12/0", input_size=60)
    from prdit.models import PRDiT, PRDiTConfig
    with pytest.raises(ConfigError, match="not divisible by 7 heads"):
        PRDiT(PRDiTConfig(input_size=(16, 16, 16), hidden_size=64, num_heads=7, depth=1))
    model = create_model("PRDiT-T/6/0", input_size=16)
    with pytest.raises(ConfigError, match="expected input"):
        model(torch.randn(1, 1, 32, 32, 32), torch.zeros(1))


def test_fresh_stage1_output_is_exactly_zero():
    model = create_model("PRDiT-T/6/0", input_size=16)
    out = model(torch.randn(2, 1, 16, 16, 16), torch.tensor([3, 999]))
    assert torch.equal(out, torch.zeros_like(out))


def test_fresh_stage2_output_equals_its_stage1_output_exactly():
    torch.manual_seed(1)
    stage1 = create_model("PRDiT-T/6/0", input_size=16)
    perturb(stage1)
    stage2 = create_model("PRDiT-T/6/2", input_size=16)
    stage2.load_stage1(stage1.state_dict())
    x, t = torch.randn(2, 1, 16, 16, 16), torch.tensor([10, 700])
    expected = stage1(x, t)
    assert expected.abs().sum() > 0
    assert torch.equal(stage2(x, t), expected)


def test_stage2_step_changes_only_the_fine_branch():
    torch.manual_seed(2)
    stage1 = create_model("PRDiT-T/6/0", input_size=16)
    perturb(stage1)
    model = create_model("PRDiT-T/6/2", input_size=16)
    model.load_stage1(stage1.state_dict())
    model.freeze_stage1()
    frozen = set(model.stage1_parameter_names())
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(("time_embed.shared.", "time_embed.coarse_head.", "local_denoiser."))}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(3):
        loss = model(torch.randn(2, 1, 16, 16, 16), torch.tensor([100, 600])).pow(2).mean() - 1.0
        optimizer.zero_grad()
        (loss + model(torch.randn(2, 1, 16, 16, 16), torch.tensor([5, 50]))[:, 1].mean()).backward()
        optimizer.step()
    after = dict(model.named_parameters())
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    changed = [n for n in before if n not in frozen and not torch.equal(after[n], before[n])]
    assert any(n.startswith("global_refiner.blocks.") for n in changed)
    assert "time_embed.fine_head.weight" in changed


def test_loading_a_stage1_of_another_width_is_refused():
    stage1 = create_model("PRDiT-XS/6/0", input_size=16)
    stage2 = create_model("PRDiT-T/6/2", input_size=16)
    with pytest.raises(CheckpointError, match="same size letter"):
        stage2.load_stage1(stage1.state_dict())
    with pytest.raises(CheckpointError, match="lacks"):
        stage2.load_stage1({})


def test_unpatchify_inverts_patch_extraction_of_core_voxels():
    x = torch.randn(2, 3, 16, 24, 8)
    patch, stride = 12, 8
    pad = (patch - stride) // 2
    tokens = patchify(x, patch, stride)
    assert tokens.shape == (2, 2 * 3 * 1, 3 * patch**3)
    cores = tokens.reshape(2, -1, 3, patch, patch, patch)[:, :, :, pad:pad + stride, pad:pad + stride, pad:pad + stride]
    cores = cores.permute(0, 1, 3, 4, 5, 2).reshape(2, 6, stride**3 * 3)  # [S, S, S, C] per token
    assert torch.equal(unpatchify(cores, (2, 3, 1), stride), x)


def test_patch_layout_and_token_order_follow_the_spec():
    x = torch.arange(16**3, dtype=torch.float32).reshape(1, 1, 16, 16, 16)
    tokens = patchify(x, 12, 8)
    # token 1 is depth 0, height 0, width 1; its patch starts 2 voxels before the core (reflect pad)
    patch = tokens[0, 1].reshape(12, 12, 12)
    assert patch[2, 2, 2] == x[0, 0, 0, 0, 8]
    assert patch[2, 3, 2] == x[0, 0, 0, 1, 8]
    assert patch[3, 2, 2] == x[0, 0, 1, 0, 8]
    # token 2 moves one step in height
    assert tokens[0, 2].reshape(12, 12, 12)[2, 2, 2] == x[0, 0, 0, 8, 0]


def test_positional_encoding_formula_and_zero_padding():
    pe = positional_encoding_3d((4, 4, 4), 1024)  # 1024 = 6·170 + 4
    assert pe.shape == (64, 1024)
    assert torch.equal(pe[:, 1020:], torch.zeros(64, 4))
    bands = 170
    token = 1 * 16 + 2 * 4 + 3  # depth 1, height 2, width 3
    z, y, x = 1.5 / 4, 2.5 / 4, 3.5 / 4
    freqs = 2 * torch.pi * (0.95 * 4 / 2) ** (torch.arange(bands, dtype=torch.float64) / (bands - 1))
    expected = torch.cat([torch.sin(x * freqs), torch.cos(x * freqs), torch.sin(y * freqs), torch.cos(y * freqs),
                          torch.sin(z * freqs), torch.cos(z * freqs)]).float()
    torch.testing.assert_close(pe[token, :1020], expected)


def test_attention_goes_through_scaled_dot_product_attention(monkeypatch):
    import torch.nn.functional as F
    calls = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append(q.shape)
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = create_model("PRDiT-T/6/2", input_size=16)
    model(torch.randn(1, 1, 16, 16, 16), torch.zeros(1))
    assert calls == [(1, 4, 64, 16)] * 2


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    model = create_model("PRDiT-T/6/2", input_size=16)
    perturb(model)
    x, t = torch.randn(1, 1, 16, 16, 16), torch.tensor([300])

    def grads():
        model.zero_grad()
        model(x, t).pow(2).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name])


def test_a_128_checkpoint_loads_strictly_into_a_256_model():
    small = create_model("PRDiT-T/6/2", input_size=16)
    large = create_model("PRDiT-T/6/2", input_size=32)
    large.load_state_dict(small.state_dict(), strict=True)
    assert large(torch.randn(1, 1, 32, 32, 32), torch.zeros(1)).shape == (1, 2, 32, 32, 32)
