"""Samplers: from z_T ~ N(0, I) back to z_0, one plain function each (after k-diffusion's sampling.py).

Every sampler takes a denoiser ``denoise(z_t, t) -> ε̂`` (ε-space, guidance already applied, e.g. by
`guided_denoiser`) where ``t`` is an int64 tensor [B] of timesteps in 0 … T−1 (see schedule.py for the
convention). Samplers run under ``torch.no_grad``, compute in float32, return z_0 in float32, call
``callback(i, n)`` after step i = 0 … n−1 of n, and draw any noise from ``generator`` (on the
generator's own device, so a seed gives the same numbers on every device).

Two spaces are used:

- VP space (DDPM, DDIM) works on z_t directly, with ᾱ_t from the schedule.
- σ space (Euler, DPM-Solver++(2M)) works on x = z_t / √ᾱ_t = z_0 + σ ε with σ = √((1 − ᾱ_t)/ᾱ_t)
  (Karras et al. 2022's variance-exploding form). Going back, z_t = x / √(1 + σ²) because
  1/ᾱ_t = 1 + σ². In particular the start x_T = z_T √(1 + σ_max²): z_T ~ N(0, I) has the variance of
  the VP process at T−1 (≈ 1), and x_T must have variance ≈ 1 + σ_max² (k-diffusion's z·σ_max is the
  large-σ approximation of this). The denoiser's ε̂ gives the data estimate D(x; σ) = x − σ ε̂, and
  σ = 0 is x = z_0.

Image-to-image (SDEdit, Meng et al. 2022) starts part-way: every sampler takes ``start``, the index
of the step list at which it begins, and ``z_T`` is then z_t at that step's timestep, made from a
clean z_0 by q(z_t | z_0) (`sample_from`); ``callback(i, n)`` then counts the n − start steps run.

The grids themselves (timesteps, σ, the start/stop checks) are in `ldmkit.diffusion.grids`, and the
consistency sampler `sample_lcm` in `ldmkit.diffusion.consistency`; `sample` runs any of them by name.

The denoiser only accepts integer timesteps, so the σ grid of the σ-space samplers is snapped to the
schedule: each σ is converted to a fractional timestep by interpolating log σ against the schedule's
log σ_t (as k-diffusion's DiscreteSchedule.sigma_to_t does), rounded, and replaced by σ at that
timestep. The solver then steps between exactly the noise levels the model was trained at.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.consistency import sample_lcm
from ldmkit.diffusion.grids import (
    Callback, Denoiser, check_start, check_stop, randn, sigma_schedule, spaced_timesteps, timestep_tensor,
)
from ldmkit.diffusion.schedule import NoiseSchedule
from ldmkit.errors import UsageError


# --------------------------------------------------------------------------------------------------
# VP space: DDPM and DDIM


@torch.no_grad()
def sample_ddpm(
    denoise: Denoiser,
    z_T: Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    num_steps: int | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), p_θ(z_{t−1} | z_t) = N(μ_θ, σ_t² I):

        μ_θ = 1/√α_t · (z_t − (1 − α_t)/√(1 − ᾱ_t) · ε̂),   σ_t² = (1 − ᾱ_{t−1})(1 − α_t)/(1 − ᾱ_t),
        z_{t−1} = μ_θ + σ_t ξ,  ξ ~ N(0, I)  (no noise at the last step, which returns μ_θ = ẑ_0).

    ``num_steps=None`` visits all T timesteps. A smaller ``num_steps`` visits `spaced_timesteps` and
    treats each jump t → t' as one step of a respaced chain with α = ᾱ_t/ᾱ_{t'} (Nichol & Dhariwal 2021);
    with every timestep visited this is exactly the formula above.
    """
    timesteps = spaced_timesteps(schedule.num_timesteps, schedule.num_timesteps if num_steps is None else num_steps)
    n = len(timesteps)
    ac = schedule.alphas_cumprod.double().tolist()
    z = z_T.float()
    ts = timestep_tensor(timesteps, z.device)
    for i in range(check_start(start, n), check_stop(stop, start, n)):
        t = timesteps[i]
        a_t = ac[t]
        a_prev = ac[timesteps[i + 1]] if i + 1 < n else 1.0  # the last step lands on clean data
        alpha = a_t / a_prev
        eps = denoise(z, ts[i].expand(z.shape[0]))
        z = (z - ((1 - alpha) / math.sqrt(1 - a_t)) * eps) * (1 / math.sqrt(alpha))
        if i + 1 < n:
            variance = (1 - a_prev) * (1 - alpha) / (1 - a_t)
            z = z + math.sqrt(variance) * randn(z.shape, generator, z.device)
        if callback is not None:
            callback(i - start, n - start)
    return z


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    z_T: Tensor,
    schedule: NoiseSchedule,
    num_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    start: int = 0,
    spacing: str = "trailing",
    stop: int | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) over `spaced_timesteps` t → t' (``spacing``, default trailing):

        ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t
        σ = η √((1 − ᾱ_t')/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_t')
        z_t' = √ᾱ_t' ẑ_0 + √(1 − ᾱ_t' − σ²) ε̂ + σ ξ,  ξ ~ N(0, I)

    η = 0 is deterministic; η = 1 is the DDPM posterior variance (with all T steps it is `sample_ddpm`).
    With trailing spacing the last step goes to ᾱ_t' = 1, so it returns ẑ_0 (diffusers'
    ``set_alpha_to_one=True``); with leading spacing it goes to ᾱ_0, as the original LDM sampler and
    Stable Diffusion's scheduler (``set_alpha_to_one=False``) do.
    """
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, spacing)
    n = len(timesteps)
    ac = schedule.alphas_cumprod.double().tolist()
    final = 1.0 if spacing == "trailing" else ac[0]
    z = z_T.float()
    ts = timestep_tensor(timesteps, z.device)
    for i in range(check_start(start, n), check_stop(stop, start, n)):
        t = timesteps[i]
        a_t = ac[t]
        a_prev = ac[timesteps[i + 1]] if i + 1 < n else final
        eps = denoise(z, ts[i].expand(z.shape[0]))
        z0 = (z - math.sqrt(1 - a_t) * eps) * (1 / math.sqrt(a_t))
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        z = math.sqrt(a_prev) * z0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            z = z + sigma * randn(z.shape, generator, z.device)
        if callback is not None:
            callback(i - start, n - start)
    return z


# --------------------------------------------------------------------------------------------------
# σ space: Euler and DPM-Solver++(2M)


# --------------------------------------------------------------------------------------------------
# σ space: Euler and DPM-Solver++(2M)


@torch.no_grad()
def sample_euler(
    denoise: Denoiser,
    z_T: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    karras: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dσ = (x − D(x; σ))/σ = ε̂ (Karras et al. 2022, Alg. 1):

        x_{i+1} = x_i + (σ_{i+1} − σ_i) ε̂(x_i/√(1 + σ_i²), t_i),   x_0 = z_T √(1 + σ_0²).

    Deterministic (no churn); ``generator`` is accepted for a uniform signature and draws nothing.
    """
    del generator
    timesteps, sigmas = sigma_schedule(schedule, num_steps, karras)
    n = len(timesteps)
    x = z_T.float() * math.sqrt(1 + sigmas[check_start(start, n)] ** 2)
    ts = timestep_tensor(timesteps, x.device)
    end = check_stop(stop, start, n)
    for i in range(start, end):
        eps = denoise(x * (1 / math.sqrt(1 + sigmas[i] ** 2)), ts[i].expand(x.shape[0]))
        x = x + (sigmas[i + 1] - sigmas[i]) * eps
        if callback is not None:
            callback(i - start, n - start)
    return x * (1 / math.sqrt(1 + sigmas[end] ** 2))  # z_t of the VP form (σ_n = 0 at the end: x itself)


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    z_T: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    karras: bool = False,
    callback: Callback | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; k-diffusion ``sample_dpmpp_2m``), multistep in λ = −log σ.

    With D_i = x_i − σ_i ε̂_i, h_i = λ_{i+1} − λ_i and r_i = h_{i−1}/h_i:

        D'_i = (1 + 1/(2 r_i)) D_i − 1/(2 r_i) D_{i−1}   (D'_i = D_i at the first step)
        x_{i+1} = (σ_{i+1}/σ_i) x_i − (e^{−h_i} − 1) D'_i

    and the last step (σ = 0) returns D_{n−1}, as k-diffusion does.
    """
    timesteps, sigmas = sigma_schedule(schedule, num_steps, karras)
    n = len(timesteps)
    x = z_T.float() * math.sqrt(1 + sigmas[check_start(start, n)] ** 2)
    ts = timestep_tensor(timesteps, x.device)
    old_denoised = None
    end = check_stop(stop, start, n)
    for i in range(start, end):
        s, s_next = sigmas[i], sigmas[i + 1]
        eps = denoise(x * (1 / math.sqrt(1 + s**2)), ts[i].expand(x.shape[0]))
        denoised = x - s * eps
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            if old_denoised is None:
                d = denoised
            else:
                r = math.log(sigmas[i - 1] / s) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s_next / s) * x - math.expm1(-h) * d
        old_denoised = denoised
        if callback is not None:
            callback(i - start, n - start)
    return x * (1 / math.sqrt(1 + sigmas[end] ** 2))  # z_t of the VP form (σ_n = 0 at the end: x itself)


# --------------------------------------------------------------------------------------------------
# By name (for the CLI and configs; the only string dispatch)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "dpmpp-2m": sample_dpmpp_2m,
    "lcm": sample_lcm,
}


def sample(
    name: str,
    denoise: Denoiser,
    z_T: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    karras: bool = False,
    start: int = 0,
    spacing: str = "trailing",
    stop: int | None = None,
) -> Tensor:
    """Run sampler ``name`` (a key of `SAMPLERS`). ``eta`` and ``spacing`` apply to ddim only, ``karras``
    to euler and dpmpp-2m only; setting one for a sampler that ignores it is an error rather than a
    silent no-op.
    ``start``: begin at that index of the step list, ``z_T`` being z_t at its timestep (`sample_from`).
    ``stop``: end before that index and return z_t at its timestep, for a later run with ``start = stop``
    (a multistep sampler such as dpmpp-2m then restarts its history: one first-order step)."""
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    if eta != 0.0 and name != "ddim":
        raise UsageError(f"eta = {eta} applies to the ddim sampler only, not {name!r}")
    if karras and name not in ("euler", "dpmpp-2m"):
        raise UsageError(f"karras sigmas apply to the euler and dpmpp-2m samplers only, not {name!r}")
    if spacing != "trailing" and name != "ddim":
        raise UsageError(f"spacing = {spacing!r} applies to the ddim sampler only, not {name!r}")
    if name == "ddpm":
        return sample_ddpm(denoise, z_T, schedule, generator=generator, callback=callback, num_steps=num_steps,
                           start=start, stop=stop)
    if name == "ddim":
        return sample_ddim(denoise, z_T, schedule, num_steps, eta=eta, generator=generator, callback=callback,
                           start=start, spacing=spacing, stop=stop)
    if name == "lcm":
        return sample_lcm(denoise, z_T, schedule, num_steps, generator=generator, callback=callback, start=start,
                          stop=stop)
    if name == "euler":
        return sample_euler(denoise, z_T, schedule, num_steps, karras=karras, callback=callback, start=start,
                            stop=stop)
    return sample_dpmpp_2m(denoise, z_T, schedule, num_steps, karras=karras, callback=callback, start=start,
                           stop=stop)


def sampler_timesteps(name: str, schedule: NoiseSchedule, num_steps: int, karras: bool = False,
                      spacing: str = "trailing") -> list[int]:
    """The timesteps sampler ``name`` visits with ``num_steps`` steps, first to last."""
    if name in ("ddpm", "ddim", "lcm"):
        return spaced_timesteps(schedule.num_timesteps, num_steps, spacing)
    if name in SAMPLERS:
        return sigma_schedule(schedule, num_steps, karras)[0]
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")


def start_index(num_steps: int, strength: float) -> int:
    """The first step SDEdit runs at ``strength`` s ∈ [0, 1]: n − round(s·n) of n steps, so that s = 1
    runs them all and s = 0 none (the input comes back unchanged)."""
    if not 0 <= strength <= 1:
        raise UsageError(f"strength = {strength}; must be between 0 and 1")
    return num_steps - round(strength * num_steps)


def sample_from(
    name: str,
    denoise: Denoiser,
    z_0: Tensor,
    noise: Tensor,
    schedule: NoiseSchedule,
    num_steps: int,
    strength: float,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    karras: bool = False,
    spacing: str = "trailing",
) -> Tensor:
    """SDEdit (Meng et al. 2022): noise a clean z_0 part-way and denoise from there.

        k = n − round(s·n),  t = t_k (the k-th timestep of the sampler's grid),
        z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε  (q(z_t | z_0), ε = ``noise``),  then steps k … n−1.

    s = ``strength`` ∈ [0, 1]: s = 1 starts at the first timestep (T−1 for every sampler here, the
    input then barely shows), s = 0 runs no step and returns z_0 itself.
    """
    timesteps = sampler_timesteps(name, schedule, num_steps, karras, spacing)  # Karras grids may hold fewer than n
    start = start_index(len(timesteps), strength)
    if start == len(timesteps):
        return z_0.float()
    t = timesteps[start]
    ac = float(schedule.alphas_cumprod[t])
    z_t = math.sqrt(ac) * z_0.float() + math.sqrt(1 - ac) * noise.float()
    return sample(name, denoise, z_t, schedule, num_steps, eta=eta, generator=generator, callback=callback,
                  karras=karras, start=start, spacing=spacing)
