"""Convolutional building blocks shared by the autoencoders and the UNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the width allows it (fewer for the tiny presets).

    Statistics are computed in fp32 even under bf16 autocast, which keeps the normalisation stable at low
    precision: CUDA's autocast runs group_norm in fp32; on the CPU a bf16 input stays bf16, and the kernel
    accumulates the mean and variance in fp32 and rounds only its output to bf16. ``eps`` is 1e-6 as in the
    LDM autoencoder and transformer blocks; Stable Diffusion's UNet ResBlocks use PyTorch's 1e-5.
    """
    groups = 32
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels, eps=eps)


def narrowest_group(module: nn.Module) -> int | None:
    """The fewest channels per group of any ``nn.GroupNorm`` in ``module`` (C / G), or None where it has none."""
    return min((m.num_channels // m.num_groups for m in module.modules() if isinstance(m, nn.GroupNorm)), default=None)


class ResBlock(nn.Module):
    """h = x + F(x, emb): GroupNorm → SiLU → conv3×3, (+ projected embedding), GroupNorm → SiLU →
    dropout → conv3×3, with a 1×1 skip projection when the width changes.

    ``emb_dim`` is the size of the timestep embedding (UNet) or None (autoencoder); ``eps`` that of
    both GroupNorms.
    """

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int | None = None, dropout: float = 0.0, eps: float = 1e-6
    ):
        super().__init__()
        self.norm1 = group_norm(in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels) if emb_dim else None
        self.norm2 = group_norm(out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 convolution.

    ``asymmetric``: pad one row and column at the bottom and right only, then convolve without padding,
    as the LDM / Stable Diffusion autoencoder does (its weights were trained with that alignment).
    """

    def __init__(self, channels: int, asymmetric: bool = False):
        super().__init__()
        self.asymmetric = asymmetric
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
