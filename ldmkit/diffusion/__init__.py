"""The DDPM forward process, its training objective, samplers and classifier-free guidance.

Timesteps are integers 0 … T−1 and ``schedule.alphas_cumprod[t]`` is ᾱ_t (see schedule.py).
"""

from ldmkit.diffusion.consistency import sample_lcm
from ldmkit.diffusion.grids import SPACINGS, Grid, randn, sigma_grid, sigma_schedule, spaced_timesteps
from ldmkit.diffusion.guidance import guided_denoiser
from ldmkit.diffusion.objective import diffusion_loss, min_snr_weight
from ldmkit.diffusion.samplers import (
    DEFAULT_SPACING,
    DIFFUSERS_SCHEDULERS,
    DIFFUSERS_SPACING,
    MULTISTEP,
    SAMPLERS,
    check_grid_options,
    grid_for,
    sample,
    sample_ancestral,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_from,
    sample_plms,
    sample_unipc,
    sampler_timesteps,
    start_index,
)
from ldmkit.diffusion.schedule import (
    NoiseSchedule,
    eps_from_v,
    make_schedule,
    posterior_mean_from_eps,
    posterior_mean_variance,
    predict_z0_from_eps,
    predict_z0_from_v,
    q_sample,
    snr,
    v_target,
)

__all__ = [
    "DEFAULT_SPACING",
    "DIFFUSERS_SCHEDULERS",
    "DIFFUSERS_SPACING",
    "Grid",
    "MULTISTEP",
    "NoiseSchedule",
    "SAMPLERS",
    "SPACINGS",
    "check_grid_options",
    "grid_for",
    "diffusion_loss",
    "eps_from_v",
    "guided_denoiser",
    "make_schedule",
    "min_snr_weight",
    "posterior_mean_from_eps",
    "posterior_mean_variance",
    "predict_z0_from_eps",
    "predict_z0_from_v",
    "q_sample",
    "randn",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_lcm",
    "sample_from",
    "sample_plms",
    "sample_unipc",
    "sampler_timesteps",
    "sigma_grid",
    "sigma_schedule",
    "snr",
    "spaced_timesteps",
    "start_index",
    "v_target",
]
