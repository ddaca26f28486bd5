"""Convolution weights laid out once for oneDNN: bf16 inference on the CPU without a per-call weight reorder.

A bf16 ``F.conv2d`` on the CPU hands oneDNN the weight W in PyTorch's plain OIHW layout, and oneDNN first
reorders W into the blocked layout its kernel reads — at every call, whatever the batch. `PackedConv2d` keeps
W reordered for the input shape it last saw (the kernel oneDNN picks depends on it) and runs oneDNN's
convolution on that copy:

    y = W ⋆ x + b      with W reordered once per (input shape, W) instead of once per call

On most processors it is the kernel the plain call runs, so y is the same numbers, bit for bit
(benchmarks/PREPACK.md checks the shipped models'); on some (an AMD EPYC with AVX-512 BF16, NCHW input) oneDNN
picks another kernel for the reordered W, and a few outputs in 10⁴ round one bf16 ulp apart (tests/test_prepack.py
checks a pipeline's images to that rounding). Measured on the shipped UNet in bf16 on an AVX-512
CPU, one thread: 1.25× at batch 1, 1.03× at batch 16, where the convolutions' arithmetic hides the reorder.
Linear maps gain nothing this way (oneDNN's packed matmul rounds differently and was no faster): they stay plain.

`prepack` swaps a network's exact ``nn.Conv2d`` layers for `PackedConv2d` (same Parameters, same state-dict
names). Only inference takes the packed path: a bf16 W, a bf16 input (or an fp32 one under bf16 autocast, cast
as autocast would), on the CPU, without autograd; anything else (training, fp32, a GPU) runs the plain forward.
A W changed in place (a merged LoRA, a loaded state dict) is reordered again: its version counter and storage
are part of the key. Memory: one reordered copy per layer, the size of its bf16 weight. A layer that a LoRA
wraps (`ldmkit.nn.lora`) runs the plain forward; a pipeline packs it again once the LoRA is unloaded or fused.
"""

from __future__ import annotations

import torch
from torch import nn


def available() -> bool:
    """Whether oneDNN runs bf16 convolutions here and this PyTorch build exposes its weight reorder and convolution
    entry points (CPU builds with oneDNN, on a processor with AVX-512 BW/VL/DQ or AVX-NE-CONVERT; on others a bf16
    convolution takes PyTorch's own slow path, and there is no reorder to save)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = [getattr(torch.ops.mkldnn, op) for op in
               ("_is_mkldnn_bf16_supported", "_reorder_convolution_weight", "_convolution_pointwise")]
        return bool(ops[0]())
    except (AttributeError, RuntimeError):
        return False


class PackedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose bf16 inference on the CPU runs on W reordered once (module docstring)."""

    _packed: tuple | None = None  # (key, reordered W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = self._packable_input(x)
        if xb is None:
            return super().forward(x)
        w = self.weight
        key = (tuple(xb.shape), w._version, w.data_ptr())
        geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        packed = self._packed  # read once: another thread may replace it for another input shape meanwhile
        if packed is None or packed[0] != key:
            packed = (key, torch.ops.mkldnn._reorder_convolution_weight(w, *geometry, list(xb.shape)))
            self._packed = packed
        y = torch.ops.mkldnn._convolution_pointwise(xb, packed[1], self.bias, *geometry, "none", [], "")
        # oneDNN answers in channels-last; the plain call does so where the input or W is channels-last, and keeps
        # an NCHW input's layout where W is NCHW too (PyTorch's rule)
        return y.contiguous() if xb.is_contiguous() and w.is_contiguous() else y

    def __getstate__(self) -> dict:
        """Copies and pickles leave the reordered W out (an opaque oneDNN tensor); they reorder on first use."""
        state = self.__dict__.copy()
        state.pop("_packed", None)
        return state

    def _packable_input(self, x: torch.Tensor) -> torch.Tensor | None:
        """``x`` in bf16 when the packed path applies, else None."""
        w, b = self.weight, self.bias
        if torch.compiler.is_compiling():  # TorchInductor lays out the weights itself (`ldmkit.nn.compiled`)
            return None
        if (w.dtype != torch.bfloat16 or (b is not None and b.dtype != w.dtype) or x.device.type != "cpu"
                or x.dim() != 4 or torch.is_grad_enabled() or self.padding_mode != "zeros"
                or isinstance(self.padding, str)):
            return None
        if x.dtype != w.dtype:
            if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == w.dtype):
                return None
            x = x.to(w.dtype)
        return x


def prepack(module: nn.Module) -> int:
    """Swap the exact ``nn.Conv2d`` layers of ``module`` for `PackedConv2d`, in place; returns how many. Nothing
    changes where `available` is False. Subclasses (LoRA wrappers) are left as they are."""
    if not available():
        return 0
    swapped = 0
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = PackedConv2d
            swapped += 1
    return swapped


def unpack(module: nn.Module) -> None:
    """Undo `prepack`: plain ``nn.Conv2d`` again, the reordered copies dropped."""
    for m in module.modules():
        if type(m) is PackedConv2d:
            m.__dict__.pop("_packed", None)
            m.__class__ = nn.Conv2d
