"""The diffusion training objective (the lecture's Algorithm 1), with optional min-SNR-γ weighting."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.grids import randn
from ldmkit.diffusion.schedule import NoiseSchedule, q_sample, snr, v_target


def min_snr_weight(schedule: NoiseSchedule, t: Tensor, gamma: float, prediction: str = "epsilon") -> Tensor:
    """Per-sample loss weight of min-SNR-γ (Hang et al. 2023), shape [B]:

        ε-prediction: min(SNR_t, γ) / SNR_t,   v-prediction: min(SNR_t, γ) / (SNR_t + 1).

    Both equal min(SNR_t, γ) weighting of the z_0 error, which stops the many nearly-clean timesteps
    (huge SNR) from dominating the gradient.
    """
    ratio = snr(schedule, t)
    clipped = ratio.clamp(max=gamma)
    if prediction == "epsilon":
        return clipped / ratio
    if prediction == "v":
        return clipped / (ratio + 1)
    raise ValueError(f"prediction = {prediction!r}; allowed: epsilon, v")


def diffusion_loss(
    model_fn: Callable[[Tensor, Tensor], Tensor],
    latents: Tensor,
    schedule: NoiseSchedule,
    prediction: str = "epsilon",
    generator: torch.Generator | None = None,
    min_snr_gamma: float | None = None,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """L = E_{z_0, t, ε} ‖target − model_fn(z_t, t)‖² with z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε, where

        t ~ Uniform{0, …, T−1},  ε ~ N(0, I),  target = ε (``"epsilon"``) or v = √ᾱ_t ε − √(1 − ᾱ_t) z_0 (``"v"``).

    ``model_fn(z_t, t)`` is the UNet with the context closed over. The squared error is averaged over
    each sample's elements, optionally weighted by `min_snr_weight`, and then averaged over the batch
    (``reduction="mean"``) or returned per sample, shape [B] (``reduction="none"``). ``t`` and ``noise``
    may be given to fix them (validation loss at set timesteps, tests); otherwise they are drawn from
    ``generator``. The loss is computed in float32 whatever dtype the model returns.
    """
    if prediction not in ("epsilon", "v"):
        raise ValueError(f"prediction = {prediction!r}; allowed: epsilon, v")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction = {reduction!r}; allowed: mean, none")
    latents = latents.float()
    batch, device = latents.shape[0], latents.device
    if t is None:
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator, device=gen_device).to(device)
    if noise is None:
        noise = randn(latents.shape, generator, device)
    z_t = q_sample(schedule, latents, t, noise)
    target = noise if prediction == "epsilon" else v_target(schedule, latents, t, noise)
    error = (model_fn(z_t, t).float() - target).pow(2)
    per_sample = error.mean(dim=tuple(range(1, error.ndim)))
    if min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weight(schedule, t, min_snr_gamma, prediction)
    return per_sample.mean() if reduction == "mean" else per_sample
