"""Recording the UNet's cross-attention weights as maps on the latent grid.

In every cross-attention layer ℓ the h_ℓ·w_ℓ query pixels weigh the L context vectors c = τθ(y) with
A_ℓ = softmax(Q Kᵀ / √d) (`Attention.weights`; each pixel's row sums to 1 over the tokens). Averaged over
the heads, column j of A_ℓ is token j's map over the layer's pixels; resized bilinearly to the latent
grid h × w, the maps of all layers can be averaged. Forward hooks recompute A from each layer's inputs,
so recording does not change what the UNet computes; with autograd on, the maps are differentiable in z_t.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.nn.attention import Attention
from ldmkit.nn.transformer import BasicTransformerBlock
from ldmkit.nn.unet import level_hw


class CrossAttentionRecorder:
    """A forward hook for cross-attention `Attention` modules: each call appends the layer's maps
    float32[b, L, h_ℓ, w_ℓ] (mean over heads, at the layer's own resolution) for the batch rows
    ``rows`` to ``layers``; `mean` resizes them to ``latent_hw`` and averages. Only the calls of the thread
    that made it are recorded: another thread's sampling on the same UNet is not this one's."""

    def __init__(self, latent_hw: tuple[int, int], rows: slice = slice(None)):
        self.latent_hw = latent_hw
        self.rows = rows
        self.layers: list[torch.Tensor] = []
        self.thread = threading.get_ident()

    def __call__(self, module: Attention, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        if threading.get_ident() != self.thread:
            return
        x = args[0]
        context = args[1] if len(args) > 1 else kwargs.get("context")
        mask = args[2] if len(args) > 2 else kwargs.get("mask")
        mask = None if mask is None else mask[self.rows]
        a = module.weights(x[self.rows], context[self.rows], mask).mean(dim=1)  # [b, h_ℓ·w_ℓ, L]
        # the layer's level: the latent's sides halved, rounding up, as the UNet's downsampling does
        self.layers.append(a.transpose(1, 2).reshape(a.shape[0], a.shape[2], *level_hw(self.latent_hw, a.shape[1])))

    def mean(self) -> torch.Tensor:
        """The recorded maps resized bilinearly to ``latent_hw`` and averaged over all calls (layers and
        steps): float32[b, L, h, w]."""
        if not self.layers:
            raise ValueError("no cross-attention was recorded (the UNet has no cross-attention layers)")
        return torch.stack([F.interpolate(m, size=self.latent_hw, mode="bilinear", align_corners=False)
                            for m in self.layers]).mean(dim=0)


def cross_attention_layers(unet: nn.Module) -> list[Attention]:
    """The cross-attention modules (attn2 of each transformer block) of a UNet."""
    return [m.attn2 for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


@contextmanager
def recording(unet: nn.Module, recorder: CrossAttentionRecorder) -> Iterator[CrossAttentionRecorder]:
    """Hook ``recorder`` onto every cross-attention layer of ``unet`` for the ``with`` block."""
    handles = [layer.register_forward_hook(recorder, with_kwargs=True) for layer in cross_attention_layers(unet)]
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
