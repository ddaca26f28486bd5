"""Teach the shipped shapes64 model something it never saw from 16 images with a rank-8 LoRA — a seventh shape,
"hexagon", or a ninth colour, "magenta" — and measure what it learned, what it forgot, the adapter's size and the
time (issue 25).

The training images are drawn here (`draw_object`, in the shapes' style: flat colour on the dark background, the
dataset's sizes and positions); neither word is in the dataset's vocabulary and the model never saw either.

- learned, ``--concept hexagon``: for every colour × position ("a red hexagon on the left", 8 × 5 = 40 prompts,
  seeds 0 …; ``--repeats N``: each drawn N times), the share of images drawn as a hexagon (`count_corners`: the
  strongest harmonic of the outline's radius around its centroid is 6, and `solidity`: convex, so that a
  six-pointed star does not count), and as a hexagon of the named colour and position too;
  ``--concept magenta``: for every shape × position ("a magenta star at the top", 6 × 5 = 30 prompts), the share
  drawn magenta (the nearest of the palette and magenta), and magenta with the named shape (ldmkit's shapes judge)
  and position too; the same judges on real renders say how far they can be trusted;
- forgot: one-object prompt accuracy (ldmkit's shapes judge, `ldmkit.eval`) on held-out captions before and
  after, with the same seeds;
- the adapter's file size (KiB) and the fine-tuning wall time on this machine (with prior preservation: the model
  first draws ``--prior`` images of one-object training captions, trained on beside the new images).

``--lora-targets attention+conv`` adds LoCon adapters on the UNet ResBlocks' 3×3 convolutions (where the shapes64
UNet draws at 16×16, which has no attention); ``--save-dtype float16`` halves the file. Each section of the
results file names the model it measured (the UNet file's SHA-256) and the exact command.

Run (the full measurement, ~20 min each on 2 cores):

    OMP_NUM_THREADS=2 python benchmarks/finetune_new_concept.py --out runs/finetune-hexagon \
        --results benchmarks/FINETUNE_NEW_CONCEPT.md
    OMP_NUM_THREADS=2 python benchmarks/finetune_new_concept.py --concept magenta --out runs/finetune-magenta \
        --results benchmarks/FINETUNE_NEW_CONCEPT.md      # adds its section to the same file

``--smoke`` runs every stage on a handful of prompts and 2 steps (a minute), writing no results file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

from ldmkit.convert.lora import TARGETS
from ldmkit.data import save_grid
from ldmkit.data.shapes_dataset import shapes_sample
from ldmkit.data.shapes_render import draw_shape
from ldmkit.data.shapes_scene import BACKGROUND, COLORS, POSITIONS, RGB, SHAPES
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.images import image_to_tensor
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import resolve_model
from ldmkit.settings import GenerationSettings
from ldmkit.train.common import LR_SCHEDULES
from ldmkit.train.finetune import SAVE_DTYPES, TIMESTEP_BIAS_SCOPES, TIMESTEP_BIASES, FinetuneConfig, finetune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import unet_digest  # noqa: E402

SIZE = 64
RADIUS = {"small": 0.11, "large": 0.19}  # as the shapes dataset draws them (fractions of the side)
CENTRE = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "centre": (0.5, 0.5)}
PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
          "centre": "in the centre"}
PALETTE = {**RGB, "magenta": (240, 50, 190)}  # magenta: as far from red and purple as they are from their neighbours
CONCEPTS = ("hexagon", "magenta")
Cell = tuple[str, str, str]  # (shape, colour, position) a prompt names


def draw_object(shape: str, color: str, position: str, size: str, rng: random.Random) -> Image.Image:
    """A ``shape`` (hexagon, or one of the dataset's) of ``color`` (magenta, or one of the dataset's) at ``position``,
    with the dataset's jitter of size and place."""
    big = SIZE * 4
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    r = RADIUS[size] * rng.uniform(0.94, 1.06)
    x0, y0 = CENTRE[position]
    cx = min(max(x0 + rng.uniform(-0.04, 0.04), r + 0.02), 1 - r - 0.02) * big
    cy = min(max(y0 + rng.uniform(-0.04, 0.04), r + 0.02), 1 - r - 0.02) * big
    if shape in ("hexagon", "six-pointed star"):  # the star: what the judge must not take for a hexagon
        turn, corners = rng.uniform(0, math.pi / 3), 6 if shape == "hexagon" else 12
        radii = [r * big * (1 if shape == "hexagon" or k % 2 == 0 else 0.7) for k in range(corners)]
        draw.polygon([(cx + radii[k] * math.cos(turn + 2 * k * math.pi / corners),
                       cy + radii[k] * math.sin(turn + 2 * k * math.pi / corners)) for k in range(corners)],
                     fill=PALETTE[color])
    else:
        draw_shape(draw, shape, cx, cy, r * big, PALETTE[color])
    return image.resize((SIZE, SIZE), Image.BOX)


def random_cell(concept: str, rng: random.Random) -> Cell:
    """The new word with everything else drawn at random: a hexagon of a known colour, or a known shape in magenta."""
    if concept == "hexagon":
        return "hexagon", rng.choice(COLORS), rng.choice(POSITIONS)
    return rng.choice(SHAPES), "magenta", rng.choice(POSITIONS)


def test_cells(concept: str) -> list[Cell]:
    if concept == "hexagon":
        return [("hexagon", c, p) for c in COLORS for p in POSITIONS]
    return [(s, "magenta", p) for s in SHAPES for p in POSITIONS]


def prompt(cell: Cell, size: str | None = None) -> str:
    shape, color, position = cell
    return f"a {size + ' ' if size else ''}{color} {shape} {PHRASE[position]}"


def other_values(concept: str) -> tuple[str, ...]:
    """The values of the attribute a prompt names beside the new word: colours for a new shape, shapes for a new
    colour."""
    return COLORS if concept == "hexagon" else SHAPES


def balanced_cells(concept: str, count: int) -> list[Cell]:
    """``count`` cells that name every value of the other attribute (colour for a new shape, shape for a new
    colour) as evenly as ``count`` allows, each time at another position: what a user picking a varied set of
    examples would show, where a random draw may leave a colour out."""
    values = other_values(concept)
    cells = []
    for i in range(count):
        value, position = values[i % len(values)], POSITIONS[(i + i // len(values)) % len(POSITIONS)]
        cells.append(("hexagon", value, position) if concept == "hexagon" else (value, "magenta", position))
    return cells


def make_training_set(folder: Path, count: int, concept: str, seed: int = 0, small_share: float | None = None,
                      balanced: bool = False, size_stated: float = 1.0) -> list[str]:
    """``count`` images of ``concept`` with sidecar captions ("a small red hexagon on the left") in ``folder``;
    each drawn small or large at random, or exactly round(``small_share`` · count) of them small (shuffled); the
    other attributes at random, or from `balanced_cells` (and then each value's first image small, its second
    large); the size word in a caption with chance ``size_stated`` ("a red hexagon on the left" otherwise)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if small_share is None:
        sizes = None if not balanced else [("small", "large")[i // len(other_values(concept)) % 2] for i in range(count)]
    else:
        small = round(small_share * count)
        sizes = ["small"] * small + ["large"] * (count - small)
        random.Random(seed + 1).shuffle(sizes)
    cells = balanced_cells(concept, count) if balanced else None
    stated = random.Random(seed + 2)  # its own draws: the images do not depend on size_stated
    captions = []
    for i in range(count):
        cell = random_cell(concept, rng) if cells is None else cells[i]
        size = rng.choice(("small", "large")) if sizes is None else sizes[i]
        draw_object(*cell, size, rng).save(folder / f"{i:03d}.png")
        captions.append(prompt(cell, size if stated.random() < size_stated else None))
        (folder / f"{i:03d}.txt").write_text(captions[-1])
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


def count_corners(region: np.ndarray, bins: int = 90, least: float = 0.012) -> int:
    """Corners of a filled shape, read from its outline's symmetry: r(θ), the boundary's distance from the
    centroid over ``bins`` angle sectors, has Fourier amplitudes |R_k| / R_0; a regular k-cornered shape puts its
    energy in harmonic k (triangle 3, square/diamond/cross 4, star 5, hexagon 6; a circle in none). The count is
    the strongest k in 3 … 8 when |R_k| / R_0 ≥ ``least`` and at least twice every other harmonic in 3 … 8, else 0.

    On renders and on their autoencoder round trips (`judge_on_real`) hexagons give |R_6| / R_0 ≈ 0.020–0.03
    and circles ≤ 0.006, so rounded corners of small shapes still count, where peaks of r(θ) above a prominence
    (this judge's first form) missed most small hexagons after the autoencoder."""
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
    spectrum = np.abs(np.fft.rfft(r))
    amplitude = spectrum[3:9] / spectrum[0]  # harmonics 3 … 8
    best = int(np.argmax(amplitude))
    others = np.delete(amplitude, best)
    if amplitude[best] < least or amplitude[best] < 2 * others.max():
        return 0
    return best + 3


SOLIDITY = 0.9  # the least share of its convex hull a hexagon fills (module docstring of `solidity`)


def solidity(region: np.ndarray) -> float:
    """The region's area over the area of its convex hull (each pixel a unit square): 1 for a convex shape. Real
    hexagon renders and their autoencoder round trips fill ≥ 0.945 of it; a six-pointed star fills 0.6–0.86, and
    `count_corners` alone reads it as six-cornered (its outline has six-fold symmetry too)."""
    ys, xs = np.nonzero(region)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
    return float(region.sum() / ConvexHull(corners).volume)


def judge(image: torch.Tensor) -> dict:
    """hexagon (6 corners and convex: `count_corners` and `solidity`), colour (nearest of the palette and magenta)
    and position of one image in [-1, 1]."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    region = largest_region(array)
    if region is None:
        return {"hexagon": False, "color": None, "position": None}
    small = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).resize((SIZE, SIZE), Image.BOX)) > 127
    mean = array[small].mean(0) if small.any() else array.reshape(-1, 3).mean(0)
    color = min(PALETTE, key=lambda c: float(((np.array(PALETTE[c]) - mean) ** 2).sum()))
    ys, xs = np.nonzero(region)
    x, y = xs.mean() / region.shape[1], ys.mean() / region.shape[0]
    position = min(CENTRE, key=lambda p: (CENTRE[p][0] - x) ** 2 + (CENTRE[p][1] - y) ** 2)
    hexagon = count_corners(region) == 6 and solidity(region) >= SOLIDITY
    return {"hexagon": hexagon, "color": color, "position": position}


def score(images: torch.Tensor, cells: list[Cell], concept: str, predictor: AttributePredictor) -> dict:
    """{"concept": share of images showing the new word, "all named": … with every other named attribute too}."""
    readings = [judge(im) for im in images]
    if concept == "hexagon":
        found = [r["hexagon"] for r in readings]
        right = [f and r["color"] == c and r["position"] == p for f, r, (_, c, p) in zip(found, readings, cells)]
    else:  # the shape from ldmkit's judge (trained on the eight colours; it reads shapes of any colour)
        scenes = [r.scene for r in predictor.read(images)]
        shapes = [s.objects[0].shape if s is not None and len(s.objects) == 1 else None for s in scenes]
        found = [r["color"] == "magenta" for r in readings]
        right = [f and shape == s and r["position"] == p
                 for f, shape, r, (s, _, p) in zip(found, shapes, readings, cells)]
    return {"concept": sum(found) / len(found), "all named": sum(right) / len(right)}


def judge_on_real(concept: str, count: int, predictor: AttributePredictor, model=None, seed: int = 1) -> dict:
    """The judges on real renders of the concept and, given the model (an fp32 `LatentDiffusion`), on their round trips
    through its autoencoder (what a model that drew the concept perfectly would score); for the hexagon also the
    dataset's six shapes at both sizes, renders and round trips, which must not count."""
    rng = random.Random(seed)
    cells = [random_cell(concept, rng) for _ in range(count)]
    images = torch.stack([image_to_tensor(draw_object(*c, rng.choice(("small", "large")), rng)) for c in cells])
    kinds = (*SHAPES, "six-pointed star")
    others = torch.stack([image_to_tensor(draw_object(kinds[i % len(kinds)], c, p, ("small", "large")[i % 2], rng))
                          for i, (_, c, p) in enumerate(cells)])
    found = {"real renders": score(images, cells, concept, predictor)}
    if concept == "hexagon":
        found["the six dataset shapes and a six-pointed star read as hexagons"] = sum(judge(im)["hexagon"] for im in others) / count
    if model is not None:
        with torch.no_grad():
            trip = model.decode_latents(model.encode_images(torch.cat([images, others])))
        trip = trip.float().clamp(-1, 1).cpu()
        found["autoencoder round trips"] = score(trip[:count], cells, concept, predictor)
        if concept == "hexagon":
            read = sum(judge(im)["hexagon"] for im in trip[count:])
            found["… of the six dataset shapes and the star read as hexagons"] = read / count
    return found


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

def one_object_accuracy(pipe, heldout, settings: GenerationSettings, predictor: AttributePredictor) -> float:
    keep = [i for i, s in enumerate(heldout.stated) if len(s.objects) == 1]
    prompts = [heldout.captions[i] for i in keep]
    images = generate_for_prompts(pipe, prompts, settings)
    readings = predictor.read(images)
    accuracy = prompt_accuracy(prompts, [r.scene for r in readings], [heldout.stated[i] for i in keep])
    return accuracy.all_right["one object"].share


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="work folder: images, the fine-tuning run, grids, results.json")
    p.add_argument("--concept", choices=CONCEPTS, default="hexagon")
    p.add_argument("--model", default="shapes64")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--small-share", type=float, default=None,
                   help="the share of the images drawn small (default: each small or large at random)")
    p.add_argument("--balanced", action="store_true",
                   help="the images name every colour (or shape) evenly, each at other positions (default: at random)")
    p.add_argument("--size-stated", type=float, default=1.0,
                   help="the share of the image captions that state the size (default 1: all of them)")
    p.add_argument("--repeats", type=int, default=1,
                   help="draw each test prompt this many times, from other noise (default 1: 40 images)")
    p.add_argument("--cond-drop", type=float, default=FinetuneConfig.cond_drop_prob,
                   help="the share of captions trained as the empty one (ldmkit finetune --caption-dropout-rate)")
    p.add_argument("--lr-warmup-steps", type=int, default=0, help="the rate raised from 0 over this many steps")
    p.add_argument("--flip-aug", action="store_true", help="each image's mirror image too ('left'/'right' swapped)")
    p.add_argument("--seed", type=int, default=FinetuneConfig.seed, help="the fine-tune's seed (batches, noise, t)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-scheduler", choices=LR_SCHEDULES, default="constant",
                   help="the learning rate over the run (`ldmkit finetune --lr-scheduler`)")
    p.add_argument("--lora-targets", choices=TARGETS, default="attention",
                   help="attention: the attention projections; attention+conv: and the ResBlocks' 3×3 convolutions")
    p.add_argument("--save-dtype", choices=tuple(SAVE_DTYPES), default="float32", help="the LoRA file's tensors")
    p.add_argument("--heldout", type=int, default=512, help="held-out captions (about half one-object)")
    p.add_argument("--prior", type=int, default=16,
                   help="prior preservation: the model first draws this many images of one-object training captions "
                        "of the shapes dataset and trains on them beside the new images (0: none)")
    p.add_argument("--prior-loss", choices=("images", "model"), default="images",
                   help="the prior images' target: the noise (DreamBooth) or the frozen model's prediction")
    p.add_argument("--prior-loss-weight", type=float, default=FinetuneConfig.prior_loss_weight,
                   help="the prior half's weight in the loss")
    p.add_argument("--timestep-bias", choices=TIMESTEP_BIASES, default=FinetuneConfig.timestep_bias,
                   help="training timesteps drawn more often near t = 0 (earlier) or T (later)")
    p.add_argument("--timestep-bias-multiplier", type=float, default=FinetuneConfig.timestep_bias_multiplier)
    p.add_argument("--timestep-bias-portion", type=float, default=FinetuneConfig.timestep_bias_portion)
    p.add_argument("--timestep-bias-scope", choices=TIMESTEP_BIAS_SCOPES, default=FinetuneConfig.timestep_bias_scope,
                   help="the rows the bias draws: all, or the new images only (the prior images' t uniform)")
    p.add_argument("--token", action="store_true",
                   help="pivotal tuning: the concept's word learns its own vectors beside the adapters "
                        "(`ldmkit finetune --token`), loaded with them for the test prompts")
    p.add_argument("--init-word", default="", help="--token: its vectors start from this word's (default: its own "
                                                   "word pieces')")
    p.add_argument("--embedding-lr", type=float, help="--token: the vectors' learning rate (default 5e-3)")
    p.add_argument("--loraplus-lr-ratio", type=float, default=1.0,
                   help="LoRA+: the B matrices at this multiple of --lr (`ldmkit finetune --loraplus-lr-ratio`)")
    p.add_argument("--results", help="add the results (markdown) to this file, one section per concept")
    p.add_argument("--smoke", action="store_true", help="every stage, tiny: 2 steps, few prompts")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.heldout = 2, 12
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = resolve_model(args.model)
    settings = GenerationSettings(sampler="ddim", num_inference_steps=4 if args.smoke else 25, guidance_scale=4.0,
                                  seed=0)
    cells = test_cells(args.concept)[:: 10 if args.smoke else 1] * args.repeats
    prompts = [prompt(c) for c in cells]
    first = prompts[:len(prompts) // args.repeats]  # each test prompt once
    heldout = heldout_shapes(args.heldout)
    predictor = AttributePredictor()
    results = {"concept": args.concept,
               "command": shlex.join(["python", "benchmarks/finetune_new_concept.py", *sys.argv[1:]]),
               "model": f"{args.model} (UNet sha256 {unet_digest(Path(model))}…)",
               "judges on real renders": judge_on_real(args.concept, 8 if args.smoke else 120, predictor,
                                                       load_pipeline(model, precision="fp32").model)}
    print(json.dumps(results, indent=1), flush=True)

    captions = make_training_set(out / "images", args.images, args.concept, small_share=args.small_share,
                                 balanced=args.balanced, size_stated=args.size_stated)
    base = load_pipeline(model)
    before = generate_for_prompts(base, prompts, settings)
    results["before"] = score(before, cells, args.concept, predictor) | {
        "one-object accuracy": one_object_accuracy(base, heldout, settings, predictor)}
    print("before", results["before"], flush=True)

    prior = prior_prompts(args.prior)
    cfg = FinetuneConfig(method="lora", rank=args.rank, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         lr_scheduler=args.lr_scheduler, warmup_steps=args.lr_warmup_steps,
                         lora_targets=args.lora_targets, save_dtype=args.save_dtype,
                         prior_images=len(prior), prior_prompts=tuple(prior), prior_loss=args.prior_loss,
                         prior_loss_weight=args.prior_loss_weight, sample_every=max(1, args.steps // 4), checkpoint_every=max(1, args.steps // 4),
                         sample_prompts=tuple(first[:: max(1, len(first) // 8)][:8]),
                         sample_steps=settings.num_inference_steps, log_every=10,
                         timestep_bias=args.timestep_bias, timestep_bias_multiplier=args.timestep_bias_multiplier,
                         timestep_bias_portion=args.timestep_bias_portion, cond_drop_prob=args.cond_drop,
                         timestep_bias_scope=args.timestep_bias_scope,
                         flip_aug=args.flip_aug, seed=args.seed,
                         token=args.concept if args.token else "", init_word=args.init_word,
                         embedding_lr=args.embedding_lr if args.token else None,
                         loraplus_lr_ratio=args.loraplus_lr_ratio)
    start = time.perf_counter()
    adapter, *embedding = finetune(model, out / "images", out / "run", cfg, resume="auto")
    results["fine-tuning wall time (s)"] = round(time.perf_counter() - start, 1)
    files = [adapter, *embedding[:1]]  # the LoRA and, with --token, its word's vectors (diffusers' file)
    results["adapter size (KiB)"] = round(sum(p.stat().st_size for p in files) / 1024, 1)
    results["training captions"] = captions

    tuned = load_pipeline(model)
    tuned.load_lora_weights(adapter)
    if embedding:
        tuned.load_textual_inversion(embedding[0])
    after = generate_for_prompts(tuned, prompts, settings)
    results["after"] = score(after, cells, args.concept, predictor) | {
        "one-object accuracy": one_object_accuracy(tuned, heldout, settings, predictor)}
    print("after", results["after"], flush=True)
    shown = list(range(0, len(first), max(1, len(first) // 8)))[:8]
    save_grid(torch.cat([before[shown], after[shown]]), out / "before_after.png", nrow=len(shown))
    results["settings"] = {"LoRA targets": args.lora_targets, "save dtype": args.save_dtype,
                           "rank": args.rank, "prior images": args.prior,
                           "pivotal tuning": (f"the word's vectors learnt too (from {args.init_word or 'its pieces'}, "
                                              f"lr {cfg.token_learning_rate:g})" if args.token else "off"),
                           "prior loss": args.prior_loss,
                           "prior loss weight": args.prior_loss_weight,
                           "captions dropped": args.cond_drop,
                           "seed": args.seed,
                           "steps": args.steps,
                           "batch size": args.batch_size, "lr": args.lr,
                           "LoRA+ ratio (B's lr / A's)": args.loraplus_lr_ratio,
                           "lr scheduler": args.lr_scheduler, "lr warm-up steps": args.lr_warmup_steps,
                           "images": args.images,
                           "mirror images": args.flip_aug,
                           "small share": args.small_share, "balanced images": args.balanced,
                           "captions stating the size": args.size_stated,
                           "timestep bias": f"{args.timestep_bias} x{args.timestep_bias_multiplier:g} on "
                                            f"{args.timestep_bias_portion:g} of T"
                                            + (", new images only" if args.timestep_bias_scope == "new" else ""),
                           "sampler": settings.describe(), "test prompts": len(prompts) // args.repeats,
                           "images per test prompt": args.repeats,
                           "held-out captions": args.heldout}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "training captions"}, indent=1))
    if args.results and not args.smoke:
        write_markdown(Path(args.results), results, out / "before_after.png", [prompts[i] for i in shown])


def write_markdown(path: Path, r: dict, grid: Path, shown: list[str]) -> None:
    """Write (or replace) this concept's section of the results file; the grid is copied beside it."""
    concept, b, a = r["concept"], r["before"], r["after"]
    named = "colour and position" if concept == "hexagon" else "shape and position"
    image = f"finetune_{concept}.png"
    section = "\n".join([
        f"## {concept}",
        "",
        f"`{r['command']}`",
        "",
        f"Model: {r['model']}",
        "",
        f"Settings: {json.dumps(r['settings'])}",
        "",
        "| | before | after |",
        "|---|---:|---:|",
        f"| prompts drawn as {concept} | {b['concept']:.1%} | {a['concept']:.1%} |",
        f"| … with the named {named} | {b['all named']:.1%} | {a['all named']:.1%} |",
        f"| held-out one-object accuracy | {b['one-object accuracy']:.1%} | {a['one-object accuracy']:.1%} |",
        "",
        f"- adapter: {r['adapter size (KiB)']} KiB; fine-tuning: {r['fine-tuning wall time (s)']} s on this machine "
        "(model load, prior images, sample grids and checkpoints included)",
        f"- the judges on real renders: {json.dumps(r['judges on real renders'])}",
        "",
        f"![before (top) and after (bottom): {'; '.join(shown)}]({image})",
        "",
    ])
    sections = {}
    if path.is_file():
        for part in path.read_text().split("\n## ")[1:]:
            sections[part.split("\n", 1)[0].strip()] = "## " + part.rstrip() + "\n"
    sections[concept] = section
    header = "# Teaching shapes64 a new word with a LoRA (issue 25)\n\n"
    path.write_text(header + "\n".join(sections[k] for k in CONCEPTS if k in sections))
    Image.open(grid).save(path.parent / image)


if __name__ == "__main__":
    main()
