"""Objects as connected regions of one palette colour, and whether each is a clean shape.

The shapes judge reads one mask per palette colour, so two objects of the same colour would read as one.
`colour_components` labels the connected regions (8-neighbourhood) of each colour's hard mask
(m_c > ½, see `ldmkit.eval.shapes_net.palette_masks`); regions under `MIN_PIXELS` are specks, not
objects. `AttributePredictor` reads each region of a colour that has several on its own.

`shape_fit` tells a clean shape from a deformed one (stacked crosses, trapezoid squares, ovals that a
six-way classifier still names): the best intersection over union between the region and the named
shape drawn as the dataset draws it, at the region's area and centroid (radius ×0.92/1/1.08, centre
±1 pixel). A region with a fit below `MALFORMED_IOU` is malformed; the dataset's own renders fit at
≥ 0.85 (`tests/test_grounding.py` checks a render of every shape).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ldmkit.data.shapes import draw_shape

MIN_PIXELS = 12  # a real object covers ≥ 35 pixels of 64×64; anti-aliased fringes and noise far fewer
MALFORMED_IOU = 0.8
_SUPERSAMPLE = 4


def colour_components(masks: torch.Tensor, min_pixels: int = MIN_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Connected regions of N×H×W boolean masks: (labels int64 N×H×W, 0 off the mask or in a speck,
    1 … K_n numbering the regions of ≥ ``min_pixels`` by size, largest first; counts int64 N).

    Regions are found on the mask eroded by one pixel (so a one-pixel fringe, as anti-aliasing leaves
    around an object in a colour between it and the background, is no region, and two objects touching
    by a corner stay two), then grown back over the rest of the mask."""
    n, h, w = masks.shape
    m = masks[:, None].float()
    core = -F.max_pool2d(-m, 3, stride=1, padding=1)  # erosion
    index = torch.arange(1, h * w + 1, dtype=torch.float32, device=masks.device).view(1, 1, h, w)
    labels = index * core  # each pixel starts as its own region
    while True:  # each pass spreads the largest label to the 8 neighbours inside the core
        spread = F.max_pool2d(labels, 3, stride=1, padding=1) * core
        if torch.equal(spread, labels):
            break
        labels = spread
    while True:  # grown back over the whole mask from the cores (a thin arm or tip rejoins its object)
        grown = torch.maximum(labels, F.max_pool2d(labels, 3, stride=1, padding=1) * m)
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels[:, 0].long()
    flat = labels + torch.arange(n, device=labels.device).view(n, 1, 1) * (h * w + 1)
    values, sizes = flat[labels > 0].unique(return_counts=True)
    keep = sizes >= min_pixels
    values, sizes = values[keep], sizes[keep]
    out = torch.zeros_like(labels)
    counts = torch.zeros(n, dtype=torch.long)
    for v in values[sizes.argsort(descending=True)].tolist():  # largest first within each mask
        i = v // (h * w + 1)
        counts[i] += 1
        out[i][labels[i] == v - i * (h * w + 1)] = counts[i]
    return out, counts


@lru_cache(maxsize=None)
def _unit(shape: str) -> tuple[float, float, float]:
    """(area per r², centroid offset x, y per r) of ``shape`` drawn at radius r around (0, 0)."""
    r, size = 200.0, 512
    image = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(image), shape, size / 2, size / 2, r, 255)
    a = np.asarray(image, dtype=np.float64) / 255
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    area = a.sum()
    return area / r**2, ((a * xs).sum() / area - size / 2) / r, ((a * ys).sum() / area - size / 2) / r


def _drawn(shape: str, cx: float, cy: float, r: float, h: int, w: int) -> np.ndarray:
    image = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    s = _SUPERSAMPLE
    draw_shape(ImageDraw.Draw(image), shape, cx * s, cy * s, r * s, 255)
    return np.asarray(image.reduce(_SUPERSAMPLE)) >= 128


def shape_fit(region: np.ndarray, shape: str) -> float:
    """The best IoU of the boolean H×W ``region`` with ``shape`` drawn at its area and centroid (see the
    module docstring)."""
    area = float(region.sum())
    if area == 0:
        return 0.0
    h, w = region.shape
    ys, xs = np.nonzero(region)
    mx, my = xs.mean() + 0.5, ys.mean() + 0.5
    per_r2, ox, oy = _unit(shape)
    r0 = math.sqrt(area / per_r2)
    best = 0.0
    for scale in (0.92, 1.0, 1.08):
        r = r0 * scale
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                drawn = _drawn(shape, mx - ox * r + dx, my - oy * r + dy, r, h, w)
                union = np.logical_or(drawn, region).sum()
                best = max(best, float(np.logical_and(drawn, region).sum() / union) if union else 0.0)
    return best
