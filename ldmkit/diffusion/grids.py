"""Where samplers step: the timestep and σ grids, the starting noise, and the step-range checks.

Timesteps are integers 0 … T−1 of `ldmkit.diffusion.schedule`. The VP-space samplers (DDPM, DDIM) and
the consistency sampler visit `spaced_timesteps`; the σ-space samplers (Euler, DPM-Solver++) visit
`sigma_schedule`. A sampler run from ``start`` to ``stop`` covers a slice of its grid
(`check_start`, `check_stop`), which is how image-to-image and "stop, then continue" work.
"""

from __future__ import annotations

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


SPACINGS = ("trailing", "leading")


def spaced_timesteps(num_timesteps: int, num_steps: int, spacing: str = "trailing") -> list[int]:
    """``num_steps`` timesteps from high to low noise.

    ``"trailing"`` (the default; Lin et al. 2024) spaces them evenly down from T−1:

        t_i = round(T − i·T/n) − 1,  i = 0 … n−1   (T = 1000, n = 50: 999, 979, …, 19).

    It always starts at T−1, where z_T ~ N(0, I) is the right distribution; for n = T it is T−1, …, 0.
    ``"leading"`` is what the original LDM/Stable Diffusion DDIM sampler uses (CompVis "uniform";
    diffusers' ``timestep_spacing="leading"`` with ``steps_offset=1``), needed to reproduce their images:

        t_i = (n − 1 − i)·⌊T/n⌋ + 1   (T = 1000, n = 50: 981, 961, …, 1),

    which starts 18 steps short of T−1 and needs n < T.
    """
    if spacing not in SPACINGS:
        raise UsageError(f"unknown timestep spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if not 1 <= num_steps <= num_timesteps:
        raise UsageError(f"num_steps = {num_steps}; must be between 1 and num_timesteps = {num_timesteps}")
    if spacing == "leading":
        stride = num_timesteps // num_steps
        if (num_steps - 1) * stride + 1 > num_timesteps - 1:
            raise UsageError(f"leading spacing needs num_steps < num_timesteps = {num_timesteps}, got {num_steps}")
        return [(num_steps - 1 - i) * stride + 1 for i in range(num_steps)]
    return [round(num_timesteps - i * num_timesteps / num_steps) - 1 for i in range(num_steps)]


def timestep_tensor(timesteps: list[int], device: torch.device) -> Tensor:
    # One host-to-device copy for the whole run; each step takes a view with .expand(B).
    return torch.tensor(timesteps, dtype=torch.int64, device=device)


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


def sigma_to_t(log_sigmas: Tensor, sigma: Tensor) -> Tensor:
    """Fractional timestep of each σ: linear interpolation of log σ against the increasing log σ_t."""
    log_sigma = sigma.log()
    hi = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
    lo_value, hi_value = log_sigmas[hi - 1], log_sigmas[hi]
    w = ((log_sigma - lo_value) / (hi_value - lo_value)).clamp(0, 1)
    return (hi - 1) + w


def sigma_schedule(
    schedule: NoiseSchedule, num_steps: int, karras: bool = False, rho: float = 7.0
) -> tuple[list[int], list[float]]:
    """Timesteps t_0 > … > t_{n−1} and noise levels σ_0 > … > σ_{n−1} > σ_n = 0 for the σ-space samplers.

    Without ``karras``: t_i = round(linspace(T−1, 0, n)), as k-diffusion's DiscreteSchedule.get_sigmas.
    With ``karras``: σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (Karras et al. 2022,
    eq. 5), σ_max = σ_{T−1}, σ_min = σ_0, then snapped to the nearest timestep in log σ; timesteps that
    snap together are kept once (so with many steps there may be fewer than n).
    """
    T = schedule.num_timesteps
    if not 1 <= num_steps <= T:
        raise UsageError(f"num_steps = {num_steps}; must be between 1 and num_timesteps = {T}")
    ac = schedule.alphas_cumprod.double().cpu()
    sigmas = ((1 - ac) / ac).sqrt()
    if karras and num_steps > 1:
        ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
        lo, hi = sigmas[0] ** (1 / rho), sigmas[-1] ** (1 / rho)
        t = torch.unique_consecutive(sigma_to_t(sigmas.log(), (hi + ramp * (lo - hi)) ** rho).round().long())
    else:
        t = torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long()
    return t.tolist(), sigmas[t].tolist() + [0.0]
