"""The first-stage training objective: reconstruction + regulariser (+ LPIPS) (+ PatchGAN), as in VQGAN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.autoencoder.discriminator import NLayerDiscriminator
from ldmkit.autoencoder.perceptual import LPIPS
from ldmkit.config import AutoencoderConfig
from ldmkit.errors import ConfigError


class AutoencoderLoss(nn.Module):
    """Owns the optional discriminator D (``cfg.disc_start`` ≥ 0) and LPIPS (``cfg.perceptual_weight`` > 0).

    Generator (autoencoder) objective:
        L = L_nll + reg + λ · (−mean D(x̂))            (GAN term only from step ``disc_start`` on)
        L_nll = |x − x̂|₁ + l2_weight · |x − x̂|₂² + perceptual_weight · LPIPS(x, x̂)   (pixel means)
        reg = kl_weight · KL / (C·H·W)  (KL)   or   β‖z_e − sg(z_q)‖² (+ codebook term)  (VQ)
    The KL (summed over latent dimensions) is divided by the pixel count because L_nll is a pixel
    mean: the LDM sums its NLL over pixels, so this keeps ``kl_weight`` = 1e-6 meaning what it
    means there. (Without it the KL is 3·H·W times stronger, the posterior stays wide, and the
    decoder learns to blur.)
        λ = disc_weight · clamp(‖∇_L L_nll‖ / (‖∇_L L_GAN‖ + 1e-4), 0, 1e4), ∇ at the decoder's last layer L
    Discriminator objective (hinge): ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂))).

    The training loop steps two optimisers: the autoencoder's on `generator_loss`, and
    ``self.discriminator``'s on `discriminator_loss` (only while `discriminator_active`).
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.config = cfg
        self.discriminator = (
            NLayerDiscriminator(cfg.in_channels, cfg.disc_channels, n_layers=3) if cfg.disc_start >= 0 else None
        )
        self.perceptual = None
        if cfg.perceptual_weight > 0:
            if not cfg.perceptual_weights_path:
                raise ConfigError(
                    "perceptual_weight > 0 needs perceptual_weights_path: a local LPIPS-VGG16 weights file"
                )
            self.perceptual = LPIPS.from_file(cfg.perceptual_weights_path)

    def discriminator_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.config.disc_start

    def generator_loss(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        aux: dict[str, torch.Tensor],
        step: int,
        last_layer_weight: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(L, logs) for the autoencoder's update; ``aux`` is the autoencoder's forward output."""
        cfg = self.config
        x, x_hat = images.float(), reconstruction.float()
        l1 = (x - x_hat).abs().mean()
        nll = l1
        logs = {"l1": l1.item()}
        if cfg.l2_weight > 0:
            l2 = (x - x_hat).pow(2).mean()
            nll = nll + cfg.l2_weight * l2
            logs["l2"] = l2.item()
        if self.perceptual is not None:
            p = self.perceptual(images, reconstruction).mean()
            nll = nll + cfg.perceptual_weight * p
            logs["perceptual"] = p.item()
        logs["nll"] = nll.item()

        if cfg.kind == "kl":
            reg = cfg.kl_weight * aux["kl"] / x[0].numel()
            logs["kl"] = aux["kl"].item()
        else:
            reg = aux["vq_loss"]  # β is already inside the quantiser's loss
            logs["vq_loss"] = reg.item()
        loss = nll + reg

        if self.discriminator_active(step):
            # D's parameters are frozen here so this loss leaves no gradient in them: the generator
            # step must not leak into the discriminator's optimiser.
            with _frozen(self.discriminator):
                g_loss = -self.discriminator(reconstruction).float().mean()
            weight = self._adaptive_weight(nll, g_loss, last_layer_weight)
            loss = loss + weight * g_loss
            logs["g_loss"] = g_loss.item()
            logs["d_weight"] = weight.item()
        logs["loss"] = loss.item()
        return loss, logs

    def _adaptive_weight(self, nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
        """λ = disc_weight · clamp(‖∇_L L_nll‖ / (‖∇_L L_GAN‖ + 1e-4), 0, 1e4), detached (VQGAN eq. 7)."""
        if not (torch.is_grad_enabled() and nll.requires_grad and g_loss.requires_grad):
            # Evaluation without a graph: there is no gradient to balance, so log the GAN term unweighted.
            return torch.tensor(self.config.disc_weight, device=nll.device)
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        ratio = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
        return ratio.clamp(0.0, 1e4).detach() * self.config.disc_weight

    def discriminator_loss(
        self, images: torch.Tensor, reconstruction: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss ½ (mean relu(1 − D(x)) + mean relu(1 + D(sg(x̂)))); a constant 0 before ``disc_start``."""
        if not self.discriminator_active(step):
            return images.new_zeros((), dtype=torch.float32), {"d_loss": 0.0}
        logits_real = self.discriminator(images.detach()).float()
        logits_fake = self.discriminator(reconstruction.detach()).float()
        loss = 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
        logs = {
            "d_loss": loss.item(),
            "logits_real": logits_real.mean().item(),
            "logits_fake": logits_fake.mean().item(),
        }
        return loss, logs


class _frozen:
    """Context manager: ``requires_grad = False`` on a module's parameters, restored on exit."""

    def __init__(self, module: nn.Module):
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p in self.params:
            p.requires_grad_(True)
