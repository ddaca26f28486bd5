"""Conditions other than a text prompt (see `ldmkit.config.ConditionConfig`):

- `classes`: a class label y as a learned embedding τθ(y), one context token for cross-attention;
- `images`: an image condition concatenated to z_t (super-resolution, inpainting, colorization);
- `masks`: the masks of inpainting and uncropping (random ones for training, a side for uncropping).
"""

from ldmkit.condition.classes import ClassEmbedding, class_index, class_labels, data_classes
from ldmkit.condition.images import (
    check_images, check_mask, concat_condition, condition_source, downsample, grayscale, mask_to_latent,
    masked_images, mean_fill, resize_to,
)
from ldmkit.condition.masks import SIDES, random_masks, uncrop_mask

__all__ = [
    "ClassEmbedding",
    "SIDES",
    "check_images",
    "check_mask",
    "class_index",
    "class_labels",
    "concat_condition",
    "condition_source",
    "data_classes",
    "downsample",
    "grayscale",
    "mask_to_latent",
    "masked_images",
    "mean_fill",
    "random_masks",
    "resize_to",
    "uncrop_mask",
]
