"""Super-resolution (SR3/SRDiff-style, in latent space): the low-resolution image x_LR, resized to the
latent grid, is concatenated to z_t; the output is ``sr_factor`` times larger on each side."""

from __future__ import annotations

from typing import Callable

import torch

from ldmkit.condition import resize_to
from ldmkit.pipelines.base import ImageConditionedPipeline, ImageInput, per_image
from ldmkit.settings import check_prompt_syntax


class SuperResolutionPipeline(ImageConditionedPipeline):
    """``pipe(low_res_image)`` → list of PIL images, ``factor`` times larger (×4 on shapes: 16 → 64 px)."""

    kinds = ("sr",)

    @property
    def factor(self) -> int:
        return self.model.config.condition.sr_factor

    @torch.inference_mode()
    def generate_tensors(self, image: ImageInput, prompt: str | list[str] = "", steps: int = 25,
                         guidance: float = 1.0, seed: int = 0, sampler: str = "ddim", eta: float = 0.0,
                         negative_prompt: str | list[str] = "", progress: bool = False,
                         callback: Callable[[int, int], None] | None = None,
                         start_from_input: bool = True, num_images: int = 1,
                         prompt_syntax: str = "plain") -> torch.Tensor:
        """(B·num_images)×3×(factor·H)×(factor·W) in [-1, 1] for low-resolution ``image`` B×3×H×W (a tensor in
        [-1, 1]), ``num_images`` per input in a row (`per_image`); c = resize(x_LR, h×w).
        The prompt (a caption, optional) is guided with scale ``guidance``; with s = 1 only c guides.
        ``start_from_input``: z_T ~ q(z_T | E(bicubic(x_LR))) (default), else N(0, I) (see `input_start`).
        ``prompt_syntax``: as text-to-image's."""
        low_res = self.images(image, "low-resolution image")
        latent_size = self.latent_size(*low_res.shape[-2:], self.factor)  # its message names the input's size
        height, width = low_res.shape[-2] * self.factor, low_res.shape[-1] * self.factor
        context, null_context = self.prompt_contexts(prompt, negative_prompt, low_res.shape[0], num_images,
                                                     check_prompt_syntax(prompt_syntax))
        low_res = per_image(low_res, num_images)
        concat = self.model.image_condition(low_res, latent_size)
        start = self.input_start(resize_to(low_res, height, width).clamp(-1, 1), start_from_input)
        latents = self.sample_latents(context, null_context, latent_size, steps, guidance, seed, sampler, eta,
                                      concat=concat, init_latents=start, progress=progress, callback=callback)
        return self.decode(latents)
