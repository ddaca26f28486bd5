"""Samplers over one σ grid: DDIM(η), DDPM and Euler are one algorithm (`sample_ancestral`), checked here
against their own formulas in z space (how ldmkit computed them before they were merged); the grids are
diffusers' (timestep_spacing, steps_offset); Euler, Euler ancestral and DPM++(2M) step as diffusers'
schedulers do, step by step, on the same model output and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldmkit.config import DiffusionConfig
from ldmkit.diffusion import (
    SAMPLERS, grid_for, make_schedule, randn, sample, sample_ddim, sample_ddpm, sample_euler, sample_euler_ancestral,
    sigma_grid, spaced_timesteps,
)
from ldmkit.errors import UsageError

SCHEDULES = {
    "scaled_linear": DiffusionConfig(schedule="scaled_linear"),
    "cosine": DiffusionConfig(schedule="cosine"),
    "zero_snr": DiffusionConfig(schedule="scaled_linear", prediction="v", zero_terminal_snr=True),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sched():
    return make_schedule(DiffusionConfig())


def gaussian_oracle(schedule, mu, std):
    """The exact E[ε | z_t] for z_0 ~ N(μ, s² I) (t: an int tensor [B] or an int)."""

    def denoise(z, t):
        t = torch.as_tensor(t).long().expand(z.shape[0])
        ab = schedule.alphas_cumprod[t].view(-1, 1, 1, 1).double()
        return ((1 - ab).sqrt() / (ab * std**2 + 1 - ab) * (z.double() - ab.sqrt() * mu)).float()

    return denoise


# --------------------------------------------------------------------------------------------------
# The formulas in z space, as the samplers computed them before they became `sample_ancestral`


def ddim_z_space(denoise, z_T, schedule, num_steps, eta=0.0, generator=None, spacing="trailing"):
    """DDIM (Song et al. 2021, eq. 12) in z: z_t' = √ᾱ' ẑ_0 + √(1 − ᾱ' − σ²) ε̂ + σ ξ; last step to ᾱ = 1
    (trailing) or ᾱ_0 (leading)."""
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, spacing)
    ac = schedule.alphas_cumprod.double().tolist()
    final = 1.0 if spacing == "trailing" else ac[0]
    z = z_T.float()
    for i, t in enumerate(timesteps):
        a_t = ac[t]
        a_prev = ac[timesteps[i + 1]] if i + 1 < len(timesteps) else final
        eps = denoise(z, torch.full((z.shape[0],), t))
        z0 = (z - math.sqrt(1 - a_t) * eps) * (1 / math.sqrt(a_t))
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        z = math.sqrt(a_prev) * z0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            z = z + sigma * randn(z.shape, generator)
    return z


def ddpm_z_space(denoise, z_T, schedule, num_steps, generator):
    """Ho et al. 2020, Algorithm 2, respaced: z_t' = (z_t − (1 − α)/√(1 − ᾱ_t) ε̂)/√α + σ ξ, α = ᾱ_t/ᾱ_t'."""
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps)
    ac = schedule.alphas_cumprod.double().tolist()
    z = z_T.float()
    for i, t in enumerate(timesteps):
        a_t = ac[t]
        a_prev = ac[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        alpha = a_t / a_prev
        eps = denoise(z, torch.full((z.shape[0],), t))
        z = (z - ((1 - alpha) / math.sqrt(1 - a_t)) * eps) * (1 / math.sqrt(alpha))
        if i + 1 < len(timesteps):
            z = z + math.sqrt((1 - a_prev) * (1 - alpha) / (1 - a_t)) * randn(z.shape, generator)
    return z


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    err = (a - b).abs().max().item()
    assert err <= rel * max(1.0, b.abs().max().item()), f"max |difference| {err:.2e}"


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_is_euler_ancestral_in_sigma_space(schedule_name, spacing, eta):
    """x = z/√ᾱ, σ = √(1 − ᾱ)/√ᾱ: DDIM(0) is Euler, DDIM(η) the ancestral step with σ_up = σ_η/√ᾱ'."""
    s = make_schedule(SCHEDULES[schedule_name])
    d = gaussian_oracle(s, 1.0, 0.5)
    z_T = torch.randn(4, 4, 8, 8, generator=gen(1))
    for steps in (10, 50):
        expected = ddim_z_space(d, z_T, s, steps, eta, gen(2), spacing)
        close(sample_ddim(d, z_T, s, steps, eta=eta, generator=gen(2), spacing=spacing), expected, 1e-5)


@pytest.mark.parametrize("steps", [None, 20])
def test_ddpm_is_ddim_eta_1(sched, steps):
    d = gaussian_oracle(sched, 1.0, 0.5)
    z_T = torch.randn(4, 1, 4, 4, generator=gen(3))
    expected = ddpm_z_space(d, z_T, sched, steps or sched.num_timesteps, gen(4))
    close(sample_ddpm(d, z_T, sched, generator=gen(4), num_steps=steps), expected)


def test_deterministic_ddim_is_euler_on_the_same_grid(sched):
    d = gaussian_oracle(sched, 0.3, 0.7)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(5))
    for spacing in ("trailing", "linspace"):
        assert torch.equal(sample_euler(d, z_T, sched, 12, spacing=spacing),
                           sample_ddim(d, z_T, sched, 12, spacing=spacing))
    close(sample("euler", d, z_T, sched, 12, spacing="trailing"), ddim_z_space(d, z_T, sched, 12))


def test_euler_ancestral_is_seeded_and_lands_on_the_data(sched):
    c = 2 * torch.randn(2, 4, 8, 8, generator=gen(6))
    d = gaussian_oracle(sched, c, 1e-3)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(7))
    a, b = (sample_euler_ancestral(d, z_T, sched, 20, generator=gen(8)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_euler_ancestral(d, z_T, sched, 20, generator=gen(9)))
    close(a, c, 1e-2)


def test_every_sampler_takes_every_grid_option(sched):
    d = gaussian_oracle(sched, 0.5, 0.5)
    z_T = torch.randn(1, 1, 4, 4, generator=gen(10))
    for name in SAMPLERS:
        for spacing in ("trailing", "leading", "linspace"):
            for karras in (False, True):
                out = sample(name, d, z_T, sched, 8, generator=gen(0), spacing=spacing, karras=karras)
                assert torch.isfinite(out).all(), (name, spacing, karras)
    with pytest.raises(UsageError, match="steps_offset = 2 applies to leading spacing only"):
        sample("euler", d, z_T, sched, 8, steps_offset=2)
    with pytest.raises(UsageError, match="unknown timestep spacing 'uniform'; allowed: trailing, leading, linspace"):
        sample("ddim", d, z_T, sched, 8, spacing="uniform")


# --------------------------------------------------------------------------------------------------
# The grids are diffusers'

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'ldmkit[sd]')")
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
SPACING_CASES = [("leading", 1), ("leading", 0), ("trailing", 0), ("linspace", 0)]


@pytest.mark.parametrize("spacing, offset", SPACING_CASES)
def test_grids_are_diffusers(sched, spacing, offset):
    for n in (1, 4, 9, 10, 25, 50, 333):
        ddim = diffusers.DDIMScheduler(**SD_BETAS, timestep_spacing=spacing, steps_offset=offset)
        ddim.set_timesteps(n)
        ours = spaced_timesteps(1000, n, spacing, offset if spacing == "leading" else None)
        if (spacing, n) != ("linspace", 1):  # np.linspace(0, 999, 1) is [0]; k-diffusion and ldmkit take 999
            assert ours == ddim.timesteps.tolist(), (spacing, n)
        dpm = diffusers.DPMSolverMultistepScheduler(**SD_BETAS, timestep_spacing=spacing, steps_offset=offset)
        dpm.set_timesteps(n)
        grid = grid_for("dpmpp-2m", sched, n, spacing, offset if spacing == "leading" else None)
        assert list(grid.timesteps) == dpm.timesteps.tolist(), (spacing, n)
        np.testing.assert_allclose(grid.sigmas, dpm.sigmas.numpy(), rtol=1e-5)
    assert spaced_timesteps(1000, 10, "leading", 1) == spaced_timesteps(1000, 10, "leading")  # SD's offset, CompVis'


def test_linspace_is_k_diffusions_grid(sched):
    """euler's and dpmpp-2m's default grid: t = round(linspace(T − 1, 0, n)), σ_n = 0 (k-diffusion get_sigmas)."""
    for n in range(1, 120):
        t = torch.linspace(999, 0, n, dtype=torch.float64).round().long().tolist()
        assert list(grid_for("euler", sched, n).timesteps) == t == list(grid_for("dpmpp-2m", sched, n).timesteps)
    assert sigma_grid(sched, 5).sigmas[-1] == 0.0


# --------------------------------------------------------------------------------------------------
# Step by step against diffusers' schedulers on the same model output


# diffusers' schedulers that hold the VP latent z itself
HOLD_Z = (diffusers.DPMSolverMultistepScheduler, diffusers.UniPCMultistepScheduler, diffusers.PNDMScheduler)


def diffusers_run(scheduler, denoise, z_T, steps, generator=None):
    """diffusers' own loop; z (the VP latent) after each step."""
    scheduler.set_timesteps(steps)
    x = z_T * scheduler.init_noise_sigma
    out = []
    for k, t in enumerate(scheduler.timesteps):
        eps = denoise(scheduler.scale_model_input(x, t), int(round(float(t))))
        extra = {} if generator is None else {"generator": generator}
        x = scheduler.step(eps, t, x, **extra).prev_sample
        if isinstance(scheduler, HOLD_Z):
            out.append(x)
        else:  # Euler schedulers hold x = z/√ᾱ
            out.append(x / math.sqrt(1 + float(scheduler.sigmas[k + 1]) ** 2))
    return out


@pytest.mark.parametrize("spacing, offset", SPACING_CASES)
@pytest.mark.parametrize("name", ["euler", "euler-a", "dpmpp-2m"])
def test_steps_match_diffusers_schedulers(sched, name, spacing, offset):
    cls = {"euler": diffusers.EulerDiscreteScheduler, "euler-a": diffusers.EulerAncestralDiscreteScheduler,
           "dpmpp-2m": diffusers.DPMSolverMultistepScheduler}[name]
    scheduler = cls(**SD_BETAS, timestep_spacing=spacing, steps_offset=offset)
    steps = 9 if name == "dpmpp-2m" else 10  # linspace's timesteps are integers: 999/9 (DPM: n + 1 points)
    d = gaussian_oracle(sched, 0.5, 0.6)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(11))
    theirs = diffusers_run(scheduler, d, z_T, steps, gen(12) if name == "euler-a" else None)
    # diffusers starts Euler from x = σ_max z_T on linspace and trailing grids, ldmkit from √(1 + σ_max²) z_T
    # (the VP start, exactly); the same start x here
    start = z_T * float(scheduler.init_noise_sigma) / math.sqrt(1 + float(getattr(scheduler, "sigmas", [0])[0]) ** 2)
    offset_option = offset if spacing == "leading" else None
    for k in range(1, steps + 1):
        ours = sample(name, d, start if name != "dpmpp-2m" else z_T, sched, steps, generator=gen(12), spacing=spacing,
                      steps_offset=offset_option, stop=k)
        close(ours, theirs[k - 1], 1e-4)


# --------------------------------------------------------------------------------------------------
# Karras σ as diffusers runs them: n steps at any n, the continuous σ for the update


@pytest.mark.parametrize("name", ["euler", "dpmpp-2m"])
def test_karras_runs_every_step_as_diffusers_does(name):
    """diffusers' EulerDiscreteScheduler and DPMSolverMultistepScheduler with use_karras_sigmas=True, on the tiny
    preset's schedule at 50 steps: the same n Karras σ (not snapped to timesteps, so none is lost), the UNet at the
    nearest timestep, and every step of the solver equal on the same model output."""
    from ldmkit.config import load_preset

    diffusion = load_preset("tiny").diffusion
    sched = make_schedule(diffusion)
    cls = {"euler": diffusers.EulerDiscreteScheduler, "dpmpp-2m": diffusers.DPMSolverMultistepScheduler}[name]
    betas = dict(beta_schedule=diffusion.schedule, beta_start=diffusion.beta_start, beta_end=diffusion.beta_end,
                 num_train_timesteps=diffusion.num_timesteps)
    scheduler = cls(**betas, use_karras_sigmas=True)
    steps = 50
    scheduler.set_timesteps(steps)
    grid = grid_for(name, sched, steps, karras=True)
    assert len(grid) == len(scheduler.timesteps) == steps  # the snapped grid ran 49
    np.testing.assert_allclose(grid.sigmas, scheduler.sigmas.numpy(), rtol=1e-5)
    assert list(grid.timesteps) == scheduler.timesteps.double().round().long().tolist()  # Euler's t is fractional
    for n in (150, 1000):  # many steps near σ_min share a timestep, each still a step of its own
        assert len(grid_for(name, sched, n, karras=True)) == n
    d = gaussian_oracle(sched, 0.5, 0.6)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(13))
    theirs = diffusers_run(scheduler, d, z_T, steps)
    start = z_T * float(scheduler.init_noise_sigma) / math.sqrt(1 + float(scheduler.sigmas[0]) ** 2)
    for k in (1, 2, 25, 48, 49, 50):
        ours = sample(name, d, start if name == "euler" else z_T, sched, steps, karras=True, stop=k)
        close(ours, theirs[k - 1], 1e-4)


def test_image_to_image_with_karras_starts_from_the_karras_noise_level(sched):
    """SDEdit noises z_0 to σ_k of the grid the solver then steps from: z = (z_0 + σ_k ε)/√(1 + σ_k²)."""
    from ldmkit.diffusion import sample_from

    z_0 = torch.randn(1, 4, 8, 8, generator=gen(14))
    noise = torch.randn(1, 4, 8, 8, generator=gen(15))
    seen = []

    def denoise(z, t):
        seen.append(z.clone())
        return torch.zeros_like(z)

    grid = grid_for("euler", sched, 50, karras=True)
    sample_from("euler", denoise, z_0, noise, sched, 50, strength=0.5, karras=True)
    sigma = grid.sigmas[25]
    assert len(seen) == 25
    close(seen[0], (z_0 + sigma * noise) / math.sqrt(1 + sigma**2), 1e-6)


# --------------------------------------------------------------------------------------------------
# PLMS and UniPC sample as diffusers' PNDMScheduler (skip_prk_steps, Stable Diffusion 1.x's) and
# UniPCMultistepScheduler (its defaults) do


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 25])
@pytest.mark.parametrize("spacing, offset", SPACING_CASES)
def test_plms_and_unipc_match_diffusers_schedulers(sched, spacing, offset, steps):
    d = gaussian_oracle(sched, 0.5, 0.6)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(21))
    offset_option = offset if spacing == "leading" else None
    unipc = diffusers.UniPCMultistepScheduler(**SD_BETAS, timestep_spacing=spacing, steps_offset=offset)
    close(sample("unipc", d, z_T, sched, steps, spacing=spacing, steps_offset=offset_option),
          diffusers_run(unipc, d, z_T, steps)[-1], 1e-4)
    if spacing == "leading" or (spacing == "trailing" and 1000 % steps == 0):
        # PNDMScheduler steps t → t − ⌊T/n⌋, which leaves its own grid unless T/n is a whole number (linspace;
        # trailing at 3 steps: 666 → 333, not 332): ldmkit's plms steps to the grid's next timestep
        # ldmkit's plms lands on ᾱ_0 on the leading grid, clean data (ᾱ = 1) otherwise, as its ddim
        pndm = diffusers.PNDMScheduler(**SD_BETAS, timestep_spacing=spacing, steps_offset=offset,
                                       skip_prk_steps=True, set_alpha_to_one=spacing != "leading")
        close(sample("plms", d, z_T, sched, steps, spacing=spacing, steps_offset=offset_option),
              diffusers_run(pndm, d, z_T, steps)[-1], 1e-4)


@pytest.mark.parametrize("steps", [3, 5, 20])
def test_unipc_by_default_and_with_karras_sigmas_matches_diffusers(sched, steps):
    d = gaussian_oracle(sched, 0.5, 0.6)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(22))
    unipc = diffusers.UniPCMultistepScheduler(**SD_BETAS)
    close(sample("unipc", d, z_T, sched, steps), diffusers_run(unipc, d, z_T, steps)[-1], 1e-4)
    unipc = diffusers.UniPCMultistepScheduler(**SD_BETAS, use_karras_sigmas=True)
    close(sample("unipc", d, z_T, sched, steps, karras=True), diffusers_run(unipc, d, z_T, steps)[-1], 1e-4)


def test_plms_calls_the_denoiser_once_more_than_its_steps_and_unipc_once_per_step(sched):
    """PLMS' first step is Heun's (a second call at t_1); UniPC's corrector reuses the next step's call."""
    d = gaussian_oracle(sched, 0.5, 0.6)
    z_T = torch.randn(1, 4, 8, 8, generator=gen(23))
    for name, calls in (("plms", {1: 1, 4: 5, 10: 11}), ("unipc", {1: 1, 4: 4, 10: 10})):
        for steps, expected in calls.items():
            seen = []
            sample(name, lambda z, t: seen.append(int(t[0])) or d(z, t), z_T, sched, steps, spacing="leading")
            assert len(seen) == expected, (name, steps, seen)
    seen = []
    sample("plms", lambda z, t: seen.append(int(t[0])) or d(z, t), z_T, sched, 4, spacing="leading")
    assert seen == [751, 501, 501, 251, 1]  # diffusers' PNDM (skip_prk_steps) calls at these, SD's grid
