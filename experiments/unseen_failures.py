"""Which words and frames the one-object failures of the unseen wording hold: a shipped model (--model) on the one-object
captions among the held-out scenes of `ldmkit eval generate` told in the grammar's unseen part, read as the pipelines
read them (`ldmkit.text.known_words`), ddim 25 steps, guidance 4, seed 0 (the images of benchmarks/KNOWN_WORDS.md's
"unseen, known words" row). For each held-out word and unseen frame: how many captions hold it and how many of those
were drawn wrong, and what share the rest reach without any caption that holds one of the given words.

    python experiments/unseen_failures.py [--images 512] [--without amber,lozenge,"plus sign"] \\
        [--results experiments/UNSEEN_FAILURES.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ldmkit.data.shapes_captions import _NOUN_PHRASES, _ONE_OBJECT, _WORDS
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import score_prompt
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, show_results  # noqa: E402


def fixed_words(frame: str) -> list[str]:
    """The fixed words of a frame or noun-phrase form ("{P} you can see {S}" → ["you can see"])."""
    return [piece.strip() for piece in re.split(r"\{\w+\}", frame) if piece.strip()]


def pattern(words: list[str]) -> str:
    return ".*".join(rf"\b{re.escape(w)}\b" for w in words)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ldmkit/pretrained/shapes64")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--without", default="amber,lozenge,plus sign",
                   help="comma-separated words: the share right of the captions holding none of them")
    p.add_argument("--results", help="write the table (markdown) here")
    args = p.parse_args()
    heldout = heldout_shapes(args.images, phrasing="unseen")
    pipe = load_pipeline(args.model)
    images = generate_for_prompts(pipe, heldout.captions,
                                  GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0))
    readings = AttributePredictor().read(images)
    one = [i for i, stated in enumerate(heldout.stated) if len(stated.objects) == 1]
    right = {i: score_prompt(heldout.stated[i], readings[i].scene).all_right for i in one}
    text = {i: heldout.captions[i].lower() for i in one}
    words = [w for kind in _WORDS.values() for held in kind["unseen"].values() for w in held]
    rows = [(f"word \"{w}\"", pattern([w])) for w in words]
    frames = dict.fromkeys(tuple(fixed_words(f)) for f in _ONE_OBJECT["unseen"])
    forms = dict.fromkeys(tuple(fixed_words(f.replace("{a} ", ""))) for f in _NOUN_PHRASES["unseen"])
    rows += [(f"frame \"{' … '.join(w)}\"", pattern(list(w))) for w in frames if w]
    rows += [(f"noun phrase \"… {' … '.join(w)} …\"", pattern(list(w))) for w in forms if w]
    lines = ["| captions holding | captions | drawn wrong | share wrong |", "|---|---:|---:|---:|"]
    for name, regex in rows:
        holding = [i for i in one if re.search(regex, text[i])]
        wrong = sum(not right[i] for i in holding)
        lines.append(f"| {name} | {len(holding)} | {wrong} | {wrong / max(1, len(holding)):.0%} |")
    left_out = [w.strip() for w in args.without.split(",") if w.strip()]
    rest = [i for i in one if not any(re.search(pattern([w]), text[i]) for w in left_out)]
    total = sum(right[i] for i in one) / len(one)
    summary = (f"- one-object captions: {len(one)}, drawn right {total:.1%}; the {len(rest)} holding none of "
               f"{', '.join(left_out)}: {sum(right[i] for i in rest) / max(1, len(rest)):.1%}")
    report = "\n".join(lines + ["", summary, "", f"Model: `{args.model}`. Command: `{command_line()}`"])
    show_results("# The unseen wording's one-object failures, word by word and frame by frame (issue 21)\n\n"
                 + __doc__.split("\n\n")[0].replace("\n", " ") + "\n\n" + report + "\n", args.results)


if __name__ == "__main__":
    main()
