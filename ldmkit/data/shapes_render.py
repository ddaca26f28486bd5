"""Drawing a `Scene`: each object a flat-coloured shape on the `BACKGROUND`, placed at its position (or in
its half of a two-object scene) with a small random jitter, drawn at 4× and box-filtered down."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from ldmkit.data.shapes_scene import _RELATION_POSITIONS, BACKGROUND, RGB, SHAPES, Rng, Scene, _uniform

# Geometry, as fractions of the image side.
_RADIUS = {"small": 0.11, "large": 0.19}
_SIZE_JITTER = 0.06  # relative: radius * U(1 - j, 1 + j)
_CENTRE = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "centre": (0.5, 0.5)}
_JITTER = 0.04  # along the axis that carries the meaning (a position, or a relation)
_CROSS_JITTER = 0.12  # across a relation's axis, where nothing is claimed
_MARGIN = 0.02  # shapes stay this far inside the frame
_SUPERSAMPLE = 4  # draw at 4x and box-downsample: cheap anti-aliasing


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """Draw ``shape`` centred on (cx, cy) with "radius" r (half its extent), in pixels."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.82 * r  # slightly smaller than the circle so the areas are alike
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "triangle":
        # Equilateral, pointing up, width 2r, height √3 r. Centring the bounding box would put
        # the mass (the centroid, h/3 below) low; centring the centroid would push the apex out of
        # the frame; halfway keeps both within ~r of (cx, cy).
        h = math.sqrt(3) / 2 * r
        draw.polygon([(cx, cy - 7 / 6 * h), (cx + r, cy + 5 / 6 * h), (cx - r, cy + 5 / 6 * h)], fill=fill)
    elif shape == "star":
        # Five points; an inner radius of 0.45 keeps the arms thick enough to read at 64 px.
        points = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + 0.1 * r + rad * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        w = 0.32 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")


def _placement(scene: Scene, rng: Rng | None) -> list[tuple[float, float, float]]:
    """(cx, cy, r) per object, as fractions of the image side.

    Draws the same random numbers whatever the image size, so item i of the dataset is the same
    picture at 32, 64 or 96 px.
    """
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        if obj.position is None:
            raise ValueError("render_scene: a one-object scene needs a position")
        positions = [obj.position]
        jitters = [(_JITTER, _JITTER)]
    elif len(scene.objects) == 2 and scene.relation is not None:
        positions = list(_RELATION_POSITIONS[scene.relation])
        # Tight jitter along the relation's axis keeps the objects in their halves; loose across it.
        along_x = scene.relation in ("left of", "right of")
        jitter = (_JITTER, _CROSS_JITTER) if along_x else (_CROSS_JITTER, _JITTER)
        jitters = [jitter, jitter]
    else:
        raise ValueError("render_scene draws one object, or two objects with a relation")

    placed = []
    for obj, position, (jx, jy) in zip(scene.objects, positions, jitters):
        if obj.shape is None or obj.color is None or obj.size is None:
            raise ValueError(f"render_scene needs shape, color and size for every object, got {obj}")
        r = _RADIUS[obj.size] * _uniform(rng, 1 - _SIZE_JITTER, 1 + _SIZE_JITTER)
        x0, y0 = _CENTRE[position]
        lo, hi = r + _MARGIN, 1 - r - _MARGIN
        cx = min(max(x0 + _uniform(rng, -jx, jx), lo), hi)
        cy = min(max(y0 + _uniform(rng, -jy, jy), lo), hi)
        placed.append((cx, cy, r))
    return placed


def render_scene(scene: Scene, image_size: int = 64, rng: Rng | None = None) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``image_size`` × ``image_size``.

    ``rng`` jitters the size and placement of each object; None draws every object at the exact
    centre of its position, at its nominal size.
    """
    return render_scene_masks(scene, image_size, rng, masks=False)[0]


def render_scene_masks(scene: Scene, image_size: int = 64, rng: Rng | None = None,
                       masks: bool = True) -> tuple[Image.Image, np.ndarray | None]:
    """`render_scene`, and each object's coverage float32[n, S, S] in [0, 1] (the share of each pixel
    it covers; None when ``masks`` is False). The same random draws as `render_scene`."""
    big = image_size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    placed = _placement(scene, rng)
    for obj, (cx, cy, r) in zip(scene.objects, placed):
        draw_shape(draw, obj.shape, cx * big, cy * big, r * big, RGB[obj.color])
    coverage = None
    if masks:
        layers = []
        for obj, (cx, cy, r) in zip(scene.objects, placed):
            layer = Image.new("L", (big, big), 0)
            draw_shape(ImageDraw.Draw(layer), obj.shape, cx * big, cy * big, r * big, 255)
            layers.append(np.asarray(layer.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0)
        coverage = np.stack(layers)
    return image.reduce(_SUPERSAMPLE), coverage  # box filter: each output pixel is the mean of a 4×4 block
