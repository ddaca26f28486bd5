"""The hexagon share of trained LoRA files on more images than the results file's 40, with the benchmark's judge
(`benchmarks/finetune_new_concept.py`: six corners and convex): each of its 40 test prompts drawn ``--repeats`` times
from other noise (the first 40 images are those the benchmark drew, at ``--seed`` 0), at each LoRA ``--scales``.
``--sizes`` draws the validation prompts instead: each test prompt with "small" and with "large" stated (80 prompts),
for choosing a setting on prompts the results file does not score. One row per adapter and scale, with the share of
each repeat, so the spread of a 40-image score is seen beside the mean.

    python experiments/hexagon_rescore.py runs/hex-x9/run/lora.safetensors runs/hex-x15/run/lora.safetensors \\
        [--repeats 4] [--scales 1,0.8] [--sizes --seed 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import finetune_new_concept as bench  # noqa: E402

from ldmkit.eval.generation import generate_for_prompts  # noqa: E402
from ldmkit.pipelines.text_to_image import load_pipeline  # noqa: E402
from ldmkit.pretrained import resolve_model  # noqa: E402
from ldmkit.settings import GenerationSettings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapters", nargs="+", help="LoRA files written by the benchmark's fine-tunes")
    p.add_argument("--model", default="shapes64")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--scales", default="1", help="comma-separated LoRA scales (default 1)")
    p.add_argument("--sizes", action="store_true", help="the validation prompts, with small and large stated")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model = resolve_model(args.model)
    settings = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=args.seed)
    cells = bench.test_cells("hexagon")
    once = [bench.prompt(c, size) for c in cells for size in (("small", "large") if args.sizes else (None,))]
    prompts = once * args.repeats
    print(f"{'validation prompts (sizes stated)' if args.sizes else 'test prompts'}, seed {args.seed}\n")
    print("| adapter | scale | images | drawn as hexagon | each repeat |\n|---|---:|---:|---:|---|")
    for adapter in args.adapters:
        for scale in (float(s) for s in args.scales.split(",")):
            pipe = load_pipeline(model)
            pipe.load_lora_weights(adapter, scale)
            found = [bench.judge(image)["hexagon"] for image in generate_for_prompts(pipe, prompts, settings)]
            each = [sum(found[k * len(once):(k + 1) * len(once)]) / len(once) for k in range(args.repeats)]
            print(f"| `{adapter}` | {scale:g} | {len(found)} | {sum(found) / len(found):.1%} | "
                  f"{', '.join(f'{share:.1%}' for share in each)} |", flush=True)


if __name__ == "__main__":
    main()
