"""The first stage: KL and VQ autoencoders, the vector quantiser, the losses, LPIPS and scale_factor."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from ldmkit.autoencoder import (
    LPIPS,
    AutoencoderLoss,
    DiagonalGaussian,
    KLAutoencoder,
    VectorQuantizer,
    VQAutoencoder,
    build_autoencoder,
    measure_scale_factor,
)
from ldmkit.autoencoder.perceptual import lpips_weight_shapes
from ldmkit.config import AutoencoderConfig

MULTS = {4: (1, 2, 2), 8: (1, 2, 2, 2), 16: (1, 2, 2, 2, 2)}


def tiny(kind: str = "kl", f: int = 4, **overrides) -> AutoencoderConfig:
    fields = dict(
        kind=kind, base_channels=16, channel_mults=MULTS[f], latent_channels=4, codebook_size=32, attention=False
    )
    fields.update(overrides)
    return AutoencoderConfig(**fields)


def simple_images(n: int = 4, size: int = 32) -> torch.Tensor:
    """Flat backgrounds with one bright square each: easy to reconstruct, in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        images[i] = (torch.rand(3, 1, 1, generator=g) * 2 - 1) * 0.5
        y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
        images[i, :, y : y + size // 3, x : x + size // 3] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return images


# --------------------------------------------------------------------------------------------------
# Shapes and interface


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("f", [4, 8, 16])
def test_shapes(kind, f):
    torch.manual_seed(0)
    model = build_autoencoder(tiny(kind, f, attention=f == 4))
    assert isinstance(model, KLAutoencoder if kind == "kl" else VQAutoencoder)
    assert model.downsample_factor == f and model.latent_channels == 4
    images = torch.rand(2, 3, 32, 64) * 2 - 1
    z = model.encode(images)
    assert z.shape == (2, 4, 32 // f, 64 // f)
    assert model.decode(z).shape == images.shape
    reconstruction, aux = model(images)
    assert reconstruction.shape == images.shape
    assert set(aux) == ({"kl"} if kind == "kl" else {"vq_loss", "perplexity", "codes_used"})
    assert model.last_layer_weight is model.decoder.conv_out.weight


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_size_not_divisible_by_f_is_a_clear_error(kind):
    model = build_autoencoder(tiny(kind, 8))
    with pytest.raises(ValueError, match=r"36x32 .*f=8"):
        model.encode(torch.zeros(1, 3, 36, 32))


def test_kl_encode_mean_or_sample():
    torch.manual_seed(0)
    model = build_autoencoder(tiny("kl"))
    images = simple_images(2)
    posterior = model.posterior(images)
    assert torch.equal(model.encode(images), posterior.mean)
    a = model.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    b = model.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, posterior.mean)


def test_kl_divergence():
    zero = DiagonalGaussian(torch.zeros(2, 8, 3, 3))
    assert torch.equal(zero.kl(), torch.zeros(2))
    moments = torch.randn(3, 8, 4, 4) * 2
    kl = DiagonalGaussian(moments).kl()
    assert kl.shape == (3,) and (kl >= 0).all() and (kl > 0).all()
    # closed form for one element: mean 1, logvar 0 -> 0.5 * 1
    one = torch.zeros(1, 2, 1, 1)
    one[0, 0] = 1.0
    assert DiagonalGaussian(one).kl().item() == pytest.approx(0.5)
    huge = DiagonalGaussian(torch.full((1, 2, 1, 1), 100.0))
    assert huge.logvar.item() == 20.0 and math.isfinite(huge.kl().item())


# --------------------------------------------------------------------------------------------------
# VQ


def test_vq_encode_is_continuous_and_decode_quantises():
    torch.manual_seed(0)
    model = build_autoencoder(tiny("vq")).eval()
    z = model.encode(simple_images(2))
    codes = model.quantizer.lookup(model.quantizer.nearest(z))
    assert not torch.allclose(z, codes)
    assert torch.equal(model.quantizer.quantize(z), codes)
    assert torch.equal(model.decode(z), model.decode(codes))


def test_vq_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    model = build_autoencoder(tiny("vq"))
    reconstruction, _ = model(simple_images(2))
    reconstruction.abs().mean().backward()  # no vq_loss: only the straight-through path reaches E
    grad = model.encoder.conv_in.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    z = model.encode(simple_images(2)).detach().requires_grad_(True)
    model.decode(z).sum().backward()
    assert z.grad.abs().sum() > 0


def test_ema_codebook_moves_towards_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, ema_decay=0.9, dead_code_threshold=0.0)
    assert not vq.embedding.weight.requires_grad
    z_e = torch.randn(2, 4, 4, 4) + 3.0  # far from the initial codebook near 0

    def error():
        return (vq.quantize(z_e) - z_e).pow(2).mean().item()

    before = error()
    for _ in range(30):
        vq(z_e)
    assert error() < 0.2 * before
    frozen = vq.embedding.weight.clone()
    vq.eval()(z_e)
    assert torch.equal(vq.embedding.weight, frozen)  # no updates outside training


def test_codebook_loss_without_ema():
    vq = VectorQuantizer(8, 4, beta=0.25, ema_decay=0.0, dead_code_threshold=0.0)
    assert vq.embedding.weight.requires_grad
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    _, aux = vq(z_e)
    z_q = vq.lookup(vq.nearest(z_e)).detach()
    expected = 1.25 * (z_e.detach() - z_q).pow(2).mean()
    assert aux["vq_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    aux["vq_loss"].backward()
    assert vq.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ema_decay", [0.99, 0.0])
def test_dead_codes_are_restarted_from_the_batch(ema_decay):
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 4, ema_decay=ema_decay, dead_code_threshold=1e-3)
    z_e = torch.randn(2, 4, 4, 4)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)

    vq.eval()
    vq.ema_count.zero_()
    before = vq.embedding.weight.detach().clone()
    vq(z_e)
    assert torch.equal(vq.embedding.weight, before)  # restarts happen in training only

    vq.train()
    used = torch.zeros(64, dtype=torch.bool)
    used[vq.nearest(z_e).flatten()] = True
    vq(z_e)
    after = vq.embedding.weight.detach()
    dead = ~used
    assert dead.sum() > 30
    assert not torch.isclose(after[dead], before[dead]).all(dim=1).any()
    # every restarted code is one of this batch's encoder outputs, with one vector's worth of usage
    assert ((after[dead][:, None] - flat[None]).abs().amax(-1).amin(-1) == 0).all()
    assert torch.equal(vq.ema_count[dead], torch.ones(int(dead.sum())))
    assert (vq.ema_count[used] > 1e-3).all()


def test_perplexity_and_codes_used():
    vq = VectorQuantizer(16, 4, dead_code_threshold=0.0).eval()
    codebook = torch.randn(16, 4) * 3
    vq.embedding.weight.copy_(codebook)
    every_code_once = codebook.t().reshape(1, 4, 4, 4)
    _, aux = vq(every_code_once)
    assert aux["perplexity"].item() == pytest.approx(16.0, rel=1e-4)
    assert aux["codes_used"].item() == 1.0
    one_code = codebook[3].view(1, 4, 1, 1).expand(2, 4, 4, 4)
    _, aux = vq(one_code)
    assert aux["perplexity"].item() == pytest.approx(1.0)
    assert aux["codes_used"].item() == 1 / 16


# --------------------------------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_generator_and_discriminator_loss_around_disc_start(kind):
    torch.manual_seed(0)
    cfg = tiny(kind, disc_start=5, disc_channels=16)
    model = build_autoencoder(cfg)
    loss_fn = AutoencoderLoss(cfg)
    images = simple_images(2)

    reconstruction, aux = model(images)
    loss, logs = loss_fn.generator_loss(images, reconstruction, aux, step=4, last_layer_weight=model.last_layer_weight)
    assert "g_loss" not in logs and math.isfinite(logs["loss"])
    d_loss, d_logs = loss_fn.discriminator_loss(images, reconstruction, step=4)
    assert d_loss.item() == 0.0 and not loss_fn.discriminator_active(4)

    reconstruction, aux = model(images)
    loss, logs = loss_fn.generator_loss(images, reconstruction, aux, step=5, last_layer_weight=model.last_layer_weight)
    assert math.isfinite(logs["d_weight"]) and 0.0 <= logs["d_weight"] <= 1e4 * cfg.disc_weight
    assert logs["loss"] == pytest.approx(
        logs["nll"] + logs.get("kl", 0.0) * cfg.kl_weight + logs.get("vq_loss", 0.0) + logs["d_weight"] * logs["g_loss"],
        rel=1e-4,
    )
    loss.backward()
    assert model.last_layer_weight.grad is not None
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())  # the G step leaves D alone
    assert all(p.requires_grad for p in loss_fn.discriminator.parameters())

    d_loss, d_logs = loss_fn.discriminator_loss(images, reconstruction, step=5)
    assert d_loss.item() > 0 and set(d_logs) >= {"d_loss", "logits_real", "logits_fake"}
    d_loss.backward()
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())


def test_no_discriminator_when_disc_start_negative():
    loss_fn = AutoencoderLoss(tiny("kl"))
    assert loss_fn.discriminator is None and not loss_fn.discriminator_active(10**6)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_bf16_autocast_training_step(kind):
    torch.manual_seed(0)
    cfg = tiny(kind, disc_start=0, disc_channels=16, attention=True)
    model, loss_fn = build_autoencoder(cfg), AutoencoderLoss(cfg)
    images = simple_images(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reconstruction, aux = model(images)
        loss, logs = loss_fn.generator_loss(images, reconstruction, aux, 0, model.last_layer_weight)
        d_loss, _ = loss_fn.discriminator_loss(images, reconstruction, 0)
    loss.backward()
    d_loss.backward()
    assert all(math.isfinite(v) for v in logs.values())
    assert torch.isfinite(model.encoder.conv_in.weight.grad).all()


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_training_lowers_reconstruction_loss(kind):
    torch.manual_seed(0)
    cfg = tiny(kind)
    model, loss_fn = build_autoencoder(cfg), AutoencoderLoss(cfg)
    images = simple_images(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for step in range(40):
        reconstruction, aux = model(images)
        loss, logs = loss_fn.generator_loss(images, reconstruction, aux, step, model.last_layer_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = logs["l1"] if first is None else first
    model.eval()
    with torch.no_grad():
        final = (model.decode(model.encode(images)) - images).abs().mean().item()
    assert final < 0.6 * first


# --------------------------------------------------------------------------------------------------
# scale_factor


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_measure_scale_factor_gives_unit_std_latents(kind):
    torch.manual_seed(0)
    model = build_autoencoder(tiny(kind))
    images = torch.rand(10, 3, 32, 32) * 2 - 1
    batches = [(images[:4], "caption"), (images[4:8], "caption"), (images[8:], "caption")]
    value = measure_scale_factor(model, batches, max_images=6)
    with torch.no_grad():
        latents = model.encode(images[:6]) * value
    assert latents.std().item() == pytest.approx(1.0, rel=1e-3)
    assert measure_scale_factor(model, images[:6], max_images=100) == pytest.approx(value, rel=1e-5)
    assert model.training  # the mode is restored


def test_scale_factor_survives_state_dict_round_trip():
    model = build_autoencoder(tiny("vq"))
    assert model.scale_factor.dtype == torch.float32 and model.scale_factor.item() == 1.0
    model.scale_factor.fill_(0.18215)
    state = model.state_dict()
    assert "scale_factor" in state
    fresh = build_autoencoder(tiny("vq"))
    fresh.load_state_dict(state)
    assert fresh.scale_factor.item() == pytest.approx(0.18215)
    assert torch.equal(fresh.quantizer.ema_count, model.quantizer.ema_count)


# --------------------------------------------------------------------------------------------------
# LPIPS


def random_lpips_weights(lin_key: str = "model.1") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    weights = {}
    for key, shape in lpips_weight_shapes().items():
        if key.startswith("lin"):
            weights[key.replace("model.1", lin_key)] = torch.rand(shape, generator=g) * 0.1
        elif key.endswith("weight"):
            fan_in = shape[1] * 9
            weights[key] = torch.randn(shape, generator=g) * math.sqrt(2 / fan_in)
        else:
            weights[key] = torch.zeros(shape)
    weights["scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)  # ignored
    return weights


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors"
    save_file(random_lpips_weights(), str(path))
    return path


def test_lpips_from_local_file(lpips_file, tmp_path):
    lpips = LPIPS.from_file(lpips_file)
    assert len(lpips.state_dict()) == 0  # the weights stay out of checkpoints
    images = simple_images(2)
    assert torch.equal(lpips(images, images), torch.zeros(2))
    other = images.flip(-1)
    distance = lpips(images, other)
    assert distance.shape == (2,) and (distance > 0).all()

    # a torch.save file, in the dropout-free lin layout, gives the same distances
    pth = tmp_path / "lpips.pth"
    torch.save(random_lpips_weights("model.0"), pth)
    assert torch.allclose(LPIPS.from_file(pth)(images, other), distance)


def test_perceptual_term_in_generator_loss(lpips_file):
    cfg = tiny("kl", perceptual_weight=1.0, perceptual_weights_path=str(lpips_file))
    model, loss_fn = build_autoencoder(cfg), AutoencoderLoss(cfg)
    images = simple_images(2)
    reconstruction, aux = model(images)
    loss, logs = loss_fn.generator_loss(images, reconstruction, aux, 0, model.last_layer_weight)
    assert logs["perceptual"] > 0
    assert logs["nll"] == pytest.approx(logs["l1"] + logs["perceptual"], rel=1e-5)
    loss.backward()


def test_missing_lpips_file_or_keys_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "lpips.safetensors"
    with pytest.raises(ValueError, match="nowhere/lpips.safetensors"):
        LPIPS.from_file(missing)
    with pytest.raises(ValueError, match="nowhere"):
        AutoencoderLoss(tiny("kl", perceptual_weight=1.0, perceptual_weights_path=str(missing)))
    with pytest.raises(ValueError, match="perceptual_weights_path"):
        AutoencoderLoss(tiny("kl", perceptual_weight=1.0))
    weights = random_lpips_weights()
    del weights["net.slice3.12.weight"], weights["lin4.model.1.weight"]
    with pytest.raises(ValueError, match=r"lack 2 .*net\.slice3\.12\.weight.*lin4\.model\.1\.weight"):
        LPIPS(weights)
