"""Noise schedules and the closed-form algebra of the DDPM forward process q(z_t | z_0).

Timestep convention (the one diffusers and the original LDM code use): timesteps are the integers
t = 0 … T−1, and ``alphas_cumprod[t]`` is ᾱ for timestep t,

    ᾱ_t = ∏_{s=0}^{t} α_s,   α_t = 1 − β_t.

So code timestep t is the lecture's timestep t + 1; t = 0 is the first noising step (a little noise)
and t = T−1 the last (z_{T−1} ≈ N(0, I)). Clean data has no index: wherever ᾱ_{t−1} is needed, the
value for t = 0 is 1 (``alphas_cumprod_prev``).

Every function takes ``t`` as an int64 tensor of shape [B] (one timestep per sample) and broadcasts the
coefficients over the remaining dimensions of the latents (NCHW or any other rank). Coefficients are
float32 and are moved to the latents' device; call ``schedule.to(device)`` once to avoid the copy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ldmkit.config import DiffusionConfig
from ldmkit.errors import ConfigError


@dataclass(frozen=True)
class NoiseSchedule:
    """β_t, α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s for t = 0 … T−1 (computed in float64, stored float32)."""

    betas: Tensor  # [T]
    alphas: Tensor  # [T]
    alphas_cumprod: Tensor  # [T]; alphas_cumprod[t] = ᾱ_t
    num_timesteps: int  # T

    @property
    def alphas_cumprod_prev(self) -> Tensor:
        """ᾱ_{t−1}, with ᾱ_{−1} = 1 (clean data) for t = 0."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """The same schedule with its tensors on ``device``."""
        return dataclasses.replace(
            self,
            betas=self.betas.to(device),
            alphas=self.alphas.to(device),
            alphas_cumprod=self.alphas_cumprod.to(device),
        )


TERMINAL_ALPHA_BAR = 2.0**-24  # ᾱ_{T−1} of a zero-terminal-SNR schedule (diffusers uses the same value)


def make_schedule(cfg: DiffusionConfig) -> NoiseSchedule:
    """The schedule named by ``cfg.schedule``:

    - ``"linear"`` (DDPM): β_t = linspace(beta_start, beta_end, T);
    - ``"scaled_linear"`` (LDM / Stable Diffusion): β_t = linspace(√beta_start, √beta_end, T)²;
    - ``"cosine"`` (Nichol & Dhariwal 2021): ᾱ(u) = f(u)/f(0), f(u) = cos²((u + s)/(1 + s) · π/2), s = 0.008,
      β_t = 1 − ᾱ((t+1)/T) / ᾱ(t/T), clipped at 0.999 (the last β would otherwise be 1 and ᾱ_{T−1} = 0).

    ``cfg.zero_terminal_snr`` then rescales the schedule (Lin et al. 2024, "Common diffusion noise
    schedules and sample steps are flawed", Alg. 1): with a_t = √ᾱ_t,

        a'_t = (a_t − a_{T−1}) · a_0 / (a_0 − a_{T−1}),

    which keeps ᾱ_0 and makes ᾱ_{T−1} = 0, so that the last training timestep is pure noise, as the
    sampler's z_T ~ N(0, I) is. Without it, scaled_linear leaves √ᾱ_{T−1} ≈ 0.07 of the image in
    z_{T−1}; on a small latent its low frequencies (where an object is) survive, the model learns to
    read the layout from the noise, and at sampling the seed, not the prompt, decides the layout.
    ᾱ_{T−1} is then set to 2⁻²⁴ rather than 0, so that σ_{T−1} and 1/√ᾱ_t stay finite in the samplers.
    """
    T = cfg.num_timesteps
    if T < 2:
        raise ConfigError(f"diffusion.num_timesteps = {T}; must be at least 2")
    if cfg.schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    elif cfg.schedule == "scaled_linear":
        betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, T, dtype=torch.float64) ** 2
    elif cfg.schedule == "cosine":
        s = 0.008
        u = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((u + s) / (1 + s) * (math.pi / 2)) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    else:
        raise ConfigError(f"diffusion.schedule = {cfg.schedule!r}; allowed: linear, scaled_linear, cosine")
    if not (betas.min() > 0 and betas.max() < 1):
        raise ConfigError(
            f"diffusion betas must lie in (0, 1); got [{betas.min().item():.3g}, {betas.max().item():.3g}] "
            f"from beta_start={cfg.beta_start}, beta_end={cfg.beta_end}"
        )
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    if cfg.zero_terminal_snr:
        if cfg.prediction != "v":
            raise ConfigError("diffusion.zero_terminal_snr needs prediction: v (at SNR 0 the ε target is z_t itself)")
        a = alphas_cumprod.sqrt()
        a = (a - a[-1]) * a[0] / (a[0] - a[-1])
        alphas_cumprod = a**2
        alphas_cumprod[-1] = TERMINAL_ALPHA_BAR
        betas = 1 - alphas_cumprod / torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    alphas = 1 - betas
    return NoiseSchedule(betas.float(), alphas.float(), alphas_cumprod.float(), T)


def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] on ``like``'s device, shaped [B, 1, 1, …] so that it broadcasts per sample over ``like``."""
    values = values.to(like.device)
    out = values[torch.as_tensor(t, device=like.device)]
    if out.ndim == 1:
        out = out.reshape(-1, *([1] * (like.ndim - 1)))
    return out


def q_sample(schedule: NoiseSchedule, latents: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε, a sample of q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I)."""
    ac = _at(schedule.alphas_cumprod, t, latents)
    return ac.sqrt() * latents + (1 - ac).sqrt() * noise


def predict_z0_from_eps(schedule: NoiseSchedule, z_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """z_0 = (z_t − √(1 − ᾱ_t) ε) / √ᾱ_t, q_sample solved for z_0."""
    ac = _at(schedule.alphas_cumprod, t, z_t)
    return (z_t - (1 - ac).sqrt() * eps) / ac.sqrt()


def posterior_mean_variance(schedule: NoiseSchedule, z_0: Tensor, z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(z_{t−1} | z_t, z_0) = N(μ̃(z_t, z_0), σ_t² I):

        μ̃ = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · z_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · z_t
        σ_t² = (1 − ᾱ_{t−1}) β_t / (1 − ᾱ_t)

    (the lecture's slide writes ᾱ_t where ᾱ_{t−1} belongs in μ̃; this is Ho et al. 2020, eq. 7).
    At t = 0, ᾱ_{−1} = 1, so μ̃ = z_0 and σ² = 0. The variance is returned shaped [B, 1, 1, …].
    """
    ac = _at(schedule.alphas_cumprod, t, z_t)
    ac_prev = _at(schedule.alphas_cumprod_prev, t, z_t)
    alpha = _at(schedule.alphas, t, z_t)
    beta = _at(schedule.betas, t, z_t)
    mean = (ac_prev.sqrt() * beta / (1 - ac)) * z_0 + (alpha.sqrt() * (1 - ac_prev) / (1 - ac)) * z_t
    variance = (1 - ac_prev) * beta / (1 - ac)
    return mean, variance


def posterior_mean_from_eps(schedule: NoiseSchedule, z_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """μ̃ written through ε: 1/√α_t · (z_t − (1 − α_t) / √(1 − ᾱ_t) · ε), the DDPM μ_θ when ε = ε_θ(z_t, t)."""
    ac = _at(schedule.alphas_cumprod, t, z_t)
    alpha = _at(schedule.alphas, t, z_t)
    return (z_t - (1 - alpha) / (1 - ac).sqrt() * eps) / alpha.sqrt()


def v_target(schedule: NoiseSchedule, z_0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """v = √ᾱ_t ε − √(1 − ᾱ_t) z_0 (Salimans & Ho 2022), the target of a v-prediction model."""
    ac = _at(schedule.alphas_cumprod, t, z_0)
    return ac.sqrt() * noise - (1 - ac).sqrt() * z_0


def eps_from_v(schedule: NoiseSchedule, z_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """ε = √ᾱ_t v + √(1 − ᾱ_t) z_t (v and z_t are a rotation of (ε, z_0) by the angle atan(σ_t))."""
    ac = _at(schedule.alphas_cumprod, t, z_t)
    return ac.sqrt() * v + (1 - ac).sqrt() * z_t


def predict_z0_from_v(schedule: NoiseSchedule, z_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """z_0 = √ᾱ_t z_t − √(1 − ᾱ_t) v."""
    ac = _at(schedule.alphas_cumprod, t, z_t)
    return ac.sqrt() * z_t - (1 - ac).sqrt() * v


def snr(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t), shape [B] like ``t`` (on t's device)."""
    t = torch.as_tensor(t)
    ac = schedule.alphas_cumprod.to(t.device)[t]
    return ac / (1 - ac)
