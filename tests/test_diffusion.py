"""Pins the DDPM math (schedules, forward process, posterior), the samplers, guidance and the loss.

Reference values are computed independently here in float64 from the betas, not through the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldmkit.config import DiffusionConfig
from ldmkit.diffusion import (
    MULTISTEP,
    SAMPLERS,
    diffusion_loss,
    eps_from_v,
    guided_denoiser,
    make_schedule,
    min_snr_weight,
    posterior_mean_from_eps,
    posterior_mean_variance,
    predict_z0_from_eps,
    predict_z0_from_v,
    q_sample,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sigma_schedule,
    snr,
    spaced_timesteps,
    v_target,
)

SCHEDULES = {
    "scaled_linear": DiffusionConfig(schedule="scaled_linear"),
    "linear": DiffusionConfig(schedule="linear"),  # config's betas 0.00085 … 0.012
    "linear_ddpm": DiffusionConfig(schedule="linear", beta_start=1e-4, beta_end=0.02),  # Ho et al.'s betas
    "cosine": DiffusionConfig(schedule="cosine"),
    "zero_snr": DiffusionConfig(schedule="scaled_linear", prediction="v", zero_terminal_snr=True),
}
# ᾱ_{T−1} for T = 1000, measured: the last step must be close to pure noise.
LAST_ALPHA_BAR_MAX = {"scaled_linear": 0.0047, "linear": 0.0016, "linear_ddpm": 4.1e-5, "cosine": 1e-8, "zero_snr": 1e-7}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def alpha_bar64(schedule) -> np.ndarray:
    return np.cumprod(1.0 - schedule.betas.double().numpy())


@pytest.fixture(scope="module")
def sched():
    return make_schedule(DiffusionConfig())


# --------------------------------------------------------------------------------------------------
# Schedules and the forward process


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_shape_and_range(name):
    s = make_schedule(SCHEDULES[name])
    T = s.num_timesteps
    assert T == 1000
    for v in (s.betas, s.alphas, s.alphas_cumprod):
        assert v.shape == (T,) and v.dtype == torch.float32
    assert (s.betas > 0).all() and (s.betas < 1).all()
    # all three are non-decreasing (but for zero_snr's last β, set by ᾱ_{T−1} = 2⁻²⁴ rather than 0)
    assert (s.betas[: -1 if name == "zero_snr" else None].diff() >= 0).all()
    assert (s.alphas_cumprod.diff() < 0).all()
    assert torch.allclose(s.alphas, 1 - s.betas)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), alpha_bar64(s), rtol=1e-5, atol=1e-12)
    assert 0 < s.alphas_cumprod[-1].item() < LAST_ALPHA_BAR_MAX[name]
    assert s.alphas_cumprod[0].item() > 0.999  # t = 0 is barely noised


def test_schedule_formulas():
    s = make_schedule(DiffusionConfig(schedule="scaled_linear", num_timesteps=10, beta_start=0.01, beta_end=0.04))
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(0.1, 0.2, 10) ** 2, rtol=1e-6)
    s = make_schedule(DiffusionConfig(schedule="linear", num_timesteps=10, beta_start=0.01, beta_end=0.04))
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(0.01, 0.04, 10), rtol=1e-6)
    s = make_schedule(DiffusionConfig(schedule="cosine", num_timesteps=10))
    f = np.cos((np.arange(11) / 10 + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(s.alphas_cumprod[:-1].numpy(), (f / f[0])[1:-1], rtol=1e-5)
    assert s.betas[-1].item() == pytest.approx(0.999)  # clipped
    with pytest.raises(ValueError, match="allowed"):
        make_schedule(DiffusionConfig(schedule="quadratic"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="betas"):
        make_schedule(DiffusionConfig(schedule="linear", beta_end=1.5))


@pytest.mark.parametrize("name", SCHEDULES)
def test_forward_process_marginal(name):
    """q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I), two ways: the moments of the Markov chain
    z_t = √α_t z_{t−1} + √β_t ε (mean_t = √α_t mean_{t−1}, var_t = α_t var_{t−1} + β_t, in float64), and
    the empirical moments of many q_sample draws at a few t."""
    s = make_schedule(SCHEDULES[name])
    betas = s.betas.double().numpy()
    mean, var = np.ones(s.num_timesteps), np.zeros(s.num_timesteps)  # per unit z_0
    m, v = 1.0, 0.0
    for t, beta in enumerate(betas):
        m, v = math.sqrt(1 - beta) * m, (1 - beta) * v + beta
        mean[t], var[t] = m, v
    np.testing.assert_allclose(mean, np.sqrt(s.alphas_cumprod.double().numpy()), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(var, 1 - s.alphas_cumprod.double().numpy(), rtol=1e-5, atol=1e-7)

    n = 20_000
    z0 = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0]).expand(n, -1)
    g = gen(0)
    for t in (0, 9, 499, 999):
        z_t = q_sample(s, z0, torch.full((n,), t), torch.randn(z0.shape, generator=g))
        np.testing.assert_allclose(z_t.mean(0).numpy(), mean[t] * z0[0].numpy(), atol=0.03)
        np.testing.assert_allclose(z_t.var(0).numpy(), var[t], rtol=0.05)


def test_per_sample_broadcast_and_inverses(sched):
    z0 = torch.randn(3, 4, 5, 6, generator=gen(1))
    noise = torch.randn(3, 4, 5, 6, generator=gen(2))
    t = torch.tensor([0, 500, 999])
    z_t = q_sample(sched, z0, t, noise)
    ab = alpha_bar64(sched)
    for b in range(3):
        expected = math.sqrt(ab[t[b]]) * z0[b] + math.sqrt(1 - ab[t[b]]) * noise[b]
        torch.testing.assert_close(z_t[b], expected.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(predict_z0_from_eps(sched, z_t, t, noise), z0, rtol=1e-4, atol=1e-3)
    v = v_target(sched, z0, t, noise)
    torch.testing.assert_close(eps_from_v(sched, z_t, t, v), noise, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(predict_z0_from_v(sched, z_t, t, v), z0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(snr(sched, t).double(), torch.tensor(ab[t] / (1 - ab[t])), rtol=1e-4, atol=0)


def test_posterior(sched):
    B = 6
    z0 = torch.randn(B, 4, 4, 4, generator=gen(3))
    noise = torch.randn(B, 4, 4, 4, generator=gen(4))
    t = torch.tensor([0, 1, 10, 300, 700, 999])
    z_t = q_sample(sched, z0, t, noise)
    mean, var = posterior_mean_variance(sched, z0, z_t, t)

    # ε recovered from (z_0, z_t); μ̃ through ε must equal μ̃ through z_0.
    ab = torch.tensor(alpha_bar64(sched)).float()[t].view(-1, 1, 1, 1)
    eps = (z_t - ab.sqrt() * z0) / (1 - ab).sqrt()
    torch.testing.assert_close(posterior_mean_from_eps(sched, z_t, t, eps), mean, rtol=1e-4, atol=1e-4)

    # σ_t² = (1 − ᾱ_{t−1})(1 − α_t)/(1 − ᾱ_t), and independently Bayes' rule for
    # q(z_{t−1} | z_t, z_0) ∝ N(z_t; √α_t z_{t−1}, β_t) N(z_{t−1}; √ᾱ_{t−1} z_0, 1 − ᾱ_{t−1}).
    a64 = alpha_bar64(sched)
    betas = sched.betas.double().numpy()
    for b, tb in enumerate(t.tolist()):
        ab_prev = a64[tb - 1] if tb > 0 else 1.0
        sigma2 = (1 - ab_prev) * betas[tb] / (1 - a64[tb])
        assert var[b].item() == pytest.approx(sigma2, rel=1e-4, abs=1e-9)
        if tb == 0:
            assert var[b].item() == 0.0
            torch.testing.assert_close(mean[b], z0[b], rtol=1e-4, atol=1e-4)
            continue
        precision = (1 - betas[tb]) / betas[tb] + 1 / (1 - ab_prev)
        bayes_mean = (
            math.sqrt(1 - betas[tb]) / betas[tb] * z_t[b].double() + math.sqrt(ab_prev) / (1 - ab_prev) * z0[b].double()
        ) / precision
        assert 1 / precision == pytest.approx(sigma2, rel=1e-9)
        torch.testing.assert_close(mean[b].double(), bayes_mean, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Samplers


def point_oracle(schedule, c):
    """The exact ε for data concentrated on z_0 = c: ε = (z_t − √ᾱ_t c)/√(1 − ᾱ_t)."""

    def denoise(z, t):
        ab = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (z - ab.sqrt() * c) / (1 - ab).sqrt()

    return denoise


def gaussian_oracle(schedule, mu, std):
    """The exact E[ε | z_t] for z_0 ~ N(μ, s² I): z_t ~ N(√ᾱ μ, ᾱ s² + 1 − ᾱ), Cov(ε, z_t) = √(1 − ᾱ)."""

    def denoise(z, t):
        ab = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() / (ab * std**2 + 1 - ab) * (z - ab.sqrt() * mu)

    return denoise


ALL_SAMPLERS = {
    "ddpm": lambda d, z, s: sample_ddpm(d, z, s, generator=gen(0)),
    "ddpm-20": lambda d, z, s: sample_ddpm(d, z, s, generator=gen(0), num_steps=20),
    "ddim-50": lambda d, z, s: sample_ddim(d, z, s, 50),
    "ddim-10": lambda d, z, s: sample_ddim(d, z, s, 10),
    "ddim-50-eta1": lambda d, z, s: sample_ddim(d, z, s, 50, eta=1.0, generator=gen(0)),
    "euler-20": lambda d, z, s: sample_euler(d, z, s, 20),
    "euler-20-karras": lambda d, z, s: sample_euler(d, z, s, 20, karras=True),
    "euler-a-20": lambda d, z, s: sample("euler-a", d, z, s, 20, generator=gen(0)),
    "euler-a-20-karras": lambda d, z, s: sample("euler-a", d, z, s, 20, generator=gen(0), karras=True),
    "dpmpp-2m-20": lambda d, z, s: sample_dpmpp_2m(d, z, s, 20),
    "dpmpp-2m-10-karras": lambda d, z, s: sample_dpmpp_2m(d, z, s, 10, karras=True),
    "plms-20": lambda d, z, s: sample("plms", d, z, s, 20),
    "unipc-10": lambda d, z, s: sample("unipc", d, z, s, 10),
    "unipc-10-karras": lambda d, z, s: sample("unipc", d, z, s, 10, karras=True),
}


@pytest.mark.parametrize("schedule_name", ["scaled_linear", "cosine", "zero_snr"])
@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
def test_samplers_recover_single_point(sampler, schedule_name):
    s = make_schedule(SCHEDULES[schedule_name])
    c = 2 * torch.randn(2, 4, 8, 8, generator=gen(5))
    z_T = torch.randn(2, 4, 8, 8, generator=gen(6))
    out = ALL_SAMPLERS[sampler](point_oracle(s, c), z_T, s)
    assert out.shape == c.shape and out.dtype == torch.float32
    # ε̂ is the same at every step of the exact path; PLMS' weights (55, −59, 37, −9)/24 add float32's rounding
    # of it up almost sevenfold, which the cosine schedule's first step (σ ≈ 10⁴ → 10²) multiplies
    atol = 1e-3 if sampler.startswith("plms") and schedule_name == "cosine" else 1e-4
    torch.testing.assert_close(out, c, rtol=0, atol=atol)


# Enough steps that each sampler's discretisation error is small for this distribution (which changes
# fastest near σ ≈ s). Measured std at fewer steps: DDIM-10 0.39, DDIM(η=1)-50 0.45, DPM++(2M)-20 0.57:
# first-order and ancestral methods lose variance on coarse grids, and 2M over-extrapolates where a
# uniform-t grid takes one big last step (t = 53 → 0).
GAUSSIAN_SAMPLERS = {
    "ddpm": lambda d, z, s: sample_ddpm(d, z, s, generator=gen(0)),
    "ddim-50": lambda d, z, s: sample_ddim(d, z, s, 50),
    "ddim-200-eta1": lambda d, z, s: sample_ddim(d, z, s, 200, eta=1.0, generator=gen(0)),
    "euler-50-karras": lambda d, z, s: sample_euler(d, z, s, 50, karras=True),
    "euler-a-200": lambda d, z, s: sample("euler-a", d, z, s, 200, generator=gen(0)),
    "dpmpp-2m-50": lambda d, z, s: sample_dpmpp_2m(d, z, s, 50),
    "dpmpp-2m-20-karras": lambda d, z, s: sample_dpmpp_2m(d, z, s, 20, karras=True),
    "plms-50": lambda d, z, s: sample("plms", d, z, s, 50),
    "unipc-20-karras": lambda d, z, s: sample("unipc", d, z, s, 20, karras=True),
}


@pytest.mark.parametrize("sampler", GAUSSIAN_SAMPLERS)
def test_samplers_gaussian_data(sched, sampler):
    mu, std = 1.0, 0.5
    z_T = torch.randn(1024, 1, 4, 4, generator=gen(7))
    out = GAUSSIAN_SAMPLERS[sampler](gaussian_oracle(sched, mu, std), z_T, sched)
    # z_T ~ N(0, I) is not exactly q(z_{T−1}) (√ᾱ_{T−1} μ ≈ 0.07 of signal is missing): mean ≈ 0.966.
    assert out.mean().item() == pytest.approx(mu, abs=0.06)
    assert out.std().item() == pytest.approx(std, abs=0.04)


def test_zero_terminal_snr_rescales_and_removes_the_leak():
    """Lin et al. 2024: √ᾱ rescaled so that ᾱ_0 is kept and ᾱ_{T−1} ≈ 0. Then N(0, I) is q(z_{T−1}), and the
    sampler's mean is unbiased: with plain scaled_linear the 7% of signal left in z_{T−1} is missing from
    z_T, and DDIM under an exact model lands measurably low."""
    base, zero = make_schedule(SCHEDULES["scaled_linear"]), make_schedule(SCHEDULES["zero_snr"])
    a, a_zero = base.alphas_cumprod.double().sqrt(), zero.alphas_cumprod.double().sqrt()
    expected = (a - a[-1]) * a[0] / (a[0] - a[-1])
    torch.testing.assert_close(a_zero[:-1], expected[:-1], rtol=1e-5, atol=1e-7)
    assert zero.alphas_cumprod[0] == pytest.approx(base.alphas_cumprod[0].item(), rel=1e-6)
    assert zero.alphas_cumprod[-1].item() == 2.0**-24
    # v at the last timestep is −z_0: the model must draw the image from the prompt alone.
    z0 = torch.randn(4, 4, 8, 8, generator=gen(1))
    t = torch.full((4,), 999)
    torch.testing.assert_close(v_target(zero, z0, t, torch.randn(z0.shape, generator=gen(2))), -z0, atol=1e-3, rtol=0)

    mu, std = 1.0, 0.5
    z_T = torch.randn(4096, 1, 4, 4, generator=gen(7))
    means = {name: sample_ddim(gaussian_oracle(s, mu, std), z_T, s, 50).mean().item()
             for name, s in (("scaled_linear", base), ("zero_snr", zero))}
    assert means["zero_snr"] == pytest.approx(mu, abs=0.01)
    assert means["scaled_linear"] < mu - 0.02


def test_zero_terminal_snr_needs_v_prediction():
    with pytest.raises(ValueError, match="zero_terminal_snr needs prediction: v"):
        make_schedule(DiffusionConfig(zero_terminal_snr=True))


def test_ddim_eta0_is_deterministic(sched):
    d = gaussian_oracle(sched, 0.3, 0.7)
    z_T = torch.randn(4, 4, 8, 8, generator=gen(8))
    a = sample_ddim(d, z_T, sched, 20, eta=0.0, generator=gen(1))
    b = sample_ddim(d, z_T, sched, 20, eta=0.0, generator=gen(2))
    c = sample_ddim(d, z_T, sched, 20, eta=0.0)
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("run", [
    lambda d, z, s, g: sample_ddpm(d, z, s, generator=g),
    lambda d, z, s, g: sample_ddim(d, z, s, 20, eta=1.0, generator=g),
], ids=["ddpm", "ddim-eta1"])
def test_stochastic_samplers_are_seeded(sched, run):
    d = gaussian_oracle(sched, 0.3, 0.7)
    z_T = torch.randn(2, 4, 8, 8, generator=gen(9))
    a, b, c = run(d, z_T, sched, gen(11)), run(d, z_T, sched, gen(11)), run(d, z_T, sched, gen(12))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ddim_eta1_all_steps_is_ddpm(sched):
    d = gaussian_oracle(sched, 1.0, 0.5)
    z_T = torch.randn(8, 1, 4, 4, generator=gen(13))
    a = sample_ddpm(d, z_T, sched, generator=gen(14))
    b = sample_ddim(d, z_T, sched, sched.num_timesteps, eta=1.0, generator=gen(14))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_timestep_grids(sched):
    assert spaced_timesteps(1000, 50)[:2] == [999, 979] and spaced_timesteps(1000, 50)[-1] == 19
    assert spaced_timesteps(1000, 1000) == list(range(999, -1, -1))
    # named as the Python caller gave it (a pipeline's num_inference_steps), not by this function's parameter
    with pytest.raises(ValueError, match=r"^steps = 1001 \(num_inference_steps\); must be between 1 and the "
                                         r"model's 1000 timesteps$"):
        spaced_timesteps(1000, 1001)
    # the original LDM's / Stable Diffusion's DDIM grid
    assert spaced_timesteps(1000, 50, "leading")[:2] == [981, 961] and spaced_timesteps(1000, 50, "leading")[-1] == 1
    assert spaced_timesteps(1000, 3, "leading") == [667, 334, 1]
    for bad in ((1000, 1000, "leading"), (1000, 10, "uniform")):
        with pytest.raises(ValueError):
            spaced_timesteps(*bad)
    schedule_sigmas = np.sqrt((1 - alpha_bar64(sched)) / alpha_bar64(sched))
    for karras in (False, True):
        ts, sigmas = sigma_schedule(sched, 10, karras=karras)
        assert ts[0] == 999 and ts[-1] == 0 and len(sigmas) == len(ts) + 1 and sigmas[-1] == 0.0
        assert all(a > b for a, b in zip(sigmas, sigmas[1:]))
        if not karras:  # σ_i is the schedule's σ at the integer timestep the model sees
            np.testing.assert_allclose(sigmas[:-1], schedule_sigmas[ts], rtol=1e-4)
    # Karras: σ_i between σ_{T−1} and σ_0 (eq. 5, ρ = 7), the model at the timestep nearest in log σ
    ts, sigmas = sigma_schedule(sched, 500, karras=True)
    ramp = np.linspace(0, 1, 500)
    expected = (schedule_sigmas[999] ** (1 / 7) + ramp * (schedule_sigmas[0] ** (1 / 7) - schedule_sigmas[999] ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-4)
    nearest = np.abs(np.log(schedule_sigmas)[None, :] - np.log(expected)[:, None]).argmin(axis=1)
    assert np.abs(np.array(ts) - nearest).max() <= 1 and len(ts) == 500 > len(set(ts))  # steps may share a timestep


def test_callback_and_no_grad(sched):
    calls = []

    def denoise(z, t):
        assert not torch.is_grad_enabled()
        assert t.dtype == torch.int64 and t.shape == (z.shape[0],)
        return torch.zeros_like(z)

    for name in SAMPLERS:
        calls.clear()
        sample(name, denoise, torch.randn(3, 4, 2, 2), sched, 7, callback=lambda i, n: calls.append((i, n)))
        assert calls == [(i, 7) for i in range(7)], name


def test_sample_by_name(sched):
    c = torch.randn(1, 4, 4, 4, generator=gen(15))
    z_T = torch.randn(1, 4, 4, 4, generator=gen(16))
    for name in SAMPLERS:
        out = sample(name, point_oracle(sched, c), z_T, sched, 10, generator=gen(0))
        torch.testing.assert_close(out, c, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"unknown sampler 'heun'; allowed: ddpm, ddim, euler, dpmpp-2m, euler-a, "
                                         r"plms, unipc, lcm"):
        sample("heun", point_oracle(sched, c), z_T, sched, 10)
    with pytest.raises(ValueError, match="eta"):
        sample("euler", point_oracle(sched, c), z_T, sched, 10, eta=1.0)



@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "dpmpp-2m", "plms", "unipc"])
def test_a_run_stopped_and_continued_is_the_whole_run(sched, name):
    """stop = k returns z_t at step k's timestep, and start = k goes on from it to the same z_0 (binding's
    selection of z_T runs the first k steps of several starting noises this way); the multistep samplers
    (dpmpp-2m, plms, unipc) restart their history there, so they only land close."""
    c = torch.randn(2, 4, 4, 4, generator=gen(15))
    denoise = gaussian_oracle(sched, 0.5, 0.7)
    z_T = torch.randn(2, 4, 4, 4, generator=gen(16))
    whole = sample(name, denoise, z_T, sched, 10, eta=0.5 if name == "ddim" else 0.0, generator=gen(0))
    g = gen(0)
    z_k = sample(name, denoise, z_T, sched, 10, eta=0.5 if name == "ddim" else 0.0, generator=g, stop=4)
    joined = sample(name, denoise, z_k, sched, 10, eta=0.5 if name == "ddim" else 0.0, generator=g, start=4)
    if name in MULTISTEP:
        assert (joined - whole).abs().max() < 0.05 * whole.abs().max()
    else:
        torch.testing.assert_close(joined, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(sample(name, point_oracle(sched, c), z_T, sched, 10, generator=gen(0), stop=10), c,
                               rtol=0, atol=1e-4)
    for stop in (0, 11):
        with pytest.raises(ValueError, match=f"stop = {stop}; must be a step index 1 … 10"):
            sample(name, denoise, z_T, sched, 10, generator=gen(0), stop=stop)


# --------------------------------------------------------------------------------------------------
# Guidance


class CountingModel:
    """A fake UNet whose output depends on z_t, t and the context, and that counts its calls."""

    def __init__(self):
        self.batches = []

    def __call__(self, z, t, context):
        self.batches.append(z.shape[0])
        return z * context.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1).float() / 1000


def test_guidance_formula_and_one_call_per_step(sched):
    B, L, d = 3, 5, 8
    context = torch.randn(B, L, d, generator=gen(17))
    null = torch.randn(1, L, d, generator=gen(18))
    z = torch.randn(B, 4, 4, 4, generator=gen(19))
    t = torch.tensor([10, 500, 999])
    model = CountingModel()
    cond = model(z, t, context)
    uncond = model(z, t, null.expand(B, L, d))
    model.batches.clear()

    guided = guided_denoiser(model, context, null, 7.5)
    torch.testing.assert_close(guided(z, t), uncond + 7.5 * (cond - uncond))
    assert model.batches == [2 * B]  # one batched call

    model.batches.clear()
    assert torch.equal(guided_denoiser(model, context, null, 1.0)(z, t), cond)
    assert model.batches == [B]  # no unconditional pass

    model.batches.clear()
    sample_ddim(guided, torch.randn(B, 4, 4, 4), sched, 6)
    assert model.batches == [2 * B] * 6


def test_guidance_stops_below_the_given_timestep(sched):
    """With unguided_below, the low-noise steps make one conditional call of batch B and return it;
    the steps above are guided as before."""
    B, L, d = 2, 5, 8
    context, null = torch.randn(B, L, d, generator=gen(21)), torch.randn(1, L, d, generator=gen(22))
    model = CountingModel()
    guided = guided_denoiser(model, context, null, 5.0, unguided_below=300)
    z = torch.randn(B, 4, 4, 4, generator=gen(23))
    low, high = torch.tensor([299, 299]), torch.tensor([300, 300])
    assert torch.equal(guided(z, low), model(z, low, context))
    torch.testing.assert_close(guided(z, high), guided_denoiser(model, context, null, 5.0)(z, high))
    model.batches.clear()
    sample_ddim(guided, torch.randn(B, 4, 4, 4), sched, 10)  # timesteps 999, 899, …, 99: 3 of 10 below 300
    assert model.batches == [2 * B] * 7 + [B] * 3


def test_guidance_v_prediction(sched):
    z0 = torch.randn(2, 4, 4, 4, generator=gen(20))
    noise = torch.randn(2, 4, 4, 4, generator=gen(21))
    t = torch.tensor([100, 800])
    z_t = q_sample(sched, z0, t, noise)
    context, null = torch.randn(2, 3, 8), torch.randn(2, 3, 8)

    def v_model(z, tt, ctx):  # a perfect v-model whose answer does not depend on the context
        return v_target(sched, z0.repeat(z.shape[0] // 2, 1, 1, 1), tt, noise.repeat(z.shape[0] // 2, 1, 1, 1))

    for scale in (1.0, 5.0):
        eps = guided_denoiser(v_model, context, null, scale, prediction="v", schedule=sched)(z_t, t)
        torch.testing.assert_close(eps, noise, rtol=1e-4, atol=1e-4)

    # v → ε is linear, so guiding then converting equals converting then guiding.
    model = CountingModel()
    v_c, v_u = model(z_t, t, context), model(z_t, t, null)
    expected = eps_from_v(sched, z_t, t, v_u + 3.0 * (v_c - v_u))
    got = guided_denoiser(model, context, null, 3.0, prediction="v", schedule=sched)(z_t, t)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="schedule"):
        guided_denoiser(model, context, null, 3.0, prediction="v")


# --------------------------------------------------------------------------------------------------
# Training objective


def test_loss_gradient_flows(sched):
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    latents = torch.randn(4, 4, 8, 8, generator=gen(22))
    loss = diffusion_loss(lambda z, t: net(z), latents, sched, generator=gen(23))
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    # The generator makes the draw of (t, ε) reproducible.
    again = diffusion_loss(lambda z, t: net(z), latents, sched, generator=gen(23))
    assert again.item() == loss.item()


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_loss_is_zero_for_oracle(sched, prediction):
    c = torch.randn(1, 4, 8, 8, generator=gen(24))
    latents = c.expand(16, -1, -1, -1)
    eps_oracle = point_oracle(sched, c)

    def model(z, t):
        eps = eps_oracle(z, t)
        return eps if prediction == "epsilon" else v_target(sched, latents, t, eps)

    loss = diffusion_loss(model, latents, sched, prediction=prediction, generator=gen(25))
    assert loss.item() < 1e-8


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_min_snr_weighting(sched, prediction):
    t = torch.tensor([0, 100, 400, 999])
    ab = alpha_bar64(sched)[t]
    ratio = ab / (1 - ab)
    gamma = 5.0
    expected = np.minimum(ratio, gamma) / (ratio if prediction == "epsilon" else ratio + 1)
    np.testing.assert_allclose(min_snr_weight(sched, t, gamma, prediction).numpy(), expected, rtol=1e-4)

    latents = torch.randn(4, 4, 4, 4, generator=gen(26))
    noise = torch.randn(4, 4, 4, 4, generator=gen(27))
    zero = lambda z, tt: torch.zeros_like(z)  # noqa: E731
    plain = diffusion_loss(zero, latents, sched, prediction, t=t, noise=noise, reduction="none")
    weighted = diffusion_loss(zero, latents, sched, prediction, min_snr_gamma=gamma, t=t, noise=noise, reduction="none")
    target = noise if prediction == "epsilon" else v_target(sched, latents, t, noise)
    torch.testing.assert_close(plain, target.pow(2).mean(dim=(1, 2, 3)))
    np.testing.assert_allclose(weighted.numpy(), plain.numpy() * expected, rtol=1e-4)
    mean_loss = diffusion_loss(zero, latents, sched, prediction, t=t, noise=noise)
    assert mean_loss.item() == pytest.approx(plain.mean().item())


def test_zero_terminal_snr_matches_diffusers_and_round_trips_its_scheduler_config():
    """The same ᾱ_t as diffusers' ``rescale_betas_zero_snr`` (its Euler scheduler also sets ᾱ_{T−1} = 2⁻²⁴),
    and a diffusers scheduler config that asks for it gives a zero-terminal-SNR DiffusionConfig."""
    diffusers = pytest.importorskip("diffusers")
    from ldmkit.convert.infer import schedule_from_diffusers

    theirs = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
    )
    ours = make_schedule(SCHEDULES["zero_snr"])
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod.float(), rtol=1e-5, atol=1e-9)
    config = schedule_from_diffusers(dict(theirs.config))
    assert config.zero_terminal_snr and config.prediction == "v"
