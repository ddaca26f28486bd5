"""How large each model draws the objects of one-object prompts that state a size: the held-out one-object template
captions of `ldmkit eval generate` (seed 1000003) that say "small" or "large", drawn with its sampling settings (ddim, 25
steps, guidance 4, seed 0; these captions alone, so other noises than its run's), read by the shapes judge. Per model and stated size: the captions, the share the
judge reads as small and as large, and the mean area of the object's pixels (those farther than 40 of 255 from the
background colour in any channel), as a share of the image and against the real renders of the same scenes.

    python experiments/grounded_cpu/sizes.py --model shipped=ldmkit/pretrained/shapes64 \\
        --model grounded=runs/packed/grounded-cpu [--images 1024] [--results experiments/GROUNDED_CPU_SIZES.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ldmkit.data.shapes_scene import BACKGROUND
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _bench_common
from _bench_common import show_results  # noqa: E402


def object_area(images: torch.Tensor) -> torch.Tensor:
    """Per image in [-1, 1]: the share of pixels farther than 40/255 from the background colour in some channel."""
    background = torch.tensor(BACKGROUND, dtype=images.dtype).view(1, 3, 1, 1) / 127.5 - 1
    return ((images - background).abs() > 80 / 255).any(1).float().mean((1, 2))


def size_rows(name: str, images: torch.Tensor, stated: list[str], judge: AttributePredictor) -> list[str]:
    scenes = judge(images)
    area = object_area(images)
    rows = []
    for size in ("small", "large"):
        idx = [i for i, s in enumerate(stated) if s == size]
        read = [scenes[i].objects[0].size if scenes[i] is not None and scenes[i].objects else None for i in idx]
        share = {s: sum(r == s for r in read) / len(idx) for s in ("small", "large")}
        rows.append(f"| {name} | {size} | {len(idx)} | {share['small']:.1%} | {share['large']:.1%} | "
                    f"{area[idx].mean().item():.2%} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                   type=lambda s: tuple(s.split("=", 1)) if "=" in s else p.error(f"--model {s}: give NAME=DIR"))
    p.add_argument("--images", type=int, default=1024, help="held-out template captions to choose from")
    p.add_argument("--results", help="write the table (markdown) here")
    args = p.parse_args()
    heldout = heldout_shapes(args.images)
    chosen = [i for i, s in enumerate(heldout.stated) if len(s.objects) == 1 and s.objects[0].size]
    captions = [heldout.captions[i] for i in chosen]
    stated = [heldout.stated[i].objects[0].size for i in chosen]
    judge = AttributePredictor()
    lines = ["| model | stated size | captions | read small | read large | object area (share of the image) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += size_rows("real renders", heldout.images[chosen], stated, judge)
    settings = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)
    for name, folder in args.model:
        images = generate_for_prompts(load_pipeline(folder), captions, settings)
        lines += size_rows(name, images, stated, judge)
    command = " ".join(["python experiments/grounded_cpu/sizes.py", *(f"--model {n}={f}" for n, f in args.model),
                        f"--images {args.images}"])
    report = "\n".join(lines + ["", f"Command: `{command}`"])
    show_results("# How large the grounded models draw stated sizes (issue 21)\n\n" + __doc__.split("\n\n")[0].replace("\n", " ") + "\n\n" + report + "\n",
                 args.results)


if __name__ == "__main__":
    main()
