"""Prompts written as data — JSON, YAML, ``key: value`` lines, markdown tables — said as a sentence the chunker
reads (`ldmkit.text.phrases`).

Each object's attributes come as keys and values: a key naming what it is (`NOUN_KEYS`: "shape", "object",
"item" …), its colour (`COLOUR_KEYS`), its size (`SIZE_KEYS`) or where it goes (`PLACE_KEYS`: "position",
"placement", "where" …); a markdown table gives its header's cells as keys to each row's. An attribute said again
starts the next object. Each object is said as "a {size} {colour} {what} {place}", the objects joined by "and":

    {"objects": [{"shape": "circle", "color": "red", "position": "top"}, …]}  →  a red circle at the top and …
    | object | color | position |  /  | circle | red | top |                →  a red circle at the top

A relation between two named objects ("relation: subject_a left_of subject_b", "layout": "object 1 is above object
2") relates them by the relation's words, with each object's name or number put in its place. Keys of no object
("background", "style", "steps") are left out. A text with fewer than two such keys, or none naming what an object
is, or whose objects are said with an article (prose under labels: "Element one: a red cross, placed left"), is
returned as it is.
"""

from __future__ import annotations

import re

from ldmkit.text.phrases import SIDE_PHRASES

NOUN_KEYS = {"shape", "object", "item", "type", "kind", "element", "thing", "subject", "figure", "icon"}
COLOUR_KEYS = {"color", "colour", "fill", "hue"}
SIZE_KEYS = {"size", "scale"}
PLACE_KEYS = {"position", "pos", "place", "placement", "location", "where", "side", "align", "alignment", "loc"}
RELATION_KEYS = {"relation", "layout", "arrangement", "relationship"}
_KIND = {**{k: "noun" for k in NOUN_KEYS}, **{k: "colour" for k in COLOUR_KEYS}, **{k: "size" for k in SIZE_KEYS},
         **{k: "place" for k in PLACE_KEYS}}

_PAIR = re.compile(r"[\"']?([A-Za-z_][\w ]{0,20}?)[\"']?[ \t]*[:=][ \t]*(?:\"([^\"]*)\"|'([^']*)'|"
                   r"((?:(?!(?<!\w)[A-Za-z_]\w*[ \t]*[:=])(?:[^,;.\n{}\[\]|\"]|\.(?=\d)))+))")  # up to the next key
_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
_RULE = re.compile(r"^[\s|:\-]+$")
_SIDES = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "centre": "centre", "center": "centre",
          "middle": "centre", "upper": "top", "lower": "bottom"}  # the words of a place value, and their sides


def _pairs(text: str) -> list[tuple[str, str, int]]:
    """(key, value, position) of each key-value pair: markdown tables' cells under their header, then the rest."""
    pairs, rest, lines = [], [], text.splitlines()
    header = None
    for n, line in enumerate(lines):
        row = _ROW.match(line)
        if row is None:
            header = None
            rest.append(line)
            continue
        cells = [c.strip() for c in row.group(1).split("|")]
        if _RULE.match(row.group(1)):
            continue
        if header is None:
            header = [c.lower() for c in cells]
            continue
        pairs += [(key, value, n) for key, value in zip(header, cells) if value]
        rest.append("")
    offset = len(lines)
    for m in _PAIR.finditer("\n".join(rest)):
        value = next(v for v in m.groups()[1:] if v is not None).strip()
        pairs.append((m.group(1).strip().lower().replace(" ", "_"), value, offset + m.start()))
    return pairs


def _place(value: str) -> str:
    words = re.findall(r"[a-z]+", value.lower())
    side = next((w for w in words if w in _SIDES), None)
    return SIDE_PHRASES[_SIDES[side]] if side is not None else ""


def as_sentence(text: str) -> str:
    """``text`` said as a sentence where it is written as data (module docstring), else as it is."""
    pairs = _pairs(text)
    kinds = [(_KIND.get(key.split("_")[0]), key, value) for key, value, _ in pairs]
    attributes = [k for k in kinds if k[0] is not None]
    nouns = [value for kind, _, value in attributes if kind == "noun"]
    if len(attributes) < 2 or not nouns or any(re.match(r"(?:a|an|the|one)\s", v, re.IGNORECASE) for v in nouns):
        return text  # no data, or prose under labels ("Element one: a red cross, placed left. …")
    objects: list[dict[str, str]] = []
    names: dict[str, int] = {}  # "subject_a" → its object, for a relation that names it
    for kind, key, value in kinds:
        if kind is None:
            continue
        if not objects or kind in objects[-1]:
            objects.append({})
        objects[-1][kind] = value
        if kind == "noun" and key not in NOUN_KEYS:
            names[key] = len(objects) - 1
    said = []
    for obj in objects:
        words = " ".join(w for w in (obj.get("size"), obj.get("colour"), obj.get("noun")) if w)
        article = "an" if words[:1].lower() in "aeiou" else "a"
        said.append(" ".join(w for w in (f"{article} {words}", _place(obj.get("place", ""))) if w))
    relation = next((value for key, value, _ in pairs if key in RELATION_KEYS), None)
    if relation is not None and len(objects) == 2:
        named = relation.replace("_", " ")
        for name, index in names.items():
            named = re.sub(rf"\b{re.escape(name.replace('_', ' '))}\b", said[index], named, flags=re.IGNORECASE)
        for number in (1, 2):
            named = re.sub(rf"\b(?:object|item|element|shape)\s*#?{number}\b", said[number - 1], named,
                           flags=re.IGNORECASE)
        if named != relation.replace("_", " "):
            return named
    return " and ".join(said)
