"""Convolution weights reordered once for oneDNN (`ldmkit.nn.prepack`): the same images to bf16 rounding (bit for bit
where oneDNN runs the same kernel on the reordered W), W kept in step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ldmkit import load_pipeline
from ldmkit.nn.lora import inject
from ldmkit.nn.prepack import PackedConv2d, available, prepack, unpack
from tests.tiny_models import build_tiny_model

pytestmark = pytest.mark.skipif(not available(), reason="oneDNN bf16 convolutions need AVX-512 (or AVX-NE-CONVERT)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("prepack") / "model")


def packed_layers(module: nn.Module) -> int:
    return sum(type(m) is PackedConv2d for m in module.modules())


def test_a_bf16_cpu_pipeline_gives_the_images_of_plain_convolutions(folder):
    pipe = load_pipeline(folder, precision="bf16")
    assert packed_layers(pipe.model.unet) > 0 and packed_layers(pipe.model.autoencoder) > 0
    assert packed_layers(load_pipeline(folder, precision="fp32").model) == 0
    packed = [pipe.generate_tensors("a red circle above a blue square", steps=3, seed=s, num_images=n)
              for s, n in ((0, 1), (1, 3))]  # two batch sizes: the reordered W follows the input shape
    unpack(pipe.model)
    assert packed_layers(pipe.model) == 0
    for (s, n), image in zip(((0, 1), (1, 3)), packed):
        plain = pipe.generate_tensors("a red circle above a blue square", steps=3, seed=s, num_images=n)
        # bit for bit on most processors; where oneDNN picks another kernel for the reordered W (an AMD EPYC with
        # AVX-512 BF16, NCHW input) a few outputs in 10⁴ round one bf16 ulp apart, ≤ 0.016 of the image's range 2
        # after three steps and the decoder here; a W read in the wrong layout would be noise
        assert image.shape == plain.shape and (image - plain).abs().max() < 0.03
        assert (image - plain).abs().mean() < 0.005


def test_a_weight_changed_in_place_is_reordered_again_and_training_runs_plain():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).to(torch.bfloat16)
    plain = nn.Conv2d(8, 16, 3, padding=1).to(torch.bfloat16)
    plain.load_state_dict(conv.state_dict())
    assert prepack(conv) == 1 and type(conv) is PackedConv2d
    x = torch.randn(2, 8, 6, 6, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(conv(x), plain(x))
        assert conv._packed is not None and conv(x).is_contiguous()
        xl = x.contiguous(memory_format=torch.channels_last)  # a channels-last input keeps its layout, as plain
        assert conv(xl).is_contiguous(memory_format=torch.channels_last) and torch.equal(conv(xl), plain(xl))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 input under autocast: cast as autocast would
            assert torch.equal(conv(x.float()), plain(x.float()))
    # a channels-last W answers in channels-last even for an NCHW input, as plain does (a channels-last UNet fed
    # NCHW z_t runs channels-last from its first convolution on)
    conv_l, plain_l = (copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (conv, plain))
    with torch.inference_mode():
        assert plain_l(x).is_contiguous(memory_format=torch.channels_last)
        assert conv_l(x).is_contiguous(memory_format=torch.channels_last) and torch.equal(conv_l(x), plain_l(x))
    with torch.no_grad():  # a merged LoRA or a loaded state dict changes W in place
        conv.weight.mul_(-2.0)
        plain.weight.mul_(-2.0)
    with torch.inference_mode():
        assert torch.equal(conv(x), plain(x))
    twin = copy.deepcopy(conv)  # a copy leaves the opaque reordered W behind and reorders its own
    assert twin._packed is None
    with torch.inference_mode():
        assert torch.equal(twin(x), plain(x))
    conv.load_state_dict({k: torch.zeros_like(v) for k, v in conv.state_dict().items()})
    with torch.inference_mode():
        assert not conv(x).any()
    xg = torch.randn(2, 8, 6, 6, dtype=torch.bfloat16, requires_grad=True)
    conv(xg).float().sum().backward()  # with autograd: the plain forward, gradients flow
    assert xg.grad is not None and conv.weight.grad is not None


def test_lora_wraps_a_packed_convolution_and_runs_it_plain():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)).to(torch.bfloat16)
    prepack(net)
    x = torch.randn(1, 4, 5, 5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = net(x)
    inject(net, ["0"], rank=2, alpha=2.0)
    assert type(net[0]) is not PackedConv2d and isinstance(net[0], nn.Conv2d)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(net(x), before)  # a fresh adapter (B = 0) changes nothing


def test_a_pipeline_packs_its_convolutions_again_after_unloading_or_fusing_a_lora(folder):
    pipe = load_pipeline(folder, precision="bf16")
    names = [n for n, m in pipe.model.named_modules() if type(m) is PackedConv2d][:2]
    count = packed_layers(pipe.model)
    for finish in (pipe.unload_lora_weights, pipe.fuse_lora):
        inject(pipe.model, names, rank=2, alpha=2.0)
        assert packed_layers(pipe.model) == count - 2
        finish()
        assert packed_layers(pipe.model) == count
