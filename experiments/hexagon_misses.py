"""What the hexagon prompts a LoRA misses come out as: each of the benchmark's 160 test images
(`benchmarks/finetune_new_concept.py`: its 40 prompts × 4 noises, seed 0, DDIM 25 steps, guidance 4) judged
as the benchmark judges it, the misses sorted by why (no strong harmonic in 3 … 8: drawn round; another corner
count; six corners but not convex; nothing drawn) and counted by the prompt's colour and position and by the
drawn size (region area, in 64×64 pixels), with a grid of the misses.

    python experiments/hexagon_misses.py runs/hex-x45/run/lora.safetensors [--embedding FILE] [--grid misses.png]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import finetune_new_concept as bench  # noqa: E402

from ldmkit.data import save_grid  # noqa: E402
from ldmkit.eval.generation import generate_for_prompts  # noqa: E402
from ldmkit.pipelines.text_to_image import load_pipeline  # noqa: E402
from ldmkit.pretrained import resolve_model  # noqa: E402
from ldmkit.settings import GenerationSettings  # noqa: E402


def why(image: torch.Tensor) -> tuple[str, int]:
    """(the judge's reading of one image, the drawn region's area in 64×64 pixels)."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    region = bench.largest_region(array)
    if region is None:
        return "nothing drawn", 0
    area = int(region.sum()) // 16
    corners = bench.count_corners(region)
    if corners == 6:
        return ("hexagon" if bench.solidity(region) >= bench.SOLIDITY else "six corners, not convex"), area
    return ("round (no corner count)" if corners == 0 else f"{corners} corners"), area


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapter", help="a LoRA file written by the benchmark's fine-tune")
    p.add_argument("--embedding", help="its word's embedding (a --token run's learned_embeds.safetensors)")
    p.add_argument("--model", default="shapes64")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--grid", help="write the missed images here")
    args = p.parse_args()
    pipe = load_pipeline(resolve_model(args.model))
    pipe.load_lora_weights(args.adapter)
    if args.embedding:
        pipe.load_textual_inversion(args.embedding)
    settings = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)
    cells = bench.test_cells("hexagon") * args.repeats
    images = generate_for_prompts(pipe, [bench.prompt(c) for c in cells], settings)
    readings = [why(image) for image in images]
    missed = [k for k, (reading, _) in enumerate(readings) if reading != "hexagon"]
    hits = len(cells) - len(missed)
    print(f"{args.adapter}: {hits}/{len(cells)} drawn as hexagons ({hits / len(cells):.1%})\n")
    print("| the misses, read as | images |\n|---|---:|")
    for reading, n in Counter(readings[k][0] for k in missed).most_common():
        print(f"| {reading} | {n} |")
    for name, index in (("colour", 1), ("position", 2)):
        total = Counter(c[index] for c in cells)
        lost = Counter(cells[k][index] for k in missed)
        print(f"\n| {name} | missed of {len(cells) // len(total)} |\n|---|---:|")
        for value in total:
            print(f"| {value} | {lost[value]} |")
    areas = sorted(area for _, area in readings)
    cut = areas[len(areas) // 2]
    small = [k for k, (_, area) in enumerate(readings) if area < cut]
    print(f"\ndrawn small (area < {cut} px, the median): {sum(k in missed for k in small)} of {len(small)} missed; "
          f"drawn large: {sum(k not in small for k in missed)} of {len(cells) - len(small)} missed")
    if args.grid and missed:
        save_grid(images[missed], Path(args.grid), nrow=10)
        print(f"\nthe misses: {args.grid}")


if __name__ == "__main__":
    main()
