"""Teach the shipped shapes64 model a seventh shape, "hexagon", from 16 images with a rank-8 LoRA, and measure
what it learned, what it forgot, the adapter's size and the time (issue 25).

The hexagons are drawn here (`draw_hexagon`, in the shapes' style: flat colour on the dark background, the
dataset's sizes and positions); the word is not in the dataset's vocabulary and the model never saw one.

- learned: for every colour × position ("a red hexagon on the left", 8 × 5 = 40 prompts, seeds 0 …), the share
  of images drawn as a hexagon (`count_corners`: the peaks of the shape's radius around its centroid; 6 =
  hexagon), and as a hexagon of the named colour and position too; the same judge on real renders of the same
  prompts, and on the other six shapes, says how far it can be trusted;
- forgot: one-object prompt accuracy (ldmkit's shapes judge, `ldmkit.eval`) on held-out captions before and
  after, with the same seeds;
- the adapter's file size (KiB) and the fine-tuning wall time on this machine (with prior preservation: the model
  first draws ``--prior`` images of one-object training captions, trained on beside the hexagons).

Run (the full measurement, ~20 min on 2 cores):

    OMP_NUM_THREADS=2 python benchmarks/finetune_new_concept.py --out runs/finetune-hexagon \
        --results benchmarks/FINETUNE_NEW_CONCEPT.md

``--smoke`` runs every stage on a handful of prompts and 2 steps (a minute), writing no results file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from ldmkit.data import save_grid
from ldmkit.data.shapes_dataset import shapes_sample
from ldmkit.data.shapes_render import draw_shape
from ldmkit.data.shapes_scene import BACKGROUND, COLORS, POSITIONS, RGB, SHAPES
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import SamplerSettings, generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.images import image_to_tensor
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import resolve_model
from ldmkit.train.finetune import FinetuneConfig, finetune

SIZE = 64
RADIUS = {"small": 0.11, "large": 0.19}  # as the shapes dataset draws them (fractions of the side)
CENTRE = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "centre": (0.5, 0.5)}
PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
          "centre": "in the centre"}


def draw_hexagon(color: str, position: str, size: str, rng: random.Random, shape: str = "hexagon") -> Image.Image:
    """A ``shape`` (hexagon, or one of the dataset's) of ``color`` at ``position``, with the dataset's jitter."""
    big = SIZE * 4
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    r = RADIUS[size] * rng.uniform(0.94, 1.06)
    x0, y0 = CENTRE[position]
    cx = min(max(x0 + rng.uniform(-0.04, 0.04), r + 0.02), 1 - r - 0.02) * big
    cy = min(max(y0 + rng.uniform(-0.04, 0.04), r + 0.02), 1 - r - 0.02) * big
    if shape == "hexagon":
        turn = rng.uniform(0, math.pi / 3)
        draw.polygon([(cx + r * big * math.cos(turn + k * math.pi / 3), cy + r * big * math.sin(turn + k * math.pi / 3))
                      for k in range(6)], fill=RGB[color])
    else:
        draw_shape(draw, shape, cx, cy, r * big, RGB[color])
    return image.resize((SIZE, SIZE), Image.BOX)


def make_training_set(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` hexagon images with sidecar captions ("a small red hexagon on the left") in ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    captions = []
    for i in range(count):
        color, position, size = rng.choice(COLORS), rng.choice(POSITIONS), rng.choice(("small", "large"))
        draw_hexagon(color, position, size, rng).save(folder / f"{i:03d}.png")
        caption = f"a {size} {color} hexagon {PHRASE[position]}"
        (folder / f"{i:03d}.txt").write_text(caption)
        captions.append(caption)
    return captions


# --------------------------------------------------------------------------------------------------
# the hexagon judge

def largest_region(image: np.ndarray) -> np.ndarray | None:
    """The largest connected region of pixels that differ from the background, at 4× (bilinear), or None."""
    big = np.asarray(Image.fromarray(image).resize((SIZE * 4, SIZE * 4), Image.BILINEAR), dtype=np.float32)
    mask = np.abs(big - np.array(BACKGROUND, dtype=np.float32)).sum(-1) > 120
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    region = labels == (1 + int(np.argmax(sizes)))
    return region if region.sum() >= 64 else None


def count_corners(region: np.ndarray, bins: int = 72, prominence: float = 0.05) -> int:
    """Corners of a filled shape: the local maxima of its boundary's distance from the centroid over the angle
    (``bins`` sectors, circularly smoothed), that rise above both neighbouring minima by ``prominence`` × the mean
    radius. Circle 0, triangle 3, square/diamond/cross 4, star 5, hexagon 6."""
    ys, xs = np.nonzero(region)
    cy, cx = ys.mean(), xs.mean()
    edge = region & ~ndimage.binary_erosion(region)
    ey, ex = np.nonzero(edge)
    angle = ((np.arctan2(ey - cy, ex - cx) + math.pi) / (2 * math.pi) * bins).astype(int) % bins
    radius = np.hypot(ey - cy, ex - cx)
    r = np.zeros(bins)
    np.maximum.at(r, angle, radius)
    filled = r > 0
    if filled.sum() < bins // 2:
        return 0
    idx = np.arange(bins)
    r = np.interp(idx, idx[filled], r[filled], period=bins)
    r = np.convolve(np.concatenate([r[-2:], r, r[:2]]), np.ones(5) / 5, mode="valid")
    peaks = [i for i in range(bins) if r[i] > r[i - 1] and r[i] >= r[(i + 1) % bins]]
    if not peaks:
        return 0
    corners = 0
    for k, p in enumerate(peaks):  # prominence against the lowest point on each side before the next peak
        prev, nxt = peaks[k - 1], peaks[(k + 1) % len(peaks)]
        left = min(r[(prev + j) % bins] for j in range((p - prev) % bins or bins))
        right = min(r[(p + j) % bins] for j in range((nxt - p) % bins or bins))
        if r[p] - max(left, right) > prominence * r.mean():
            corners += 1
    return corners


def judge(image: torch.Tensor) -> dict:
    """shape ("hexagon" when 6 corners), colour (nearest of the palette) and position of one image in [-1, 1]."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    region = largest_region(array)
    if region is None:
        return {"hexagon": False, "color": None, "position": None}
    small = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).resize((SIZE, SIZE), Image.BOX)) > 127
    mean = array[small].mean(0) if small.any() else array.reshape(-1, 3).mean(0)
    color = min(COLORS, key=lambda c: float(((np.array(RGB[c]) - mean) ** 2).sum()))
    ys, xs = np.nonzero(region)
    x, y = xs.mean() / region.shape[1], ys.mean() / region.shape[0]
    position = min(CENTRE, key=lambda p: (CENTRE[p][0] - x) ** 2 + (CENTRE[p][1] - y) ** 2)
    return {"hexagon": count_corners(region) == 6, "color": color, "position": position}


def score_hexagons(images: torch.Tensor, cells: list[tuple[str, str]]) -> dict:
    readings = [judge(im) for im in images]
    hexagon = sum(r["hexagon"] for r in readings) / len(readings)
    full = sum(r["hexagon"] and r["color"] == c and r["position"] == p for r, (c, p) in zip(readings, cells))
    return {"hexagon": hexagon, "hexagon, colour and position": full / len(readings)}


def judge_on_real(count: int, seed: int = 1) -> dict:
    """The judge on real renders: hexagons read as hexagons, and the dataset's shapes as not."""
    rng = random.Random(seed)
    cells = [(rng.choice(COLORS), rng.choice(POSITIONS), rng.choice(("small", "large"))) for _ in range(count)]
    hexes = torch.stack([image_to_tensor(draw_hexagon(c, p, s, rng)) for c, p, s in cells])
    others = torch.stack([image_to_tensor(draw_hexagon(c, p, s, rng, shape=SHAPES[i % len(SHAPES)]))
                         for i, (c, p, s) in enumerate(cells)])
    return {"hexagons read as hexagons": score_hexagons(hexes, [(c, p) for c, p, _ in cells]),
            "other shapes read as hexagons": sum(judge(im)["hexagon"] for im in others) / count}


def prior_prompts(count: int) -> list[str]:
    """``count`` one-object captions of the shapes training set (seed 0; the held-out captions are another seed)."""
    found, index = [], 0
    while len(found) < count:
        _, caption, scene = shapes_sample(0, index, SIZE)
        if len(scene.objects) == 1:
            found.append(caption)
        index += 1
    return found


# --------------------------------------------------------------------------------------------------

def one_object_accuracy(pipe, heldout, settings: SamplerSettings, predictor: AttributePredictor) -> float:
    keep = [i for i, s in enumerate(heldout.stated) if len(s.objects) == 1]
    prompts = [heldout.captions[i] for i in keep]
    images = generate_for_prompts(pipe, prompts, settings)
    readings = predictor.read(images)
    accuracy = prompt_accuracy(prompts, [r.scene for r in readings], [heldout.stated[i] for i in keep])
    return accuracy.all_right["one object"].share


def hexagon_images(pipe, prompts: list[str], settings: SamplerSettings) -> torch.Tensor:
    return generate_for_prompts(pipe, prompts, settings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="work folder: images, the fine-tuning run, grids, results.json")
    p.add_argument("--model", default="shapes64")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--heldout", type=int, default=512, help="held-out captions (about half one-object)")
    p.add_argument("--prior", type=int, default=16,
                   help="prior preservation: the model first draws this many images of one-object training captions "
                        "of the shapes dataset and trains on them beside the hexagons (0: none)")
    p.add_argument("--results", help="write the results table (markdown) here")
    p.add_argument("--smoke", action="store_true", help="every stage, tiny: 2 steps, few prompts")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.heldout = 2, 12
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = resolve_model(args.model)
    settings = SamplerSettings(sampler="ddim", steps=4 if args.smoke else 25, guidance=4.0, seed=0)
    cells = [(c, pos) for c in COLORS for pos in POSITIONS]
    if args.smoke:
        cells = cells[::10]
    prompts = [f"a {c} hexagon {PHRASE[pos]}" for c, pos in cells]
    heldout = heldout_shapes(args.heldout)
    predictor = AttributePredictor()
    results = {"judge on real renders": judge_on_real(8 if args.smoke else 120)}
    print(json.dumps(results, indent=1), flush=True)

    captions = make_training_set(out / "images", args.images)
    base = load_pipeline(model)
    before = hexagon_images(base, prompts, settings)
    results["before"] = score_hexagons(before, cells) | {
        "one-object accuracy": one_object_accuracy(base, heldout, settings, predictor)}
    print("before", results["before"], flush=True)

    prior = prior_prompts(args.prior)
    cfg = FinetuneConfig(method="lora", rank=args.rank, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         prior_images=len(prior), prior_prompts=tuple(prior),
                         sample_every=max(1, args.steps // 4), checkpoint_every=max(1, args.steps // 4),
                         sample_prompts=tuple(prompts[:8]), sample_steps=settings.steps, log_every=10)
    run = out / "run"
    start = time.perf_counter()
    [adapter] = finetune(model, out / "images", run, cfg, resume="auto")
    results["fine-tuning wall time (s)"] = round(time.perf_counter() - start, 1)
    results["adapter size (KiB)"] = round(adapter.stat().st_size / 1024, 1)
    results["training captions"] = captions

    tuned = load_pipeline(model)
    tuned.load_lora_weights(adapter)
    after = hexagon_images(tuned, prompts, settings)
    results["after"] = score_hexagons(after, cells) | {
        "one-object accuracy": one_object_accuracy(tuned, heldout, settings, predictor)}
    print("after", results["after"], flush=True)
    shown = min(8, len(prompts))
    save_grid(torch.cat([before[:shown], after[:shown]]), out / "before_after.png", nrow=shown)
    results["settings"] = {"rank": args.rank, "prior images": args.prior, "steps": args.steps,
                           "batch size": args.batch_size, "lr": args.lr,
                           "images": args.images, "sampler": settings.describe(), "hexagon prompts": len(prompts),
                           "held-out captions": args.heldout}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "training captions"}, indent=1))
    if args.results and not args.smoke:
        write_markdown(Path(args.results), results, out / "before_after.png")


def write_markdown(path: Path, r: dict, grid: Path) -> None:
    b, a = r["before"], r["after"]
    lines = [
        "# Teaching shapes64 a hexagon with a LoRA",
        "",
        "`python benchmarks/finetune_new_concept.py --out runs/finetune-hexagon "
        "--results benchmarks/FINETUNE_NEW_CONCEPT.md`",
        "",
        f"Settings: {json.dumps(r['settings'])}",
        "",
        "| | before | after |",
        "|---|---:|---:|",
        f"| hexagon prompts drawn as hexagons | {b['hexagon']:.1%} | {a['hexagon']:.1%} |",
        f"| … with the named colour and position | {b['hexagon, colour and position']:.1%} | "
        f"{a['hexagon, colour and position']:.1%} |",
        f"| held-out one-object accuracy | {b['one-object accuracy']:.1%} | {a['one-object accuracy']:.1%} |",
        "",
        f"- adapter: {r['adapter size (KiB)']} KiB; fine-tuning: {r['fine-tuning wall time (s)']} s on this machine",
        f"- the corner-count judge on real renders: {json.dumps(r['judge on real renders'])}",
        "",
        f"![before (top) and after (bottom)]({grid.name})",
    ]
    path.write_text("\n".join(lines) + "\n")
    Image.open(grid).save(path.parent / grid.name)


if __name__ == "__main__":
    main()
