"""Tuning binding guidance (the step's form, λ, t_stop and the number of starting noises) on captions
the evaluation never uses.

The two-object captions among items 0 … ITEMS−1 of the shapes dataset at seed 2000003 (training uses
seed 0, the shapes judge 7000001, evaluation 1000003) are drawn by the model with each λ × stop of the
normalised step and with each classifier-guidance λ (``normalized=False``) at the default stop, all from
one starting noise each, then at the default λ and stop with each number of candidate starting noises
(`BindingGuidance.candidates`), and judged; the table of all-right shares goes to --results. DDIM, 25
steps, guidance 4, batch k seeded k.

    python experiments/binding/tune.py --results experiments/BINDING_TUNING.md   # ~9 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ldmkit.diffusion.binding import BindingGuidance
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import FAILURES, prompt_accuracy
from ldmkit.eval.report import percent
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings
from ldmkit.storage import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _bench_common
from _bench_common import command_line, markdown_table  # noqa: E402

TUNING_SEED = 2000003


def numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.1,0.3") from None
    return values


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped shapes64)")
    p.add_argument("--items", type=int, default=400, help="dataset items to take the two-object captions from")
    p.add_argument("--scales", type=numbers, default=[0.1, 0.2, 0.3, 0.5], help="λ values of the normalised step")
    p.add_argument("--stops", type=numbers, default=[0.5, 0.3], help="t_stop as fractions of T")
    p.add_argument("--classifier-scales", type=numbers, default=[300.0],
                   help="λ values of the classifier-guidance step λ √(1 − ᾱ_t) ∇L, at the default stop")
    p.add_argument("--candidates", type=numbers, default=[2, 3],
                   help="numbers of candidate starting noises per prompt, at λ = --default-scale and the default stop")
    p.add_argument("--default-scale", type=float, default=0.3, help="λ of the rows with candidates")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--results", default=None, help="markdown file for the table")
    args = p.parse_args(argv)

    pipe = load_pipeline(args.model)
    judge = AttributePredictor()
    tuning = heldout_shapes(args.items, seed=TUNING_SEED)
    prompts = [c for c, s in zip(tuning.captions, tuning.scenes) if len(s.objects) == 2]
    if not prompts:
        raise SystemExit(f"no two-object captions among the first {args.items} items; give more --items")
    plain_binding = pipe.prompt_binding
    header = ["step", "λ", "t_stop / T", "starting noises", "2-object all right",
              *(f"not right: {f}" for f in FAILURES), "seconds"]
    rows = []
    default_stop = BindingGuidance.stop
    configs = ([(0.0, default_stop, True, 1)] + [(scale, default_stop, False, 1) for scale in args.classifier_scales]
               + [(scale, stop, True, 1) for stop in args.stops for scale in args.scales]
               + [(args.default_scale, default_stop, True, round(n)) for n in args.candidates])
    for scale, stop, normalized, candidates in configs:
        pipe.prompt_binding = lambda ps, s, _, stop=stop, normalized=normalized, candidates=candidates: (
            dataclasses.replace(plain_binding(ps, s, candidates), stop=stop, normalized=normalized))
        start = time.time()
        images = generate_for_prompts(pipe, prompts, GenerationSettings(num_inference_steps=args.steps, binding=scale))
        accuracy = prompt_accuracy(prompts, judge(images))
        share = accuracy.all_right["two objects"].share
        form = "–" if scale == 0 else "normalised" if normalized else "classifier"
        rows.append([form, f"{scale:g}", "–" if scale == 0 else f"{stop:g}", str(candidates), f"**{percent(share)}**",
                     *(str(accuracy.failures[f]) for f in FAILURES), f"{time.time() - start:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    text = (f"# Tuning binding guidance\n\n{len(prompts)} two-object captions of the shapes dataset at seed "
            f"{TUNING_SEED} (items 0–{args.items - 1}; the evaluation uses seed 1000003), the shipped model unless "
            f"another is named, DDIM {args.steps} steps, guidance 4, the same seeds in every row. Binding guidance "
            f"acts at t ≥ t_stop; its step is λ ∇L / rms(∇L) (normalised, the default) or λ √(1 − ᾱ_t) ∇L "
            f"(classifier guidance); with more than one starting noise, the one with the smallest binding loss "
            f"after the first fifth of the steps goes on (ldmkit/diffusion/binding.py).\n\n{markdown_table(header, rows)}\n\n"
            f"Regenerate: `{command_line(argv)}`\n")
    if args.results:
        write_text_atomic(args.results, text)
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
