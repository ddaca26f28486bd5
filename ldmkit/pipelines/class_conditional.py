"""Class-conditional generation p(x | y): class name → τθ(y) = E[y] → sampler with guidance against
the null class ∅ → D(z_0)."""

from __future__ import annotations

from typing import Callable

import torch

from ldmkit.pipelines.base import Pipeline
from ldmkit.pipelines.calling import ImagePipelineOutput, diffusers_call, image_output
from ldmkit.errors import UsageError
from ldmkit.settings import DEFAULT_GUIDANCE


class ClassConditionalPipeline(Pipeline):
    """``pipe("circle", num_images=4, guidance=…, seed=…)`` → list of PIL images; ``pipe.classes`` lists
    the names the model knows (any other is a ValueError naming them)."""

    kinds = ("class",)
    generator_lists = True  # diffusers' generator=[…]: image i's z_T from the i-th (`Pipeline.sample_latents`)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.config.condition.classes

    @diffusers_call(inputs=1)
    @torch.inference_mode()
    def __call__(self, class_name: str | list[str], steps: int = 25, guidance: float = DEFAULT_GUIDANCE,
                 seed: int | torch.Generator = 0, num_images: int = 1, sampler: str = "ddim", eta: float = 0.0,
                 height: int | None = None, width: int | None = None, progress: bool = False,
                 callback: Callable[[int, int], None] | None = None, guidance_stop: float = 0.0,
                 cache_interval: int = 1, output_type: str = "pil", cache_depth: int = 1) -> ImagePipelineOutput:
        return image_output(self.generate_tensors(
            class_name, steps, guidance, seed, num_images, sampler, eta, height, width, progress, callback,
            guidance_stop, cache_interval, cache_depth), output_type)

    @torch.inference_mode()
    def generate_tensors(self, class_name: str | list[str], steps: int = 25, guidance: float = DEFAULT_GUIDANCE,
                         seed: int = 0, num_images: int = 1, sampler: str = "ddim", eta: float = 0.0,
                         height: int | None = None, width: int | None = None, progress: bool = False,
                         callback: Callable[[int, int], None] | None = None, guidance_stop: float = 0.0,
                         cache_interval: int = 1, cache_depth: int = 1) -> torch.Tensor:
        """Images B×3×H×W in [-1, 1], ``num_images`` per class name given, with
        ε̂ = εθ(z_t, t, E[∅]) + s (εθ(z_t, t, E[y]) − εθ(z_t, t, E[∅])); ``cache_interval``, ``cache_depth``: feature
        reuse (`Pipeline.sample_latents`)."""
        names = self.class_names(class_name)
        if num_images < 1:
            raise UsageError(f"num_images must be at least 1, got {num_images}")
        names = [n for n in names for _ in range(num_images)]
        model = self.model
        context = model.encode_classes(names)  # refuses an unknown class before any work
        latent_size = self.latent_size(height or model.config.image_size, width or model.config.image_size)
        latents = self.sample_latents(context, model.null_context(), latent_size, steps, guidance, seed, sampler, eta,
                                      progress=progress, callback=callback, guidance_stop=guidance_stop,
                                      cache_interval=cache_interval, cache_depth=cache_depth)
        return self.decode(latents)

    def class_names(self, class_name) -> list[str]:
        """A class name or a non-empty list of them, as a list; a `UsageError` saying what is allowed otherwise (an
        unknown name is refused by `LatentDiffusion.encode_classes`, naming the known ones)."""
        if isinstance(class_name, str):
            return [class_name]
        if isinstance(class_name, (list, tuple)) and class_name and all(isinstance(n, str) for n in class_name):
            return list(class_name)
        shown = repr(class_name) if len(repr(class_name)) <= 60 else repr(class_name)[:57] + "..."
        raise UsageError(f"class_name = {shown}; give a class name or a non-empty list of them (this model's: "
                         f"{', '.join(self.classes)})")
