"""Text-to-image: prompt → τθ(y) → sampler over εθ with classifier-free guidance → D(z_0)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from ldmkit.diffusion.binding import BindingGuidance, binding_groups
from ldmkit.errors import UsageError
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call
from ldmkit.pipelines.base import Pipeline, images_of, negative_list, prompt_list
from ldmkit.pretrained import resolve_model
from ldmkit.settings import check_prompt_syntax
from ldmkit.text.emphasis import parse


class TextToImagePipeline(Pipeline):
    """``pipe(prompt, num_inference_steps=…, guidance_scale=…, generator=…, num_images_per_prompt=…).images``
    → PIL images (diffusers' call, `ldmkit.pipelines.calling`; the output is also that list).

    The same seed, settings and model give bit-identical images: z_T is drawn from a CPU generator
    seeded with ``generator`` (or drawn from it, a CPU ``torch.Generator``), so the result does not depend
    on the device's random stream.
    """

    kinds = ("text",)
    output_types = ("pil", "pt", "np", "latent")
    generator_lists = True

    @classmethod
    def from_folder(
        cls, folder: str | Path, device: str | torch.device = "cpu", ema: bool = True, prediction: str | None = None,
        precision: str = "fp32",
    ) -> "TextToImagePipeline":
        """The pipeline of an ldmkit model folder, a Stable Diffusion single file (.safetensors/.ckpt) or
        a diffusers folder; ``ema=False`` takes a single file's training weights instead of its EMA copy,
        ``prediction`` ("epsilon"/"v") overrides the model's (see `LatentDiffusion.load`); ``precision``
        is fp32, bf16 or auto (see `Pipeline`)."""
        return super().from_folder(folder, device, ema=ema, prediction=prediction, precision=precision)

    @diffusers_call(inputs=1)
    @torch.inference_mode()
    def __call__(self, prompt: str | list[str], output_type: str = "pil", **options) -> ImagePipelineOutput:
        """`generate_latents`' z_0 decoded, as ``output_type`` asks ("latent": z_0 itself), under diffusers' names
        (`ldmkit.pipelines.calling`: num_inference_steps, guidance_scale, num_images_per_prompt, generator;
        ``.images`` on the output); the other options are `generate_latents`'."""
        latents = self.generate_latents(prompt, **options)
        return self.latents_output(latents, output_type)

    @torch.inference_mode()
    def generate_latents(
        self,
        prompt: str | list[str],
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | torch.Generator = 0,
        num_images: int = 1,
        sampler: str | None = None,
        negative_prompt: str | list[str] = "",
        eta: float = 0.0,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
        guidance_stop: float = 0.0,
        spacing: str | None = None,
        binding: float = 0.0,
        binding_candidates: int = BindingGuidance.candidates,
        cache_interval: int = 1,
        cache_depth: int = 1,
        karras: bool = False,
        steps_offset: int | None = None,
        prompt_syntax: str = "plain",
        latents: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> torch.Tensor:
        """z_0 B×C×h×w (x = D(z_0): `generate_tensors`); a list of prompts gives one image per prompt per
        ``num_images``. ``seed``: an int, a CPU torch.Generator, or a list of them, one per image (diffusers');
        ``latents``: the starting z_T ~ N(0, I), B×C×h×w, instead of one drawn; ``callback_on_step_end(self, i, t,
        {"latents": z})``: diffusers' step-end callback, whose returned "latents" replace z
        (`Pipeline.sample_latents`).

        ``callback(i, n)`` runs after sampler step i = 0 … n−1; an exception it raises stops sampling
        there (the server cancels a job this way) and propagates to the caller. ``guidance_stop``: the
        last fraction of the trajectory runs without guidance; ``spacing`` (trailing, leading, linspace),
        ``steps_offset`` (leading) and ``karras`` (Karras σ): the sampler's grid, for every sampler; None:
        the model's scheduler config, else the sampler's own (`Pipeline.grid_options`). ``binding`` > 0:
        attribute-binding guidance of that scale λ (`ldmkit.diffusion.binding`) on the prompt's
        objects (each noun with its modifiers, `prompt_binding`), over the first half of the steps, and each
        prompt with two objects starts from the best of ``binding_candidates`` noises (its own z_T and
        rivals; 1: no selection), compared by the binding loss after the first fifth of the steps.
        ``cache_interval`` N > 1: feature reuse, the whole UNet at every N-th step and its shallow branch
        alone between (`ldmkit.nn.feature_cache`), that branch recomputing ``cache_depth`` blocks of the first
        level (1: DeepCache's branch 0; 0: the shallowest). ``sampler``/``steps`` None: the model's own (ddim at 25
        steps; lcm at its distilled step count for a consistency student of `ldmkit distill`); ``guidance`` None:
        the model's own (`Pipeline.default_guidance`: 4, or the student's).
        ``prompt_syntax``: "plain" reads the prompts as written (diffusers); "a1111" reads AUTOMATIC1111's
        emphasis, ``(word:1.3)``, ``(word)``, ``[word]``, ``BREAK``, and a prompt longer than the tokenizer's
        length in chunks instead of cut (`ldmkit.text.weighted`), the prompts and the negative prompts alike.
        """
        model = self.model
        check_prompt_syntax(prompt_syntax)
        prompts = prompt_list(prompt)
        negatives = negative_list(negative_prompt, len(prompts))
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        sampler, steps = self.sampling_defaults(sampler, steps)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if self.is_student and any(negatives):
            raise UsageError("a consistency student takes the guidance scale as an input and has no negative prompt; "
                             "leave it out")
        latent_size = self.latent_size(height or model.config.image_size, width or model.config.image_size)
        if binding < 0:
            raise ValueError(f"binding = {binding}; must be ≥ 0")
        if binding_candidates < 1:
            raise ValueError(f"binding_candidates = {binding_candidates}; must be at least 1")
        if isinstance(negatives, list):  # one per prompt, repeated as the prompts are
            negatives = [n for n in negatives for _ in range(num_images)]
        if prompt_syntax == "a1111":
            context, null_context = self.emphasis_contexts(prompts, negatives, num_images)
            # what binding reads: the text the context encodes (a piece without weights read in known words)
            parsed = [parse(p) for p in prompts]
            prompts = [model.in_known_words([e.text])[0] if e.plain else e.text for e in parsed
                       for _ in range(num_images)]
            if binding > 0 and context.shape[1] > model.tokenizer.max_length:
                raise UsageError(f"binding guidance reads one chunk of {model.tokenizer.max_length} tokens; this "
                                 "prompt has more (or BREAK): shorten it, or leave --binding out")
        else:
            # words the model never saw read as the nearest it did (`LatentDiffusion.in_known_words`)
            prompts = [p for p in model.in_known_words(prompts) for _ in range(num_images)]
            context = self.encode(prompts)
            null_context = None if self.is_student else self.encode_null(negatives)
        # A consistency student has no unconditional pass: its null context is never read.
        null_context = context[:1] if self.is_student else null_context
        return self.sample_latents(
            context, null_context, latent_size, steps, guidance, seed,
            sampler, eta, progress=progress, callback=callback, guidance_stop=guidance_stop,
            spacing=spacing,
            binding=self.prompt_binding(prompts, binding, binding_candidates) if binding > 0 else None,
            cache_interval=cache_interval, cache_depth=cache_depth, karras=karras, steps_offset=steps_offset,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

    generate_tensors = images_of(generate_latents)

    def prompt_binding(self, prompts: list[str], scale: float,
                       candidates: int = BindingGuidance.candidates) -> BindingGuidance:
        """Binding guidance of scale λ for ``prompts``: each noun with the modifiers the prompt gives it,
        and the layout term of a stated relation between the first two (`binding_groups`), in this
        model's tokens. UsageError naming a prompt in which no object can be found."""
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            raise ValueError("binding guidance needs a text model")
        groups, relations = [], []
        for prompt in prompts:
            found, relation = binding_groups(prompt, tokenizer)
            if not found:
                raise UsageError(f"binding guidance cannot find an object (a noun) in the prompt {prompt!r}; "
                                 "write it as e.g. 'a red circle above a blue square', or leave --binding out")
            groups.append(found)
            relations.append(relation)
        return BindingGuidance(scale, groups, relations, candidates=candidates)


def load_pipeline(
    folder: str | Path | None = None, device: str | torch.device = "cpu", ema: bool = True, prediction: str | None = None,
    precision: str = "fp32",
) -> TextToImagePipeline:
    """The text-to-image pipeline of a model folder written by `ldmkit train`, a Stable Diffusion single
    file or a diffusers folder (see `TextToImagePipeline.from_folder`); by default the shipped shapes64-grounded model;
    a shipped model's name (`ldmkit.pretrained.SHIPPED`, e.g. "shapes64-grounded-lcm", its 4-step consistency student)
    names that model (`ldmkit.pretrained.resolve_model`)."""
    folder = resolve_model(folder)
    return TextToImagePipeline.from_folder(folder, device, ema=ema, prediction=prediction, precision=precision)
