"""Nearest-neighbour doubling then a 3×3 convolution, run at inference as one 2×2 convolution at the input's
resolution (`ldmkit.nn.layers.subpixel_convolution`): the same map to float rounding, the layout it was given, the
plain path wherever the shortcut does not hold."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from ldmkit.nn.layers import Upsample, use_subpixel
from ldmkit.nn.lora import inject
from ldmkit.nn.prepack import available, prepack


def upsample(channels: int, seed: int = 0) -> Upsample:
    torch.manual_seed(seed)
    up = Upsample(channels).eval()
    torch.nn.init.normal_(up.conv.bias)
    return up


def plain(up: Upsample, x: torch.Tensor) -> torch.Tensor:
    return up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 16, 1, 1), (3, 4, 6, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_is_the_plain_map_in_the_layout_it_was_given(shape, channels_last):
    up = upsample(shape[1])
    x = torch.randn(shape)
    if channels_last:
        up.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = plain(up, x), up(x)
    assert up._subpixel is not None  # the shortcut ran
    assert got.shape == want.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if channels_last and shape[1] > 1 and shape[2] * shape[3] > 1:
        assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    else:
        assert got.is_contiguous()


def test_a_convolution_without_bias_and_batched_inference_mode():
    torch.manual_seed(1)
    up = Upsample(6).eval()
    up.conv = torch.nn.Conv2d(6, 6, 3, padding=1, bias=False)
    x = torch.randn(4, 6, 9, 3)
    with torch.inference_mode():
        torch.testing.assert_close(up(x), plain(up, x), rtol=1e-5, atol=1e-5)


def test_training_takes_the_plain_path_bit_for_bit_and_its_gradients():
    up = upsample(8)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    y = up(x)
    assert up._subpixel is None and torch.equal(y, plain(up, x))
    y.square().sum().backward()
    assert x.grad is not None and up.conv.weight.grad is not None


def test_weights_changed_in_place_are_followed():
    up, other = upsample(8, seed=0), upsample(8, seed=1)
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        first = up(x)
        up.load_state_dict(other.state_dict())  # in place: the weights' version counter moves
        second = up(x)
        torch.testing.assert_close(second, plain(other, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)


def test_switched_off_it_is_the_plain_path_bit_for_bit():
    net = torch.nn.Sequential(upsample(8), upsample(8, seed=2))
    x = torch.randn(2, 8, 3, 5)
    with torch.no_grad():
        fast = net(x)
        assert use_subpixel(net, False) == 2
        slow = net(x)
        assert torch.equal(slow, plain(net[1], plain(net[0], x)))
        assert use_subpixel(net, True) == 2
        torch.testing.assert_close(net(x), fast)


def test_a_lora_on_the_convolution_takes_the_plain_path():
    net = torch.nn.Sequential(upsample(8))
    layer = inject(net, ["0.conv"], rank=2, alpha=2.0)["0.conv"]
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        torch.nn.init.normal_(layer.lora_B["default"])
        without = plain(upsample(8), x)  # the same W and b, without the adapter
        got = net(x)
        assert torch.equal(got, plain(net[0], x)) and not torch.allclose(got, without)  # the adapter's term is in it
    assert net[0]._subpixel is None


def test_weights_stored_in_bf16_and_cast_by_autocast_give_the_same_output():
    cast = upsample(8)
    stored = copy.deepcopy(cast).to(torch.bfloat16)
    x = torch.randn(2, 8, 5, 5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cast(x), stored(x))


def test_copies_and_pickles_leave_the_built_convolution_out():
    up = upsample(8)
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        want = up(x)
        assert up._subpixel is not None
        for other in (copy.deepcopy(up), pickle.loads(pickle.dumps(up))):
            assert "_subpixel" not in other.__dict__
            torch.testing.assert_close(other(x), want)
    assert set(up.state_dict()) == {"conv.weight", "conv.bias"}  # nothing added to the files it saves


@pytest.mark.skipif(not available(), reason="oneDNN bf16 convolutions need AVX-512 (or AVX-NE-CONVERT)")
def test_bf16_prepacked_inference_is_the_plain_map_to_bf16_rounding():
    up = upsample(16)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        want = plain(up, x)
    up.to(torch.bfloat16, memory_format=torch.channels_last)
    assert prepack(up) == 1
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # as the pipelines run it
        got, rounded = up(x).float(), plain(up, x).float()
    assert type(up._subpixel[1]) is type(up.conv)  # the 2×2 convolution is prepacked too
    scale = want.abs().max()
    assert (got - want).abs().max() <= 2 * (rounded - want).abs().max() + 1e-2 * scale
