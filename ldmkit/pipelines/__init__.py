"""Pipelines: a trained model plus a sampler, one class per task (each checks the model's condition kind).

- `TextToImagePipeline` (text models), `ImageToImagePipeline` (SDEdit with a text model);
- `PromptToPromptPipeline` (text models: edit a generated or real image by editing its prompt);
- `ClassConditionalPipeline` (class models);
- `SuperResolutionPipeline`, `InpaintingPipeline` (and its ``uncrop``), `ColorizationPipeline`
  (models with an image condition concatenated to z_t).

Each has ``from_folder(folder, device)``. `preview_samples` draws a training run's sample grid.
"""

from ldmkit.pipelines.class_conditional import ClassConditionalPipeline
from ldmkit.pipelines.colorization import ColorizationPipeline
from ldmkit.pipelines.image_to_image import ImageToImagePipeline
from ldmkit.pipelines.inpainting import InpaintingPipeline
from ldmkit.pipelines.preview import preview_samples
from ldmkit.pipelines.prompt_to_prompt import EditOutput, Inversion, PromptToPromptPipeline
from ldmkit.pipelines.super_resolution import SuperResolutionPipeline
from ldmkit.pipelines.text_to_image import TextToImagePipeline, load_pipeline

__all__ = [
    "ClassConditionalPipeline",
    "ColorizationPipeline",
    "ImageToImagePipeline",
    "EditOutput",
    "InpaintingPipeline",
    "Inversion",
    "PromptToPromptPipeline",
    "SuperResolutionPipeline",
    "TextToImagePipeline",
    "load_pipeline",
    "preview_samples",
]
