"""The consistency function of a latent consistency model (Song et al. 2023; Luo et al. 2023, LCM).

A consistency student maps any point z_t of a probability-flow ODE trajectory to the trajectory's
start. It is built from an ε-prediction UNet as

    f_θ(z_t, t) = c_skip(t) z_t + c_out(t) ẑ_0,   ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t,
    c_skip(t) = σ_d² / ((s t)² + σ_d²),   c_out(t) = s t / √((s t)² + σ_d²),   σ_d = 0.5, s = 10,

so that f_θ(z, 0) = z (the boundary condition) whatever the network says; from t ≈ 1 on, c_skip is
below 0.3% and f_θ is the network's ẑ_0. The same f serves the distillation loss
(`ldmkit.train.distill`) and the lcm sampler (`ldmkit.diffusion.samplers.sample_lcm`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ldmkit.diffusion.schedule import NoiseSchedule

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def boundary_coefficients(t: Tensor) -> tuple[Tensor, Tensor]:
    """(c_skip(t), c_out(t)) as float32 tensors of ``t``'s shape."""
    st = TIMESTEP_SCALING * t.float()
    c_skip = SIGMA_DATA**2 / (st**2 + SIGMA_DATA**2)
    c_out = st / (st**2 + SIGMA_DATA**2).sqrt()
    return c_skip, c_out


def consistency_output(z_t: Tensor, eps: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """f(z_t, t) = c_skip(t) z_t + c_out(t) ẑ_0(z_t, ε̂) for t int64 [B] (float32 result)."""
    ac = schedule.alphas_cumprod.to(z_t.device)[t].float().view(-1, *([1] * (z_t.ndim - 1)))
    z_t, eps = z_t.float(), eps.float()
    z0 = (z_t - (1 - ac).sqrt() * eps) / ac.sqrt()
    c_skip, c_out = (c.view_as(ac) for c in boundary_coefficients(t.to(z_t.device)))
    return c_skip * z_t + c_out * z0
