"""Each held-out colour word alone: the share of "a {word} {shape}" images (6 shapes × 4 seeds, DDIM 25, guidance 4)
that the shapes judge reads as one object of the word's colour, per model.

    python experiments/colour_lexicon/words.py runs/gft-control runs/colour-lexicon-add runs/colour-lexicon-replace
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

import ldmkit
from ldmkit.data.shapes import SHAPES
from ldmkit.data.shapes_captions import _WORDS
from ldmkit.eval.attributes import AttributePredictor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _bench_common
from _bench_common import command_line  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--part", default="unseen", choices=("seen", "unseen"))
    args = p.parse_args()
    judge = AttributePredictor()
    header = "| word | means | " + " | ".join(args.models) + " |"
    rows = {}
    for model in args.models:
        pipe = ldmkit.load_pipeline(model, precision="auto")
        pipe.model.known_words = None  # the model alone: each held-out word as written
        for colour, words in _WORDS["color"][args.part].items():
            for word in words:
                prompts = [f"a {word} {shape}" for shape in SHAPES for _ in range(4)]
                with torch.inference_mode():
                    images = pipe.generate_tensors(prompts, steps=25, guidance=4.0, seed=0)
                read = [s.objects[0].color if s is not None and len(s.objects) == 1 else "none" for s in judge(images)]
                others = ", ".join(f"{c} {n}" for c, n in Counter(read).most_common() if c != colour)
                rows.setdefault((word, colour), []).append(
                    f"{sum(r == colour for r in read)}/{len(read)}" + (f" ({others})" if others else ""))
    print(f"\n## Each {args.part} colour word alone\n\n{' '.join(__doc__.split(chr(10) * 2)[0].split())}\n\n`{command_line()}`\n")
    print(header)
    print("|" + "---|" * (2 + len(args.models)))
    for (word, colour), cells in rows.items():
        print(f"| {word} | {colour} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
