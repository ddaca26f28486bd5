"""The held-out shapes that evaluation compares against.

Training draws item i of the shapes dataset from (seed 0, i) and the shapes judge trains on
(`ldmkit.eval.train_attributes.TRAIN_SEED`, i); evaluation uses ``HELDOUT_SEED``, so none of its
images (their sizes and placements are jittered per item) was seen by either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ldmkit.data import Scene, image_to_tensor, shapes_sample

HELDOUT_SEED = 1_000_003


@dataclass
class HeldOut:
    """``images`` N×3×S×S in [-1, 1], with the caption and the true scene of each."""

    images: torch.Tensor
    captions: list[str]
    scenes: list[Scene]


def heldout_shapes(num_images: int, image_size: int = 64, start: int = 0, seed: int = HELDOUT_SEED) -> HeldOut:
    """Items ``start`` … ``start + num_images − 1`` of the held-out shapes at ``image_size``."""
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    images, captions, scenes = [], [], []
    for index in range(start, start + num_images):
        image, caption, scene = shapes_sample(seed, index, image_size)
        images.append(image_to_tensor(image))
        captions.append(caption)
        scenes.append(scene)
    return HeldOut(torch.stack(images), captions, scenes)
