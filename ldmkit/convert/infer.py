"""Architecture inference: the `ModelConfig` of a checkpoint from its keys and tensor shapes (original
single files) or from its ``config.json`` files (diffusers folders).

What the weights say: every width, level count, block count, where the transformer blocks are, conv
or linear projections, context width, text-model depth and width, autoencoder layout. What they do not
say, and the rules used instead:

- attention heads: SD 1.x and the LDM use 8 heads per UNet level, SD 2.x heads of 64 channels (an
  OpenCLIP text encoder marks SD 2.x); text models use heads of 64 channels (CLIP ViT-L/14: 12,
  OpenCLIP ViT-H/14: 16), one head when narrower; the LDM's BERT 8 heads of 64;
- GroupNorm eps 1e-5 in the UNet's ResBlocks (PyTorch's default, which the original code keeps);
- SD 2.x uses the penultimate OpenCLIP block: all resblocks but the last run;
- ε- or v-prediction (SD 2.x only; see `prediction_for`), image size 512 (SD 1.x, SD 2.x ε), 768
  (SD 2.x v), 256 (LDM text-to-image);
- the noise schedule: scaled-linear 0.00085 … 0.012 over T = 1000 steps, checked against the file's
  ``betas`` buffer when it has one (a linear schedule there is recognised).

A YAML file next to a single file (``model.yaml`` beside ``model.safetensors``, in the original repo's
config layout) overrides these rules where it sets ``parameterization``, ``scale_factor``,
``linear_start``/``linear_end``/``timesteps``, ``num_heads``/``num_head_channels``.

The rules live in `ldmkit.convert.infer_original` (single files) and `ldmkit.convert.infer_diffusers`
(diffusers folders), re-exported here.
"""

from ldmkit.convert.infer_diffusers import (
    UNET_FIXED, VAE_FIXED, autoencoder_from_diffusers, grid_from_scheduler, schedule_from_diffusers,
    text_from_diffusers, unet_from_diffusers,
)
from ldmkit.convert.infer_original import (
    CLIP, LDM_BERT, OPENCLIP, SD_SCALE_FACTOR, UNET, VAE, infer_autoencoder, infer_original, infer_schedule,
    infer_text, infer_unet, prediction_for, read_sidecar, text_heads,
)

__all__ = [
    "CLIP", "LDM_BERT", "OPENCLIP", "SD_SCALE_FACTOR", "UNET", "UNET_FIXED", "VAE", "VAE_FIXED",
    "autoencoder_from_diffusers", "grid_from_scheduler", "infer_autoencoder", "infer_original", "infer_schedule",
    "infer_text",
    "infer_unet", "prediction_for", "read_sidecar", "schedule_from_diffusers", "text_from_diffusers", "text_heads",
    "unet_from_diffusers",
]
