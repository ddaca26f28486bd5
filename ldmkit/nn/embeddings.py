"""Sinusoidal embedding of the diffusion timestep t."""

from __future__ import annotations

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """emb(t) = [cos(t·ω_0), …, cos(t·ω_{k-1}), sin(t·ω_0), …, sin(t·ω_{k-1})], ω_i = max_period^(-i/k).

    k = dim // 2; the cosines come first, as in the LDM ``openaimodel.timestep_embedding`` (and
    diffusers with ``flip_sin_to_cos=True, downscale_freq_shift=0``, the Stable Diffusion setting), so
    weights converted from those layouts see the same features. An odd ``dim`` gets a zero last column.

    ``t`` is int64[B] (0 … T−1) or float[B]; the result is float32[B, dim]. It is computed in fp32 on
    purpose: t·ω reaches ~10³, where bf16's 8-bit mantissa would round the phase by whole radians.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects t of shape [B], got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
