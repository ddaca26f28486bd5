"""Multi-head attention through `torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

import threading
import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.nn.layers import group_norm
from ldmkit.nn.lora import effective_weight


class PerThread:
    """A module attribute that each thread sets for itself: what one thread sets (a sampling call's hooks or cache on
    a UNet shared by several) the others never see; unset, it reads None. Held per thread in a weak dictionary, so
    a module freed takes its values with it."""

    def __init__(self):
        self._local = threading.local()

    def __set_name__(self, owner: type, name: str):
        self.name = name

    def _values(self) -> weakref.WeakKeyDictionary:
        values = getattr(self._local, "values", None)
        if values is None:
            values = self._local.values = weakref.WeakKeyDictionary()
        return values

    def __get__(self, module, owner=None):
        return self if module is None else self._values().get(module)

    def __set__(self, module, value) -> None:
        if value is None:
            self._values().pop(module, None)
        else:
            self._values()[module] = value


class Attention(nn.Module):
    """Attention(Q, K, V) = softmax(Q Kᵀ / √d) V, with Q = W_Q φ(z_t), K = W_K c, V = W_V c.

    Self-attention when ``context`` is None (c = φ(z_t)); cross-attention otherwise, where c is
    τθ(y) of width ``context_dim``. ``mask`` (B×L, True = keep) hides padding tokens of c.
    ``qkv_bias`` adds biases to W_Q, W_K, W_V (the LDM autoencoder's attention has them; the UNet's not).

    ``probs_hook``: None (the default: the fused `scaled_dot_product_attention`, whose weights are never
    held), or a function ``hook(A) -> A'`` of the weights A = softmax(Q Kᵀ / √d), float32[B, heads, N, L],
    returning weights of the same shape; the layer then computes them explicitly and returns
    W_out (A' V). This is how attention is controlled while sampling (Prompt-to-Prompt,
    `ldmkit.diffusion.prompt_to_prompt`); a hook that returns A unchanged gives the fused path's output
    up to float rounding.

    ``kv_cache``: None (the default), or a `ldmkit.nn.kv_cache.TextKVCache` that a cross-attention layer
    asks for (W_K c, W_V c) instead of computing them, so that they are computed once per sampling call
    rather than once per step (`ldmkit.nn.kv_cache.cached_text_kv`); the values are the same. Both are the
    setting thread's own (`PerThread`): a hook set in one thread changes nothing in another's calls.
    """

    # set by a sampling call for its own thread (`PerThread`): two calls on one UNet from two threads never
    # see each other's hooks or cache
    probs_hook: Callable[[torch.Tensor], torch.Tensor] | None = PerThread()
    kv_cache: "TextKVCache | None" = PerThread()  # noqa: F821  (ldmkit.nn.kv_cache, which imports this module)

    def __init__(
        self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None, qkv_bias: bool = False
    ):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=qkv_bias)
        self.to_out = nn.Linear(inner, query_dim)

    def weights(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A = softmax(Q Kᵀ / √d) per head, float32[B, heads, N, L]: the weights `forward` uses (it gets
        them fused inside `scaled_dot_product_attention` and never holds them)."""
        context = x if context is None else context
        b = x.shape[0]
        # effective_weight: W, plus the LoRA adapters' ΔW on a layer that has them (ldmkit.nn.lora)
        q = F.linear(x.float(), effective_weight(self.to_q).float(),
                     None if self.to_q.bias is None else self.to_q.bias.float())
        k = F.linear(context.float(), effective_weight(self.to_k).float(),
                     None if self.to_k.bias is None else self.to_k.bias.float())
        q = q.view(b, -1, self.heads, q.shape[-1] // self.heads).transpose(1, 2)
        k = k.view(b, -1, self.heads, k.shape[-1] // self.heads).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        return logits.softmax(dim=-1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # while torch.compile traces (`ldmkit.nn.compiled`), K and V are computed in the compiled program
        if not torch.compiler.is_compiling() and context is not None and self.kv_cache is not None:
            q, (k, v) = self.to_q(x), self.kv_cache.lookup(self, context)
        else:
            context = x if context is None else context
            q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b = x.shape[0]
        q, k, v = (u.view(b, -1, self.heads, u.shape[-1] // self.heads).transpose(1, 2) for u in (q, k, v))
        attn_mask = None if mask is None else mask[:, None, None, :]
        hook = None if torch.compiler.is_compiling() else self.probs_hook
        if hook is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            logits = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            out = hook(logits.softmax(dim=-1)).to(v.dtype) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1]))


class SelfAttention2d(nn.Module):
    """Residual single-head self-attention over the pixels of a feature map (autoencoder middle block).

    ``qkv_bias``: Stable Diffusion's VAE computes q, k, v with biased 1×1 convolutions, the same map
    as biased Linear layers over the pixels.
    """

    def __init__(self, channels: int, qkv_bias: bool = False):
        super().__init__()
        self.norm = group_norm(channels)
        self.attn = Attention(channels, heads=1, head_dim=channels, qkv_bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(tokens).transpose(1, 2).reshape(b, c, h, w)
