"""Two multistep samplers that reuse the denoiser's earlier outputs: PLMS and UniPC, each over a `Grid`.

The conventions are `ldmkit.diffusion.samplers`' (σ space, x = z/√ᾱ = z_0 + σ ε, a denoiser ``denoise(z_t, t)
-> ε̂`` with guidance applied, ``callback(i, n)`` after step i of n, float32, no noise drawn). A run over a slice
of the grid (image-to-image, "stop, then continue") starts a fresh history: its first step is the one-step
start of the method, as diffusers' schedulers do from their first ``step``. ``on_step_end(i, z) -> z`` (diffusers'
``callback_on_step_end``, which these samplers cannot take one step at a time) sees z_{i+1} after step i at unit
variance, and what it returns goes on in its place, the history of earlier outputs kept.

- `sample_plms_grid`: pseudo linear multistep (Liu et al. 2022, PNDM's F-PLMS), Stable Diffusion v1's own
  sampler (CompVis' ``--plms``; diffusers' PNDMScheduler with ``skip_prk_steps``, the class SD 1.x folders name).
- `sample_unipc_grid`: UniPC (Zhao et al. 2023), a predictor (UniP) and a corrector (UniC) that reuses the
  next step's denoiser call, so the corrector costs nothing (diffusers' UniPCMultistepScheduler at its
  defaults: ``solver_order=2, solver_type="bh2", predict_x0, lower_order_final``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.grids import Callback, Denoiser, Grid, timestep_tensor

StepEnd = Callable[[int, Tensor], Tensor]  # on_step_end(i, z_{i+1}) -> the z to go on from

# PLMS' Adams–Bashforth weights for 1 … 4 outputs ε̂_i, ε̂_{i−1}, … (newest first), over their sum's divisor.
_ADAMS_BASHFORTH = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}


def hand_over(on_step_end: StepEnd, i: int, x: Tensor, sigma: float) -> Tensor:
    """x at noise level σ after step i, through ``on_step_end`` as z = x/√(1 + σ²): x itself where the hook
    returns the z it was given (bit for bit), else the returned z as x."""
    z = x * (1 / math.sqrt(1 + sigma**2))
    returned = on_step_end(i, z)
    return x if returned is z else returned * math.sqrt(1 + sigma**2)


def ddim_transfer(z: Tensor, sigma: float, sigma_next: float, eps: Tensor) -> Tensor:
    """DDIM's deterministic step (η = 0) from noise level σ to σ' with noise estimate ε, in z = x/√(1 + σ²):

        z' = (z − σ/√(1 + σ²) ε) √(1 + σ²)/√(1 + σ'²) + σ'/√(1 + σ'²) ε

    (x' = x + (σ' − σ) ε; PNDM's "transfer" φ, which its paper writes in ᾱ)."""
    lands = 1 / math.sqrt(1 + sigma_next**2)
    return (z - (sigma / math.sqrt(1 + sigma**2)) * eps) * (math.sqrt(1 + sigma**2) * lands) + (sigma_next * lands) * eps


@torch.no_grad()
def sample_plms_grid(denoise: Denoiser, z_T: Tensor, grid: Grid, callback: Callback | None = None,
                     on_step_end: StepEnd | None = None) -> Tensor:
    """PLMS over ``grid``: DDIM's transfer φ (`ddim_transfer`) with an Adams–Bashforth combination of the
    denoiser's last outputs ε̂_i = ε̂(z_i, t_i),

        ε'_0 = ½ (ε̂_0 + ε̂(φ(z_0, ε̂_0; σ_0 → σ_1), t_1))          (the first step: Heun's, one extra call)
        ε'_1 = (3 ε̂_1 − ε̂_0)/2,   ε'_2 = (23 ε̂_2 − 16 ε̂_1 + 5 ε̂_0)/12,
        ε'_i = (55 ε̂_i − 59 ε̂_{i−1} + 37 ε̂_{i−2} − 9 ε̂_{i−3})/24,
        z_{i+1} = φ(z_i, ε'_i; σ_i → σ_{i+1}),   z_0 = z_T.

    n steps call the denoiser n + 1 times (once for n = 1). The weights are those of equal steps, as in
    CompVis' and diffusers' PLMS, whatever the grid."""
    sigmas = grid.sigmas
    z = z_T.float()
    ts = timestep_tensor(grid.timesteps, z.device)
    outputs: list[Tensor] = []
    for i in range(len(grid)):
        s, s_next = sigmas[i], sigmas[i + 1]
        eps = denoise(z, ts[i].expand(z.shape[0])).float()  # float32: the weights cancel, bf16 ε̂ would not
        outputs = [eps, *outputs[:3]]
        if i == 0 and len(grid) > 1:
            ahead = ddim_transfer(z, s, s_next, eps)
            combined = 0.5 * (eps + denoise(ahead, ts[1].expand(z.shape[0])).float())
        else:
            weights, divisor = _ADAMS_BASHFORTH[len(outputs)]
            combined = sum(w * e for w, e in zip(weights, outputs)) * (1 / divisor)
        z = ddim_transfer(z, s, s_next, combined)
        if on_step_end is not None:
            z = on_step_end(i, z)
        if callback is not None:
            callback(i, len(grid))
    return z


def unipc_weights(h: float, ratios: list[float], corrector: bool) -> list[float]:
    """UniPC's weights ρ (Zhao et al. 2023, B(h) = e^{−h} − 1, "bh2") of the divided differences
    D1_j = (D_{s_j} − D_s)/r_j, for a step of size h = λ_t − λ_s in λ = −log σ and the earlier points' ratios
    r_j = (λ_{s_j} − λ_s)/h (``ratios``; the corrector's last point, the new one, has r = 1).

    With g_1 = φ/(−h) − 1, g_{m+1} = g_m/(−h) − 1/(m + 1)!, φ = e^{−h} − 1, the order-k conditions are
    Σ_j ρ_j r_j^{m−1} = g_m m!/B(h), m = 1 … k (the corrector uses all k = len(ratios) + 1 of them, the
    predictor the first k − 1 without the new point). Order 1's corrector and order 2's predictor take
    ρ = ½, as the paper's and diffusers' implementations do."""
    hh = -h
    phi = math.expm1(hh)
    g, factorial, b = phi / hh - 1, 1, []
    for m in range(1, len(ratios) + 2):
        b.append(g * factorial / phi)
        factorial *= m + 1
        g = g / hh - 1 / factorial
    points = ratios + [1.0] if corrector else ratios
    if (corrector and not ratios) or (not corrector and len(ratios) == 1):
        return [0.5]
    if not points:
        return []
    R = torch.tensor([[r ** (m - 1) for r in points] for m in range(1, len(points) + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b[:len(points)], dtype=torch.float64)).tolist()


def _unipc_update(x: Tensor, sigma: float, sigma_next: float, history: list[Tensor], lambdas: list[float],
                  order: int, new: Tensor | None = None) -> Tensor:
    """x at σ' from x at σ by UniP of ``order`` (``new`` None) or UniC of ``order`` with ``new`` = D at σ':

        x' = (σ'/σ) x − φ D_s − B(h) (Σ_j ρ_j D1_j [+ ρ_k (D_new − D_s)]),   φ = B(h) = e^{−h} − 1,

    ``history``: D_s, D_{s_1}, … (newest first) at log-levels ``lambdas``."""
    h = math.log(sigma / sigma_next)
    ratios = [(lambdas[j] - lambdas[0]) / h for j in range(1, order)]
    weights = unipc_weights(h, ratios, corrector=new is not None)
    phi = math.expm1(-h)
    out = (sigma_next / sigma) * x - phi * history[0]
    differences = [(history[j] - history[0]) / ratios[j - 1] for j in range(1, order)]
    if new is not None:
        differences.append(new - history[0])
    for w, d in zip(weights, differences):
        out = out - (phi * w) * d
    return out


@torch.no_grad()
def sample_unipc_grid(denoise: Denoiser, z_T: Tensor, grid: Grid, order: int = 2,
                      callback: Callback | None = None, on_step_end: StepEnd | None = None) -> Tensor:
    """UniPC over ``grid`` in x = z √(1 + σ²), data estimates D_i = x_i − σ_i ε̂(z_i, t_i), λ = −log σ:

        x_i ← UniC(x_{i−1}, D_{i−1}, D_{i−2}, …; D_i)   for i ≥ 1 (the corrector, of the previous step's order)
        x_{i+1} = UniP(x_i, D_i, D_{i−1}, …)             (the predictor, `_unipc_update`)

    of order min(``order``, i + 1, n − i) (a one-step start; the last step first-order), a step to σ = 0
    returning D_i. One denoiser call per step: the corrector of step i reuses the call that gives D_i."""
    sigmas = grid.sigmas
    n = len(grid)
    x = z_T.float() * math.sqrt(1 + sigmas[0] ** 2)
    ts = timestep_tensor(grid.timesteps, x.device)
    history: list[Tensor] = []
    lambdas: list[float] = []
    x_before, used = x, 0
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        eps = denoise(x * (1 / math.sqrt(1 + s**2)), ts[i].expand(x.shape[0]))
        denoised = x - s * eps
        if i > 0:
            x = _unipc_update(x_before, sigmas[i - 1], s, history, lambdas, used, new=denoised)
        history, lambdas = [denoised, *history[:order - 1]], [-math.log(s), *lambdas[:order - 1]]
        used = min(order, len(history), n - i)
        x_before = x
        x = denoised if s_next == 0 else _unipc_update(x, s, s_next, history, lambdas, used)
        if on_step_end is not None:
            x = hand_over(on_step_end, i, x, s_next)
        if callback is not None:
            callback(i, n)
    return x * (1 / math.sqrt(1 + sigmas[-1] ** 2))
