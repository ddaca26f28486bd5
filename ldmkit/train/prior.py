"""Prior preservation for `ldmkit finetune`: what the batches hold and what the prior images are trained toward.

With N prior images (the model's own drawings of ``--prior-prompt`` captions, `ldmkit.train.finetune`), each batch
of B is DreamBooth's split: ⌈B/2⌉ new images and ⌊B/2⌋ prior images, each set in its own resumable order
(`batch_order`), so that the two halves weigh the same in the loss however many prior images there are.

The prior half's target is, by ``prior_loss``:

- ``"images"`` (DreamBooth): the noise, as for the new images, L_prior = ‖ε − ε_θ'(z_t, t, c)‖²;
- ``"model"``: the frozen model's own prediction on the same z_t, L_prior = ‖ε_θ(z_t, t, c) − ε_θ'(z_t, t, c)‖²,
  θ' the model with its LoRA adapters and θ without them (`frozen_prediction`). At the start it is exactly 0
  (B = 0) and it grows only where the adapters change what the model draws for the prior captions, at every
  noise level, not only along the few prior images' own noise.

With ``"model"`` the total is L = ½ (mean over the new half) + ½ λ (mean over the prior half) (`split_loss`); with
``"images"`` the plain mean over the batch (the same for an even B and λ = 1), or the same split where λ ≠ 1
(`halves`). λ is ``prior_loss_weight`` (DreamBooth's and diffusers' name; default 1): above 1 the prior pulls harder
against forgetting, below 1 the new images weigh more.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from ldmkit.diffusion.schedule import NoiseSchedule, q_sample, v_target
from ldmkit.nn import lora
from ldmkit.train.common import ResumableBatchSampler

PRIOR_LOSSES = ("images", "model")


def batch_order(new_images: int, prior_images: int, batch_size: int, seed: int, start: int,
                total: int) -> Iterable[list[tuple[int, int]]]:
    """The (position, index) items of steps ``start`` … ``total`` − 1: ``batch_size`` of the new images without prior
    images; with them, the new half first, then the prior half (indices ``new_images`` …)."""
    if not prior_images:
        return ResumableBatchSampler(new_images, batch_size, seed, start, total)
    half = batch_size // 2
    new = ResumableBatchSampler(new_images, batch_size - half, seed, start, total)
    prior = ResumableBatchSampler(prior_images, half, seed + 1, start, total)
    return ([*a, *((pos, new_images + i) for pos, i in b)] for a, b in zip(new, prior))


def frozen_prediction(unet: nn.Module, adapter: str, z_t: Tensor, t: Tensor, context: Tensor) -> Tensor:
    """ε_θ(z_t, t, c) (float32, no gradient): ``unet`` with its LoRA ``adapter`` switched off, its scales restored
    afterwards. Whatever the model predicts (ε or v), so the prior holds for either parameterisation."""
    scales = {name: layer.scale[adapter] for name, layer in lora.lora_layers(unet).items() if adapter in layer.scale}
    with torch.no_grad():
        lora.set_scale(unet, adapter, 0.0)
        try:
            return unet(z_t, t, context).float()
        finally:
            for name, layer in lora.lora_layers(unet).items():
                if name in scales:
                    layer.scale[adapter] = scales[name]


def halves(row_loss: Tensor, new: int, prior_weight: float = 1.0) -> Tensor:
    """L = ½ mean(row_loss[:new]) + ½ λ mean(row_loss[new:]), λ = ``prior_weight``: the new half and the prior half
    of a batch weighed as DreamBooth weighs them, whatever their sizes."""
    return 0.5 * row_loss[:new].mean() + 0.5 * prior_weight * row_loss[new:].mean()


def split_loss(unet: nn.Module, adapter: str, z_0: Tensor, t: Tensor, noise: Tensor, context: Tensor,
               schedule: NoiseSchedule, prediction: str, new: int, prior_weight: float = 1.0) -> Tensor:
    """L = ½ mean over the first ``new`` rows of ‖target − ε_θ'(z_t, t, c)‖² (target ε or v) + ½ λ mean over the
    rest of ‖ε_θ(z_t, t, c) − ε_θ'(z_t, t, c)‖² (the prior half, λ = ``prior_weight``), z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε; θ' is ``unet`` with its
    LoRA ``adapter``, θ the same with it off (`frozen_prediction`). One adapted pass over the whole batch, one frozen
    pass over the prior rows."""
    z_t = q_sample(schedule, z_0.float(), t, noise)
    target = noise[:new] if prediction == "epsilon" else v_target(schedule, z_0[:new].float(), t[:new], noise[:new])
    target = torch.cat([target.float(), frozen_prediction(unet, adapter, z_t[new:], t[new:], context[new:])])
    error = (unet(z_t, t, context).float() - target).pow(2)
    return halves(error.flatten(1).mean(1), new, prior_weight)
