"""The fast paths agree with the plain ones: fused AdamW, bf16 sampling, min-SNR weighting as configured."""

from __future__ import annotations

import math

import pytest
import torch

from ldmkit import load_pipeline
from ldmkit.diffusion import diffusion_loss, min_snr_weight
from ldmkit.model import LatentDiffusion
from ldmkit.nn.prepack import unpack
from ldmkit.train.common import adamw
from ldmkit.train.diffusion import DenoisingLoss
from tests.tiny_models import build_tiny_model


def test_fused_adamw_makes_the_same_updates():
    torch.manual_seed(0)
    start = [torch.randn(33, 17), torch.randn(64)]
    runs = []
    for fused in (False, True):
        params = [p.clone().requires_grad_() for p in start]
        opt = adamw(params, lr=1e-2, weight_decay=0.01, fused=fused)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs.append(params)
        assert bool(opt.defaults.get("fused")) == fused
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.getbasetemp() / "serve-tiny-model")


def test_min_snr_gamma_weights_each_samples_loss(tiny):
    model = LatentDiffusion.load(tiny)
    z0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t, noise = torch.tensor([5, 400, 990]), torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    captions = ["a red circle", "", "a blue square"]
    with torch.no_grad():
        plain = DenoisingLoss(model)(z0, captions, t, noise)
        weighted = DenoisingLoss(model, min_snr_gamma=5.0)(z0, captions, t, noise)
        context = model.encode_prompts(captions)
        per_sample = diffusion_loss(lambda z, tt: model.unet(z, tt, context), z0, model.schedule, t=t, noise=noise,
                                    reduction="none")
    torch.testing.assert_close(plain, per_sample.mean())
    torch.testing.assert_close(weighted, (per_sample * min_snr_weight(model.schedule, t, 5.0)).mean())
    assert not torch.allclose(plain, weighted)


def test_bf16_sampling_gives_the_same_picture(tiny):
    """bf16 autocast on the UNet only: the image stays within 30 dB PSNR of the fp32 one."""
    fp32 = load_pipeline(tiny).generate_tensors("a red circle", steps=3, guidance=3.0, seed=0)
    bf16 = load_pipeline(tiny, precision="bf16").generate_tensors("a red circle", steps=3, guidance=3.0, seed=0)
    assert bf16.dtype == torch.float32
    mse = ((fp32 - bf16) / 2).pow(2).mean().item()  # images in [-1, 1] → [0, 1]
    assert mse > 0, "bf16 path did not run in bf16"
    assert 10 * math.log10(1 / mse) >= 30


def test_unknown_precision_is_refused(tiny):
    with pytest.raises(ValueError, match="allowed: fp32, bf16, auto"):
        load_pipeline(tiny, precision="fp16")


def test_generate_cli_takes_precision_and_guidance_stop(tiny, tmp_path, capsys):
    from ldmkit.cli import main

    out = tmp_path / "x.png"
    assert main(["generate", "a red circle", "--model", str(tiny), "--out", str(out), "--steps", "2",
                 "--precision", "auto", "--guidance-stop", "0.5", "--no-progress"]) == 0
    assert out.is_file()
    with pytest.raises(SystemExit) as e:
        main(["generate", "a red circle", "--model", str(tiny), "--out", str(out), "--guidance-stop", "1"])
    assert e.value.code == 2 and "in [0, 1)" in capsys.readouterr().err


def test_a_bf16_pipeline_stores_its_weights_in_bf16_with_the_same_images(tiny):
    """from_folder with precision bf16 keeps the UNet's, τθ's and the decoder's linear and convolution
    weights in bf16 (what autocast would cast them to at every call): bit for bit the same images as a
    bf16 pipeline over the float32 weights, through the plain, feature-reuse and image-to-image paths."""
    from ldmkit.pipelines import ImageToImagePipeline, TextToImagePipeline

    stored = load_pipeline(tiny, precision="bf16")
    model = stored.model
    assert model.autocast_dtype == torch.bfloat16
    assert model.unet.conv_in.weight.dtype == torch.bfloat16
    assert model.autoencoder.decoder.conv_in.weight.dtype == torch.bfloat16
    assert model.autoencoder.encoder.conv_in.weight.dtype == torch.float32  # E runs outside autocast
    norms = [m for m in model.unet.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    unpack(model)  # the storage alone here; the reordered convolutions are tests/test_prepack.py's
    cast = TextToImagePipeline(LatentDiffusion.load(tiny), precision="bf16")  # float32 weights, cast per call
    assert cast.model.unet.conv_in.weight.dtype == torch.float32
    cast.model.autoencoder.to(memory_format=torch.channels_last)  # the decoder layout from_folder chooses
    cast.nhwc = stored.nhwc
    for kwargs in ({}, {"cache_interval": 2}):
        a = stored.generate_tensors("a red circle", steps=3, guidance=3.0, seed=0, **kwargs)
        b = cast.generate_tensors("a red circle", steps=3, guidance=3.0, seed=0, **kwargs)
        assert torch.equal(a, b)
    source = a[:1]
    derived = [ImageToImagePipeline(m, precision="bf16") for m in (model, cast.model)]
    for pipe in derived:
        pipe.nhwc = stored.nhwc
    a, b = (pipe.generate_tensors(source, "a blue square", strength=0.6, steps=3, seed=1) for pipe in derived)
    assert torch.equal(a, b)


def test_a_model_stored_in_bf16_refuses_an_fp32_pipeline(tiny):
    from ldmkit.pipelines import TextToImagePipeline

    model = load_pipeline(tiny, precision="bf16").model
    with pytest.raises(ValueError, match="stored in bf16 .* give precision 'bf16'"):
        TextToImagePipeline(model)
    assert load_pipeline(tiny).model.autocast_dtype is None  # fp32 pipelines keep float32 weights
