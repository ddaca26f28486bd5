"""Does a re-said prompt need its articles? Prompts of the blind frame sets that the pipelines say again without a
determiner before an object ("red circle atop white triangle"), drawn by the default model as said and with "a"/"an"
before each object ("a red circle atop a white triangle"), judged against the stated scene (ddim 25 steps, guidance
4, seed 0; the scenes of `novel_phrasings.py`, 8 per frame).

The rules since 8f2e661 add the article themselves (`KnownWords._said`), so the comparison is made with the rules
before it, on a checkout of 06b87bb (experiments/NOVEL_PHRASINGS.md):

    git worktree add /tmp/rules-06b87bb 06b87bb
    PYTHONPATH=/tmp/rules-06b87bb python experiments/articles.py frames.json frames_b.json frames_c.json \\
        frames_d.json frames_e.json frames_f.json frames_g.json frames_h.json
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts, read_as_written
from ldmkit.eval.prompt_accuracy import score_prompt
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.text.phrases import parse_phrases

sys.path.insert(0, str(Path(__file__).resolve().parent))
from novel_phrasings import SETTINGS, fill, scenes_for  # noqa: E402

FOLDER = Path(__file__).with_name("novel_phrasings")
_DETERMINER_BEFORE = re.compile(r"\b(?:a|an|the|one|this|that)\s+$")


def starts(text: str) -> list[int]:
    """Where each object the chunker finds in ``text`` begins."""
    return [min(a for a, _ in (*o.modifiers, o.noun)) for o in parse_phrases(text).objects]


def bare(text: str) -> bool:
    """Whether ``text`` names objects and none of them has a determiner."""
    found = starts(text)
    return bool(found) and not any(_DETERMINER_BEFORE.search(text[:a].lower()) for a in found)


def with_articles(text: str) -> str:
    """``text`` with "a"/"an" before each object."""
    for a in sorted(starts(text), reverse=True):
        text = text[:a] + ("an " if text[a].lower() in "aeiou" else "a ") + text[a].lower() + text[a + 1:]
    return text


def main() -> None:
    pipe = load_pipeline("shapes64-grounded")
    judge = AttributePredictor()
    prompts, stated = [], []
    for name in sys.argv[1:]:
        frames = json.loads((FOLDER / name).read_text())
        rng = random.Random(0)
        for kind in ("one", "two"):
            for entry in frames[kind]:
                for scene in scenes_for(entry, kind, 8, rng):
                    prompts.append(fill(entry["text"], list(scene.objects)))
                    stated.append(scene)
    read = pipe.model.in_known_words(prompts)
    chosen = [i for i, r in enumerate(read) if r != prompts[i] and bare(r)]
    said = [read[i] for i in chosen]
    scenes = [stated[i] for i in chosen]
    two = [len(s.objects) == 2 for s in scenes]

    def right(texts: list[str]) -> list[bool]:
        with read_as_written(pipe, True):
            readings = judge.read(generate_for_prompts(pipe, texts, SETTINGS))
        return [score_prompt(s, r.scene).all_right for s, r in zip(scenes, readings)]

    print(f"{len(chosen)} prompts said again without determiners, e.g. {said[:2]}")
    for name, marks in (("as said", right(said)), ("with articles", right([with_articles(t) for t in said]))):
        two_right = [m for m, t in zip(marks, two) if t]
        one_right = [m for m, t in zip(marks, two) if not t]
        print(f"{name}: two objects {sum(two_right) / max(1, len(two_right)):.1%} of {len(two_right)}, "
              f"one object {sum(one_right) / max(1, len(one_right)):.1%} of {len(one_right)}")


if __name__ == "__main__":
    main()
