"""Prompts with a typing error: how the pipelines read them with and without spelling (`KnownWords.meant`), and
what the default model draws from them.

The captions of the first ``--captions`` held-out scenes of `ldmkit eval generate` — in the dataset's templates,
the broad grammar's seen part and its unseen part — each get one typing error, seeded: a word of four or more
letters drawn at random gets one of four errors, drawn alike: a letter dropped, two neighbouring letters swapped,
a letter doubled, or a letter struck as a neighbouring key of a QWERTY keyboard. (An error may make another
English word, "star" → "stat": such a word is spelt right and stays, as a reader could not tell it either.)

- *text*: the share of captions with an error that the pipelines read exactly as they read the caption without it
  (`LatentDiffusion.in_known_words`), with spelling and without (`KnownWords.spelled` left out);
- *images* (``--images`` N: the first N captions of each phrasing): the one- and two-object prompts drawn right
  (the shapes attribute predictor against the stated scene; ddim 25 steps, guidance 4, seed 0) from the caption
  with the error, read with spelling and without, and from the caption without it.

    python experiments/typos.py --captions 1024 --images 256 --results experiments/TYPOS.md
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import sys
from pathlib import Path

from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import score_prompt
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings
from ldmkit.text.known_words import KnownWords

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, show_results  # noqa: E402

SETTINGS = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)
PHRASINGS = ("templates", "seen", "unseen")
KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KINDS = ("dropped", "swapped", "doubled", "neighbour key")


def neighbours(letter: str) -> str:
    """The keys beside ``letter`` on a QWERTY keyboard (same row, and the rows above and below at ±1)."""
    for row, keys in enumerate(KEYBOARD):
        if letter in keys:
            col = keys.index(letter)
            near = [keys[c] for c in (col - 1, col + 1) if 0 <= c < len(keys)]
            for other in (row - 1, row + 1):
                if 0 <= other < len(KEYBOARD):
                    near += [KEYBOARD[other][c] for c in (col - 1, col, col + 1) if 0 <= c < len(KEYBOARD[other])]
            return "".join(near)
    return ""


def typo(caption: str, rng: random.Random) -> tuple[str, str]:
    """(``caption`` with one typing error in one of its words of four or more letters, the kind of error); the
    caption as it was where it has no such word."""
    words = [m for m in re.finditer(r"[A-Za-z]{4,}", caption)]
    if not words:
        return caption, "none"
    word = rng.choice(words)
    text, kind = word.group(), rng.choice(KINDS)
    i = rng.randrange(len(text) - 1) if kind == "swapped" else rng.randrange(len(text))
    if kind == "dropped":
        wrong = text[:i] + text[i + 1:]
    elif kind == "swapped":
        wrong = text[:i] + text[i + 1] + text[i] + text[i + 2:]
    elif kind == "doubled":
        wrong = text[:i] + text[i] + text[i:]
    else:
        keys = neighbours(text[i].lower()) or text[i]
        wrong = text[:i] + rng.choice(keys) + text[i + 1:]
    if wrong == text:  # a swap of two equal letters: drop one instead
        wrong = text[:i] + text[i + 1:]
    return caption[:word.start()] + wrong + caption[word.end():], kind


@contextlib.contextmanager
def without_spelling():
    """Inside, the pipelines read prompts as before spelling was added: misspelt words as written."""
    spelled = KnownWords.spelled
    KnownWords.spelled = lambda self, prompt, wordnet: prompt
    try:
        yield
    finally:
        KnownWords.spelled = spelled


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes64-grounded")
    p.add_argument("--captions", type=int, default=1024)
    p.add_argument("--images", type=int, default=256, help="captions of each phrasing drawn (0: text only)")
    p.add_argument("--seed", type=int, default=0, help="the typing errors' seed")
    p.add_argument("--results", help="write the tables (markdown) here")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    model = pipe.model
    judge = AttributePredictor() if args.images else None
    text_rows, image_rows, examples = [], [], []
    for phrasing in PHRASINGS:
        heldout = heldout_shapes(args.captions, phrasing=phrasing)
        rng = random.Random(f"typos:{args.seed}:{phrasing}")
        wrong, kinds = zip(*(typo(c, rng) for c in heldout.captions))
        clean = model.in_known_words(heldout.captions)
        spelled = model.in_known_words(list(wrong))
        with without_spelling():
            unspelled = model.in_known_words(list(wrong))
        changed = [i for i, (w, c) in enumerate(zip(wrong, heldout.captions)) if w != c]
        same_with = sum(spelled[i] == clean[i] for i in changed) / len(changed)
        same_without = sum(unspelled[i] == clean[i] for i in changed) / len(changed)
        text_rows.append(f"| {phrasing} | {len(changed)} | **{same_with:.1%}** | {same_without:.1%} |")
        for kind in KINDS:
            of_kind = [i for i in changed if kinds[i] == kind]
            if of_kind:
                text_rows.append(f"| {phrasing}: {kind} | {len(of_kind)} | "
                                 f"{sum(spelled[i] == clean[i] for i in of_kind) / len(of_kind):.1%} | "
                                 f"{sum(unspelled[i] == clean[i] for i in of_kind) / len(of_kind):.1%} |")
        examples += [f"| {phrasing} | {wrong[i]} | {spelled[i]} |" for i in changed[:4]]
        if args.images:
            n = min(args.images, args.captions)
            stated = heldout.stated[:n]

            def right(prompts: list[str], spelling: bool = True) -> list[bool]:
                with contextlib.nullcontext() if spelling else without_spelling():
                    readings = judge.read(generate_for_prompts(pipe, prompts[:n], SETTINGS))
                return [score_prompt(s, r.scene).all_right for s, r in zip(stated, readings)]

            marks = {"spelled": right(list(wrong)), "unspelled": right(list(wrong), spelling=False),
                     "clean": right(list(heldout.captions))}
            for objects, name in ((1, "one"), (2, "two")):
                rows = [i for i in range(n) if len(stated[i].objects) == objects]
                shares = {k: sum(v[i] for i in rows) / len(rows) for k, v in marks.items()}
                image_rows.append(f"| {phrasing} | {name} | {len(rows)} | **{shares['spelled']:.1%}** | "
                                  f"{shares['unspelled']:.1%} | {shares['clean']:.1%} |")
    lines = [f"Model: `{args.model}`; {args.captions} captions per phrasing, typing errors seeded {args.seed}. "
             f"Command: `{command_line()}`", "",
             "## Read as without the error", "",
             "| captions | with an error | read as the caption without it, with spelling | without spelling |",
             "|---|---:|---:|---:|", *text_rows, ""]
    if image_rows:
        lines += ["## Drawn right", "",
                  f"The first {min(args.images, args.captions)} captions of each phrasing.", "",
                  "| captions | objects | prompts | with the error, spelling | with the error, without spelling "
                  "| without the error |", "|---|---|---:|---:|---:|---:|", *image_rows, ""]
    lines += ["## Examples", "", "| captions | with the error | as the pipelines read it |", "|---|---|---|",
              *examples, ""]
    show_results("# Prompts with a typing error\n\n" + __doc__.split("\n\n")[0].replace("\n", " ") + "\n\n"
                 + "\n".join(lines), args.results)


if __name__ == "__main__":
    main()
