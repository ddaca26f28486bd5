"""The convolutional encoder E and decoder D shared by the KL and VQ autoencoders (LDM/VQGAN layout),
and the base class that gives both autoencoders their common interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.config import AutoencoderConfig
from ldmkit.nn.attention import SelfAttention2d
from ldmkit.nn.layers import Downsample, ResBlock, Upsample, group_norm
from ldmkit.errors import UsageError


def _middle(channels: int, cfg: AutoencoderConfig) -> nn.Sequential:
    # Identity keeps the state-dict keys of the second ResBlock the same with and without attention.
    return nn.Sequential(
        ResBlock(channels, channels),
        SelfAttention2d(channels, qkv_bias=cfg.attention_bias) if cfg.attention else nn.Identity(),
        ResBlock(channels, channels),
    )


class Encoder(nn.Module):
    """h = E(x): (B, in_channels, H, W) → (B, out_channels, H/f, W/f), f = 2^(len(channel_mults) − 1).

    conv_in; per level ``num_res_blocks`` ResBlocks at base_channels·mult, then a stride-2 Downsample
    (none after the last level); middle ResBlock (+ self-attention) + ResBlock; GroupNorm → SiLU → conv_out.
    """

    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.base_channels
        for level, width in enumerate(widths):
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, width))
                ch = width
            if level < len(widths) - 1:
                blocks.append(Downsample(ch, asymmetric=cfg.asymmetric_downsample))
            self.down.append(nn.Sequential(*blocks))
        self.mid = _middle(ch, cfg)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """x̂ = D(z): (B, latent_channels, h, w) → (B, in_channels, h·f, w·f), the mirror of `Encoder`.

    conv_in; middle ResBlock (+ self-attention) + ResBlock; per level, from the deepest,
    ``num_res_blocks + 1`` ResBlocks then a nearest-neighbour Upsample (none after the full-resolution
    level); GroupNorm → SiLU → conv_out. The extra ResBlock per level is the original LDM/SD layout,
    which keeps converted Stable Diffusion VAE weights a key-for-key fit.
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        ch = widths[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = _middle(ch, cfg)
        self.up = nn.ModuleList()  # deepest level first, the order they run in
        for level in reversed(range(len(widths))):
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(ch, widths[level]))
                ch = widths[level]
            if level > 0:
                blocks.append(Upsample(ch))
            self.up.append(nn.Sequential(*blocks))
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.up:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LatentAutoencoder(nn.Module):
    """What `KLAutoencoder` and `VQAutoencoder` share: E, D, the 1×1 ``post_quant_conv`` in front of D,
    and the ``scale_factor`` buffer (1/std of the training latents, so that latents = scale_factor · E(x)
    has unit variance; the diffusion side applies it, `encode`/`decode` here never do).
    """

    def __init__(self, cfg: AutoencoderConfig, encoder_channels: int):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, encoder_channels)
        self.decoder = Decoder(cfg)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)
        self.register_buffer("scale_factor", torch.tensor(1.0, dtype=torch.float32))

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's final conv weight: the GAN loss's adaptive weight compares gradients here."""
        return self.decoder.conv_out.weight

    def _check_size(self, images: torch.Tensor) -> None:
        f = self.downsample_factor
        h, w = images.shape[-2:]
        if h % f or w % f:
            raise UsageError(f"image size {h}x{w} is not divisible by the autoencoder's downsample factor f={f}")

    def _decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = D(post_quant_conv(z)) for a latent that is already quantised (VQ) or sampled (KL)."""
        z = z.to(self.post_quant_conv.weight.dtype)  # fp32 latents into a model cast to bf16
        return self.decoder(self.post_quant_conv(z))
