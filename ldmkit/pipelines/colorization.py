"""Colorization: the latent of the grayscale image, E(gray(x)), is concatenated to z_t."""

from __future__ import annotations

from typing import Callable

import torch

from ldmkit.condition import grayscale
from ldmkit.pipelines.base import ImageConditionedPipeline, ImageInput, per_image
from ldmkit.settings import check_prompt_syntax


class ColorizationPipeline(ImageConditionedPipeline):
    """``pipe(image)`` → list of PIL colour images of the same size; a colour input is turned grey first
    (Y = 0.299 R + 0.587 G + 0.114 B), so only its luma is used."""

    kinds = ("colorize",)

    @torch.inference_mode()
    def generate_tensors(self, image: ImageInput, prompt: str | list[str] = "", steps: int = 25,
                         guidance: float = 1.0, seed: int = 0, sampler: str = "ddim", eta: float = 0.0,
                         negative_prompt: str | list[str] = "", progress: bool = False,
                         callback: Callable[[int, int], None] | None = None,
                         start_from_input: bool = True, num_images: int = 1,
                         prompt_syntax: str = "plain") -> torch.Tensor:
        """(B·num_images)×3×H×W in [-1, 1] for ``image`` B×3×H×W (a tensor in [-1, 1]), ``num_images`` per input
        in a row (`per_image`); c = scale · E(gray(x)). ``start_from_input``: z_T ~ q(z_T | E(gray(x)))
        (default), else N(0, I) (see `input_start`). ``prompt_syntax``: as text-to-image's."""
        gray = grayscale(self.images(image))
        latent_size = self.latent_size(*gray.shape[-2:])
        context, null_context = self.prompt_contexts(prompt, negative_prompt, gray.shape[0], num_images,
                                                     check_prompt_syntax(prompt_syntax))
        gray = per_image(gray, num_images)
        concat = self.model.image_condition(gray, latent_size)  # c = scale · E(gray), also the start's z_0
        latents = self.sample_latents(context, null_context, latent_size, steps, guidance, seed, sampler, eta,
                                      concat=concat, init_latents=concat if start_from_input else None,
                                      progress=progress, callback=callback)
        return self.decode(latents)
