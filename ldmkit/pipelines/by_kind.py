"""The pipeline of a model of any condition kind: what a model folder is, read from its config, and the
pipeline class that runs it (text → `TextToImagePipeline`, class → `ClassConditionalPipeline`, sr →
`SuperResolutionPipeline`, inpaint → `InpaintingPipeline`, colorize → `ColorizationPipeline`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ldmkit.config import ModelConfig
from ldmkit.pipelines.base import Pipeline
from ldmkit.pipelines.class_conditional import ClassConditionalPipeline
from ldmkit.pipelines.colorization import ColorizationPipeline
from ldmkit.pipelines.inpainting import InpaintingPipeline
from ldmkit.pipelines.super_resolution import SuperResolutionPipeline
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import resolve_model
from ldmkit.storage import load_config

PIPELINE_OF_KIND: dict[str, type[Pipeline]] = {
    "class": ClassConditionalPipeline, "sr": SuperResolutionPipeline, "inpaint": InpaintingPipeline,
    "colorize": ColorizationPipeline,
}


def condition_kind(model: str | Path) -> str:
    """The condition kind of a model folder's config (`ConditionConfig.kind`); "text" for what has no
    ldmkit config: a Stable Diffusion single file or a diffusers folder (loading reports what is missing)."""
    folder = Path(model)
    if not (folder / "config.yaml").is_file():
        return "text"
    return load_config(ModelConfig, folder).condition.kind


def load_any_pipeline(model: str | Path | None, device: str | torch.device = "cpu", precision: str = "fp32",
                      ema: bool = True, prediction: str | None = None) -> Pipeline:
    """The pipeline of ``model`` (a folder, a shipped model's name, a Stable Diffusion file; None: the
    shipped model) for its condition kind: a text model's through `load_pipeline`, so that Stable
    Diffusion files and diffusers folders load as they do for `ldmkit generate`. ``precision``, ``ema`` and
    ``prediction`` mean what `ldmkit generate`'s --precision, --no-ema and --prediction do, for every kind
    (`Pipeline.from_folder`): a single file's training weights instead of its EMA copy, what the model
    predicts instead of what its config says or its file's name suggests."""
    model = resolve_model(model)
    kind = condition_kind(model)
    options = dict(precision=precision, ema=ema, prediction=prediction)
    if kind == "text":
        return load_pipeline(model, device, **options)
    return PIPELINE_OF_KIND[kind].from_folder(model, device, **options)
