"""Benchmark of the conditional modes on held-out shapes: one number per mode that says whether it works.

- class: class accuracy — the share of generated images whose one object the shapes judge
  (`ldmkit.eval.AttributePredictor`) reads as the asked-for shape;
- sr: PSNR/SSIM of ×4 super-resolution (16 → 64 px) against the truth, beside bicubic upsampling of the
  same 16-px inputs (the model must beat it) and the autoencoder's own reconstruction (its ceiling);
- inpaint: PSNR inside the mask (the painted pixels against the truth; beside a fill with the mean colour
  of the known pixels) and outside it (the decoder's output before the exact blend, which puts the known
  pixels back; after it they are exact), on random boxes, strokes and side strips;
- colorize: colour accuracy — the share of true objects whose colour the judge finds in the colorized
  image (beside the same on the real renders), and PSNR against the colour truth (beside the grey input).

Each image mode is sampled twice: from the input's own guess at the output noised to t = T (the pipelines'
default) and from pure noise.

    # train the autoencoder and the four shapes64-MODE models through the library, then measure:
    nice -n 10 python benchmarks/modes.py --out runs/modes
    # or measure models already trained:
    nice -n 10 python benchmarks/modes.py --out runs/modes --model class=runs/cls --model sr=runs/sr ...

Results go to ``--results`` (markdown, with the command) and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ldmkit.condition import downsample, grayscale, mean_fill, random_masks, resize_to
from ldmkit.config import load_preset
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.heldout import HELDOUT_SEED, heldout_shapes
from ldmkit.eval.metrics import mean_std, psnr, ssim
from ldmkit.eval.tables import describe_training, training_stretches
from ldmkit.model import LatentDiffusion
from ldmkit.pipelines import ClassConditionalPipeline, ColorizationPipeline, InpaintingPipeline, SuperResolutionPipeline
from ldmkit.storage import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, machine_info  # noqa: E402

MODES = ("class", "sr", "inpaint", "colorize")
MASK_SEED = 1234


def masked_psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR = 10 log₁₀(R² / MSE) per image with the MSE over the pixels where ``mask`` is 1 (R = 2)."""
    m = mask.expand_as(x).double()
    mse = ((x.double() - y.double()) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(4.0 / mse)


def batched(fn, inputs: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """fn over batches of the tensors in ``inputs`` (split alike), outputs concatenated."""
    n = len(inputs[0])
    return torch.cat([fn(*(t[i:i + batch_size] for t in inputs)) for i in range(0, n, batch_size)])


def fmt(ms) -> str:
    return f"{ms.mean:.2f} ± {ms.std:.2f}"


def train_models(base: str, modes: list[str], out: Path, autoencoder: str | None, ae_steps: int | None,
                 steps: int | None, given: dict[str, str], progress: bool) -> dict[str, Path]:
    """The model folder of every mode: given, or trained from preset ``BASE-MODE`` on one autoencoder."""
    from ldmkit.train.autoencoder import train_autoencoder
    from ldmkit.train.diffusion import train_diffusion

    folders = {m: Path(given[m]) for m in modes if m in given}
    todo = [m for m in modes if m not in folders]
    if not todo:
        return folders
    ae = Path(autoencoder) if autoencoder else None
    if ae is None:
        print(f"== training the autoencoder ({base})", flush=True)
        ae = train_autoencoder(load_preset(base), out / "ae", steps=ae_steps, resume="auto", progress=progress)
    for mode in todo:
        print(f"== training {base}-{mode}", flush=True)
        folders[mode] = train_diffusion(load_preset(f"{base}-{mode}"), ae, out / mode, steps=steps, resume="auto",
                                        progress=progress)
    return folders


def bench_class(folder: Path, n: int, args, predictor: AttributePredictor) -> dict:
    pipe = ClassConditionalPipeline.from_folder(folder)
    classes = list(pipe.classes)
    per_class = max(1, n // len(classes))
    right, rows = 0, {}
    for name in classes:
        images = torch.cat([pipe.generate_tensors(name, steps=args.sample_steps, guidance=args.guidance,
                                                  seed=args.seed + k, num_images=min(args.batch_size, per_class - k))
                            for k in range(0, per_class, args.batch_size)])
        found = [s.objects[0].shape if s is not None else None for s in predictor(images)]
        rows[name] = sum(f == name for f in found) / per_class
        right += sum(f == name for f in found)
    return {"images": per_class * len(classes), "guidance": args.guidance, "accuracy": right / (per_class * len(classes)),
            "per_class": rows}


def bench_sr(folder: Path, n: int, args) -> dict:
    pipe = SuperResolutionPipeline.from_folder(folder)
    truth = heldout_shapes(n, pipe.model.config.image_size).images
    low = downsample(truth, pipe.factor)
    bicubic = resize_to(low, *truth.shape[-2:]).clamp(-1, 1)
    model: LatentDiffusion = pipe.model
    recon = batched(lambda x: model.decode_latents(model.encode_images(x)).float(), [truth], args.batch_size)
    sr, sr_noise = (batched(lambda x: pipe.generate_tensors(x, steps=args.sample_steps, seed=args.seed,
                                                            start_from_input=informed), [low], args.batch_size)
                    for informed in (True, False))
    return {"images": n, "input": list(low.shape[-2:]), "output": list(truth.shape[-2:]), **{
        name: {"psnr": mean_std(psnr(out, truth)), "ssim": mean_std(ssim(out, truth))}
        for name, out in (("ldm", sr), ("ldm, noise start", sr_noise), ("bicubic", bicubic), ("autoencoder", recon))}}


def bench_inpaint(folder: Path, n: int, args) -> dict:
    pipe = InpaintingPipeline.from_folder(folder)
    truth = heldout_shapes(n, pipe.model.config.image_size).images
    masks = random_masks(n, *truth.shape[-2:], torch.Generator().manual_seed(MASK_SEED))
    raw, raw_noise = (batched(lambda x, m: pipe.generate_tensors(x, m, steps=args.sample_steps, seed=args.seed,
                                                                 blend=False, start_from_input=informed),
                              [truth, masks], args.batch_size) for informed in (True, False))
    blended, blended_noise = (masks * r + (1 - masks) * truth for r in (raw, raw_noise))
    known = 1 - masks
    baseline = mean_fill(truth, masks)
    return {"images": n, "masked_share": float(masks.mean()),
            "inside": {"ldm": mean_std(masked_psnr(blended, truth, masks)),
                       "ldm, noise start": mean_std(masked_psnr(blended_noise, truth, masks)),
                       "mean colour fill": mean_std(masked_psnr(baseline, truth, masks))},
            "outside_before_blend": mean_std(masked_psnr(raw, truth, known)),
            "outside_after_blend_max_abs_error": float(((blended - truth) * known).abs().max())}


def bench_colorize(folder: Path, n: int, args, predictor: AttributePredictor) -> dict:
    pipe = ColorizationPipeline.from_folder(folder)
    held = heldout_shapes(n, pipe.model.config.image_size)
    gray = grayscale(held.images)
    out, out_noise = (batched(lambda x: pipe.generate_tensors(x, steps=args.sample_steps, seed=args.seed,
                                                              start_from_input=informed), [gray], args.batch_size)
                      for informed in (True, False))

    def colour_accuracy(images: torch.Tensor) -> float:
        right = total = 0
        for scene, found in zip(held.scenes, predictor(images)):
            colours = {o.color for o in found.objects} if found is not None else set()
            right += sum(o.color in colours for o in scene.objects)
            total += len(scene.objects)
        return right / total

    return {"images": n, "colour_accuracy": {"ldm": colour_accuracy(out), "ldm, noise start": colour_accuracy(out_noise),
                                             "real renders": colour_accuracy(held.images),
                                             "grey input": colour_accuracy(gray.contiguous())},
            "psnr": {"ldm": mean_std(psnr(out, held.images)), "ldm, noise start": mean_std(psnr(out_noise, held.images)),
                     "grey input": mean_std(psnr(gray, held.images))}}


def markdown(results: dict, command: str, folders: dict[str, Path], args) -> str:
    lines = ["# Conditional modes on shapes", "",
             f"Made by `{command}` on {machine_info()['cpu']}, torch {torch.__version__}. Held-out shapes "
             f"(seed {HELDOUT_SEED}), DDIM with {args.sample_steps} steps, seed {args.seed}. Models: "
             + ", ".join(f"{m} `{f}`" for m, f in folders.items()) + ".", "",
             "The image modes' LDM rows start from z_T ~ q(z_T | E(x̃)), x̃ the input's own guess at the output "
             "(the pipelines' default, `start_from_input`); the rows marked z_T ~ N(0, I) start from pure noise "
             "(`--noise-start` on the CLI).", ""]
    logs = {m: Path(f) / "log.csv" for m, f in folders.items()}
    lines += [describe_training(m, training_stretches(log)) for m, log in logs.items() if log.is_file()] + [""]
    if "class" in results:
        r = results["class"]
        lines += ["## Class-conditional", "",
                  f"Class accuracy: **{r['accuracy']:.1%}** of {r['images']} images (guidance {r['guidance']:g}) "
                  "show the asked-for shape, as the shapes judge reads it (chance: 1 in 6).", "",
                  "| " + " | ".join(r["per_class"]) + " |", "|" + "---:|" * len(r["per_class"]),
                  "| " + " | ".join(f"{v:.0%}" for v in r["per_class"].values()) + " |", ""]
    if "sr" in results:
        r = results["sr"]
        lines += ["## Super-resolution", "",
                  f"×{r['output'][0] // r['input'][0]} ({r['input'][0]} → {r['output'][0]} px) on {r['images']} images; "
                  "mean ± std over images.", "", "| method | PSNR (dB) ↑ | SSIM ↑ |", "|---|---:|---:|"]
        for name in ("ldm", "ldm, noise start", "bicubic", "autoencoder"):
            label = {"ldm": "LDM (sr)", "ldm, noise start": "LDM (sr), z_T ~ N(0, I)", "bicubic": "bicubic upsampling",
                     "autoencoder": "D(E(x)) of the truth (ceiling)"}[name]
            lines.append(f"| {label} | {fmt(r[name]['psnr'])} | {fmt(r[name]['ssim'])} |")
        lines.append("")
    if "inpaint" in results:
        r = results["inpaint"]
        lines += ["## Inpainting", "",
                  f"{r['images']} images, random masks (seed {MASK_SEED}: boxes, strokes, side strips; "
                  f"{r['masked_share']:.0%} of the pixels masked). PSNR (dB), mean ± std over images.", "",
                  "| | PSNR (dB) |", "|---|---:|",
                  f"| inside the mask, LDM | {fmt(r['inside']['ldm'])} |",
                  f"| inside the mask, LDM, z_T ~ N(0, I) | {fmt(r['inside']['ldm, noise start'])} |",
                  f"| inside the mask, mean colour of the known pixels | {fmt(r['inside']['mean colour fill'])} |",
                  f"| outside the mask, decoder output before the blend | {fmt(r['outside_before_blend'])} |",
                  "", f"After the blend the known pixels are exact (largest error {r['outside_after_blend_max_abs_error']:g}).", ""]
    if "colorize" in results:
        r = results["colorize"]
        ca = r["colour_accuracy"]
        lines += ["## Colorization", "",
                  f"{r['images']} images. Colour accuracy: the share of true objects whose colour the shapes judge finds.", "",
                  "| | colour accuracy ↑ | PSNR (dB) ↑ |", "|---|---:|---:|",
                  f"| LDM (colorize) | {ca['ldm']:.1%} | {fmt(r['psnr']['ldm'])} |",
                  f"| LDM (colorize), z_T ~ N(0, I) | {ca['ldm, noise start']:.1%} | {fmt(r['psnr']['ldm, noise start'])} |",
                  f"| the grey input | {ca['grey input']:.1%} | {fmt(r['psnr']['grey input'])} |",
                  f"| the real renders | {ca['real renders']:.1%} | — |", "",
                  "The grey input's PSNR is huge on images whose objects are all white (grey equals colour "
                  "there, up to rounding), hence its spread.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Class accuracy, SR/inpainting PSNR/SSIM, colour accuracy.")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--base", default="shapes64", help="presets BASE-MODE are trained (default shapes64)")
    parser.add_argument("--model", action="append", default=[], metavar="MODE=DIR", help="a trained model to measure")
    parser.add_argument("--autoencoder", help="a trained autoencoder folder (default: train one with --base)")
    parser.add_argument("--ae-steps", type=int, help="autoencoder steps when training (default: the preset's)")
    parser.add_argument("--steps", type=int, help="diffusion steps when training (default: the presets')")
    parser.add_argument("--out", type=Path, default=Path("runs/modes"))
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=4.0, help="class guidance (the image modes use 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/MODES.md"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    given = {}
    for item in args.model:
        mode, _, folder = item.partition("=")
        if mode not in MODES or not folder:
            raise SystemExit(f"modes.py: --model expects MODE=DIR with MODE one of {', '.join(MODES)}, got {item!r}")
        given[mode] = folder
    args.out.mkdir(parents=True, exist_ok=True)
    folders = train_models(args.base, args.modes, args.out, args.autoencoder, args.ae_steps, args.steps, given,
                           not args.no_progress)

    predictor = AttributePredictor()
    results = {}
    for mode in args.modes:
        print(f"== measuring {mode}", flush=True)
        start = time.time()
        if mode == "class":
            results[mode] = bench_class(folders[mode], args.num_images, args, predictor)
        elif mode == "sr":
            results[mode] = bench_sr(folders[mode], args.num_images, args)
        elif mode == "inpaint":
            results[mode] = bench_inpaint(folders[mode], args.num_images, args)
        else:
            results[mode] = bench_colorize(folders[mode], args.num_images, args, predictor)
        results[mode]["seconds"] = time.time() - start
        write_text_atomic(args.out / "results.json", json.dumps(results, indent=2, default=vars) + "\n")
    write_text_atomic(args.results, markdown(results, command_line(argv), folders, args))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
