"""What a LoRA made the shipped model forget, attribute by attribute: the held-out one-object captions of
`benchmarks/finetune_new_concept.py` (the same captions, noise and sampler: DDIM 25 steps, guidance 4, seed 0)
drawn without and with each adapter, and for each the share right of every stated attribute (shape, colour,
size, position, count) and the captions right before and wrong after, with what the judge read instead.

    python experiments/forgetting_breakdown.py runs/hex-x34/run/lora.safetensors … [--heldout 512] [--show 12]
"""

from __future__ import annotations

import argparse
import json

from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import resolve_model
from ldmkit.settings import GenerationSettings


def readings(pipe, prompts, stated, settings, predictor):
    """(the one-object group's {attribute: share}, per caption: all right?, what the judge read)."""
    scenes = [r.scene for r in predictor.read(generate_for_prompts(pipe, prompts, settings))]
    shares = prompt_accuracy(prompts, scenes, stated).to_dict()["one object"]
    right = [prompt_accuracy([p], [s], [t]).all_right["one object"].share == 1.0
             for p, s, t in zip(prompts, scenes, stated)]
    return shares, right, scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapters", nargs="+", help="LoRA files")
    p.add_argument("--model", default="shapes64")
    p.add_argument("--heldout", type=int, default=512, help="held-out captions (about half one-object)")
    p.add_argument("--show", type=int, default=12, help="captions lost to list per adapter")
    args = p.parse_args()
    model = resolve_model(args.model)
    settings = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)
    heldout = heldout_shapes(args.heldout)
    keep = [i for i, s in enumerate(heldout.stated) if len(s.objects) == 1]
    prompts, stated = [heldout.captions[i] for i in keep], [heldout.stated[i] for i in keep]
    predictor = AttributePredictor()
    base, before, _ = readings(load_pipeline(model), prompts, stated, settings, predictor)
    print(json.dumps({"before": base}), flush=True)
    for adapter in args.adapters:
        pipe = load_pipeline(model)
        pipe.load_lora_weights(adapter)
        shares, after, scenes = readings(pipe, prompts, stated, settings, predictor)
        lost = [k for k in range(len(prompts)) if before[k] and not after[k]]
        print(json.dumps({"adapter": adapter, "after": shares, "lost": len(lost),
                          "gained": sum(a and not b for a, b in zip(after, before))}), flush=True)
        for k in lost[:args.show]:
            print(f"  {prompts[k]!r} -> {scenes[k]}")


if __name__ == "__main__":
    main()
