"""``shapes``: a built-in dataset of procedurally drawn, captioned scenes.

Each image holds one or two flat-coloured shapes on a dark grey background, drawn from
(seed, index) alone: no download, any size, and a structured ground truth (`Scene`) next to
every caption, so that a later evaluation can check whether a generated image shows what its
prompt asked for.

Vocabulary (all public tuples):

- `SHAPES`: circle, square, triangle, star, diamond, cross — upright, so that a square and a
  diamond (the same square turned by 45°) stay apart;
- `COLORS`: eight colours whose RGB values (`RGB`) lie at least ~100 apart from each other and
  far from `BACKGROUND` (30, 30, 30), a dark grey against which white still shows;
- `SIZES`: small (radius ≈ 0.11 of the image side) and large (≈ 0.19), about 3× apart in area;
- `POSITIONS`: left, right, top, bottom, centre — centres at 0.25 / 0.75 / 0.5 of the side, with a
  jitter of at most 0.04, so a classifier can tell them apart;
- `RELATIONS`: "left of", "right of", "above", "below".

A two-object scene puts object 0 in one half of the image and object 1 in the other half along
the relation's axis ("above": object 0 in the top half, object 1 in the bottom half), so the
objects never overlap; they are shifted across that axis by less than they are apart along it,
so the relation is plain to see and no other relation reads as well. Their ``position`` fields are derived
from that placement ("above" → object 0 "top", object 1 "bottom"), matching where a one-object
scene with that position would be drawn; the two objects always have different colours, so each
can be picked out of the image by its colour.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (255, 130, 0),
    "yellow": (250, 235, 30),
    "green": (40, 190, 60),
    "cyan": (40, 210, 230),
    "blue": (40, 80, 240),
    "purple": (160, 60, 220),
    "white": (245, 245, 245),
}
BACKGROUND: tuple[int, int, int] = (30, 30, 30)

INVERSE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Geometry, as fractions of the image side.
_RADIUS = {"small": 0.11, "large": 0.19}
_SIZE_JITTER = 0.06  # relative: radius * U(1 - j, 1 + j)
_CENTRE = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "centre": (0.5, 0.5)}
_JITTER = 0.04  # along the axis that carries the meaning (a position, or a relation)
_CROSS_JITTER = 0.12  # across a relation's axis, where nothing is claimed
_MARGIN = 0.02  # shapes stay this far inside the frame
_SUPERSAMPLE = 4  # draw at 4x and box-downsample: cheap anti-aliasing

# Where the objects of a two-object scene sit: relation -> (position of object 0, of object 1).
_RELATION_POSITIONS = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}

Rng = Union[random.Random, np.random.Generator]


# --------------------------------------------------------------------------------------------------
# Ground truth


@dataclass(frozen=True)
class ShapeObject:
    """One shape. A field is None when unknown: a parsed prompt that does not state it."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    position: str | None = None

    def __post_init__(self):
        for name, allowed in (("shape", SHAPES), ("color", COLORS), ("size", SIZES), ("position", POSITIONS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"ShapeObject.{name} = {value!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class Scene:
    """What an image shows (or a prompt asks for).

    ``relation`` relates ``objects[0]`` to ``objects[1]``: "a blue square above a yellow star" is
    objects = (blue square, yellow star), relation = "above". It is None for one object, and for a
    parsed "X and Y" prompt, which names two objects but no relation.
    """

    objects: tuple[ShapeObject, ...]
    relation: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))  # a list would make Scene unhashable
        if not self.objects:
            raise ValueError("a Scene needs at least one object")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"Scene.relation = {self.relation!r}; allowed: {', '.join(RELATIONS)}")
            if len(self.objects) != 2:
                raise ValueError(f"a relation needs exactly two objects, got {len(self.objects)}")

    def flipped(self) -> Scene:
        """The same scene told the other way round: (A above B) -> (B below A)."""
        if len(self.objects) != 2:
            return self
        relation = INVERSE_RELATION[self.relation] if self.relation else None
        return Scene((self.objects[1], self.objects[0]), relation)


def object_matches(prompt: ShapeObject, truth: ShapeObject) -> bool:
    """True when ``truth`` has every attribute ``prompt`` states (None fields claim nothing)."""
    return all(
        getattr(prompt, name) is None or getattr(prompt, name) == getattr(truth, name)
        for name in ("shape", "color", "size", "position")
    )


def prompt_matches_scene(prompt: Scene, scene: Scene) -> bool:
    """True when ``scene`` shows everything ``prompt`` states (None fields claim nothing).

    Two-object prompts may name the objects in either order: "B below A" matches (A above B).
    """
    if len(prompt.objects) != len(scene.objects):
        return False

    def same_order(p: Scene, s: Scene) -> bool:
        if p.relation is not None and p.relation != s.relation:
            return False
        return all(object_matches(po, so) for po, so in zip(p.objects, s.objects))

    return same_order(prompt, scene) or (len(scene.objects) == 2 and same_order(prompt, scene.flipped()))


# --------------------------------------------------------------------------------------------------
# Randomness: accept both the standard library's and numpy's generators


def _pick(rng: Rng, seq: Sequence):
    if isinstance(rng, np.random.Generator):
        return seq[int(rng.integers(len(seq)))]
    return seq[rng.randrange(len(seq))]


def _uniform(rng: Rng | None, lo: float, hi: float) -> float:
    if rng is None:  # no jitter: the middle of the range
        return (lo + hi) / 2
    if isinstance(rng, np.random.Generator):
        return float(rng.uniform(lo, hi))
    return rng.uniform(lo, hi)


def _chance(rng: Rng, p: float) -> bool:
    return _uniform(rng, 0.0, 1.0) < p


# --------------------------------------------------------------------------------------------------
# Sampling


def check_scene_options(max_objects: int, two_object_share: float) -> None:
    """ValueError naming the option unless 1 ≤ max_objects ≤ 2 and 0 ≤ two_object_share ≤ 1."""
    if max_objects not in (1, 2):
        raise ValueError(f"max_objects = {max_objects}; the shapes dataset draws 1 or 2 objects")
    if not 0.0 <= two_object_share <= 1.0:
        raise ValueError(f"two_object_share = {two_object_share}; allowed: 0 … 1")


def sample_scene(rng: Rng, max_objects: int = 2, two_object_share: float = 0.5) -> Scene:
    """A random scene: one object, or (with probability ``two_object_share`` when ``max_objects`` is 2)
    two, related.

    Every attribute is uniform over its tuple; in a two-object scene the colours differ.
    """
    check_scene_options(max_objects, two_object_share)
    if max_objects == 1 or _chance(rng, 1.0 - two_object_share):
        return Scene((ShapeObject(_pick(rng, SHAPES), _pick(rng, COLORS), _pick(rng, SIZES), _pick(rng, POSITIONS)),))
    relation = _pick(rng, RELATIONS)
    pos0, pos1 = _RELATION_POSITIONS[relation]
    color0 = _pick(rng, COLORS)
    color1 = _pick(rng, [c for c in COLORS if c != color0])
    obj0 = ShapeObject(_pick(rng, SHAPES), color0, _pick(rng, SIZES), pos0)
    obj1 = ShapeObject(_pick(rng, SHAPES), color1, _pick(rng, SIZES), pos1)
    return Scene((obj0, obj1), relation)


# --------------------------------------------------------------------------------------------------
# Rendering


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


# --------------------------------------------------------------------------------------------------
# Captions


_POSITION_PHRASES = {
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "centre": ("in the centre", "in the middle"),
}
_RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below",),
}
_ONE_OBJECT_PREFIXES = ("", "there is ", "a picture of ", "an image of ")
_TWO_OBJECT_PREFIXES = ("", "there is ")


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _noun_phrase(obj: ShapeObject, with_size: bool) -> str:
    words = [w for w in (obj.size if with_size else None, obj.color, obj.shape) if w]
    return _with_article(" ".join(words))


def caption_scene(scene: Scene, rng: Rng | None = None) -> str:
    """An English caption that is true of ``scene``, from varied templates.

    One object: "a small red circle on the left", "there is a green star in the centre",
    "a red circle" (size and position are each sometimes left out). Two objects:
    "a blue square above a yellow star", or told the other way round, "a yellow star below a
    blue square"; sizes are sometimes given. ``rng`` None gives the fullest caption, in the
    scene's own order.
    """
    if rng is None:
        return _caption(scene, with_size=True, with_position=True, prefix="", variant=0)
    if len(scene.objects) == 2 and _chance(rng, 0.5):
        scene = scene.flipped()  # the inverse relation with the objects swapped is just as true
    one = len(scene.objects) == 1
    return _caption(
        scene,
        with_size=_chance(rng, 0.6 if one else 0.3),
        with_position=_chance(rng, 0.7),
        prefix=_pick(rng, _ONE_OBJECT_PREFIXES if one else _TWO_OBJECT_PREFIXES),
        variant=int(_uniform(rng, 0, 2)),
    )


def _caption(scene: Scene, with_size: bool, with_position: bool, prefix: str, variant: int) -> str:
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        text = _noun_phrase(obj, with_size)
        if with_position and obj.position is not None:
            phrases = _POSITION_PHRASES[obj.position]
            text += " " + phrases[variant % len(phrases)]
        return prefix + text
    if len(scene.objects) != 2 or scene.relation is None:
        raise ValueError("caption_scene describes one object, or two objects with a relation")
    a, b = (_noun_phrase(o, with_size) for o in scene.objects)
    phrases = _RELATION_PHRASES[scene.relation]
    return f"{prefix}{a} {phrases[variant % len(phrases)]} {b}"


# --------------------------------------------------------------------------------------------------
# Parsing prompts back into scenes


def _alternation(words) -> str:
    # Longest first, so "to the left of" wins over "left of".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_COLOR_WORDS = {c: c for c in COLORS} | {"violet": "purple"}
_SHAPE_WORDS = {s: s for s in SHAPES} | {"plus": "cross"}
_POSITION_WORDS = {
    "on the left": "left", "at the left": "left", "to the left": "left", "on the left side": "left",
    "on the right": "right", "at the right": "right", "to the right": "right", "on the right side": "right",
    "at the top": "top", "on the top": "top", "at the bottom": "bottom", "on the bottom": "bottom",
    "in the centre": "centre", "in the center": "centre", "in the middle": "centre",
    "at the centre": "centre", "at the center": "centre",
}  # fmt: skip
_RELATION_WORDS = {
    "to the left of": "left of", "on the left of": "left of", "left of": "left of",
    "to the right of": "right of", "on the right of": "right of", "right of": "right of",
    "above": "above", "over": "above", "below": "below", "under": "below", "beneath": "below",
}  # fmt: skip
_PREFIX = r"^(?:(?:there is|there's|here is|a picture of|an image of|a photo of|a drawing of)\s+)?"



def _object_pattern(i: int) -> str:
    """[article] [size] [colour] shape, with groups size{i}, color{i}, shape{i}."""
    return (
        r"(?:(?:a|an|the|one)\s+)?"
        rf"(?:(?P<size{i}>{_alternation(_SIZE_WORDS)})\s+)?"
        rf"(?:(?P<color{i}>{_alternation(_COLOR_WORDS)})\s+)?"
        rf"(?P<shape{i}>{_alternation(_SHAPE_WORDS)})"
    )


_ONE_OBJECT_RE = re.compile(
    _PREFIX + _object_pattern(0) + rf"(?:\s+(?P<position>{_alternation(_POSITION_WORDS)}))?$"
)
_TWO_OBJECT_RE = re.compile(
    _PREFIX
    + _object_pattern(0)
    + rf"\s+(?P<relation>{_alternation(_RELATION_WORDS)}|and)\s+"
    + _object_pattern(1)
    + "$"
)


def _parsed_object(match: re.Match, i: int, position: str | None = None) -> ShapeObject:
    size, color, shape = match[f"size{i}"], match[f"color{i}"], match[f"shape{i}"]
    return ShapeObject(
        shape=_SHAPE_WORDS[shape],
        color=_COLOR_WORDS[color] if color else None,
        size=_SIZE_WORDS[size] if size else None,
        position=position,
    )


def parse_prompt(text: str) -> Scene | None:
    """The scene a prompt in the caption templates describes, or None if it is not one of them.

    Attributes the prompt leaves out are None; so are the positions in two-object prompts (the
    relation carries the layout). "X and Y" gives two objects with no relation. Case, a trailing
    full stop and commas are ignored; "center"/"centre", "big"/"large" and a few such synonyms
    are accepted.
    """
    text = re.sub(r"[,.!]", " ", text.lower())
    text = " ".join(text.split())
    if match := _ONE_OBJECT_RE.match(text):
        position = _POSITION_WORDS[match["position"]] if match["position"] else None
        return Scene((_parsed_object(match, 0, position),))
    if match := _TWO_OBJECT_RE.match(text):
        relation = None if match["relation"] == "and" else _RELATION_WORDS[match["relation"]]
        return Scene((_parsed_object(match, 0), _parsed_object(match, 1)), relation)
    return None
