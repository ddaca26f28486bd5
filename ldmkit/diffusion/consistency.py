"""The consistency function of a latent consistency model (Song et al. 2023; Luo et al. 2023, LCM).

A consistency student maps any point z_t of a probability-flow ODE trajectory to the trajectory's
start. It is built from an ε-prediction UNet as

    f_θ(z_t, t) = c_skip(t) z_t + c_out(t) ẑ_0,   ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t,
    c_skip(t) = σ_d² / ((s t)² + σ_d²),   c_out(t) = s t / √((s t)² + σ_d²),   σ_d = 0.5, s = 10,

so that f_θ(z, 0) = z (the boundary condition) whatever the network says; from t ≈ 1 on, c_skip is
below 0.3% and f_θ is the network's ẑ_0. The same f serves the distillation loss
(`ldmkit.train.distill`) and the lcm sampler (`sample_lcm`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ldmkit.diffusion.grids import Callback, Denoiser, check_start, check_stop, randn, sigma_grid, timestep_tensor
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


@torch.no_grad()
def sample_lcm(
    denoise: Denoiser,
    z_T: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    start: int = 0,
    stop: int | None = None,
    spacing: str = "trailing",
    steps_offset: int | None = None,
    karras: bool = False,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1; LCM's Alg. 3) over the timesteps
    τ_0 > … > τ_{n−1} of `sigma_grid` (``spacing``, ``steps_offset``, ``karras``; trailing, from T−1):

        ẑ_0 = f(z_{τ_i}, τ_i),   z_{τ_{i+1}} = √ᾱ_{τ_{i+1}} ẑ_0 + √(1 − ᾱ_{τ_{i+1}}) ξ,  ξ ~ N(0, I),

    returning ẑ_0 of the last step. ``denoise(z_t, t) -> ε̂`` is the student with its guidance scale
    bound (one UNet pass per step). ``stop`` returns z_t at that step's timestep (its fresh noise
    drawn), ``start`` continues from one, as the other samplers do.
    """
    timesteps = list(sigma_grid(schedule, num_steps, spacing, steps_offset, karras).timesteps)
    n = len(timesteps)
    ac = schedule.alphas_cumprod.double().tolist()
    z = z_T.float()
    ts = timestep_tensor(timesteps, z.device)
    end = check_stop(stop, start, n)
    for i in range(check_start(start, n), end):
        t = ts[i].expand(z.shape[0])
        z0 = consistency_output(z, denoise(z, t), t, schedule)
        if i + 1 < n:
            a_next = ac[timesteps[i + 1]]
            z = math.sqrt(a_next) * z0 + math.sqrt(1 - a_next) * randn(z.shape, generator, z.device)
        else:
            z = z0
        if callback is not None:
            callback(i - start, n - start)
    return z
