"""Classifier-free guidance (Ho & Salimans 2022): turn a conditional UNet into a sampler's denoiser."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.schedule import NoiseSchedule, eps_from_v

ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def guided_denoiser(
    model_fn: ModelFn,
    context: Tensor,
    null_context: Tensor,
    guidance_scale: float,
    prediction: str = "epsilon",
    schedule: NoiseSchedule | None = None,
    unguided_below: int = 0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """``denoise(z_t, t) -> ε̂`` for the samplers, with

        ε̂ = ε_θ(z_t, t, ∅) + s (ε_θ(z_t, t, τ_θ(y)) − ε_θ(z_t, t, ∅)),   s = ``guidance_scale``.

    ``model_fn(z_t, t, context)`` is the UNet; ``context`` is τ_θ(y), B×L×d, and ``null_context`` is
    τ_θ("") (the condition dropped in training), B×L×d or 1×L×d (expanded to B). The unconditional and
    conditional passes run as one model call on a batch of 2B ([unconditional; conditional]), because one
    large batch uses the hardware better than two small ones. With s = 1 the formula is the conditional
    output alone, so the unconditional half is skipped.

    A v-prediction model (``prediction="v"``, needs ``schedule``) has its output turned into ε with
    ε = √ᾱ_t v + √(1 − ᾱ_t) z_t before the two are combined. z_t must have the batch size B of ``context``.

    Steps at timesteps t < ``unguided_below`` use the conditional output alone (one model call on B, not
    2B): guidance shapes the layout early in sampling and matters little for the last, low-noise steps,
    so stopping it there saves their unconditional half. The model's output is taken in float32, so a
    model run under bf16 autocast still combines the two passes in float32.
    """
    if prediction not in ("epsilon", "v"):
        raise ValueError(f"prediction = {prediction!r}; allowed: epsilon, v")
    if prediction == "v" and schedule is None:
        raise ValueError("a v-prediction model needs the noise schedule to convert its output to ε")
    batch = context.shape[0]
    if null_context.shape[0] not in (1, batch):
        raise ValueError(f"null_context batch {null_context.shape[0]} must be 1 or match the context batch {batch}")
    if null_context.shape[1:] != context.shape[1:]:
        raise ValueError(
            f"null_context shape {tuple(null_context.shape)} does not match context {tuple(context.shape)}"
        )
    # Built once here rather than at every step.
    both_contexts = None if guidance_scale == 1 else torch.cat([null_context.expand_as(context), context])
    moved = {}  # schedule moved to the latents' device on first use

    def to_eps(output: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
        if prediction == "epsilon":
            return output
        if z_t.device not in moved:
            moved[z_t.device] = schedule.to(z_t.device)
        return eps_from_v(moved[z_t.device], z_t, t, output)

    def denoise(z_t: Tensor, t: Tensor) -> Tensor:
        if z_t.shape[0] != batch:
            raise ValueError(f"z_t batch {z_t.shape[0]} does not match the context batch {batch}")
        if both_contexts is None or (unguided_below > 0 and int(t.max()) < unguided_below):
            return to_eps(model_fn(z_t, t, context).float(), z_t, t)
        z_in, t_in = torch.cat([z_t, z_t]), torch.cat([t, t])
        eps_uncond, eps_cond = to_eps(model_fn(z_in, t_in, both_contexts).float(), z_in, t_in).chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return denoise
