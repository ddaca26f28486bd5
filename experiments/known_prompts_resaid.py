"""Prompts in words the model knows, said again: the held-out captions whose every word the training captions held
(`KnownWords.knows`) but which the pipelines now say again in the captions' phrasing (each prompt is read on its
own since 2026-12-08; before, a batch of such prompts was encoded as written), each drawn as written and as read
by a shipped model (ddim 25 steps, guidance 4, seed 0) and judged against its scene.

    python experiments/known_prompts_resaid.py [--model shapes64-grounded] [--captions 1024] \\
        [--results experiments/KNOWN_PROMPTS_RESAID.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts, read_as_written
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import score_prompt
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, show_results  # noqa: E402

SETTINGS = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes64-grounded")
    p.add_argument("--captions", type=int, default=1024, help="held-out captions per phrasing")
    p.add_argument("--results", help="write the table (markdown) here")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    judge = AttributePredictor()
    known = pipe.model.known_words
    lines = ["| phrasing | captions | all words known | said again | drawn right as written | as read |",
             "|---|---:|---:|---:|---:|---:|"]
    examples = []
    for phrasing in ("templates", "seen", "unseen"):
        held = heldout_shapes(args.captions, pipe.model.config.image_size, phrasing=phrasing)
        known_ones = [i for i, c in enumerate(held.captions) if known.knows(c)]
        read = pipe.model.in_known_words([held.captions[i] for i in known_ones])
        changed = [(i, r) for i, r in zip(known_ones, read) if r != held.captions[i]]
        right = {}
        for way, as_written in (("written", True), ("read", False)):
            readings = []
            if changed:
                with read_as_written(pipe, as_written):
                    readings = judge.read(generate_for_prompts(pipe, [held.captions[i] for i, _ in changed], SETTINGS))
            right[way] = sum(score_prompt(held.stated[i], r.scene).all_right for (i, _), r in zip(changed, readings))
        share = (lambda n: f"{n} ({n / len(changed):.0%})") if changed else (lambda n: "–")
        lines.append(f"| {phrasing} | {len(held.captions)} | {len(known_ones)} | {len(changed)} | "
                     f"{share(right['written'])} | {share(right['read'])} |")
        examples += [f"- \"{held.captions[i]}\" → \"{r}\"" for i, r in changed[:4]]
    head = f"Model: `{args.model}`. Command: `{command_line()}`"
    show_results("# Prompts in known words, said again\n\n" + __doc__.split("\n\n")[0].replace("\n", " ") + "\n\n"
                 + head + "\n\n" + "\n".join(lines) + "\n\nExamples:\n\n" + "\n".join(examples) + "\n", args.results)


if __name__ == "__main__":
    main()
