"""Generation benchmark: FID, KID, IS (shapes-cnn) and prompt accuracy of a text-to-image model on
held-out shapes captions, for every sampler at several step counts and for several guidance
scales, plus a sample grid (real renders on top, then one row per sampler setting: the same
prompts and seeds in every row).

    # train shapes64 (both stages, through the library) and measure it:
    nice -n 10 python benchmarks/generation.py --preset shapes64 --out runs/genbench
    # or measure a model that is already trained:
    nice -n 10 python benchmarks/generation.py --model runs/shapes64/model --out runs/genbench

Rows: the sampler sweep — DDPM over the full chain (T steps), DDIM at 250/50/20/10 steps, Euler and
DPM-Solver++(2M) at 20/10 steps, all at guidance ``--guidance`` (4) — then the guidance sweep:
``--sweep-sampler`` (DDIM, 20 steps) at each of ``--sweep-guidance`` (1, 2, 8; s = 1 is no
guidance). DDPM's T steps cost T/50 times a DDIM-50 row, so ``--ddpm-images`` can give it fewer
images; every row states its image count and the FID floor at that count (FID of real vs real
images), and KID is unbiased, so rows of different counts stay comparable. Quality per step: how far
DPM-Solver++(2M) at 20 steps lands from DDIM at 250 steps in FID and KID, when both rows ran.
Results go to ``--results`` (markdown, with the command) and ``--grid`` (PNG); the raw numbers to
``OUT/results.json`` after every row.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ldmkit.config import load_preset, preset_names
from ldmkit.data import save_grid
from ldmkit.diffusion import SAMPLERS
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.features import ShapesFeatures
from ldmkit.eval.generation import RealReference, generate_for_prompts, score_generated
from ldmkit.eval.heldout import HELDOUT_SEED, heldout_shapes
from ldmkit.eval.tables import quality_per_step
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings
from ldmkit.storage import write_text_atomic

DEFAULT_SAMPLERS = ("ddpm:T", "ddim:250", "ddim:50", "ddim:20", "ddim:10", "euler:20", "euler:10", "dpmpp-2m:20", "dpmpp-2m:10")
GRID_PROMPTS = 8  # the first held-out captions, one column each


def parse_sampler(text: str, num_timesteps: int) -> tuple[str, int]:
    """"NAME:STEPS" → (name, steps); STEPS "T" is the full chain."""
    name, _, steps = text.partition(":")
    if name not in SAMPLERS:
        raise SystemExit(f"generation.py: unknown sampler {name!r} in {text!r}; allowed: {', '.join(SAMPLERS)}")
    if steps == "T":
        return name, num_timesteps
    if not steps.isdigit() or int(steps) < 1:
        raise SystemExit(f"generation.py: expected NAME:STEPS (STEPS a positive integer or T), got {text!r}")
    return name, int(steps)


def train_model(preset_name: str, out: Path, ae_steps: int | None, steps: int | None, progress: bool) -> Path:
    """Both stages of ``preset_name`` through the library; returns the model folder."""
    from ldmkit.train.autoencoder import train_autoencoder
    from ldmkit.train.diffusion import train_diffusion

    preset = load_preset(preset_name)
    ae = train_autoencoder(preset, out / "autoencoder", steps=ae_steps, progress=progress)
    return train_diffusion(preset, ae, out / "model", steps=steps, progress=progress)


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def markdown(rows: list[dict], command: str, model: str, grid: Path, grid_rows: list[str]) -> str:
    first = rows[0]
    largest = max(rows, key=lambda r: r["settings"]["images"])  # the judge on the most real renders
    threads = torch.get_num_threads()
    lines = [
        "# Generation benchmark on shapes",
        "",
        f"Made by `{command}` on {platform.machine()} CPU ({threads} torch thread{'s' if threads > 1 else ''}, "
        f"shared with other jobs, so times are rough), torch {torch.__version__.split('+')[0]}. Model: `{model}` "
        f"({first['settings']['image_size']}×{first['settings']['image_size']}).",
        "",
        f"Each row generates one image for each of the first *images* held-out captions (seed {HELDOUT_SEED}) and "
        "compares them with the real renders of the same captions. FID, KID (mean ± std over subsets) and IS are on "
        "the shapes-cnn features (256-d, 48 classes); *floor* is the FID between the real renders and as many other "
        "real images: what a perfect model would score at that image count. Prompt accuracy is the shapes judge's "
        f"share of prompts with every stated attribute right (on the {largest['settings']['images']} real renders it "
        f"reads {100 * largest['metrics']['same, on the real renders (shapes judge)']['value']:.1f}%). "
        "*s / image*: sampling time per image, batches of 32.",
        "",
        "| sampler | steps | guidance | images | FID ↓ | floor | KID ↓ | IS ↑ "
        "| all right: 1 object | 2 objects | all ↑ | s / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, acc = r["metrics"], r["prompt_accuracy"]
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {r['settings']['images']} "
            f"| {m['FID (shapes-cnn)']['value']:.1f} | {m['FID floor, real vs real (shapes-cnn)']['value']:.1f} "
            f"| {m['KID (shapes-cnn)']['value']:.2f} ± {m['KID (shapes-cnn)']['std']:.2f} "
            f"| {m['IS (shapes-cnn)']['value']:.2f} "
            f"| {_pct(acc['one object']['all'])} | {_pct(acc['two objects']['all'])} "
            f"| {_pct(acc['all']['all'])} | {r['seconds_per_image']:.2f} |"
        )
    lines += quality_per_step(rows)
    attrs = ("objects", "shape", "color", "size", "position", "relation")
    lines += ["", "Per attribute (all prompts; share of the stated attributes the images show):", "",
              "| sampler | steps | guidance | " + " | ".join(attrs) + " |", "|---|---:|---:|" + "---:|" * len(attrs)]
    for r in rows:
        acc = r["prompt_accuracy"]["all"]
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | "
                     + " | ".join(_pct(acc[a]) for a in attrs) + " |")
    lines += ["", f"![samples]({grid.name})", "",
              f"`{grid.name}`: columns are the first {GRID_PROMPTS} held-out captions; rows, top to bottom: "
              + "; ".join(grid_rows) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FID/KID/IS/prompt accuracy per sampler, steps and guidance.")
    parser.add_argument("--model", help="a trained model folder; without it, --preset is trained first")
    parser.add_argument("--preset", default="shapes64",
                        help=f"preset to train when --model is not given ({', '.join(preset_names())})")
    parser.add_argument("--ae-steps", type=int, help="autoencoder steps when training (default: the preset's)")
    parser.add_argument("--steps", type=int, help="diffusion steps when training (default: the preset's)")
    parser.add_argument("--out", type=Path, default=Path("runs/genbench"), help="folder for a trained model and results.json")
    parser.add_argument("--num-images", type=int, default=1024, help="held-out captions (one image each) per row")
    parser.add_argument("--ddpm-images", type=int, help="images for DDPM rows (default: --num-images)")
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), metavar="NAME:STEPS",
                        help="the sampler sweep (STEPS may be T, the full chain)")
    parser.add_argument("--guidance", type=float, default=4.0, help="guidance of the sampler sweep and the grid")
    parser.add_argument("--sweep-sampler", default="ddim:20", metavar="NAME:STEPS", help="sampler of the guidance sweep")
    parser.add_argument("--sweep-guidance", nargs="*", type=float, default=[1.0, 2.0, 8.0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/GENERATION.md"))
    parser.add_argument("--grid", type=Path, default=Path("benchmarks/generation_grid.png"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 is faster on a CPU "
                                                         "that other jobs keep busy, where extra threads wait at barriers)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    model_dir = Path(args.model) if args.model else train_model(args.preset, args.out, args.ae_steps, args.steps, progress)
    pipe = load_pipeline(model_dir, "cpu")
    num_timesteps = pipe.model.config.diffusion.num_timesteps
    image_size = pipe.model.config.image_size
    plan = [(*parse_sampler(s, num_timesteps), args.guidance) for s in args.samplers]
    sweep = parse_sampler(args.sweep_sampler, num_timesteps)
    plan += [(*sweep, g) for g in args.sweep_guidance if (*sweep, g) not in plan]

    shapes = ShapesFeatures()
    predictor = AttributePredictor(shapes.module)
    references: dict[int, RealReference] = {}  # by image count
    grid_images, grid_rows, rows = [], [], []
    step_seconds, done_work = 0.0, 0  # measured cost of one sampling step of one image, for the ETA
    for k, (name, steps, guidance) in enumerate(plan):
        n = args.ddpm_images if name == "ddpm" and args.ddpm_images else args.num_images
        if n not in references:
            references[n] = RealReference(heldout_shapes(n, image_size), [shapes], args.batch_size, progress)
        reference = references[n]
        settings = GenerationSettings(sampler=name, num_inference_steps=steps, guidance_scale=guidance, seed=args.seed)
        left = sum((args.ddpm_images if s == "ddpm" and args.ddpm_images else args.num_images) * st
                   for s, st, _ in plan[k:])
        eta = f", about {left * step_seconds / done_work / 3600:.1f} h of sampling left" if done_work else ""
        print(f"== [{k + 1}/{len(plan)}] {settings.describe()}, {n} images{eta}", flush=True)
        start = time.time()
        images = generate_for_prompts(pipe, reference.heldout.captions, settings, args.batch_size, progress)
        seconds = time.time() - start
        step_seconds, done_work = step_seconds + seconds, done_work + n * steps
        report = score_generated(images, reference, predictor, args.batch_size, progress)
        report.title = f"{settings.describe()}, {n} images"
        report.settings = {"images": n, "image_size": image_size}
        print(report.format(), flush=True)
        rows.append({"sampler": name, "steps": steps, "guidance": guidance, "seconds_per_image": seconds / n,
                     **report.to_dict()})
        write_text_atomic(args.out / "results.json", json.dumps(rows, indent=2) + "\n")
        if guidance == args.guidance:
            if not grid_images:
                grid_images.append(reference.heldout.images[:GRID_PROMPTS])
                grid_rows.append("the real renders")
            grid_images.append(images[:GRID_PROMPTS])
            grid_rows.append(settings.describe())

    if grid_images:
        save_grid(torch.cat(grid_images), args.grid, nrow=min(GRID_PROMPTS, len(grid_images[0])))
    command = "python benchmarks/generation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_text_atomic(args.results, markdown(rows, command.strip(), str(model_dir), args.grid, grid_rows))
    print(f"wrote {args.results}" + (f" and {args.grid}" if grid_images else ""))


if __name__ == "__main__":
    main()
