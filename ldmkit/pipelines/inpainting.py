"""Inpainting and uncropping: c = cat(E(x ⊙ (1 − m)), m at latent resolution) is concatenated to z_t,
and the known pixels are put back exactly: out = m ⊙ x̂ + (1 − m) ⊙ x."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from ldmkit.condition import mean_fill, uncrop_mask
from ldmkit.pipelines.base import ImageInput, Pipeline
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call, image_output


class InpaintingPipeline(Pipeline):
    """``pipe(image, mask, prompt)`` repaints where the mask is white; ``pipe.uncrop(image, side, amount)``
    paints beyond a border. Outside the mask the output equals the input, pixel for pixel."""

    kinds = ("inpaint",)

    @diffusers_call(inputs=3)
    @torch.inference_mode()
    def __call__(self, image: ImageInput, mask: Image.Image | torch.Tensor, prompt: str | list[str] = "",
                 steps: int = 25, guidance: float = 1.0, seed: int | torch.Generator = 0, sampler: str = "ddim",
                 eta: float = 0.0, negative_prompt: str | list[str] = "", progress: bool = False,
                 callback: Callable[[int, int], None] | None = None, start_from_input: bool = True,
                 karras: bool = False, output_type: str = "pil") -> ImagePipelineOutput:
        images = self.images(image)
        out = self.generate_tensors(images, self.mask(mask, images), prompt, steps, guidance, seed, sampler, eta,
                                    negative_prompt, progress=progress, callback=callback,
                                    start_from_input=start_from_input, karras=karras)
        return image_output(out, output_type)

    @diffusers_call(inputs=4)
    @torch.inference_mode()
    def uncrop(self, image: ImageInput, side: str = "right", amount: float = 0.5, prompt: str | list[str] = "",
               steps: int = 25, guidance: float = 1.0, seed: int | torch.Generator = 0, sampler: str = "ddim",
               eta: float = 0.0, negative_prompt: str | list[str] = "", progress: bool = False,
               callback: Callable[[int, int], None] | None = None, start_from_input: bool = True,
               output_type: str = "pil") -> ImagePipelineOutput:
        """The view moved toward ``side`` by ``amount`` (0 < amount < 1) of the image, the uncovered strip
        painted (see `ldmkit.condition.uncrop_mask`); the output has the input's size. Options as ``__call__``."""
        canvas, mask = uncrop_mask(self.images(image), side, amount)
        out = self.generate_tensors(canvas, mask, prompt, steps, guidance, seed, sampler, eta, negative_prompt,
                                    progress=progress, callback=callback, start_from_input=start_from_input)
        return image_output(out, output_type)

    @torch.inference_mode()
    def generate_tensors(self, images: torch.Tensor, mask: torch.Tensor, prompt: str | list[str] = "",
                         steps: int = 25, guidance: float = 1.0, seed: int = 0, sampler: str = "ddim",
                         eta: float = 0.0, negative_prompt: str | list[str] = "", blend: bool = True,
                         progress: bool = False,
                         callback: Callable[[int, int], None] | None = None,
                         start_from_input: bool = True, karras: bool = False) -> torch.Tensor:
        """B×3×H×W in [-1, 1] for ``images`` B×3×H×W and ``mask`` B×1×H×W (1 = repaint). ``karras``: Karras σ
        for the sampler's grid. ``blend``:
        out = m ⊙ x̂ + (1 − m) ⊙ x (default), else x̂ = D(z_0) everywhere. ``start_from_input``:
        z_T ~ q(z_T | E(the image with its hole filled with the known pixels' mean colour)) (default),
        else N(0, I) (see `input_start`)."""
        images = self.images(images)
        mask = self.mask(mask, images)
        latent_size = self.latent_size(*images.shape[-2:])
        context, null_context = self.prompt_contexts(prompt, negative_prompt, images.shape[0])
        concat = self.model.image_condition(images, latent_size, mask)
        start = self.input_start(mean_fill(images, mask), start_from_input)
        latents = self.sample_latents(context, null_context, latent_size, steps, guidance, seed, sampler, eta,
                                      concat=concat, init_latents=start, progress=progress, callback=callback,
                                      karras=karras)
        decoded = self.decode(latents).to(latents.device)
        if blend:
            decoded = mask * decoded + (1 - mask) * images.float()
        return decoded.cpu()
