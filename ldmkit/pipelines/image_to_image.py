"""Image-to-image (SDEdit, Meng et al. 2022) with a text model: z_0 = E(x) is noised to ``strength``
by q(z_t | z_0) and denoised with a new prompt, so the layout of x survives and the prompt decides the rest."""

from __future__ import annotations

from typing import Callable

import torch

from ldmkit.pipelines.base import ImageInput, Pipeline, diffusers_image, images_of, per_image
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call
from ldmkit.settings import check_prompt_syntax


class ImageToImagePipeline(Pipeline):
    """``pipe(image, "a blue star", strength=0.6)`` → list of PIL images of the input's size,
    ``num_images_per_prompt`` per input image; a tensor input is read in [0, 1], as diffusers reads it
    (`diffusers_image`).

    strength s ∈ (0, 1]: the share of the sampler's steps that run, the last int(s·n) of n (diffusers' rule,
    `start_index`), so s = 1 samples from the noisiest step; an s with which no step runs is refused.
    ``output_type="latent"`` returns z_0 itself; ``generator`` may be a list, one per image (diffusers')."""

    kinds = ("text",)
    output_types = ("pil", "pt", "np", "latent")
    generator_lists = True

    @diffusers_call(inputs=2)
    @torch.inference_mode()
    def __call__(self, image: ImageInput, prompt: str | list[str], strength: float = 0.6,
                 steps: int | None = None, guidance: float | None = None,
                 seed: int | torch.Generator | list[torch.Generator] = 0, sampler: str | None = None,
                 eta: float = 0.0, negative_prompt: str | list[str] | None = "", progress: bool = False,
                 callback: Callable[[int, int], None] | None = None, karras: bool = False,
                 spacing: str | None = None, num_images: int = 1, output_type: str = "pil",
                 prompt_syntax: str = "plain") -> ImagePipelineOutput:
        latents = self.generate_latents(
            diffusers_image(image), prompt, strength, steps, guidance, seed, sampler, eta, negative_prompt, progress,
            callback, karras, spacing, num_images, prompt_syntax)
        return self.latents_output(latents, output_type)

    @torch.inference_mode()
    def generate_latents(self, image: ImageInput, prompt: str | list[str], strength: float = 0.6,
                         steps: int | None = None, guidance: float | None = None,
                         seed: int | torch.Generator | list[torch.Generator] = 0,
                         sampler: str | None = None, eta: float = 0.0,
                         negative_prompt: str | list[str] = "", progress: bool = False,
                         callback: Callable[[int, int], None] | None = None, karras: bool = False,
                         spacing: str | None = None, num_images: int = 1,
                         prompt_syntax: str = "plain") -> torch.Tensor:
        """z_0' (B·num_images)×C×h×w for ``image`` B×3×H×W (a tensor in [-1, 1]), ``num_images`` per input in a
        row (`per_image`; `generate_tensors` gives D(z_0') in [-1, 1]), sampled from
        z_t = √ᾱ_t E(x) + √(1 − ᾱ_t) ε, t the grid's k-th timestep, k = n − int(s·n) (``karras``, ``spacing``:
        the grid, as `Pipeline.sample_latents`).
        ``strength`` is checked first (`Pipeline.check_strength`); ``prompt_syntax``: as text-to-image's."""
        self.check_strength(strength, sampler, steps, karras, spacing)
        images = self.images(image)
        latent_size = self.latent_size(*images.shape[-2:])
        context, null_context = self.prompt_contexts(prompt, negative_prompt, images.shape[0], num_images,
                                                     check_prompt_syntax(prompt_syntax))
        return self.sample_latents(context, null_context, latent_size, steps, guidance, seed, sampler, eta,
                                   init_latents=per_image(self.model.encode_images(images), num_images),
                                   strength=strength, progress=progress, callback=callback, karras=karras,
                                   spacing=spacing)

    generate_tensors = images_of(generate_latents)
