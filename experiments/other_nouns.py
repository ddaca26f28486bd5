"""Shape nouns of neither part of the caption grammar, drawn as written and as read in known words (issue 21).

Held-out one-object scenes of `ldmkit eval generate` (template captions) whose shape has a common word of which it
is a kind — square → "rectangle", circle → "oval" and "ellipse", diamond → "parallelogram" — captioned with that
word instead, drawn by the shipped model as written and as the pipelines read it (`ldmkit.text.known_words`: a
noun with no known word above it read as a known noun naming a kind of it), and judged against the true scene.
Prints a markdown table.

    python experiments/other_nouns.py [--images 1024]
"""

from __future__ import annotations

import argparse
import re

import ldmkit
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.eval.report import percent
from ldmkit.settings import GenerationSettings
from ldmkit.text.wordnet import default_wordnet

WORDS = {"square": ("rectangle",), "circle": ("oval", "ellipse"), "diamond": ("parallelogram",)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1024, help="held-out scenes looked through (default 1024)")
    args = p.parse_args()
    held = heldout_shapes(args.images)
    pipe = ldmkit.load_pipeline(precision="auto")
    known, judge = pipe.model.known_words, AttributePredictor()
    print("| word | its kind drawn | captions | as written | read as | in known words |")
    print("|---|---|---:|---:|---|---:|")
    for shape, words in WORDS.items():
        picked = [k for k, s in enumerate(held.stated) if len(s.objects) == 1 and held.scenes[k].objects[0].shape == shape
                  and re.search(rf"\b{shape}\b", held.captions[k])]
        for word in words:
            prompts = [re.sub(rf"\b{shape}\b", word, held.captions[k]) for k in picked]
            row = [word, shape, str(len(prompts))]
            for read in (False, True):
                pipe.model.known_words = known if read else None
                images = generate_for_prompts(pipe, prompts, GenerationSettings())
                acc = prompt_accuracy(prompts, [r.scene for r in judge.read(images)], [held.stated[k] for k in picked])
                if read:
                    row.append(f"'{known.rewrite(prompts[0], default_wordnet())}'")
                row.append(percent(acc.all_right["one object"].share))
            print("| " + " | ".join(row) + " |", flush=True)
    pipe.model.known_words = known


if __name__ == "__main__":
    main()
