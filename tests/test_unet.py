"""The noise model εθ(z_t, t, τθ(y)) and its parts, on tiny random-weight configs."""

from __future__ import annotations

import math

import pytest
import torch

from ldmkit.config import ConfigError, UNetConfig
from ldmkit.nn.embeddings import timestep_embedding
from ldmkit.nn.transformer import BasicTransformerBlock, SpatialTransformer
from ldmkit.nn.layers import Upsample
from ldmkit.nn.unet import UNet, level_hw

B, L, D = 2, 6, 32  # batch, context tokens, context_dim


def tiny(**overrides) -> UNetConfig:
    base = dict(
        in_channels=4,
        out_channels=4,
        model_channels=32,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(0, 1),
        head_dim=16,
        context_dim=D,
    )
    return UNetConfig(**{**base, **overrides})


def make_unet(cfg: UNetConfig, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(cfg).eval()


def transformers(unet: UNet) -> list[tuple[str, SpatialTransformer]]:
    return [(n, m) for n, m in unet.named_modules() if isinstance(m, SpatialTransformer)]


def wake(block: SpatialTransformer) -> None:
    """Give a zero-initialised proj_out random weights, as training would, so the block does something."""
    torch.nn.init.normal_(block.proj_out.weight, std=0.2)


def inputs(cfg: UNetConfig, h: int = 8, w: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, cfg.in_channels, h, w, generator=g)
    t = torch.tensor([3, 700])
    context = torch.randn(B, L, cfg.context_dim, generator=g)
    return z, t, context


# --------------------------------------------------------------------------------------------------
# timestep embedding and the transformer layer


def test_timestep_embedding_is_cos_then_sin_in_fp32():
    t = torch.tensor([0, 1, 999])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    freqs = torch.tensor([10000 ** (-i / 4) for i in range(4)])
    torch.testing.assert_close(emb[2], torch.cat([torch.cos(999 * freqs), torch.sin(999 * freqs)]))
    assert timestep_embedding(t, 7).shape == (3, 7) and torch.all(timestep_embedding(t, 7)[:, -1] == 0)


def test_spatial_transformer_starts_as_identity_and_keeps_shape():
    torch.manual_seed(0)
    block = SpatialTransformer(32, heads=2, head_dim=16, context_dim=D, depth=2)
    x, c = torch.randn(B, 32, 4, 6), torch.randn(B, L, D)
    assert torch.equal(block(x, c), x)
    wake(block)
    y = block(x, c)
    assert y.shape == x.shape and not torch.allclose(y, x)
    # the lecture's C → d·n_h projection need not keep the width
    wide = SpatialTransformer(32, heads=4, head_dim=16, context_dim=D)
    wake(wide)
    assert wide(x, c).shape == x.shape


def test_transformer_block_cross_attends_to_context():
    torch.manual_seed(0)
    block = BasicTransformerBlock(32, heads=2, head_dim=16, context_dim=24)
    x = torch.randn(B, 10, 32)
    c1, c2 = torch.randn(B, L, 24), torch.randn(B, L, 24)
    assert block(x, c1).shape == x.shape
    assert not torch.allclose(block(x, c1), block(x, c2))


# --------------------------------------------------------------------------------------------------
# UNet


@pytest.mark.parametrize("in_channels, out_channels, h, w", [(4, 4, 8, 8), (9, 4, 8, 12), (4, 8, 16, 8)])
def test_output_shape(in_channels, out_channels, h, w):
    cfg = tiny(in_channels=in_channels, out_channels=out_channels)
    z, t, c = inputs(cfg, h, w)
    assert make_unet(cfg)(z, t, c).shape == (B, out_channels, h, w)


def test_three_levels_and_deeper_transformers():
    cfg = tiny(channel_mults=(1, 2, 2), num_res_blocks=2, attention_levels=(1, 2), transformer_depth=2)
    unet = make_unet(cfg)
    assert unet.downsample_factor == 4
    z, t, c = inputs(cfg, 8, 8)
    assert unet(z, t, c).shape == z.shape
    # 2 blocks down and 3 up on each of 2 attention levels, plus the middle block.
    assert len(transformers(unet)) == 2 * 2 + 2 * 3 + 1


def test_gradients_reach_every_parameter_after_one_step():
    # proj_out of every SpatialTransformer starts at zero, so at step 0 nothing behind it gets a
    # gradient; one optimizer step moves proj_out, and from then on every parameter has one.
    cfg = tiny()
    unet = make_unet(cfg).train()
    z, t, c = inputs(cfg)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    for step in range(2):
        opt.zero_grad()
        loss = (unet(z, t, c) - torch.randn_like(z)).pow(2).mean()
        loss.backward()
        if step == 0:
            opt.step()
    missing = [n for n, p in unet.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_fresh_unet_ignores_the_prompt():
    cfg = tiny()
    unet = make_unet(cfg)
    z, t, c = inputs(cfg)
    assert torch.equal(unet(z, t, c), unet(z, t, torch.randn_like(c)))


def test_prompt_changes_output_through_every_attention_level():
    cfg = tiny(attention_levels=(0, 1))
    z, t, c = inputs(cfg)
    other = torch.randn_like(c)
    names = [n for n, _ in transformers(make_unet(cfg))]
    assert any(n.startswith("encoder.0") for n in names) and any(n.startswith("decoder.1") for n in names)
    assert any(n.startswith("middle") for n in names)
    for name in names:
        # Only this one block is awake: the output depends on the prompt only through it.
        unet = make_unet(cfg)
        wake(dict(transformers(unet))[name])
        assert not torch.allclose(unet(z, t, c), unet(z, t, other), atol=1e-6), name


def test_no_attention_levels_means_no_prompt_dependence():
    cfg = tiny(attention_levels=())
    unet = make_unet(cfg)
    assert transformers(unet) == []
    z, t, c = inputs(cfg)
    assert torch.equal(unet(z, t, c), unet(z, t, torch.randn_like(c)))
    assert torch.equal(unet(z, t, c), unet(z, t, None))


def test_context_required_when_cross_attention_exists():
    cfg = tiny()
    z, t, _ = inputs(cfg)
    with pytest.raises(ValueError, match="context"):
        make_unet(cfg)(z, t, None)
    with pytest.raises(ValueError, match="context_dim"):
        make_unet(cfg)(z, t, torch.randn(B, L, D + 1))


def test_timestep_changes_output():
    cfg = tiny()
    unet = make_unet(cfg)
    z, t, c = inputs(cfg)
    assert not torch.allclose(unet(z, t, c), unet(z, t + 50, c))
    # a 0-d t is shared by the batch
    torch.testing.assert_close(unet(z, torch.tensor(3), c), unet(z, torch.tensor([3, 3]), c))


def test_padding_mask_hides_padded_context_tokens():
    cfg = tiny()
    unet = make_unet(cfg)
    for _, block in transformers(unet):
        wake(block)
    z, t, c = inputs(cfg)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1, 5:] = False
    altered = c.clone()
    altered[~mask] = torch.randn(int((~mask).sum()), D) * 10
    torch.testing.assert_close(unet(z, t, c, mask), unet(z, t, altered, mask), rtol=0, atol=1e-5)
    assert not torch.allclose(unet(z, t, c), unet(z, t, altered), atol=1e-4)  # without the mask it shows


def test_a_latent_of_any_size_runs_each_level_upsampled_to_its_skip():
    """Sides that the levels do not halve exactly (10 → 5 → 3 going down, 3 → 5 → 10 going up; diffusers'
    ``upsample_size``) run; the FeatureCache split gives the same ε̂; double sizes take `Upsample`'s own path."""
    cfg = tiny(channel_mults=(1, 2, 2))
    unet = make_unet(cfg)
    for block in transformers(unet):
        wake(block[1])
    assert unet.downsample_factor == 4
    z, t, c = inputs(cfg, 9, 10)
    with torch.no_grad():
        out = unet(z, t, c)
        assert out.shape == z.shape and torch.isfinite(out).all()
        assert torch.equal(unet.forward_split(z, t, c)[0], out)
        up = unet.decoder[0].upsample
        x = torch.randn(1, up.conv.in_channels, 3, 5)
        assert torch.equal(up(x, (6, 10)), Upsample.forward(up, x))
        assert up(x, (5, 9)).shape[-2:] == (5, 9)


def test_lowest_level_sizes_and_the_smallest_latents():
    """⌈s / 2^(levels − 1)⌉ at the lowest level; a 1×1 lowest level is too small only with one channel per group;
    `level_hw` finds a level's grid from its number of positions."""
    deep = make_unet(tiny(channel_mults=(1, 2, 2)))
    assert deep.lowest_level_size(9, 10) == (3, 3) and deep.lowest_level_size(8, 8) == (2, 2)
    narrow, wide = make_unet(tiny()), make_unet(tiny(model_channels=64))  # 1 and 2 channels per group at the bottom
    assert narrow.too_small(2, 2) and not narrow.too_small(2, 3) and not narrow.too_small(3, 1)
    assert not wide.too_small(1, 1)
    assert [level_hw((9, 10), n) for n in (90, 25, 9)] == [(9, 10), (5, 5), (3, 3)]
    with pytest.raises(ValueError, match="holds 24 positions"):
        level_hw((9, 10), 24)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(attention_levels=(2,)), "attention_levels"),
        (dict(head_dim=24), "head_dim"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(num_res_blocks=0), "num_res_blocks"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        UNet(tiny(**overrides))


def test_bf16_autocast_and_channels_last():
    cfg = tiny()
    unet = make_unet(cfg)
    for _, block in transformers(unet):
        wake(block)
    z, t, c = inputs(cfg)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, -2:] = False
    ref = unet(z, t, c, mask)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = unet(z, t, c, mask)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()

    unet_cl = unet.to(memory_format=torch.channels_last)
    out = unet_cl(z.to(memory_format=torch.channels_last), t, c, mask)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = unet_cl(z.to(memory_format=torch.channels_last), t, c, mask)
    assert torch.isfinite(out).all()
    out.float().sum().backward()  # and trains there too


def test_parameter_count():
    unet = make_unet(tiny())
    assert math.isclose(sum(p.numel() for p in unet.parameters()), 1_055_044, rel_tol=0.2)  # the size this config has today


def test_coordinate_maps_run_left_to_right_and_top_to_bottom():
    from ldmkit.nn.unet import coordinate_maps

    maps = coordinate_maps(3, 4, 8, torch.zeros(1))
    assert maps.shape == (3, 2, 4, 8)
    x, y = maps[0]
    torch.testing.assert_close(x[0], torch.linspace(-7 / 8, 7 / 8, 8))  # pixel centres, symmetric about 0
    torch.testing.assert_close(y[:, 0], torch.linspace(-3 / 4, 3 / 4, 4))
    assert (x == x[0]).all() and (y == y[:, :1]).all()  # x constant down a column, y along a row


def test_coordinate_channels_reach_conv_in_and_train():
    """conv_in takes the latent plus the two maps, and its weights on them get gradients."""
    cfg = tiny(coordinate_channels=True)
    unet = make_unet(cfg).train()
    assert unet.conv_in.in_channels == cfg.in_channels + 2
    z, t, c = inputs(cfg, 8, 12)
    out = unet(z, t, c)
    assert out.shape == z.shape
    out.pow(2).mean().backward()
    assert unet.conv_in.weight.grad[:, cfg.in_channels:].abs().sum() > 0
