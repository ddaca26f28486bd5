"""DDIM inversion and null-text inversion (Mokady et al. 2022): the z_T (and the unconditional contexts)
from which deterministic DDIM sampling gives back a given z_0.

The DDIM sampler with η = 0 steps t → t' along

    z_t' = √ᾱ_t' ẑ_0 + √(1 − ᾱ_t') ε̂(z_t, t),   ẑ_0 = (z_t − √(1 − ᾱ_t) ε̂(z_t, t)) / √ᾱ_t.

**DDIM inversion** runs it backwards, t' → t over the same timesteps from z_0 up, with ε̂ evaluated at
the point it starts from (z_t' at timestep t, the approximation ε̂(z_t, t) ≈ ε̂(z_t', t) that makes the
step explicit), with the conditional ε̂ alone (guidance 1). Sampled back with guidance s > 1 the path
drifts away; **null-text inversion** keeps it on the inverted path z*_{t_0}, …, z*_{t_n} = z_0 by
optimising, at each sampler step i, the unconditional context ∅_i (starting from ∅_{i−1}, ∅_{−1} = τθ("")):

    min_{∅_i} ‖z*_{t_{i+1}} − DDIM(z̄_{t_i}, ε̃(∅_i))‖²,   ε̃ = ε̂(z̄, t, ∅_i) + s (ε̂(z̄, t, y) − ε̂(z̄, t, ∅_i)),

with Adam (``inner_steps`` iterations, learning rate 10⁻² (1 − i/2n), stopping early once the loss is below
10⁻⁵ (1 + 2i)), then z̄_{t_{i+1}} = DDIM(z̄_{t_i}, ε̃(∅_i)), z̄_{t_0} = z*_{t_0}. Sampling with the per-step ∅_i
then reconstructs z_0 closely.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.grids import spaced_timesteps
from ldmkit.diffusion.schedule import NoiseSchedule, eps_from_v

ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _alphas(schedule: NoiseSchedule, num_steps: int, spacing: str) -> tuple[list[int], list[float]]:
    """The sampler's timesteps t_0 > … > t_{n−1} and ᾱ at each, with ᾱ of where the last step lands appended
    (1 for trailing spacing, ᾱ_0 for leading, as `sample_ddim`)."""
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, spacing)
    ac = schedule.alphas_cumprod.double().tolist()
    return timesteps, [ac[t] for t in timesteps] + [1.0 if spacing == "trailing" else ac[0]]


def _eps(model_fn: ModelFn, z: Tensor, t: int, context: Tensor, prediction: str, schedule: NoiseSchedule) -> Tensor:
    t_batch = torch.full((z.shape[0],), t, dtype=torch.int64, device=z.device)
    out = model_fn(z, t_batch, context).float()
    return out if prediction == "epsilon" else eps_from_v(schedule.to(z.device), z, t_batch, out)


def ddim_step(z: Tensor, eps: Tensor, a_from: float, a_to: float) -> Tensor:
    """z at ᾱ = a_to from z at ᾱ = a_from along ε: √a_to ẑ_0 + √(1 − a_to) ε (either direction)."""
    z0 = (z - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
    return math.sqrt(a_to) * z0 + math.sqrt(1 - a_to) * eps


@torch.no_grad()
def ddim_inversion(model_fn: ModelFn, z_0: Tensor, context: Tensor, schedule: NoiseSchedule, num_steps: int,
                   prediction: str = "epsilon", spacing: str = "trailing") -> list[Tensor]:
    """The inverted path [z*_{t_0}, …, z*_{t_{n−1}}, z_0] in the sampler's order (z*_{t_0} is the z_T to
    sample from), conditional ε̂ on ``context`` only."""
    _, alphas = _alphas(schedule, num_steps, spacing)
    timesteps = spaced_timesteps(schedule.num_timesteps, num_steps, spacing)
    path = [z_0.float()]
    z = z_0.float()
    for i in reversed(range(num_steps)):  # ᾱ of step i+1's landing point → ᾱ_{t_i}
        eps = _eps(model_fn, z, timesteps[i], context, prediction, schedule)
        z = ddim_step(z, eps, alphas[i + 1], alphas[i])
        path.append(z)
    return path[::-1]


def null_text_optimization(model_fn: ModelFn, path: list[Tensor], context: Tensor, null_context: Tensor,
                           schedule: NoiseSchedule, guidance_scale: float, prediction: str = "epsilon",
                           spacing: str = "trailing", inner_steps: int = 10, lr: float = 1e-2,
                           tolerance: float = 1e-5,
                           callback: Callable[[int, int], None] | None = None) -> Tensor:
    """The unconditional contexts ∅_0 … ∅_{n−1}, float32[n, B, L, d], that keep guided DDIM sampling on
    ``path`` (from `ddim_inversion`, n + 1 latents); ``null_context`` (1×L×d or B×L×d) is where ∅ starts."""
    num_steps = len(path) - 1
    timesteps, alphas = _alphas(schedule, num_steps, spacing)
    batch = path[0].shape[0]
    null = null_context.detach().float().expand(batch, *null_context.shape[1:]).clone()
    contexts = []
    z = path[0]
    for i in range(num_steps):
        t, a_t, a_next = timesteps[i], alphas[i], alphas[i + 1]
        with torch.no_grad():
            eps_cond = _eps(model_fn, z, t, context, prediction, schedule)
        null = null.detach().clone().requires_grad_(True)  # a new tensor: Adam's in-place steps must not reach ∅_{i−1}
        optimizer = torch.optim.Adam([null], lr=lr * (1 - i / (2 * num_steps)))
        for _ in range(inner_steps):
            with torch.enable_grad():
                eps_uncond = _eps(model_fn, z, t, null, prediction, schedule)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                loss = torch.nn.functional.mse_loss(ddim_step(z, eps, a_t, a_next), path[i + 1])
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            if loss.item() < tolerance * (1 + 2 * i):
                break
        null = null.detach()
        contexts.append(null)
        with torch.no_grad():
            eps_uncond = _eps(model_fn, z, t, null, prediction, schedule)
            z = ddim_step(z, eps_uncond + guidance_scale * (eps_cond - eps_uncond), a_t, a_next)
        if callback is not None:
            callback(i, num_steps)
    return torch.stack(contexts)
