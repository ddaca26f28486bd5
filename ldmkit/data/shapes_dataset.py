"""The ``shapes`` dataset: item i is a scene, its render and its caption, drawn from (seed, i) alone."""

from __future__ import annotations

import random
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from ldmkit.config import ConfigError
from ldmkit.errors import DataError
from ldmkit.data.grounding import Grounding
from ldmkit.images import image_to_tensor
from ldmkit.data.shapes import SHAPES, Scene, caption_scene, check_scene_options, render_scene_masks, sample_scene
from ldmkit.data.shapes_captions import phrase_scene

CAPTIONS: tuple[str, ...] = ("templates", "varied")


def shapes_sample(seed: int, index: int, image_size: int = 64, max_objects: int = 2,
                  two_object_share: float = 0.5) -> tuple[Image.Image, str, Scene]:
    """(image, caption, scene) of item ``index`` of the shapes dataset: a function of its arguments."""
    image, caption, scene, _ = shapes_item(seed, index, image_size, max_objects, two_object_share)
    return image, caption, scene


def check_caption_options(captions: str, grounding: bool) -> None:
    """ConfigError naming the option unless ``captions`` is one of `CAPTIONS` and grounding has "varied"."""
    if captions not in CAPTIONS:
        raise ConfigError(f"data.captions = {captions!r}; allowed: {', '.join(CAPTIONS)}")
    if grounding and captions != "varied":
        raise ConfigError("data.grounding needs data.captions: varied "
                          "(the templates do not record which words name which object)")


def shapes_item(seed: int, index: int, image_size: int = 64, max_objects: int = 2, two_object_share: float = 0.5,
                captions: str = "templates", grounding: bool = False
                ) -> tuple[Image.Image, str, Scene, Grounding | None]:
    """(image, caption, scene, grounding) of item ``index``: the caption from the templates
    (`caption_scene`) or from the seen part of the broad grammar (``captions`` "varied",
    `phrase_scene`); with ``grounding`` the objects' masks and naming words ("varied" only)."""
    check_caption_options(captions, grounding)
    # A string seed is hashed with SHA-512 by `random.seed`: stable across processes and Python
    # runs (unlike hash()), and distinct for every (seed, index) pair, negative ones included.
    rng = random.Random(f"ldmkit.shapes:{seed}:{index}")
    scene = sample_scene(rng, max_objects, two_object_share)
    image, masks = render_scene_masks(scene, image_size, rng, masks=grounding)
    if captions == "templates":
        return image, caption_scene(scene, rng), scene, None
    phrasing = phrase_scene(scene, rng, "seen")
    target = Grounding(torch.from_numpy(masks), phrasing.spans) if grounding else None
    return image, phrasing.text, scene, target


class ShapesDataset(Dataset):
    """``num_samples`` captioned shape scenes; item i is a function of (seed, i) only.

    Item: ``{"images": FloatTensor 3×H×W in [-1, 1], "caption": str, "scene": Scene}``, and with
    ``grounding`` a `Grounding` under ``"grounding"``. Nothing is cached: rendering a 64×64 item takes
    a fraction of a millisecond.
    """

    def __init__(self, image_size: int = 64, num_samples: int = 50_000, seed: int = 0, max_objects: int = 2,
                 two_object_share: float = 0.5, captions: Literal["templates", "varied"] = "templates",
                 grounding: bool = False):
        if image_size < 8:
            raise ValueError(f"image_size = {image_size}; the shapes dataset needs at least 8 pixels")
        if num_samples < 1:
            raise ValueError(f"num_samples = {num_samples}; must be at least 1")
        check_scene_options(max_objects, two_object_share)  # now, not at the first item
        check_caption_options(captions, grounding)
        self.image_size = image_size
        self.num_samples = num_samples
        self.seed = seed
        self.max_objects = max_objects
        self.two_object_share = two_object_share
        self.caption_style = captions  # "templates" or "varied" (not `captions`: that names a list of captions)
        self.grounding = grounding

    def __len__(self) -> int:
        return self.num_samples

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of a class-conditional model: the shape types (of one-object scenes)."""
        if self.max_objects != 1:
            raise DataError("class-conditional shapes need data.max_objects: 1 (the class is the one object's shape)")
        return SHAPES

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        image, caption, scene, grounding = shapes_item(self.seed, index, self.image_size, self.max_objects,
                                                       self.two_object_share, self.caption_style, self.grounding)
        item = {"images": image_to_tensor(image), "caption": caption, "scene": scene}
        if self.grounding:
            item["grounding"] = grounding
        return item

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(image_size={self.image_size}, num_samples={self.num_samples}, "
            f"seed={self.seed}, max_objects={self.max_objects}, two_object_share={self.two_object_share}, "
            f"captions={self.caption_style!r}, grounding={self.grounding})"
        )
