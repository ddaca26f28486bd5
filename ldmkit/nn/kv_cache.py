"""The text keys and values of cross-attention, computed once per sampling call instead of once per step.

A cross-attention layer's K = W_K c and V = W_V c depend on the context c = τθ(y) alone, and a sampling
run passes the same context tensor at every step (classifier-free guidance builds [τθ(∅); τθ(y)] once,
`guided_denoiser`). Inside ``with cached_text_kv(unet):`` each cross-attention layer of ``unet`` computes
(W_K c, W_V c) the first time it sees c and reuses them while c stays the same tensor, unchanged:

    step 0:     K = W_K c,  V = W_V c      (computed, stored for this layer and this c)
    step i > 0: K, V                         (read back; the same numbers, so the same image bit for bit)

What makes an entry reusable: the same tensor object c (held by the cache, so its id cannot be reused by
another tensor), not modified in place since (its version counter; tensors made in inference mode keep
none), and the same autocast state. Only computations without autograd are cached (no_grad or inference
mode, as sampling runs): a step that needs gradients (binding guidance's pass, null-text optimisation)
computes K, V as always.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ldmkit.nn.attention import Attention
from ldmkit.nn.transformer import BasicTransformerBlock

Entry = tuple[torch.Tensor, int, tuple, torch.Tensor, torch.Tensor]  # (c, c's version, autocast, K, V)


class TextKVCache:
    """(W_K c, W_V c) per cross-attention layer and context c; ``lookup(layer, c)`` computes on a miss.

    Each layer keeps its ``per_layer`` most recent contexts (a guided run uses two: [τθ(∅); τθ(y)], and
    τθ(y) alone in the unguided steps of ``guidance_stop``). ``hits`` and ``misses`` count lookups."""

    def __init__(self, per_layer: int = 2):
        self.per_layer = per_layer
        self.entries: dict[Attention, list[Entry]] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, layer: Attention, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(layer.to_k(c), layer.to_v(c)), stored or computed now."""
        if torch.is_grad_enabled():
            return layer.to_k(context), layer.to_v(context)
        state, version = _autocast_state(context.device.type), _version(context)
        entries = self.entries.setdefault(layer, [])
        for entry in entries:
            if entry[0] is context and entry[1] == version and entry[2] == state:
                self.hits += 1
                return entry[3], entry[4]
        self.misses += 1
        k, v = layer.to_k(context), layer.to_v(context)
        entries.insert(0, (context, version, state, k, v))
        del entries[self.per_layer:]
        return k, v


def cross_attention_layers(unet: nn.Module) -> list[Attention]:
    """The `Attention` layers of ``unet`` whose keys and values come from the context: the
    cross-attention (attn2) of each transformer block."""
    return [block.attn2 for block in unet.modules() if isinstance(block, BasicTransformerBlock)]


@contextmanager
def cached_text_kv(unet: nn.Module, cache: TextKVCache | None = None) -> Iterator[TextKVCache]:
    """For the ``with`` block, every cross-attention layer of ``unet`` takes its K, V from ``cache`` (a new
    `TextKVCache` if None), which it yields; on leaving, the layers compute them again and the stored
    tensors are dropped. Nested blocks on the same UNet: the inner one's cache applies inside it."""
    cache = cache if cache is not None else TextKVCache()
    layers = cross_attention_layers(unet)
    previous = [layer.kv_cache for layer in layers]
    for layer in layers:
        layer.kv_cache = cache
    try:
        yield cache
    finally:
        for layer, old in zip(layers, previous):
            layer.kv_cache = old
        cache.entries.clear()


def _version(tensor: torch.Tensor) -> int:
    """The in-place version counter; -1 for an inference-mode tensor, which keeps none (nothing in ldmkit
    writes into a context in place)."""
    return -1 if tensor.is_inference() else tensor._version


def _autocast_state(device_type: str) -> tuple:
    if not torch.is_autocast_enabled(device_type):
        return (False,)
    return (True, torch.get_autocast_dtype(device_type))
