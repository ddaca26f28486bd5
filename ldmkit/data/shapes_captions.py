"""Captions of shapes scenes as people write them: a broad grammar with a held-out part.

`caption_scene` (in `ldmkit.data.shapes`) tells a scene in a few fixed templates. `phrase_scene` tells
it with the words and sentence frames of one part of a grammar:

- ``"seen"``: the part training uses — synonyms for colours, shapes and sizes ("crimson", "box",
  "little"), attribute orders and comma lists ("a blue, small star", "a star in blue"), sentence frames
  ("there is …", "… on the left side", "on the left, …"), relations said as positions ("a red circle at
  the top, a blue square at the bottom"), and the templates' own wording among them;
- ``"unseen"``: words and frames that training never uses ("scarlet", "tile", "tiny", "I see …",
  "… sits higher than …"), each caption built on one of them, so that an evaluation measures
  phrasings the model never read.

Every caption is true of its scene and comes with what it states (a `Scene` whose unstated attributes
are None, in the order the caption names the objects) and, per object of the *scene*, the character
spans of the words that name it (its colour, size and shape words, every mention): the targets of
grounded training (`ldmkit.train.grounding`). Colour and shape are always stated; size, position and
the article vary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

from ldmkit.data.shapes import INVERSE_RELATION, Rng, Scene, ShapeObject, _chance, _pick

Part = Literal["seen", "unseen"]
PARTS: tuple[str, ...] = ("seen", "unseen")
Span = tuple[int, int]

# Each value's words: the first of "seen" is the templates' own word, and is drawn half the time.
_WORDS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "color": {
        "seen": {"red": ("red", "crimson", "ruby", "cherry"),
                 "orange": ("orange", "tangerine", "apricot", "pumpkin"),
                 "yellow": ("yellow", "golden", "canary", "mustard"),
                 "green": ("green", "emerald", "jade", "grassy"),
                 "cyan": ("cyan", "turquoise", "teal"),
                 "blue": ("blue", "cobalt", "sapphire", "azure"),
                 "purple": ("purple", "violet", "plum", "amethyst"),
                 "white": ("white", "snowy", "pearly", "milky")},
        "unseen": {"red": ("scarlet",), "orange": ("amber",), "yellow": ("lemon",), "green": ("lime",),
                   "cyan": ("aqua",), "blue": ("navy",), "purple": ("lavender",), "white": ("ivory",)},
    },
    "shape": {
        "seen": {"circle": ("circle", "disc", "disk", "ball", "orb", "round shape"),
                 "square": ("square", "box", "block", "square shape"),
                 "triangle": ("triangle", "wedge", "triangular shape", "three-sided shape"),
                 "star": ("star", "five-pointed star", "star shape", "five-point star"),
                 "diamond": ("diamond", "rhombus", "diamond shape", "rhomb"),
                 "cross": ("cross", "cross shape", "cross figure")},
        "unseen": {"circle": ("dot",), "square": ("tile",), "triangle": ("pyramid",), "star": ("pentagram",),
                   "diamond": ("lozenge",), "cross": ("plus sign",)},
    },
    "size": {
        "seen": {"small": ("small", "little", "miniature", "petite", "smallish", "mini"),
                 "large": ("large", "big", "giant", "massive", "enormous", "sizeable")},
        "unseen": {"small": ("tiny",), "large": ("huge",)},
    },
}  # fmt: skip

_POSITIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "seen": {"left": ("on the left", "on the left side", "at the left", "to the left", "at the left edge"),
             "right": ("on the right", "on the right side", "at the right", "to the right", "at the right edge"),
             "top": ("at the top", "near the top", "in the upper part", "at the upper edge", "up top"),
             "bottom": ("at the bottom", "near the bottom", "in the lower part", "at the lower edge",
                        "down below"),
             "centre": ("in the centre", "in the middle", "in the center", "centred", "right in the middle")},
    "unseen": {"left": ("in the left half", "on the left-hand side"),
               "right": ("in the right half", "on the right-hand side"),
               "top": ("in the top half", "up at the top"), "bottom": ("in the bottom half", "down at the bottom"),
               "centre": ("in the very middle", "at the centre")},
}  # fmt: skip

_RELATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "seen": {"above": ("above", "over", "on top of", "atop"), "below": ("below", "under", "underneath"),
             "left of": ("to the left of", "left of", "at the left of"),
             "right of": ("to the right of", "right of", "at the right of")},
    "unseen": {"above": ("higher than",), "below": ("beneath", "lower than"),
               "left of": ("on the left of", "further left than"),
               "right of": ("on the right of", "further right than")},
}  # fmt: skip

# Noun phrases: {a} the article, {size} {color} {shape} the words (a form without {size} leaves it out).
_NOUN_PHRASES: dict[str, tuple[str, ...]] = {
    "seen": ("{a} {size} {color} {shape}", "{a} {color} {shape}", "{a} {color} {size} {shape}",
             "{a} {size} {shape} in {color}", "{a} {shape} in {color}", "{a} {color}, {size} {shape}",
             "{a} {size}, {color} {shape}", "{a} {shape} of {color} colour", "{a} {size} {shape} of {color} colour",
             "one {color} {shape}", "one {size} {color} {shape}"),
    "unseen": ("{a} {size} {shape} coloured {color}", "{a} {shape} coloured {color}",
               "{a} {shape} that is {size} and {color}", "{a} {shape} that is {color}"),
}
# Sentence frames of one object: {S} the noun phrase, {P} the position phrase (frames without {P} state none).
_ONE_OBJECT: dict[str, tuple[str, ...]] = {
    "seen": ("{S}", "there is {S}", "a picture of {S}", "an image of {S}", "{S} {P}", "there is {S} {P}",
             "a picture of {S} {P}", "an image of {S} {P}", "{P}, {S}", "{P} there is {S}", "{S}, {P}",
             "a photo of {S}", "a photo of {S} {P}", "a render of {S}", "{S} is {P}", "{S} located {P}",
             "here is {S}", "showing {S} {P}", "just {S}", "{S} on a dark background"),
    "unseen": ("i see {S}", "draw {S}", "a drawing of {S}", "i see {S} {P}", "draw {S} {P}",
               "{S} sitting {P}", "{P} you can see {S}", "a drawing of {S} {P}"),
}
# Frames of two objects, A {R} B: {A}, {B} noun phrases, {R} the relation, {PA}/{PB} each one's position
# (the layout the relation implies), {SA}/{SB} a second mention of each shape.
_TWO_OBJECTS: dict[str, tuple[str, ...]] = {
    "seen": ("{A} {R} {B}", "there is {A} {R} {B}", "{A} is {R} {B}", "{A} {PA}, {B} {PB}",
             "{A} and {B}, the {SA} {R} the {SB}", "a picture of {A} {R} {B}", "{A} located {R} {B}",
             "{A} {PA} and {B} {PB}", "a photo of {A} {R} {B}"),
    "unseen": ("{A} sits {R} {B}", "{R} {B} there is {A}", "we see {A} {R} {B}", "{PA} {A}, {PB} {B}",
               "{A} placed {R} {B}"),
}
_LAYOUT = {"above": ("top", "bottom"), "below": ("bottom", "top"), "left of": ("left", "right"),
           "right of": ("right", "left")}


@dataclass(frozen=True)
class Phrasing:
    """A caption, what it states, and per object of the scene the spans of the words naming it."""

    text: str
    stated: Scene
    spans: tuple[tuple[Span, ...], ...]


class _Builder:
    """Text assembled piece by piece, remembering which object each named word belongs to."""

    def __init__(self, num_objects: int):
        self.text = ""
        self.spans: list[list[Span]] = [[] for _ in range(num_objects)]

    def add(self, piece: str, owner: int | None = None) -> None:
        if owner is not None:
            self.spans[owner].append((len(self.text), len(self.text) + len(piece)))
        self.text += piece


def _word(rng: Rng, kind: str, value: str, part: str) -> str:
    """A word for ``value``: in the seen part its own word half the time, else a synonym; in the unseen
    part a held-out word half the time, else a seen one (the frame is held out anyway)."""
    seen = _WORDS[kind]["seen"][value]
    if part == "unseen" and _chance(rng, 0.5):
        return _pick(rng, _WORDS[kind]["unseen"][value])
    return seen[0] if _chance(rng, 0.5) else _pick(rng, seen)


def _fill(b: _Builder, template: str, slots: dict, owner: int | None = None) -> None:
    """Append ``template`` with its {slots}: a callable slot appends itself; a (text, owner) pair is a
    named word; {a} is "a"/"an" by the next word."""
    parts = template.replace("{", "\0{").replace("}", "}\0").split("\0")
    for k, part in enumerate(parts):
        if not (part.startswith("{") and part.endswith("}")):
            b.add(part)
            continue
        name = part[1:-1]
        if name == "a":
            nxt = next((slots[p[1:-1]] for p in parts[k + 1:] if p.startswith("{") and p[1:-1] in slots), None)
            word = nxt[0] if isinstance(nxt, tuple) else ""
            b.add("an" if word[:1] in tuple("aeiou") else "a")
        elif callable(slots[name]):
            slots[name](b)
        elif isinstance(slots[name], tuple):
            b.add(*slots[name])
        else:
            b.add(slots[name], owner)


def _noun_phrase(rng: Rng, obj: ShapeObject, owner: int, part: str, with_size: bool):
    """(a function appending the noun phrase, its stated object, its shape word for a second mention)."""
    forms = [f for f in _NOUN_PHRASES[_pick(rng, PARTS) if part == "unseen" else "seen"] if ("{size}" in f) == with_size]
    form = _pick(rng, forms)
    shape = _word(rng, "shape", obj.shape, part)
    slots = {"color": (_word(rng, "color", obj.color, part), owner), "shape": (shape, owner)}
    if with_size:
        slots["size"] = (_word(rng, "size", obj.size, part), owner)
    stated = ShapeObject(obj.shape, obj.color, obj.size if with_size else None)
    return (lambda b: _fill(b, form, slots)), stated, shape


MAX_PIECES = 18  # words and punctuation marks: within 24 tokens with start and end, a few words split in two


def phrase_scene(scene: Scene, rng: Rng, part: Part = "seen") -> Phrasing:
    """A caption of ``scene`` from the ``part`` grammar (see the module docstring), of at most
    `MAX_PIECES` words and punctuation marks (a longer draw is drawn again)."""
    if part not in PARTS:
        raise ValueError(f"caption part {part!r}; allowed: {', '.join(PARTS)}")
    while True:
        phrasing = _phrase(scene, rng, part)
        if len(re.findall(r"\w+|[^\w\s]", phrasing.text)) <= MAX_PIECES:
            return phrasing


def _phrase(scene: Scene, rng: Rng, part: str) -> Phrasing:
    b = _Builder(len(scene.objects))
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        np_fn, stated, _ = _noun_phrase(rng, obj, 0, part, with_size=_chance(rng, 0.6))
        with_position = obj.position is not None and _chance(rng, 0.7)
        frames = [f for f in _ONE_OBJECT[part] if ("{P}" in f) == with_position]
        slots = {"S": np_fn}
        if with_position:
            slots["P"] = _pick(rng, _POSITIONS[part][obj.position])
            stated = ShapeObject(stated.shape, stated.color, stated.size, obj.position)
        _fill(b, _pick(rng, frames), slots)
        states = Scene((stated,))
    else:
        if len(scene.objects) != 2 or scene.relation is None:
            raise ValueError("phrase_scene describes one object, or two objects with a relation")
        first, second = (0, 1) if _chance(rng, 0.5) else (1, 0)  # either is true: A above B, B below A
        relation = scene.relation if first == 0 else INVERSE_RELATION[scene.relation]
        with_size = _chance(rng, 0.4)
        (fa, sa, shape_a), (fb, sb, shape_b) = (
            _noun_phrase(rng, scene.objects[i], i, part, with_size) for i in (first, second))
        pa, pb = _LAYOUT[relation]
        slots = {"A": fa, "B": fb, "R": _pick(rng, _RELATIONS[part][relation]),
                 "PA": _pick(rng, _POSITIONS[part][pa]), "PB": _pick(rng, _POSITIONS[part][pb]),
                 "SA": (shape_a, first), "SB": (shape_b, second)}
        # the long frames (positions, second mentions) without sizes, to stay within 24 tokens
        frames = [f for f in _TWO_OBJECTS[part] if not with_size or not ("{PA}" in f or "{SA}" in f)]
        _fill(b, _pick(rng, frames), slots)
        states = Scene((sa, sb), relation)
    text = b.text
    if _chance(rng, 0.2):
        text = text[0].upper() + text[1:]
    if _chance(rng, 0.2):
        text += "."
    return Phrasing(text, states, tuple(tuple(s) for s in b.spans))


def vocabulary(part: Part) -> dict[str, Sequence[str]]:
    """The words of ``part`` by kind (colour, shape, size): for tests and for reading the grammar."""
    return {kind: sorted({w for words in table[part].values() for w in words}) for kind, table in _WORDS.items()}
