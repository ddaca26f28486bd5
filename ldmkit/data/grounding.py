"""Grounding targets: which words of a caption name which region of its image.

A dataset item may carry ``"grounding"``: a `Grounding` with one mask per object (float[n, H, W] in
[0, 1] at image size: the share of each pixel the object covers) and, per object, the character spans
of the caption's words that name it (its colour, size and shape words, or a category name). Grounded
training (`ldmkit.train.grounding`) maps the spans to the tokens they become and pulls those tokens'
cross-attention into the mask. Items without targets carry None.

Where targets come from: the ``shapes`` dataset knows them (its scene and caption grammar); an image
folder reads them from a sidecar ``NAME.grounding.json`` beside ``NAME.png`` (`read_sidecar`); COCO from
its instance annotations, for the categories a caption names (`ldmkit.data.coco`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ldmkit.errors import DataError
from ldmkit.images import center_crop_resize

Span = tuple[int, int]


@dataclass(frozen=True)
class Grounding:
    """``masks`` float[n, H, W]; ``spans[g]`` the (start, end) character spans naming object g."""

    masks: torch.Tensor
    spans: tuple[tuple[Span, ...], ...]

    def __post_init__(self):
        if self.masks.dim() != 3 or self.masks.shape[0] != len(self.spans):
            raise ValueError(f"grounding: {len(self.spans)} objects' spans but masks of shape {tuple(self.masks.shape)}")
        for spans in self.spans:
            for start, end in spans:
                if not 0 <= start < end:
                    raise ValueError(f"grounding: span ({start}, {end}) is empty or negative")


def word_spans(caption: str, words: list[str], where: str) -> tuple[Span, ...]:
    """The span of each of ``words`` (a word or a phrase) in ``caption``: its first whole-word occurrence,
    case-insensitive. DataError naming ``where`` for a word the caption does not contain."""
    spans = []
    for word in words:
        match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, flags=re.IGNORECASE)
        if match is None:
            raise DataError(f"{where}: the word {word!r} is not in the caption {caption!r}")
        spans.append(match.span())
    return tuple(spans)


def mask_tensor(mask: Image.Image, image_size: int) -> torch.Tensor:
    """A mask image (white = the object) centre-cropped and resized as its image is: float[S, S] in [0, 1]."""
    resized = center_crop_resize(mask.convert("L"), image_size)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)


def polygon_mask(polygons: list[list[float]], size: tuple[int, int]) -> Image.Image:
    """Polygons [x₀, y₀, x₁, y₁, …] (pixels of an image of ``size`` = (W, H)) filled white on black."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(poly[k]), float(poly[k + 1])) for k in range(0, len(poly) - 1, 2)], fill=255)
    return mask


def read_sidecar(path: Path, caption: str, size: tuple[int, int], image_size: int) -> Grounding:
    """The grounding of an image folder's image from its sidecar ``NAME.grounding.json``::

        {"objects": [{"words": ["red", "car"], "mask": "car.png"},
                     {"words": ["dog"], "polygon": [[x0, y0, x1, y1, …]]}]}

    ``words``: the caption's words that name the object; ``mask``: an image file (relative to the
    sidecar, the size of the image, white = the object) or ``polygon``: outlines in the image's pixels.
    ``size``: the image's (W, H) before it is cropped and resized to ``image_size``."""
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: not a readable JSON file ({e})") from None
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(objects, list) or not objects:
        raise DataError(f'{where}: expected {{"objects": [{{"words": [...], "mask": FILE or "polygon": [...]}}]}}')
    masks, spans = [], []
    for k, obj in enumerate(objects):
        words = obj.get("words") if isinstance(obj, dict) else None
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise DataError(f"{where}: object {k} needs a non-empty list of caption words under \"words\"")
        if isinstance(obj.get("mask"), str):
            try:
                with Image.open(path.parent / obj["mask"]) as image:
                    mask = image.convert("L")
            except OSError as e:
                raise DataError(f"{where}: object {k}: cannot read mask {obj['mask']!r} ({e})") from None
            if mask.size != size:
                raise DataError(f"{where}: object {k}: mask {obj['mask']!r} is {mask.size}, its image {size}")
        elif isinstance(obj.get("polygon"), list):
            mask = polygon_mask(obj["polygon"], size)
        else:
            raise DataError(f"{where}: object {k} needs a \"mask\" file or a \"polygon\"")
        masks.append(mask_tensor(mask, image_size))
        spans.append(word_spans(caption, words, f"{where}: object {k}"))
    return Grounding(torch.stack(masks), tuple(spans))
