"""Inpainting and uncropping: c = cat(E(x ⊙ (1 − m)), m at latent resolution) is concatenated to z_t,
and the known pixels are put back exactly: out = m ⊙ x̂ + (1 − m) ⊙ x."""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
from PIL import Image

from ldmkit.condition import mean_fill, uncrop_mask
from ldmkit.errors import UsageError
from ldmkit.pipelines.base import ImageInput, Pipeline, diffusers_image, per_image
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call, image_output
from ldmkit.settings import check_prompt_syntax


def _old_mask_keyword(call: Callable) -> Callable:
    """``call`` taking ``mask=``, the mask's earlier name, as diffusers' ``mask_image=`` (with a DeprecationWarning,
    as ldmkit's other earlier names); both is a TypeError."""

    @functools.wraps(call)
    def taking_mask(self, *args, **kwargs):
        if "mask" in kwargs:
            if "mask_image" in kwargs:
                raise TypeError("both mask= and mask_image= given; give mask_image= only")
            warnings.warn("mask= is deprecated: give diffusers' name mask_image= (the old name works until ldmkit 0.2)",
                          DeprecationWarning, stacklevel=2)
            kwargs["mask_image"] = kwargs.pop("mask")
        return call(self, *args, **kwargs)

    return taking_mask


class InpaintingPipeline(Pipeline):
    """``pipe(image, mask_image, prompt)`` repaints where the mask is white (diffusers' call:
    ``pipe(prompt, image=…, mask_image=…)``; ``mask=`` still works, deprecated);
    ``pipe.uncrop(image, side, amount)`` paints beyond a border. Outside the mask the output equals the input, pixel for pixel. A tensor image is read in
    [0, 1], as diffusers reads it (`diffusers_image`); ``num_images_per_prompt`` images per input image."""

    kinds = ("inpaint",)
    generator_lists = True  # diffusers' generator=[…]: image i's z_T from the i-th (`Pipeline.sample_latents`)

    @_old_mask_keyword
    @diffusers_call(inputs=3)
    @torch.inference_mode()
    def __call__(self, image: ImageInput, mask_image: Image.Image | torch.Tensor, prompt: str | list[str] = "",
                 steps: int = 25, guidance: float = 1.0, seed: int | torch.Generator = 0, sampler: str = "ddim",
                 eta: float = 0.0, negative_prompt: str | list[str] = "", progress: bool = False,
                 callback: Callable[[int, int], None] | None = None, start_from_input: bool = True,
                 karras: bool = False, strength: float = 1.0, num_images: int = 1,
                 output_type: str = "pil", prompt_syntax: str = "plain") -> ImagePipelineOutput:
        out = self.generate_tensors(diffusers_image(image), mask_image, prompt, steps, guidance, seed, sampler, eta,
                                    negative_prompt, progress=progress, callback=callback,
                                    start_from_input=start_from_input, karras=karras, strength=strength,
                                    num_images=num_images, prompt_syntax=prompt_syntax)
        return image_output(out, output_type)

    @diffusers_call(inputs=4)
    @torch.inference_mode()
    def uncrop(self, image: ImageInput, side: str = "right", amount: float = 0.5, prompt: str | list[str] = "",
               steps: int = 25, guidance: float = 1.0, seed: int | torch.Generator = 0, sampler: str = "ddim",
               eta: float = 0.0, negative_prompt: str | list[str] = "", progress: bool = False,
               callback: Callable[[int, int], None] | None = None, start_from_input: bool = True,
               output_type: str = "pil", prompt_syntax: str = "plain") -> ImagePipelineOutput:
        """The view moved toward ``side`` by ``amount`` (0 < amount < 1) of the image, the uncovered strip
        painted (see `ldmkit.condition.uncrop_mask`); the output has the input's size. Options as ``__call__``."""
        canvas, mask = uncrop_mask(self.images(diffusers_image(image)), side, amount)
        out = self.generate_tensors(canvas, mask, prompt, steps, guidance, seed, sampler, eta, negative_prompt,
                                    progress=progress, callback=callback, start_from_input=start_from_input,
                                    prompt_syntax=prompt_syntax)
        return image_output(out, output_type)

    @torch.inference_mode()
    def generate_tensors(self, images: torch.Tensor, mask: torch.Tensor, prompt: str | list[str] = "",
                         steps: int = 25, guidance: float = 1.0, seed: int = 0, sampler: str = "ddim",
                         eta: float = 0.0, negative_prompt: str | list[str] = "", blend: bool = True,
                         progress: bool = False,
                         callback: Callable[[int, int], None] | None = None,
                         start_from_input: bool = True, karras: bool = False, strength: float = 1.0,
                         num_images: int = 1, prompt_syntax: str = "plain") -> torch.Tensor:
        """(B·num_images)×3×H×W in [-1, 1] for ``images`` B×3×H×W (a tensor in [-1, 1]) and ``mask`` B×1×H×W
        (1 = repaint), ``num_images`` per input in a row (`per_image`). ``karras``: Karras σ for the sampler's grid.
        ``blend``: out = m ⊙ x̂ + (1 − m) ⊙ x (default), else x̂ = D(z_0) everywhere. ``start_from_input``:
        z_T ~ q(z_T | E(the image with its hole filled with the known pixels' mean colour)) (default), else N(0, I)
        (see `input_start`). ``strength`` s < 1, as diffusers' inpainting: sampling starts from E(x), the input
        itself (what the masked pixels show too), noised to the grid's k-th step, k = n − int(s·n), so the
        repainted pixels keep more of what was there as s → 0 (`Pipeline.check_strength`; it needs
        ``start_from_input``). ``prompt_syntax``: as text-to-image's."""
        self.check_strength(strength, sampler, steps, karras)
        if strength < 1 and not start_from_input:
            raise UsageError(f"strength = {strength} starts from the input image noised part-way; "
                             "start_from_input=False (pure noise, --noise-start) needs strength 1")
        images = self.images(images)
        mask = self.mask(mask, images)
        latent_size = self.latent_size(*images.shape[-2:])
        context, null_context = self.prompt_contexts(prompt, negative_prompt, images.shape[0], num_images,
                                                     check_prompt_syntax(prompt_syntax))
        concat = per_image(self.model.image_condition(images, latent_size, mask), num_images)
        start = self.input_start(mean_fill(images, mask) if strength == 1 else images, start_from_input)
        init_latents = None if start is None else per_image(start, num_images)
        latents = self.sample_latents(context, null_context, latent_size, steps, guidance, seed, sampler, eta,
                                      concat=concat, init_latents=init_latents, strength=strength, progress=progress, callback=callback, karras=karras)
        decoded = self.decode(latents).to(latents.device)
        if blend:
            mask, images = per_image(mask, num_images), per_image(images, num_images)
            decoded = mask * decoded + (1 - mask) * images.float()
        return decoded.cpu()
