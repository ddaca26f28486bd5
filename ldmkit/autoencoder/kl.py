"""The KL-regularised autoencoder: E(x) parameterises a diagonal Gaussian posterior q(z | x)."""

from __future__ import annotations

import torch
from torch import nn

from ldmkit.autoencoder.networks import LatentAutoencoder
from ldmkit.config import AutoencoderConfig


class DiagonalGaussian:
    """q(z | x) = N(μ, diag(σ²)), from encoder moments split along channels into (μ, log σ²).

    log σ² is clamped to [−30, 20] (as in the LDM code) so that exp() neither underflows to a zero
    σ nor overflows. Moments are held in fp32: under bf16 autocast the KL sum over all latent
    elements and the tiny σ of a well-trained posterior would lose their precision.
    """

    def __init__(self, moments: torch.Tensor):
        mean, logvar = moments.float().chunk(2, dim=1)
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ ⊙ ε, ε ~ N(0, I) (reparameterised, so gradients reach μ and σ)."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²), summed over C, H, W: one value per sample (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class KLAutoencoder(LatentAutoencoder):
    """x̂ = D(z), z ~ q(z | x) = N(μ(x), σ²(x)), trained with L_rec + kl_weight · KL(q ‖ N(0, I)).

    The encoder emits 2c channels; a 1×1 ``quant_conv`` mixes them into the moments (μ, log σ²) and a
    1×1 ``post_quant_conv`` feeds z to the decoder, as in the original LDM AutoencoderKL.
    """

    def __init__(self, cfg: AutoencoderConfig):
        c = cfg.latent_channels
        super().__init__(cfg, encoder_channels=2 * c)
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)

    def posterior(self, images: torch.Tensor) -> DiagonalGaussian:
        """q(z | x) for images in [−1, 1], NCHW."""
        self._check_size(images)
        images = images.to(self.quant_conv.weight.dtype)
        return DiagonalGaussian(self.quant_conv(self.encoder(images)))

    def encode(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The unscaled latent: μ(x), or a sample z ~ q(z | x) when ``sample``. (B, c, H/f, W/f), fp32."""
        posterior = self.posterior(images)
        return posterior.sample(generator) if sample else posterior.mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = D(z) for an unscaled latent z."""
        return self._decode_latent(z)

    def forward(
        self, images: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(x̂, {"kl": mean over the batch of the per-sample KL}) for training."""
        posterior = self.posterior(images)
        z = posterior.sample() if sample_posterior else posterior.mean
        return self.decode(z), {"kl": posterior.kl().mean()}
