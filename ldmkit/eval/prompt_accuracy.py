"""Prompt accuracy: the share of what a prompt states that the image shows.

What a prompt states is `parse_prompt`'s scene; an attribute it leaves out (None) is not scored.
The attributes are

- ``objects``: the image shows as many objects as the prompt names;
- ``shape``, ``color``, ``size``, ``position``: of each object the prompt names (positions are
  only stated by one-object prompts; two-object prompts place their objects by the relation);
- ``relation``: the two objects stand in the stated relation;

and ``all`` is the share of prompts whose every statement holds (`prompt_matches_scene`).
Two-object prompts that are not all right are also sorted by why (`two_object_failure`).
Each prompt object is compared with the predicted object it agrees with most (either order of
two objects), so one wrong colour costs one colour mark, not every attribute of both objects.
Results are split into one-object prompts, two-object prompts and all prompts.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from ldmkit.data import INVERSE_RELATION, Scene, ShapeObject, object_matches, parse_prompt, prompt_matches_scene

ATTRIBUTES: tuple[str, ...] = ("objects", "shape", "color", "size", "position", "relation")
GROUPS: tuple[str, ...] = ("one object", "two objects", "all")
_OBJECT_FIELDS = ("shape", "color", "size", "position")
FAILURES: tuple[str, ...] = ("number of objects", "relation", "attributes swapped", "attribute missing")


@dataclass
class Tally:
    """Right / scored counts of one attribute."""

    right: int = 0
    scored: int = 0

    def add(self, ok: bool) -> None:
        self.right += int(ok)
        self.scored += 1

    @property
    def share(self) -> float | None:
        return self.right / self.scored if self.scored else None


@dataclass
class PromptScore:
    """The marks of one prompt: ``marks[attribute]`` lists a bool per scored statement."""

    num_objects: int
    marks: dict[str, list[bool]]
    all_right: bool


def _relation_of(scene: Scene, i: int, j: int) -> str | None:
    """The relation of scene object i to object j, when the scene has exactly those two."""
    if len(scene.objects) != 2 or scene.relation is None:
        return None
    return scene.relation if (i, j) == (0, 1) else INVERSE_RELATION[scene.relation]


def score_prompt(prompt: Scene, predicted: Scene | None) -> PromptScore:
    """Mark every statement of ``prompt`` against the ``predicted`` scene of its image."""
    objs: list[ShapeObject] = list(predicted.objects) if predicted is not None else []
    best: dict[str, list[bool]] | None = None
    # Every way of pairing prompt objects with distinct predicted objects (None: no partner left).
    slots = list(range(len(objs))) + [None] * len(prompt.objects)
    for pairing in dict.fromkeys(itertools.permutations(slots, len(prompt.objects))):  # unique, in order
        marks: dict[str, list[bool]] = {"objects": [len(objs) == len(prompt.objects)]}
        for p_obj, k in zip(prompt.objects, pairing):
            for name in _OBJECT_FIELDS:
                if getattr(p_obj, name) is not None:
                    marks.setdefault(name, []).append(k is not None and getattr(objs[k], name) == getattr(p_obj, name))
        if prompt.relation is not None:
            i, j = pairing
            marks["relation"] = [i is not None and j is not None and _relation_of(predicted, i, j) == prompt.relation]
        if best is None or sum(map(sum, marks.values())) > sum(map(sum, best.values())):
            best = marks
    all_right = predicted is not None and prompt_matches_scene(prompt, predicted)
    return PromptScore(len(prompt.objects), best, all_right)


def two_object_failure(prompt: Scene, predicted: Scene | None) -> str | None:
    """Why the image of a two-object relational prompt (A r B) is not all right: the first of
    `FAILURES` that applies, or None when it is all right (or the prompt is not of that kind).

    - "number of objects": the image does not show two objects;
    - "relation": both objects are right, in some order, but they stand in another relation;
    - "attributes swapped": every stated shape, colour and size is shown, but some on the other
      object ("a red circle above a blue square" drawn as a blue circle and a red square);
    - "attribute missing": a stated shape, colour or size is on neither object.
    """
    if len(prompt.objects) != 2 or prompt.relation is None:
        return None
    if predicted is not None and prompt_matches_scene(prompt, predicted):
        return None
    if predicted is None or len(predicted.objects) != 2:
        return "number of objects"
    (a, b), (p, q) = prompt.objects, predicted.objects
    if (object_matches(a, p) and object_matches(b, q)) or (object_matches(a, q) and object_matches(b, p)):
        return "relation"
    for name in ("shape", "color", "size"):
        stated = Counter(v for v in (getattr(a, name), getattr(b, name)) if v is not None)
        if stated - Counter((getattr(p, name), getattr(q, name))):  # a stated value (with its count) not shown
            return "attribute missing"
    return "attributes swapped"


@dataclass
class PromptAccuracy:
    """Tallies per group ("one object", "two objects", "all") and attribute, plus "all right"."""

    tallies: dict[str, dict[str, Tally]] = field(default_factory=lambda: {g: {a: Tally() for a in ATTRIBUTES} for g in GROUPS})
    all_right: dict[str, Tally] = field(default_factory=lambda: {g: Tally() for g in GROUPS})
    unparsed: list[str] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)  # two-object prompts not all right, by `two_object_failure`
    malformed: dict[str, Tally] = field(default_factory=lambda: {g: Tally() for g in GROUPS})  # per found object

    def add(self, score: PromptScore) -> None:
        group = "one object" if score.num_objects == 1 else "two objects"
        for g in (group, "all"):
            for name, marks in score.marks.items():
                for ok in marks:
                    self.tallies[g][name].add(ok)
            self.all_right[g].add(score.all_right)

    def to_dict(self) -> dict:
        """{group: {"prompts": n, "all": share, attribute: share or None, "malformed": share of the found
        objects that fit no clean shape, or None when not read}} (None: never stated), the number of
        unparsed prompts, and {"two-object failures": {failure: count}} in `FAILURES` order."""
        return {
            g: {"prompts": self.all_right[g].scored, "all": self.all_right[g].share,
                **{a: t.share for a, t in self.tallies[g].items()}, "malformed": self.malformed[g].share}
            for g in GROUPS
        } | {"unparsed prompts": len(self.unparsed),
             "two-object failures": {f: self.failures[f] for f in FAILURES}}


def prompt_accuracy(prompts: list[str], predicted: list[Scene | None], stated: list[Scene | None] | None = None,
                    malformed: list[int] | None = None) -> PromptAccuracy:
    """Score each prompt against the scene predicted for its image. What a prompt states is ``stated``
    (its scene, unstated attributes None) or, without it, what `parse_prompt` reads; prompts with
    neither are left out and listed in ``unparsed``. ``malformed``: per image, how many of the
    predicted objects fit no clean shape (`ldmkit.eval.attributes.Reading`)."""
    if len(prompts) != len(predicted):
        raise ValueError(f"{len(prompts)} prompts but {len(predicted)} predicted scenes")
    result = PromptAccuracy()
    for k, (text, scene) in enumerate(zip(prompts, predicted)):
        states = stated[k] if stated is not None else parse_prompt(text)
        if states is None:
            result.unparsed.append(text)
            continue
        result.add(score_prompt(states, scene))
        if malformed is not None and scene is not None:
            group = "one object" if len(states.objects) == 1 else "two objects"
            for g in (group, "all"):
                result.malformed[g].right += malformed[k]
                result.malformed[g].scored += len(scene.objects)
        if (failure := two_object_failure(states, scene)) is not None:
            result.failures[failure] += 1
    return result
