"""The held-out shapes that evaluation compares against.

Training draws item i of the shapes dataset from (seed 0, i) and the shapes judge trains on
(`ldmkit.eval.train_attributes.TRAIN_SEED`, i); evaluation uses ``HELDOUT_SEED``, so none of its
images (their sizes and placements are jittered per item) was seen by either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ldmkit.data import Scene, image_to_tensor, parse_prompt, shapes_sample
from ldmkit.data.shapes_captions import PARTS, phrase_scene

HELDOUT_SEED = 1_000_003
PHRASINGS: tuple[str, ...] = ("templates", *PARTS)


@dataclass
class HeldOut:
    """``images`` N×3×S×S in [-1, 1], with the caption, the true scene and what the caption states
    (a scene whose unstated attributes are None) of each."""

    images: torch.Tensor
    captions: list[str]
    scenes: list[Scene]
    stated: list[Scene]


def heldout_shapes(num_images: int, image_size: int = 64, start: int = 0, seed: int = HELDOUT_SEED,
                   phrasing: str = "templates") -> HeldOut:
    """Items ``start`` … ``start + num_images − 1`` of the held-out shapes at ``image_size``, captioned
    in the templates, or in the ``"seen"`` or ``"unseen"`` part of the broad grammar
    (`ldmkit.data.shapes_captions`): the same scenes and images whatever the phrasing."""
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing {phrasing!r}; allowed: {', '.join(PHRASINGS)}")
    images, captions, scenes, stated = [], [], [], []
    for index in range(start, start + num_images):
        image, caption, scene = shapes_sample(seed, index, image_size)
        if phrasing == "templates":
            states = parse_prompt(caption)
        else:
            said = phrase_scene(scene, random.Random(f"ldmkit.heldout:{seed}:{index}:{phrasing}"), phrasing)
            caption, states = said.text, said.stated
        images.append(image_to_tensor(image))
        captions.append(caption)
        scenes.append(scene)
        stated.append(states)
    return HeldOut(torch.stack(images), captions, scenes, stated)
