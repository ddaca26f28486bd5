"""Where samplers step: the timestep and σ grids, the starting noise, and the step-range checks.

Timesteps are integers 0 … T−1 of `ldmkit.diffusion.schedule`, and σ_t = √((1 − ᾱ_t)/ᾱ_t). A grid
(`Grid`, built by `sigma_grid`) is the n timesteps t_0 ≥ … ≥ t_{n−1} at which a sampler calls the
denoiser, the σ_i it steps between, and σ_n, the noise level the last step lands on (0: clean data).
Every sampler takes the same grid options:

- ``spacing`` (`spaced_timesteps`): "trailing", "leading" or "linspace", diffusers' ``timestep_spacing``;
- ``steps_offset``: added to the leading grid (diffusers' ``steps_offset``; None: 1, as CompVis and
  Stable Diffusion's scheduler config have it);
- ``karras``: σ_i respaced after Karras et al. 2022 between the grid's first and last σ (`karras_sigmas`); the
  solver steps between those σ, the denoiser is called at the nearest timesteps.

A sampler run from ``start`` to ``stop`` covers a slice of its grid (``grid[start:stop]``; `check_start`,
`check_stop`), which is how image-to-image and "stop, then continue" work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.schedule import NoiseSchedule
from ldmkit.errors import UsageError

Denoiser = Callable[[Tensor, Tensor], Tensor]  # denoise(z_t, t) -> ε̂, guidance applied
Callback = Callable[[int, int], None]  # callback(i, n) after step i of n

def randn(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """ε ~ N(0, I) of ``shape`` on ``device``.

    With a generator the numbers are drawn on the generator's device and then moved, so that a CPU
    generator seeded the same way gives the same image on CPU and GPU.
    """
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


SPACINGS = ("trailing", "leading", "linspace")


def spaced_timesteps(num_timesteps: int, num_steps: int, spacing: str = "trailing", steps_offset: int | None = None,
                     endpoint: bool = False) -> list[int]:
    """``num_steps`` = n timesteps from high to low noise, T = ``num_timesteps`` (diffusers' rules):

        trailing  t_i = round(T − i·T/n) − 1           (Lin et al. 2024; T = 1000, n = 50: 999, 979, …, 19)
        leading   t_i = (n − 1 − i)·⌊T/n⌋ + offset      (CompVis "uniform", SD: 981, 961, …, 1 with offset 1)
        linspace  t_i = round((n − 1 − i)(T − 1)/(n − 1))   (k-diffusion: 999, …, 0)

    ``steps_offset`` shifts the leading grid only, as in diffusers (None: 1). Trailing always starts at
    T−1, where z_T ~ N(0, I) is the right distribution; leading starts ⌊T/n⌋ − offset short of it.

    ``endpoint``: DPM-Solver's layout (diffusers' DPMSolverMultistepScheduler): leading and linspace are laid
    over n + 1 points and the last, where the solver lands, is dropped (the sampler lands on clean data
    there); trailing is unchanged (its n + 1st point is already t = −1).
    """
    if spacing not in SPACINGS:
        raise UsageError(f"unknown timestep spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    T, n = num_timesteps, num_steps
    if not 1 <= n <= T:
        raise UsageError(f"steps = {n} (num_inference_steps); must be between 1 and the model's {T} timesteps")
    points = n + 1 if endpoint else n
    if spacing == "trailing":
        return [round(T - i * T / n) - 1 for i in range(n)]
    if spacing == "linspace":
        return torch.linspace(T - 1, 0, points, dtype=torch.float64).round().long().tolist()[:n]
    offset = 1 if steps_offset is None else steps_offset
    stride = T // points
    timesteps = [(points - 1 - i) * stride + offset for i in range(n)]
    if stride == 0 or offset < 0 or timesteps[0] > T - 1:
        raise UsageError(f"leading spacing with steps_offset {offset} needs (num_steps − 1)·⌊T/num_steps⌋ + "
                         f"steps_offset ≤ T − 1 = {T - 1}; {n} steps do not fit")
    return timesteps


@dataclass(frozen=True)
class Grid:
    """Timesteps t_0 ≥ … ≥ t_{n−1} the denoiser is called at, the noise levels σ_0 > … > σ_{n−1} the solver steps
    between (σ_{t_i}, or Karras' levels, whose t_i is the nearest timestep and may repeat), and σ_n where the last
    step lands (0: clean data). ``grid[a:b]`` is steps a … b−1 (σ_a … σ_b)."""

    timesteps: tuple[int, ...]
    sigmas: tuple[float, ...]  # n + 1

    def __len__(self) -> int:
        return len(self.timesteps)

    def __getitem__(self, steps: slice) -> "Grid":
        start, stop, _ = steps.indices(len(self))
        return Grid(self.timesteps[start:stop], self.sigmas[start:stop + 1])


def schedule_sigmas(schedule: NoiseSchedule) -> Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0 … T−1, float64 on the CPU (increasing)."""
    ac = schedule.alphas_cumprod.double().cpu()
    return ((1 - ac) / ac).sqrt()


def sigma_to_t(log_sigmas: Tensor, sigma: Tensor) -> Tensor:
    """Fractional timestep of each σ: linear interpolation of log σ against the increasing log σ_t."""
    log_sigma = sigma.log()
    hi = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
    lo_value, hi_value = log_sigmas[hi - 1], log_sigmas[hi]
    w = ((log_sigma - lo_value) / (hi_value - lo_value)).clamp(0, 1)
    return (hi - 1) + w


def karras_sigmas(sigmas: Tensor, t_first: int, t_last: int, num_steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: the n = ``num_steps`` noise levels

        σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,   i = 0 … n−1,

    with σ_max = σ_{t_first}, σ_min = σ_{t_last} of the schedule's ``sigmas`` (float64; σ_0 = σ_max for n = 1).
    They are continuous: n distinct levels for any n, most of them between two timesteps."""
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigmas[t_last] ** (1 / rho), sigmas[t_first] ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_grid(schedule: NoiseSchedule, num_steps: int, spacing: str = "linspace", steps_offset: int | None = None,
               karras: bool = False, final_sigma: float = 0.0, endpoint: bool = False) -> Grid:
    """The `Grid` of ``num_steps`` = n steps: `spaced_timesteps` (``spacing``, ``steps_offset``, ``endpoint``) with
    σ_i = σ_{t_i}, and σ_n = ``final_sigma``.

    With ``karras`` the σ_i are `karras_sigmas` between the spaced grid's first and last σ, kept as they are for the
    solver's update, and the denoiser is called at t_i = round(`sigma_to_t`(σ_i)), the timestep nearest in log σ (its
    input is still scaled by σ_i): exactly n steps, as diffusers' EulerDiscreteScheduler and
    DPMSolverMultistepScheduler with ``use_karras_sigmas=True`` run them (the latter rounds t_i the same way; the
    former hands the UNet the fractional t, which ldmkit's integer-timestep denoiser rounds). Near σ_min several
    σ_i may share a timestep.
    """
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, spacing, steps_offset, endpoint)
    sigmas = schedule_sigmas(schedule)
    if karras:
        levels = karras_sigmas(sigmas, timesteps[0], timesteps[-1], num_steps)
        timesteps = sigma_to_t(sigmas.log(), levels).round().long().tolist()
    else:
        levels = sigmas[timesteps]
    return Grid(tuple(timesteps), tuple(levels.tolist()) + (float(final_sigma),))


def sigma_schedule(schedule: NoiseSchedule, num_steps: int, karras: bool = False) -> tuple[list[int], list[float]]:
    """(timesteps, σ) of k-diffusion's grid: linspace from T−1 to 0 (Karras σ between σ_{T−1} and σ_0 with
    ``karras``), σ_n = 0 — the grid euler and dpmpp-2m step over by default."""
    grid = sigma_grid(schedule, num_steps, "linspace", karras=karras)
    return list(grid.timesteps), list(grid.sigmas)


def timestep_tensor(timesteps, device: torch.device) -> Tensor:
    # One host-to-device copy for the whole run; each step takes a view with .expand(B).
    return torch.tensor(list(timesteps), dtype=torch.int64, device=device)


def check_start(start: int, n: int) -> int:
    if not 0 <= start < n:
        raise ValueError(f"start = {start}; must be a step index 0 … {n - 1}")
    return start


def check_stop(stop: int | None, start: int, n: int) -> int:
    """The index after the last step to run: ``stop`` (None: all n). A sampler stopped there returns
    z_t at timestep ``stop``, which a run with ``start = stop`` continues from."""
    if stop is None:
        return n
    if not start < stop <= n:
        raise ValueError(f"stop = {stop}; must be a step index {start + 1} … {n}")
    return stop
