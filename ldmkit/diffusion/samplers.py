"""Samplers: from z_T ~ N(0, I) back to z_0, one plain function each over a σ grid (after k-diffusion's
sampling.py).

Every sampler takes a denoiser ``denoise(z_t, t) -> ε̂`` (ε-space, guidance already applied, e.g. by
`guided_denoiser`) where ``t`` is an int64 tensor [B] of timesteps in 0 … T−1, and a `Grid` of
timesteps and noise levels (`ldmkit.diffusion.grids`). Samplers run under ``torch.no_grad``, compute in
float32, return z in float32, call ``callback(i, n)`` after step i = 0 … n−1 of n, and draw any noise
from ``generator`` (on the generator's own device, so a seed gives the same numbers on every device).

They work in σ space: x = z_t / √ᾱ_t = z_0 + σ ε with σ = √((1 − ᾱ_t)/ᾱ_t) (Karras et al. 2022's
variance-exploding form); going back, z_t = x / √(1 + σ²) because 1/ᾱ_t = 1 + σ². So a sampler starts
from x = z_T √(1 + σ_0²) (z_T ~ N(0, I) has the variance of the VP process, x_T must have 1 + σ_0²),
the denoiser sees x / √(1 + σ²), its data estimate is D(x; σ) = x − σ ε̂, and a sampler returns
x / √(1 + σ_n²) (x itself where σ_n = 0).

Two algorithms cover the five ε-samplers:

- `sample_ancestral`: Euler ancestral steps. η = 0 is Euler's method on the probability-flow ODE, which is
  also deterministic DDIM (Song et al. 2021): x_{t'} = ẑ_0 + σ' ε̂ is DDIM's z_{t'} = √ᾱ' ẑ_0 + √(1 − ᾱ') ε̂
  divided by √ᾱ'. DDIM's η > 0 adds noise of the same size in x space, which is k-diffusion's ancestral
  step; η = 1 is the DDPM posterior (Ho et al. 2020), so "ddpm", "ddim", "euler" and "euler-a" are this
  one function on their own grids (tests/test_diffusion.py checks it against the formulas in z space).
- `sample_dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022).

PLMS and UniPC, which combine the denoiser's earlier outputs, are in `ldmkit.diffusion.multistep`.

Image-to-image (SDEdit, Meng et al. 2022) starts part-way: every sampler takes ``start``, the step index
at which it begins (it runs ``grid[start:stop]``), and ``z_T`` is then z_t at that step's timestep,
made from a clean z_0 by q(z_t | z_0) (`sample_from`); ``callback(i, n)`` then counts the n − start steps.
The consistency sampler `sample_lcm` is in `ldmkit.diffusion.consistency`; `sample` runs any by name.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.consistency import sample_lcm
from ldmkit.diffusion.grids import (
    Callback, Denoiser, Grid, check_start, check_stop, randn, schedule_sigmas, sigma_grid, timestep_tensor,
)
from ldmkit.diffusion.multistep import StepEnd, hand_over, sample_plms_grid, sample_unipc_grid
from ldmkit.diffusion.schedule import NoiseSchedule
from ldmkit.errors import UsageError

# The grid each sampler steps over when no spacing is given: trailing for the VP-space samplers
# (from T−1, ending at clean data), k-diffusion's linspace for the σ-space ones.
DEFAULT_SPACING = {"ddpm": "trailing", "ddim": "trailing", "lcm": "trailing", "plms": "trailing",
                   "euler": "linspace", "euler-a": "linspace", "dpmpp-2m": "linspace", "unipc": "linspace"}
# The timestep_spacing default of the diffusers scheduler each sampler matches (DDIMScheduler, DDPMScheduler,
# PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler,
# UniPCMultistepScheduler), for a scheduler config that names none.
DIFFUSERS_SPACING = {"ddpm": "leading", "ddim": "leading", "plms": "leading", "euler": "linspace",
                     "euler-a": "linspace", "dpmpp-2m": "linspace", "unipc": "linspace"}
# The samplers whose update combines earlier steps' outputs: a run from ``start`` restarts their history, so
# they cannot be run one step at a time.
MULTISTEP = ("plms", "dpmpp-2m", "unipc")
# The diffusers scheduler class of each sampler: a diffusers folder that names one of these samples with it
# by default (`Pipeline.sampling_defaults`), as diffusers' pipeline does. (LCMScheduler is not here: ldmkit's
# lcm sampler runs its own consistency students, which say so in their config.)
DIFFUSERS_SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "PNDMScheduler": "plms",
                        "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-a",
                        "DPMSolverMultistepScheduler": "dpmpp-2m", "UniPCMultistepScheduler": "unipc"}


def _run(grid: Grid, start: int, stop: int | None, callback: Callback | None) -> tuple[Grid, Callback | None]:
    """Steps start … stop−1 of ``grid`` and a callback that counts them as i of n − start."""
    n = len(grid)
    end = check_stop(stop, check_start(start, n), n)
    if callback is None:
        return grid[start:end], None
    return grid[start:end], lambda i, _: callback(i, n - start)


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step σ → σ' (k-diffusion's get_ancestral_step):

        σ_up = η √(σ'² (σ² − σ'²) / σ²),   σ_down = √(σ'² − σ_up²)  (0 where σ_up > σ', η > 1).

    η = 0 is (σ', 0) exactly; σ_up/√(1 + σ'²) is DDIM's σ_η in z space (Song et al. 2021, eq. 16)."""
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    up = eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


@torch.no_grad()
def sample_ancestral(denoise: Denoiser, z_T: Tensor, grid: Grid, eta: float = 0.0,
                     generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Euler ancestral steps over ``grid`` (Karras et al. 2022, Alg. 1 with the noise of k-diffusion's
    sample_euler_ancestral), x_0 = z_T √(1 + σ_0²):

        ε̂_i = ε̂(x_i / √(1 + σ_i²), t_i),   (σ_down, σ_up) = `ancestral_step`(σ_i, σ_{i+1}, η)
        x_{i+1} = x_i + (σ_down − σ_i) ε̂_i + σ_up ξ_i,   ξ_i ~ N(0, I) drawn where σ_up > 0,

    returning x_n / √(1 + σ_n²). η = 0: Euler = DDIM(0); η: DDIM(η); η = 1: DDPM's posterior, Euler a.

    The state is held as z = x/√(1 + σ²), not x (whose size is σ_0 ≈ 10⁴ on a cosine or zero-terminal-SNR
    schedule, too large for float32): x_{i+1} = D_i + σ_down ε̂_i + σ_up ξ_i with D_i = x_i − σ_i ε̂_i
    = √(1 + σ_i²)(z_i − σ_i/√(1 + σ_i²) ε̂_i), the difference taken at the size of z, as DDIM takes it."""
    sigmas = grid.sigmas
    z = z_T.float()
    ts = timestep_tensor(grid.timesteps, z.device)
    for i in range(len(grid)):
        s, s_next = sigmas[i], sigmas[i + 1]
        eps = denoise(z, ts[i].expand(z.shape[0]))
        down, up = ancestral_step(s, s_next, eta)
        lands = 1 / math.sqrt(1 + s_next**2)  # z = x/√(1 + σ²) at σ_{i+1}
        z = (z - (s / math.sqrt(1 + s**2)) * eps) * (math.sqrt(1 + s**2) * lands) + (down * lands) * eps
        if up > 0:
            z = z + (up * lands) * randn(z.shape, generator, z.device)
        if callback is not None:
            callback(i, len(grid))
    return z


@torch.no_grad()
def sample_dpmpp_2m_grid(denoise: Denoiser, z_T: Tensor, grid: Grid, callback: Callback | None = None,
                         on_step_end: StepEnd | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; k-diffusion ``sample_dpmpp_2m``), multistep in λ = −log σ.
    With D_i = x_i − σ_i ε̂_i, h_i = λ_{i+1} − λ_i and r_i = h_{i−1}/h_i:

        D'_i = (1 + 1/(2 r_i)) D_i − 1/(2 r_i) D_{i−1}   (D'_i = D_i at the first step)
        x_{i+1} = (σ_{i+1}/σ_i) x_i − (e^{−h_i} − 1) D'_i

    and a step to σ = 0 returns D_i, as k-diffusion and diffusers (``final_sigmas_type="zero"``) do.
    ``on_step_end``: as `ldmkit.diffusion.multistep`'s samplers take it."""
    sigmas = grid.sigmas
    x = z_T.float() * math.sqrt(1 + sigmas[0] ** 2)
    ts = timestep_tensor(grid.timesteps, x.device)
    old_denoised = None
    for i in range(len(grid)):
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
        if on_step_end is not None:
            x = hand_over(on_step_end, i, x, s_next)
        if callback is not None:
            callback(i, len(grid))
    return x * (1 / math.sqrt(1 + sigmas[-1] ** 2))


def grid_for(name: str, schedule: NoiseSchedule, num_steps: int | None, spacing: str | None = None,
             steps_offset: int | None = None, karras: bool = False) -> Grid:
    """The grid sampler ``name`` steps over (`sigma_grid`): ``spacing`` None is its own (`DEFAULT_SPACING`).

    ddpm, ddim and plms land on clean data (σ_n = 0, ᾱ = 1; diffusers' ``set_alpha_to_one=True``), except on
    the leading grid, where they land on ᾱ_0 as the original LDM sampler and Stable Diffusion's scheduler
    (``set_alpha_to_one=False``) do. dpmpp-2m and unipc lay a given spacing out as diffusers'
    DPMSolverMultistepScheduler and UniPCMultistepScheduler do (``endpoint``: leading and linspace over n + 1
    points); without one dpmpp-2m takes k-diffusion's grid and unipc diffusers' linspace over n + 1 points (whose
    last step is not spent at t = 0, which costs a step of few), or with ``karras`` the schedule's whole σ range,
    as diffusers' Karras σ span it.
    ``num_steps`` None (ddpm): all T timesteps."""
    n = schedule.num_timesteps if num_steps is None else num_steps
    chosen = spacing or DEFAULT_SPACING[name]
    final = 0.0
    if name in ("ddpm", "ddim", "plms") and chosen == "leading":
        final = float(schedule_sigmas(schedule)[0])
    endpoint = (name in ("dpmpp-2m", "unipc") and spacing is not None) or (name == "unipc" and not karras)
    return sigma_grid(schedule, n, chosen, steps_offset, karras, final, endpoint)


# --------------------------------------------------------------------------------------------------
# Each sampler by itself: its grid, then one of the two algorithms.


def sample_ddpm(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                callback: Callback | None = None, num_steps: int | None = None, start: int = 0,
                stop: int | None = None, spacing: str = "trailing", steps_offset: int | None = None,
                karras: bool = False) -> Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), p_θ(z_{t'} | z_t) = N(μ_θ, σ_t² I) over t → t':

        μ_θ = 1/√α · (z_t − (1 − α)/√(1 − ᾱ_t) · ε̂),   σ_t² = (1 − ᾱ_t')(1 − α)/(1 − ᾱ_t),   α = ᾱ_t/ᾱ_t',

    no noise at the last step (Nichol & Dhariwal 2021's respacing; with every timestep visited α = α_t).
    It is DDIM with η = 1: `sample_ancestral` with η = 1. ``num_steps=None`` visits all T timesteps."""
    grid, callback = _run(grid_for("ddpm", schedule, num_steps, spacing, steps_offset, karras), start, stop, callback)
    return sample_ancestral(denoise, z_T, grid, 1.0, generator, callback)


def sample_ddim(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, callback: Callback | None = None, start: int = 0,
                spacing: str = "trailing", stop: int | None = None, steps_offset: int | None = None,
                karras: bool = False) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) over the grid t → t' (`grid_for`; trailing by default):

        ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t
        σ = η √((1 − ᾱ_t')/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_t')
        z_t' = √ᾱ_t' ẑ_0 + √(1 − ᾱ_t' − σ²) ε̂ + σ ξ,  ξ ~ N(0, I)

    computed as `sample_ancestral` with η (the same steps in x = z/√ᾱ). η = 0 is deterministic; η = 1 is DDPM."""
    grid, callback = _run(grid_for("ddim", schedule, num_steps, spacing, steps_offset, karras), start, stop, callback)
    return sample_ancestral(denoise, z_T, grid, eta, generator, callback)


def sample_euler(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int, karras: bool = False,
                 generator: torch.Generator | None = None, callback: Callback | None = None, start: int = 0,
                 stop: int | None = None, spacing: str | None = None, steps_offset: int | None = None) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dσ = (x − D(x; σ))/σ = ε̂ (Karras et al. 2022, Alg. 1):

        x_{i+1} = x_i + (σ_{i+1} − σ_i) ε̂(x_i/√(1 + σ_i²), t_i),   x_0 = z_T √(1 + σ_0²),

    over k-diffusion's grid by default. Deterministic; ``generator`` draws nothing."""
    del generator
    grid, callback = _run(grid_for("euler", schedule, num_steps, spacing, steps_offset, karras), start, stop, callback)
    return sample_ancestral(denoise, z_T, grid, 0.0, None, callback)


def sample_euler_ancestral(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int,
                           karras: bool = False, generator: torch.Generator | None = None,
                           callback: Callback | None = None, start: int = 0, stop: int | None = None,
                           spacing: str | None = None, steps_offset: int | None = None) -> Tensor:
    """Euler ancestral ("Euler a"; k-diffusion ``sample_euler_ancestral``, diffusers'
    EulerAncestralDiscreteScheduler): `sample_ancestral` with η = 1 over k-diffusion's grid by default,

        x_{i+1} = x_i + (σ_down − σ_i) ε̂_i + σ_up ξ_i,   σ_up = √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²),
        σ_down = √(σ_{i+1}² − σ_up²)."""
    grid, callback = _run(grid_for("euler-a", schedule, num_steps, spacing, steps_offset, karras), start, stop,
                          callback)
    return sample_ancestral(denoise, z_T, grid, 1.0, generator, callback)


def sample_dpmpp_2m(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int, karras: bool = False,
                    callback: Callback | None = None, start: int = 0, stop: int | None = None,
                    spacing: str | None = None, steps_offset: int | None = None,
                    on_step_end: StepEnd | None = None) -> Tensor:
    """DPM-Solver++(2M) (`sample_dpmpp_2m_grid`) over k-diffusion's grid by default, or a given spacing laid
    out as diffusers' DPMSolverMultistepScheduler does (`grid_for`). A run from ``start`` restarts the
    two-step history (one first-order step)."""
    grid, callback = _run(grid_for("dpmpp-2m", schedule, num_steps, spacing, steps_offset, karras), start, stop,
                          callback)
    return sample_dpmpp_2m_grid(denoise, z_T, grid, callback, on_step_end)


def sample_plms(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int, karras: bool = False,
                callback: Callback | None = None, start: int = 0, stop: int | None = None,
                spacing: str = "trailing", steps_offset: int | None = None,
                on_step_end: StepEnd | None = None) -> Tensor:
    """PLMS (`ldmkit.diffusion.multistep.sample_plms_grid`: DDIM's step with Adams–Bashforth noise estimates;
    n + 1 denoiser calls for n steps) over the trailing grid by default, or a given spacing (Stable Diffusion's
    folders: leading, offset 1, landing on ᾱ_0, as diffusers' PNDMScheduler)."""
    grid, callback = _run(grid_for("plms", schedule, num_steps, spacing, steps_offset, karras), start, stop,
                          callback)
    return sample_plms_grid(denoise, z_T, grid, callback, on_step_end)


def sample_unipc(denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int, karras: bool = False,
                 callback: Callback | None = None, start: int = 0, stop: int | None = None,
                 spacing: str | None = None, steps_offset: int | None = None,
                 on_step_end: StepEnd | None = None) -> Tensor:
    """UniPC of order 2 (`ldmkit.diffusion.multistep.sample_unipc_grid`; one denoiser call per step) over
    k-diffusion's grid by default, or a given spacing laid out as diffusers' UniPCMultistepScheduler does."""
    grid, callback = _run(grid_for("unipc", schedule, num_steps, spacing, steps_offset, karras), start, stop,
                          callback)
    return sample_unipc_grid(denoise, z_T, grid, callback=callback, on_step_end=on_step_end)


# --------------------------------------------------------------------------------------------------
# By name (for the CLI and configs; the only string dispatch)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "dpmpp-2m": sample_dpmpp_2m,
    "euler-a": sample_euler_ancestral,
    "plms": sample_plms,
    "unipc": sample_unipc,
    "lcm": sample_lcm,
}


def check_grid_options(name: str, eta: float = 0.0, spacing: str | None = None, steps_offset: int | None = None) -> None:
    """UsageError for sampler ``name``'s options that mean nothing: an unknown name, η for another sampler
    than ddim, a steps offset without leading spacing."""
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    if eta != 0.0 and name != "ddim":
        raise UsageError(f"eta = {eta} applies to the ddim sampler only, not {name!r}")
    if steps_offset is not None and (spacing or DEFAULT_SPACING[name]) != "leading":
        raise UsageError(f"steps_offset = {steps_offset} applies to leading spacing only (diffusers' rule), not "
                         f"{spacing or DEFAULT_SPACING[name]!r}")


def sample(name: str, denoise: Denoiser, z_T: Tensor, schedule: NoiseSchedule, num_steps: int, eta: float = 0.0,
           generator: torch.Generator | None = None, callback: Callback | None = None, karras: bool = False,
           start: int = 0, spacing: str | None = None, stop: int | None = None,
           steps_offset: int | None = None, on_step_end: StepEnd | None = None) -> Tensor:
    """Run sampler ``name`` (a key of `SAMPLERS`) over `grid_for` (``spacing``, ``steps_offset``, ``karras``;
    the same options for every sampler). ``eta`` applies to ddim only: setting it for another sampler is an
    error rather than a silent no-op.
    ``start``: begin at that index of the step list, ``z_T`` being z_t at its timestep (`sample_from`).
    ``stop``: end before that index and return z_t at its timestep, for a later run with ``start = stop``
    (a multistep sampler such as dpmpp-2m then restarts its history: one first-order step).
    ``on_step_end(i, z) -> z``: a multistep sampler's (`MULTISTEP`) hook after each step, whose result goes on in
    z's place (diffusers' callback_on_step_end); the others take it by running one step at a time instead."""
    check_grid_options(name, eta, spacing, steps_offset)
    if on_step_end is not None and name not in MULTISTEP:
        raise ValueError(f"on_step_end is for the multistep samplers ({', '.join(MULTISTEP)}), not {name!r}")
    multistep = {"on_step_end": on_step_end} if on_step_end is not None else {}
    grid_options = dict(spacing=spacing or DEFAULT_SPACING[name], steps_offset=steps_offset, karras=karras)
    if name == "ddpm":
        return sample_ddpm(denoise, z_T, schedule, generator=generator, callback=callback, num_steps=num_steps,
                           start=start, stop=stop, **grid_options)
    if name == "ddim":
        return sample_ddim(denoise, z_T, schedule, num_steps, eta=eta, generator=generator, callback=callback,
                           start=start, stop=stop, **grid_options)
    if name == "lcm":
        return sample_lcm(denoise, z_T, schedule, num_steps, generator=generator, callback=callback, start=start,
                          stop=stop, **grid_options)
    if name == "plms":
        return sample_plms(denoise, z_T, schedule, num_steps, callback=callback, start=start, stop=stop,
                           **grid_options, **multistep)
    grid_options["spacing"] = spacing  # None: k-diffusion's grid (dpmpp-2m lays a given spacing out its own way)
    if name == "euler":
        return sample_euler(denoise, z_T, schedule, num_steps, callback=callback, start=start, stop=stop,
                            **grid_options)
    if name == "euler-a":
        return sample_euler_ancestral(denoise, z_T, schedule, num_steps, generator=generator, callback=callback,
                                      start=start, stop=stop, **grid_options)
    if name == "unipc":
        return sample_unipc(denoise, z_T, schedule, num_steps, callback=callback, start=start, stop=stop,
                            **grid_options, **multistep)
    return sample_dpmpp_2m(denoise, z_T, schedule, num_steps, callback=callback, start=start, stop=stop,
                           **grid_options, **multistep)


def sampler_timesteps(name: str, schedule: NoiseSchedule, num_steps: int, karras: bool = False,
                      spacing: str | None = None, steps_offset: int | None = None) -> list[int]:
    """The timesteps sampler ``name`` visits with ``num_steps`` steps, first to last."""
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    return list(grid_for(name, schedule, num_steps, spacing, steps_offset, karras).timesteps)


def _smallest_strength(num_steps: int) -> float:
    """The smallest strength, to three significant digits, with which SDEdit runs one of ``num_steps`` steps:
    the first s ≥ 1/n at that precision with int(s·n) ≥ 1."""
    scale = 10 ** (2 + math.ceil(math.log10(num_steps)))
    units = math.ceil(scale / num_steps)
    while int(units / scale * num_steps) < 1:
        units += 1
    return units / scale


def start_index(num_steps: int, strength: float) -> int:
    """The first step SDEdit runs at ``strength`` s ∈ (0, 1]: of n steps the last int(s·n) run, from
    k = n − int(s·n) (diffusers' rule, ``min(int(n · s), n)``, as A1111's), so s = 1 runs them all.

    UsageError for an s that is not a number in (0, 1], or one so small that no step would run
    (int(s·n) = 0), naming the smallest strength that runs one at n steps."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 < strength <= 1:
        shown = float(strength) if isinstance(strength, numbers.Real) and not isinstance(strength, bool) \
            else repr(strength)
        raise UsageError(f"strength = {shown}; must be a number in (0, 1] (the share of the sampler's steps "
                         "that run; 0 would return the input)")
    runs = min(int(num_steps * strength), num_steps)
    if runs < 1:
        raise UsageError(f"strength = {float(strength)} runs none of the {num_steps} steps (int(strength × steps) "
                         f"of them run, diffusers' rule); the smallest strength that runs one at {num_steps} steps "
                         f"is {_smallest_strength(num_steps)}, or give more steps")
    return num_steps - runs


def sample_from(name: str, denoise: Denoiser, z_0: Tensor, noise: Tensor, schedule: NoiseSchedule, num_steps: int,
                strength: float, eta: float = 0.0, generator: torch.Generator | None = None,
                callback: Callback | None = None, karras: bool = False, spacing: str | None = None,
                steps_offset: int | None = None) -> Tensor:
    """SDEdit (Meng et al. 2022): noise a clean z_0 part-way and denoise from there.

        k = n − int(s·n),  σ = σ_k (the k-th noise level of the sampler's grid, `grid_for`),
        z = (z_0 + σ ε)/√(1 + σ²)  (q(z_t | z_0) = √ᾱ z_0 + √(1 − ᾱ) ε with ᾱ = 1/(1 + σ²), ε = ``noise``),
        then steps k … n−1 (``grid[k:]``).

    σ_k is σ_{t_k}, or Karras' level between timesteps, the one step k's update starts from.
    s = ``strength`` ∈ (0, 1]: s = 1 starts at the first step; an s with which no step runs is a UsageError
    (`start_index`).
    """
    check_grid_options(name, eta, spacing, steps_offset)
    grid = grid_for(name, schedule, num_steps, spacing, steps_offset, karras)
    start = start_index(len(grid), strength)
    sigma = grid.sigmas[start]
    scale = 1 / math.sqrt(1 + sigma**2)
    z_t = scale * z_0.float() + (sigma * scale) * noise.float()
    return sample(name, denoise, z_t, schedule, num_steps, eta=eta, generator=generator, callback=callback,
                  karras=karras, start=start, spacing=spacing, steps_offset=steps_offset)
