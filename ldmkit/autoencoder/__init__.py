"""The first stage: an autoencoder E, D that maps images x (H×W×3) to latents z (H/f × W/f × c) and back.

Three kinds share one interface (`encode`, `decode`, `forward`, ``scale_factor``, ``downsample_factor``,
``latent_channels``): `KLAutoencoder` (a Gaussian posterior, KL-regularised), `VQAutoencoder`
(a codebook, quantised inside `decode`) and `IdentityAutoencoder` (z = x, f = 1: pixel-space diffusion,
no weights). `encode` and `decode` work on *unscaled* latents; the diffusion
side multiplies by ``scale_factor`` (see `measure_scale_factor`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ldmkit.autoencoder.discriminator import NLayerDiscriminator
from ldmkit.autoencoder.identity import IdentityAutoencoder
from ldmkit.autoencoder.kl import DiagonalGaussian, KLAutoencoder
from ldmkit.autoencoder.losses import AutoencoderLoss
from ldmkit.autoencoder.networks import Decoder, Encoder
from ldmkit.autoencoder.perceptual import LPIPS
from ldmkit.autoencoder.vq import VectorQuantizer, VQAutoencoder
from ldmkit.config import AutoencoderConfig

Autoencoder = KLAutoencoder | VQAutoencoder | IdentityAutoencoder

__all__ = [
    "Autoencoder",
    "AutoencoderLoss",
    "Decoder",
    "DiagonalGaussian",
    "Encoder",
    "IdentityAutoencoder",
    "KLAutoencoder",
    "LPIPS",
    "NLayerDiscriminator",
    "VQAutoencoder",
    "VectorQuantizer",
    "build_autoencoder",
    "has_weights",
    "measure_scale_factor",
]


def build_autoencoder(cfg: AutoencoderConfig) -> Autoencoder:
    """The autoencoder ``cfg.kind`` names, with fresh weights."""
    if cfg.kind == "kl":
        return KLAutoencoder(cfg)
    if cfg.kind == "vq":
        return VQAutoencoder(cfg)
    if cfg.kind == "identity":
        return IdentityAutoencoder(cfg)
    raise ValueError(f"unknown autoencoder kind {cfg.kind!r}; expected 'kl', 'vq' or 'identity'")


def has_weights(cfg: AutoencoderConfig) -> bool:
    """Whether this kind of autoencoder has trained weights (a file in a model folder): all but the identity."""
    return cfg.kind != "identity"


@torch.no_grad()
def measure_scale_factor(
    model: KLAutoencoder | VQAutoencoder,
    images: torch.Tensor | Iterable,
    max_images: int,
    sample: bool = False,
) -> float:
    """scale_factor = 1 / std(E(x)) over up to ``max_images`` images, as the LDM sets it, so that the
    diffusion model sees latents = scale_factor · E(x) of unit variance.

    ``images``: one tensor (N, 3, H, W), or an iterable of batches, each a tensor, a tuple/list whose
    first item is the images, or a dict with an ``"images"`` entry. ``sample`` encodes posterior samples
    instead of means (KL only). The std is over every latent element, accumulated in float64. The model
    is put in eval mode for the measurement and restored after. The caller stores the result with
    ``model.scale_factor.fill_(value)``.
    """
    if max_images <= 0:
        raise ValueError(f"max_images must be positive, got {max_images}")
    batches = images.split(64) if isinstance(images, torch.Tensor) else images
    device = model.post_quant_conv.weight.device
    was_training = model.training
    model.eval()
    total, total_sq, count, seen = 0.0, 0.0, 0, 0
    try:
        for batch in batches:
            if isinstance(batch, dict):
                batch = batch["images"]
            elif isinstance(batch, (tuple, list)):
                batch = batch[0]
            batch = batch[: max_images - seen].to(device)
            z = model.encode(batch, sample=sample).double()
            total += z.sum().item()
            total_sq += z.pow(2).sum().item()
            count += z.numel()
            seen += batch.shape[0]
            if seen >= max_images:
                break
    finally:
        model.train(was_training)
    if count < 2:
        raise ValueError("measure_scale_factor got no images")
    mean = total / count
    var = (total_sq - count * mean * mean) / (count - 1)
    if var <= 0:
        raise ValueError("the encoded latents have zero variance; cannot set scale_factor = 1/std")
    return float(var**-0.5)
