"""The template captions of a scene (`caption_scene`) and reading a prompt in those templates back into the
`Scene` it asks for (`parse_prompt`). The broader caption grammar is `ldmkit.data.shapes_captions`."""

from __future__ import annotations

import re

from ldmkit.data.shapes_scene import COLORS, SHAPES, Rng, Scene, ShapeObject, _chance, _pick, _uniform


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
