"""Prompt-to-Prompt editing (Hertz et al. 2022) with a text model: the source prompt and the edited prompt
sampled side by side from one z_T, the edit's attention taken from the source for the first steps
(`ldmkit.diffusion.prompt_to_prompt`); or a real image, DDIM-inverted under its prompt (optionally with
null-text inversion, `ldmkit.diffusion.inversion`), edited from its inverted z_T.

Sampling is deterministic DDIM (η = 0), the sampler Prompt-to-Prompt and the inversion are defined for,
one step at a time (`sample_ddim` with ``start``/``stop``) so that local blend can set the latents between steps.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ldmkit.diffusion import DEFAULT_SPACING, guided_denoiser, sample_ddim
from ldmkit.diffusion.inversion import ddim_inversion, null_text_optimization
from ldmkit.diffusion.prompt_to_prompt import (
    AttentionController,
    PromptEditError,
    align,
    blend_selections,
    controlling,
    parse_weights,
)
from ldmkit.errors import UsageError
from ldmkit.pipelines.base import ImageInput, Pipeline, diffusers_image, prompt_list
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call, image_output
from ldmkit.progress import tqdm
from ldmkit.settings import DEFAULT_GUIDANCE, check_steps

LatentsCallback = Callable[[int, torch.Tensor, "torch.Tensor | None"], None]
DEFAULT_STEPS = 25  # an edit's DDIM steps when none are given, text-to-image's


@dataclass
class Inversion:
    """A real image's inversion under its prompt: ``latents`` z*_{t_0} (the z_T to sample from), float32[B, C, h, w];
    ``null_contexts`` the per-step unconditional contexts ∅_0 … ∅_{n−1}, float32[n, B, L, d], or None
    (plain DDIM inversion: τθ(""), the model's own); ``steps``, ``guidance`` and ``spacing`` it was made for."""

    latents: torch.Tensor
    null_contexts: torch.Tensor | None
    steps: int
    guidance: float
    spacing: str


class EditOutput(ImagePipelineOutput):
    """``source_images`` (the source prompt's samples, or the inversion's reconstructions) and
    ``edited_images``, one pair per row, in the call's ``output_type`` (`ldmkit.pipelines.calling.image_output`);
    ``images``: each source followed by its edit, as diffusers' Prompt-to-Prompt pipeline lists one image per
    prompt of ``[source, target]``. As every pipeline's output (`ImagePipelineOutput`), the output is also the
    list of its ``images``: ``out[0]`` the first source, ``out[1]`` its edit."""

    def __init__(self, source_images: list[Image.Image] | torch.Tensor | np.ndarray,
                 edited_images: list[Image.Image] | torch.Tensor | np.ndarray):
        self.source_images, self.edited_images = source_images, edited_images
        pairs = [image for pair in zip(source_images, edited_images) for image in pair]
        if not isinstance(source_images, list):
            pairs = (torch.stack if isinstance(source_images, torch.Tensor) else np.stack)(pairs)
        super().__init__(pairs)


class PromptToPromptPipeline(Pipeline):
    """``pipe("a red circle", "a blue circle", mode="replace")`` → `EditOutput`.

    ``mode``: replace (swap words one for one), refine (add words) or reweight (scale the attention of
    the words weighted in the target prompt, "a red(2) circle"); ``cross_replace_steps`` and
    ``self_replace_steps``: the fractions of the steps during which the edit takes the source's
    cross- and self-attention; ``local_blend_words``: confine the change to where these words attend
    (one list for every pair, or one list per pair). ``image``: edit a real image instead (one per
    source prompt), inverted with null-text inversion unless ``null_text=False``. ``spacing`` None: the DDIM grid
    `TextToImagePipeline` samples this model on (`ddim_grid`), so that equal prompts give its image (up to float
    rounding). The output is an `EditOutput`.
    """

    kinds = ("text",)

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                    prediction: str | None = None, precision: str = "fp32") -> "PromptToPromptPipeline":
        """An ldmkit text model folder, a Stable Diffusion single file or a diffusers folder (`LatentDiffusion.load`)."""
        return super().from_folder(folder, device, ema=ema, prediction=prediction, precision=precision)

    @diffusers_call(inputs=2)
    def __call__(self, source_prompt: str | list[str], target_prompt: str | list[str], mode: str = "replace",
                 cross_replace_steps: float = 0.8, self_replace_steps: float = 0.4,
                 local_blend_words: Sequence[str] | Sequence[Sequence[str]] | None = None,
                 blend_threshold: float = 0.3, image: ImageInput | None = None, null_text: bool = True,
                 steps: int | None = None, guidance: float | None = None, seed: int | torch.Generator = 0,
                 num_images: int = 1, spacing: str | None = None, height: int | None = None, width: int | None = None,
                 progress: bool = False, callback: Callable[[int, int], None] | None = None,
                 latents: torch.Tensor | None = None, output_type: str = "pil") -> EditOutput:
        """`edit_tensors`' pairs as ``output_type`` asks, under diffusers' names (`ldmkit.pipelines.calling`:
        num_inference_steps, guidance_scale, num_images_per_prompt, generator; None: 25 steps, guidance 4, as
        text-to-image's); an ``image`` tensor is read in [0, 1], as diffusers reads it and ``output_type="pt"``
        returns it (`diffusers_image`; `edit_tensors` and `invert` read [-1, 1])."""
        source, edited = self.edit_tensors(
            source_prompt, target_prompt, mode, cross_replace_steps, self_replace_steps, local_blend_words,
            blend_threshold, diffusers_image(image), null_text, steps, guidance, seed, num_images, spacing, height,
            width, progress, callback, latents=latents)
        return EditOutput(image_output(source, output_type).images, image_output(edited, output_type).images)

    # ---------------------------------------------------------------------------------------------

    def controller(self, source_prompts: list[str], target_prompts: list[str], mode: str, steps: int,
                   cross_replace_steps: float, self_replace_steps: float,
                   local_blend_words: list[Sequence[str]] | None, blend_threshold: float,
                   latent_hw: tuple[int, int]) -> AttentionController:
        """The `AttentionController` of the pairs (checks that every pair aligns for ``mode``)."""
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            raise UsageError("Prompt-to-Prompt needs a text model")
        alignments = [align(tokenizer, s, t, mode) for s, t in zip(source_prompts, target_prompts)]
        blend = None
        if local_blend_words is not None:
            selections = [blend_selections(tokenizer, s, t, list(w))
                          for s, t, w in zip(source_prompts, target_prompts, local_blend_words)]
            blend = (torch.stack([s for s, _ in selections]), torch.stack([t for _, t in selections]))
        return AttentionController(alignments, steps, cross_replace_steps, self_replace_steps, blend=blend,
                                   blend_threshold=blend_threshold, latent_hw=latent_hw)

    @torch.no_grad()
    def edit_tensors(self, source_prompt: str | list[str], target_prompt: str | list[str], mode: str = "replace",
                     cross_replace_steps: float = 0.8, self_replace_steps: float = 0.4,
                     local_blend_words: Sequence[str] | Sequence[Sequence[str]] | None = None,
                     blend_threshold: float = 0.3, image: ImageInput | Inversion | None = None,
                     null_text: bool = True, steps: int | None = None, guidance: float | None = None,
                     seed: int | torch.Generator = 0, num_images: int = 1, spacing: str | None = None,
                     height: int | None = None, width: int | None = None, progress: bool = False,
                     callback: Callable[[int, int], None] | None = None,
                     latents_callback: LatentsCallback | None = None,
                     latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(source images, edited images), each B×3×H×W in [-1, 1] with B = pairs × ``num_images``; ``steps`` and
        ``guidance`` None: `DEFAULT_STEPS` and `DEFAULT_GUIDANCE`.

        From noise, z_T is drawn as `TextToImagePipeline` draws it for the source prompts with the same
        seed, and the steps run on the grid it samples with by default (`ddim_grid`), so with equal prompts both
        rows are its plain sample up to float rounding (the batch differs, and a controlled attention layer
        computes softmax(Q Kᵀ / √d) itself rather than with the fused kernel); ``latents`` gives z_T instead
        (float32[B, C, h, w], one row per pair and image, as diffusers' ``latents``). ``image`` (or an `Inversion`
        made earlier by `invert` with the same steps, guidance and spacing) starts from its inverted z_T.
        ``latents_callback(i, latents, mask)`` sees the [source; edited] latents after step i and the
        local-blend mask B float32[pairs × num_images, 1, h, w] applied there (None without local blend).
        """
        if self.is_student:
            raise UsageError("Prompt-to-Prompt samples with DDIM and classifier-free guidance; a consistency student "
                             "(made by `ldmkit distill`) has neither: edit with its teacher")
        sources, targets = prompt_list(source_prompt, "source_prompt"), prompt_list(target_prompt, "target_prompt")
        if len(sources) != len(targets):
            raise UsageError(f"{len(sources)} source prompts but {len(targets)} target prompts; give one target per source")
        if num_images < 1:
            raise UsageError(f"num_images must be at least 1, got {num_images}")
        steps, guidance = edit_defaults(steps, guidance)
        if steps < 1:
            raise UsageError(f"steps must be at least 1, got {steps}")
        check_steps(steps, self.model.schedule.num_timesteps)
        check_edit_guidance(guidance)
        grid = self.ddim_grid(spacing)
        blend_words = _per_pair(local_blend_words, len(sources))
        model = self.model
        size = model.config.image_size
        latent_hw = self.latent_size(height or size, width or size)
        inversion = None
        if image is not None:
            if num_images != 1:
                raise UsageError(f"num_images_per_prompt = {num_images} with an image; a real image is edited "
                                 "once: num_images_per_prompt must be 1")
            if isinstance(image, Inversion):
                inversion = image
                check_inversion_fits(inversion, steps, guidance, grid["spacing"])
                if inversion.latents.shape[0] != len(sources):
                    raise UsageError(f"the inversion holds {inversion.latents.shape[0]} images for {len(sources)} "
                                     "source prompts; give one image per prompt")
            else:
                images = self.checked_images(image, height or size, width or size)
                if images.shape[0] != len(sources):
                    raise UsageError(f"{images.shape[0]} images for {len(sources)} source prompts; give one image per prompt")
                # alignment errors before the minutes an inversion takes
                self.controller(sources, targets, mode, steps, cross_replace_steps, self_replace_steps,
                                blend_words, blend_threshold, latent_hw)
                inversion = self.invert(images, sources, num_inference_steps=steps, guidance_scale=guidance,
                                        null_text=null_text, spacing=spacing, progress=progress)
            latent_hw = tuple(inversion.latents.shape[-2:])
            grid = {**grid, "steps_offset": None}  # the grid the inversion stepped on (`ddim_inversion`: offset 1)
        sources = [p for p in sources for _ in range(num_images)]
        targets = [p for p in targets for _ in range(num_images)]
        if blend_words is not None:
            blend_words = [w for w in blend_words for _ in range(num_images)]
        control = self.controller(sources, targets, mode, steps, cross_replace_steps, self_replace_steps,
                                  blend_words, blend_threshold, latent_hw)
        if inversion is not None:
            z_T = inversion.latents.to(self.device)
        elif latents is not None:
            expected = (len(sources), model.config.unet.out_channels, *latent_hw)
            if tuple(latents.shape) != expected:
                raise UsageError(f"latents of shape {tuple(latents.shape)}; this edit needs {expected}")
            z_T = latents.float().to(self.device)
        else:
            shape = (len(sources), model.config.unet.out_channels, *latent_hw)
            generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
            z_T = torch.randn(shape, generator=generator).to(self.device)
        context = self.encode(sources + [parse_weights(t)[0] for t in targets])
        null_contexts = None if inversion is None or inversion.null_contexts is None else inversion.null_contexts
        z_0 = self.sample_edit(z_T, context, control, steps, guidance, grid, null_contexts, progress, callback,
                               latents_callback)
        images = self.decode(z_0)
        return images[: len(sources)], images[len(sources):]

    def sample_edit(self, z_T: torch.Tensor, context: torch.Tensor, control: AttentionController, steps: int,
                    guidance: float, grid: dict, null_contexts: torch.Tensor | None = None,
                    progress: bool = False, callback: Callable[[int, int], None] | None = None,
                    latents_callback: LatentsCallback | None = None) -> torch.Tensor:
        """z_0 of the [source; edited] batch (``context`` 2n×L×d) from z_T (n rows) under ``control``, with
        local blend after every step, on the DDIM grid ``grid`` (`ddim_grid`); ``null_contexts`` [steps, n, L, d]
        replaces τθ("") step by step."""
        model = self.model
        unet = self.unet_fn()
        null = self.encode_null("")
        z = torch.cat([z_T, z_T]).float()
        with controlling(model.unet, control), tqdm(total=steps, desc="editing", leave=False,
                                                     disable=not progress) as bar:
            for i in range(steps):
                step_null = null if null_contexts is None else null_contexts[i].to(self.device).repeat(2, 1, 1)
                denoise = guided_denoiser(unet, context, step_null, guidance, model.config.diffusion.prediction,
                                          model.schedule)
                control.set_step(i)
                z = sample_ddim(denoise, z, model.schedule, steps, start=i, stop=i + 1, **grid)
                z, mask = control.apply_blend(z)
                bar.update(1)
                if latents_callback is not None:
                    latents_callback(i, z, mask)
                if callback is not None:
                    callback(i, steps)
        return z

    def ddim_grid(self, spacing: str | None = None) -> dict:
        """`sample_ddim`'s grid keywords for an edit: ``spacing`` as given; None: the grid `TextToImagePipeline`
        samples this model on with DDIM, its default (`Pipeline.grid_options`: a diffusers folder's scheduler config,
        else DDIM's trailing), so that equal prompts give the image it draws with the same seed and steps (up to
        float rounding)."""
        grid = self.grid_options("ddim", spacing)
        return {**grid, "spacing": grid["spacing"] or DEFAULT_SPACING["ddim"]}

    # ---------------------------------------------------------------------------------------------
    # real images

    def checked_images(self, image: ImageInput, height: int, width: int) -> torch.Tensor:
        """The image(s) as B×3×H×W in [-1, 1], refused unless they are ``height`` × ``width`` pixels."""
        images = self.images(image)
        if tuple(images.shape[-2:]) != (height, width):
            raise UsageError(f"the image is {images.shape[-1]}×{images.shape[-2]} pixels; this model edits "
                             f"{width}×{height} images")
        return images

    @diffusers_call(inputs=2)
    @torch.no_grad()
    def invert(self, image: ImageInput, prompt: str | list[str], steps: int | None = None,
               guidance: float | None = None, null_text: bool = True, spacing: str | None = None,
               progress: bool = False, inner_steps: int = 10) -> Inversion:
        """The `Inversion` of image(s) under their prompt(s): DDIM inversion of z_0 = E(x), then, with
        ``null_text``, the per-step unconditional contexts (`null_text_optimization`); ``spacing`` None: the
        edit's own (`ddim_grid`; a leading grid with the inversion's steps_offset 1, which the edit then takes).
        Options by keyword, under diffusers' names as the call's: ``num_inference_steps`` and ``guidance_scale``
        (None: `DEFAULT_STEPS`, `DEFAULT_GUIDANCE`), the edit's own; ``steps=`` and ``guidance=`` still work,
        deprecated (`ldmkit.pipelines.calling`)."""
        steps, guidance = edit_defaults(steps, guidance)
        check_steps(steps, self.model.schedule.num_timesteps)
        check_edit_guidance(guidance)
        spacing = self.ddim_grid(spacing)["spacing"]
        model = self.model
        images = self.images(image)
        self.latent_size(*images.shape[-2:])
        prompts = [prompt] * images.shape[0] if isinstance(prompt, str) else list(prompt)
        if len(prompts) != images.shape[0]:
            raise UsageError(f"{len(prompts)} prompts for {images.shape[0]} images; give one per image")
        context = self.encode([parse_weights(p)[0] for p in prompts])
        z_0 = model.encode_images(images)
        prediction = model.config.diffusion.prediction
        path = ddim_inversion(self.unet_fn(), z_0, context, model.schedule, steps, prediction, spacing)
        if not null_text:
            return Inversion(path[0], None, steps, guidance, spacing)
        with tqdm(total=steps, desc="null-text inversion", leave=False, disable=not progress) as bar, \
                _frozen(model.unet):
            nulls = null_text_optimization(self.unet_fn(), path, context, self.encode_null(""), model.schedule,
                                           guidance, prediction, spacing, inner_steps=inner_steps,
                                           callback=lambda i, n: bar.update(1))
        return Inversion(path[0], nulls, steps, guidance, spacing)


@contextmanager
def _frozen(module: torch.nn.Module):
    """No parameter gradients inside (null-text inversion differentiates in the context only)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def edit_defaults(steps: int | None, guidance: float | None) -> tuple[int, float]:
    """(steps, guidance) of an edit or an inversion: each as given, or where None text-to-image's default
    (`DEFAULT_STEPS`, `DEFAULT_GUIDANCE`)."""
    return (DEFAULT_STEPS if steps is None else steps), (DEFAULT_GUIDANCE if guidance is None else guidance)


def check_inversion_fits(inversion: Inversion, steps: int, guidance: float, spacing: str) -> None:
    """A `UsageError` naming each of steps, guidance and spacing in which ``inversion`` differs from the edit's:
    the edit must step back along the grid and with the guidance the inversion was made on."""
    made = {"num_inference_steps": inversion.steps, "guidance_scale": inversion.guidance, "spacing": inversion.spacing}
    asked = {"num_inference_steps": steps, "guidance_scale": guidance, "spacing": spacing}
    differ = [name for name in made if made[name] != asked[name]]
    if differ:
        raise UsageError(f"the inversion was made for {', '.join(f'{n}={made[n]!r}' for n in differ)}, but this edit "
                         f"has {', '.join(f'{n}={asked[n]!r}' for n in differ)}; edit with the inversion's, or invert "
                         "again with the edit's")


def check_edit_guidance(guidance: float, name: str = "guidance_scale") -> None:
    """A `UsageError` unless the guidance scale s is a finite number > 0. The edit acts through the prompts, in the
    conditional branch ε_c of classifier-free guidance ε̂ = ε_u + s (ε_c − ε_u) (`guided_denoiser`): at s = 0 ε̂ is
    the unconditional ε_u, which neither prompt reaches, and the edit would be the source."""
    if not (math.isfinite(guidance) and guidance > 0):
        raise UsageError(f"{name} = {guidance}; an edit needs a guidance scale s > 0 (finite): classifier-free "
                         "guidance ε_u + s (ε_c − ε_u) ignores both prompts at s = 0, so the edit would be the source")


def _per_pair(words: Sequence[str] | Sequence[Sequence[str]] | None, pairs: int) -> list[Sequence[str]] | None:
    """Blend words as one list per pair: a lone string is split on spaces and commas, one list is shared."""
    if words is None:
        return None
    if isinstance(words, str):
        words = [w for w in words.replace(",", " ").split() if w]
    if not words:
        raise PromptEditError("local blend needs at least one word")
    if all(isinstance(w, str) for w in words):
        return [list(words)] * pairs
    if len(words) != pairs:
        raise UsageError(f"{len(words)} lists of blend words for {pairs} prompt pairs; give one list, or one per pair")
    return [list(w) for w in words]
