"""The sample grid a training run writes as it goes: one function, so that training code needs no
pipeline class of its own."""

from __future__ import annotations

import torch

from ldmkit.condition import condition_source, random_masks
from ldmkit.pipelines.class_conditional import ClassConditionalPipeline
from ldmkit.pipelines.colorization import ColorizationPipeline
from ldmkit.pipelines.inpainting import InpaintingPipeline
from ldmkit.pipelines.super_resolution import SuperResolutionPipeline
from ldmkit.pipelines.text_to_image import TextToImagePipeline


@torch.no_grad()
def preview_samples(model, device, prompts: list[str] | None, images: torch.Tensor | None, steps: int | None,
                    guidance: float) -> torch.Tensor | None:
    """Images in [-1, 1] for a preview grid of ``model`` (a `LatentDiffusion`), all drawn with seed 0:
    one per prompt (text; ``steps`` None: the pipeline's default), two of each of the first 4 classes
    (class), or for an image condition a row of 4 inputs (the condition as training makes it from
    ``images``) over a row of the outputs; None for an image condition without ``images``."""
    kind = model.config.condition.kind
    if kind == "text":
        return TextToImagePipeline(model, device).generate_tensors(prompts, steps=steps, guidance=guidance, seed=0)
    if kind == "class":
        classes = list(model.config.condition.classes)[:4]
        return ClassConditionalPipeline(model, device).generate_tensors(
            classes, steps=steps, guidance=guidance, seed=0, num_images=2)
    if images is None:
        return None
    images = images[:4]
    source = condition_source(model.config.condition, images)
    if kind == "sr":
        out = SuperResolutionPipeline(model, device).generate_tensors(source, steps=steps, seed=0)
        source = torch.nn.functional.interpolate(source, size=images.shape[-2:], mode="nearest")
    elif kind == "inpaint":
        masks = random_masks(len(images), *images.shape[-2:], torch.Generator().manual_seed(0))
        out = InpaintingPipeline(model, device).generate_tensors(images, masks, steps=steps, seed=0)
        source = images * (1 - masks)
    else:
        out = ColorizationPipeline(model, device).generate_tensors(source, steps=steps, seed=0)
    return torch.cat([source.float().cpu(), out])
