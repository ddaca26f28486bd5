"""Image-to-image (SDEdit, Meng et al. 2022) with a text model: z_0 = E(x) is noised to ``strength``
by q(z_t | z_0) and denoised with a new prompt, so the layout of x survives and the prompt decides the rest."""

from __future__ import annotations

from typing import Callable

import torch

from ldmkit.pipelines.base import ImageInput, Pipeline, diffusers_image, per_image
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call, image_output
from ldmkit.settings import DEFAULT_GUIDANCE, check_prompt_syntax


class ImageToImagePipeline(Pipeline):
    """``pipe(image, "a blue star", strength=0.6)`` → list of PIL images of the input's size,
    ``num_images_per_prompt`` per input image; a tensor input is read in [0, 1], as diffusers reads it
    (`diffusers_image`).

    strength s ∈ (0, 1]: the share of the sampler's steps that run, the last int(s·n) of n (diffusers' rule,
    `start_index`), so s = 1 samples from the noisiest step; an s with which no step runs is refused."""

    kinds = ("text",)

    @diffusers_call(inputs=2)
    @torch.inference_mode()
    def __call__(self, image: ImageInput, prompt: str | list[str], strength: float = 0.6,
                 steps: int | None = None, guidance: float = DEFAULT_GUIDANCE, seed: int | torch.Generator = 0,
                 sampler: str | None = None, eta: float = 0.0, negative_prompt: str | list[str] = "",
                 progress: bool = False,
                 callback: Callable[[int, int], None] | None = None, karras: bool = False,
                 spacing: str | None = None, num_images: int = 1, output_type: str = "pil",
                 prompt_syntax: str = "plain") -> ImagePipelineOutput:
        return image_output(self.generate_tensors(
            diffusers_image(image), prompt, strength, steps, guidance, seed, sampler, eta, negative_prompt, progress,
            callback, karras, spacing, num_images, prompt_syntax), output_type)

    @torch.inference_mode()
    def generate_tensors(self, image: ImageInput, prompt: str | list[str], strength: float = 0.6,
                         steps: int | None = None, guidance: float = DEFAULT_GUIDANCE, seed: int = 0,
                         sampler: str | None = None, eta: float = 0.0,
                         negative_prompt: str | list[str] = "", progress: bool = False,
                         callback: Callable[[int, int], None] | None = None, karras: bool = False,
                         spacing: str | None = None, num_images: int = 1,
                         prompt_syntax: str = "plain") -> torch.Tensor:
        """(B·num_images)×3×H×W in [-1, 1] for ``image`` B×3×H×W (a tensor in [-1, 1]), ``num_images`` per input
        in a row (`per_image`): D(z_0') with z_0' sampled from z_t = √ᾱ_t E(x) + √(1 − ᾱ_t) ε, t the grid's
        k-th timestep, k = n − int(s·n) (``karras``, ``spacing``: the grid, as `Pipeline.sample_latents`).
        ``strength`` is checked first (`Pipeline.check_strength`); ``prompt_syntax``: as text-to-image's."""
        self.check_strength(strength, sampler, steps, karras, spacing)
        images = self.images(image)
        latent_size = self.latent_size(*images.shape[-2:])
        context, null_context = self.prompt_contexts(prompt, negative_prompt, images.shape[0], num_images,
                                                     check_prompt_syntax(prompt_syntax))
        latents = self.sample_latents(context, null_context, latent_size, steps, guidance, seed, sampler, eta,
                                      init_latents=per_image(self.model.encode_images(images), num_images),
                                      strength=strength, progress=progress, callback=callback, karras=karras,
                                      spacing=spacing)
        return self.decode(latents)
