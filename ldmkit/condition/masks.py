"""Masks for inpainting and uncropping: m = 1 where pixels are repainted, 0 where they are kept
(a mask image: white = repaint, black = keep).

Training draws each mask at random among three kinds, in equal shares, so that one model serves
inpainting and uncropping: a box (a quarter to three quarters of each side), brush strokes (2–5 thick
lines), and a half-image strip along one side (a quarter to three quarters of it, as uncropping uses).
"""

from __future__ import annotations

import numbers
import random

import numpy as np
import torch
from PIL import Image, ImageDraw
from ldmkit.errors import UsageError

SIDES: tuple[str, ...] = ("left", "right", "top", "bottom")


def side_mask(height: int, width: int, side: str, amount: float) -> torch.Tensor:
    """1×H×W: the strip of ``amount`` of the image along ``side`` is 1, the rest 0."""
    if side not in SIDES:
        raise UsageError(f"unknown side {side!r}; allowed: {', '.join(SIDES)}")
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 < amount < 1:
        raise UsageError(f"amount = {amount!r}; must be a number between 0 and 1 (the share of the image to paint)")
    mask = torch.zeros(1, height, width)
    across = width if side in ("left", "right") else height
    k = min(max(1, round(amount * across)), across - 1)
    if side == "left":
        mask[..., :k] = 1
    elif side == "right":
        mask[..., width - k:] = 1
    elif side == "top":
        mask[..., :k, :] = 1
    else:
        mask[..., height - k:, :] = 1
    return mask


def uncrop_mask(images: torch.Tensor, side: str, amount: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas, mask) for uncropping B×3×H×W ``images`` toward ``side`` by ``amount`` of the image.

    The view moves: the image shifts by k = round(amount · side length) pixels away from ``side`` (its
    far edge leaves the frame) and the k-pixel strip it uncovers on ``side`` is the mask, so that
    inpainting the canvas paints what lies beyond the original border. The canvas holds 0 (mid-grey)
    in the strip.
    """
    mask = side_mask(images.shape[-2], images.shape[-1], side, amount)
    k = int(mask[0, :, 0].sum()) if side in ("top", "bottom") else int(mask[0, 0, :].sum())  # strip width
    shift = {"left": (0, k), "right": (0, -k), "top": (k, 0), "bottom": (-k, 0)}[side]
    canvas = torch.roll(images, shifts=shift, dims=(-2, -1))
    mask = mask.to(images)[None].expand(images.shape[0], -1, -1, -1)
    return canvas * (1 - mask), mask


def _box(rng: random.Random, height: int, width: int) -> Image.Image:
    image = Image.new("L", (width, height), 0)
    w, h = round(width * rng.uniform(0.25, 0.75)), round(height * rng.uniform(0.25, 0.75))
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    ImageDraw.Draw(image).rectangle((x, y, x + w - 1, y + h - 1), fill=255)
    return image


def _strokes(rng: random.Random, height: int, width: int) -> Image.Image:
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    side = min(height, width)
    for _ in range(rng.randint(2, 5)):
        points = [(rng.uniform(0, width), rng.uniform(0, height)) for _ in range(rng.randint(2, 4))]
        draw.line(points, fill=255, width=max(1, round(side * rng.uniform(0.06, 0.15))), joint="curve")
    return image


def _side(rng: random.Random, height: int, width: int) -> Image.Image:
    mask = side_mask(height, width, rng.choice(SIDES), rng.uniform(0.25, 0.75))
    return Image.fromarray((mask[0].numpy() * 255).astype(np.uint8), "L")


def random_masks(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """n training masks, n×1×H×W in {0, 1}: boxes, strokes and side strips in equal shares, each drawn
    from ``generator`` alone (so a resumed run draws the same masks)."""
    seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
    masks = []
    for seed in seeds:
        rng = random.Random(seed)
        draw = rng.choice((_box, _strokes, _side))
        array = np.asarray(draw(rng, height, width), dtype=np.float32) / 255.0
        masks.append(torch.from_numpy((array > 0.5).astype(np.float32)))
    return torch.stack(masks)[:, None]
