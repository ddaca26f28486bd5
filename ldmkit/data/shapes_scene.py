"""The shapes dataset's world: its vocabulary, the ground truth of a scene (`Scene`, `ShapeObject`), whether
a scene shows what a prompt asks (`prompt_matches_scene`), and drawing random scenes (`sample_scene`).
See `ldmkit.data.shapes` for the vocabulary and the layout of two-object scenes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

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
