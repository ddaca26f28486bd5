"""The identity first stage of a pixel-space diffusion model (``autoencoder.kind: identity``).

E(x) = x, D(z) = z, f = 1, c = 3 (the image's channels) and scale_factor = 1, so that z_0 = x: the UNet,
the prompt model, the objective, the samplers and the pipelines run on images unchanged, by the one code
path that latent models take. It has no weights: a pixel model folder holds no ``autoencoder.safetensors``.
"""

from __future__ import annotations

import torch
from torch import nn

from ldmkit.config import AutoencoderConfig
from ldmkit.errors import ConfigError


class IdentityAutoencoder(nn.Module):
    """z = E(x) = x and x̂ = D(z) = z, with the interface of `KLAutoencoder` and `VQAutoencoder`.

    ``cfg.latent_channels`` must equal ``cfg.in_channels`` (the latent is the image); the widths, levels
    and loss weights of ``cfg`` are unused. ``encoder``, ``decoder`` and ``post_quant_conv`` are
    `nn.Identity` so that code which moves or casts them finds them. ``scale_factor`` is 1 and not part
    of the state dict, which is empty.
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        if cfg.latent_channels != cfg.in_channels:
            raise ConfigError(
                f"autoencoder.latent_channels = {cfg.latent_channels}; the identity autoencoder's latent is the image, "
                f"so it must equal autoencoder.in_channels ({cfg.in_channels})"
            )
        self.config = cfg
        self.encoder, self.decoder, self.post_quant_conv = nn.Identity(), nn.Identity(), nn.Identity()
        self.register_buffer("scale_factor", torch.tensor(1.0, dtype=torch.float32), persistent=False)

    @property
    def downsample_factor(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels

    def encode(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = x, float32 (``sample`` and ``generator`` are accepted and unused: E is deterministic)."""
        return images.float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = z, float32."""
        return z.float()

    def forward(self, images: torch.Tensor, sample_posterior: bool = True) -> tuple[torch.Tensor, dict]:
        """(x, {}): nothing to train."""
        return images.float(), {}
