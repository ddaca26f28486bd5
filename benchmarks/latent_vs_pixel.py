"""The lecture's central claim, measured on the shapes (issue 24): diffusion in pixel space (f = 1) against
latent diffusion with KL autoencoders at f = 2, 4, 8, each UNet trained for the same wall-clock budget.

    python benchmarks/latent_vs_pixel.py --budget-min 30 --out runs/latent-vs-pixel \
        --results benchmarks/LATENT_VS_PIXEL.md

What is held equal across the four models:

- the data (the `shapes64` stream of 64×64 captioned shapes, seed 0), the prompt model (shapes64's jointly
  trained 2-layer Transformer, width 128), the objective (ε-prediction, scaled-linear schedule, T = 1000),
  the optimiser and its settings (AdamW, lr 5e-4, 200 warm-up steps, batch 32, EMA 0.999) — shapes64's
  `train` section, unchanged;
- the UNet's width at each resolution it shares with the others (64×64: 32, 32×32: 64, 16×16: 64, 8×8: 128,
  4×4: 128; one ResBlock per level) and cross-attention at 8×8 and 4×4 only: each UNet has the levels from
  its latent's size down to 4×4 (pixel 5, f2 4, f4 3: shapes64's UNet on c = 3, f8 2), so parameter counts stay
  within 7% (6.7–7.2M; the table lists them) while the cost per step falls with the latent's area;
- the training budget: ``--budget-min`` minutes of the training loop (log.csv's clock: data, encoding with
  the frozen E, forward, backward, optimiser, EMA; not model building, checkpoints or preview grids), the
  same torch thread count (``--threads``), the models trained in rounds so that each round of every model
  meets the same load from other jobs on the machine;
- the measurement: after each of ``--evals`` equal shares of the budget, the EMA model draws one image per
  held-out caption (``--num-images``, seed 1000003) with DDIM, 25 steps, guidance 4; FID on shapes-cnn
  features against the real renders, and prompt accuracy (one- and two-object prompts all right) by the
  shapes judge; sampling time per image: a batch of 8 at 25 steps, median of ``--timing-repeats`` runs.

Not held equal, and shown: the autoencoders' training time (counted apart from the budget) and quality
(R-FID, PSNR on ``--num-images`` held-out images: the floor an LDM cannot beat); FLOPs per training step;
parameters. The autoencoders are the zoo's recipe (benchmarks/autoencoder_zoo.py: the shapes64 design at
base width 8, batch 8; c = 3 at f = 2 and 4, c = 4 at f = 8), taken from ``--zoo`` where it holds them
(kl-f4-c3, kl-f8-c4), trained here for ``--ae-steps`` otherwise (f = 2 is not in the zoo).

Resumable: run the same command again; finished evaluations are kept in OUT/results.json, training resumes
from each model's newest checkpoint, and its time is read back from its log.csv. ``--smoke`` runs every
stage at a tiny size (a 0.3-minute budget) to check the script, not to measure.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, count_flops  # noqa: E402
from autoencoder_zoo import ZooEntry, zoo_preset  # noqa: E402

from ldmkit.config import Preset, UNetConfig, load_preset  # noqa: E402
from ldmkit.eval import AttributePredictor, ShapesFeatures, evaluate_autoencoder, heldout_shapes  # noqa: E402
from ldmkit.eval.generation import RealReference, generate_for_prompts, score_generated  # noqa: E402
from ldmkit.eval.tables import markdown_table, training_stretches  # noqa: E402
from ldmkit.model import LatentDiffusion  # noqa: E402
from ldmkit.pipelines import load_pipeline  # noqa: E402
from ldmkit.settings import GenerationSettings  # noqa: E402
from ldmkit.storage import write_text_atomic  # noqa: E402
from ldmkit.train.autoencoder import train_autoencoder  # noqa: E402
from ldmkit.train.checkpoint import checkpoint_dir, list_checkpoints  # noqa: E402
from ldmkit.train.diffusion import DenoisingLoss, encode_latents, train_diffusion  # noqa: E402

FACTORS = (1, 2, 4, 8)
LATENT_CHANNELS = {2: 3, 4: 3, 8: 4}  # the zoo's c at f = 4 and 8; f = 2 as f = 4
WIDTH_AT = {64: 32, 32: 64, 16: 64, 8: 128, 4: 128}  # UNet width at each resolution, shapes64's where it has one
ATTENTION_AT = (8, 4)
SAMPLER = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)
COLOURS = {1: (200, 40, 40), 2: (230, 140, 0), 4: (30, 110, 200), 8: (40, 160, 70)}


def name_of(f: int) -> str:
    return "pixel (f=1)" if f == 1 else f"KL f={f}"


def unet_for(f: int, channels: int) -> UNetConfig:
    """The UNet on a (64/f)² latent of ``channels``: one level per resolution from 64/f down to 4, with the
    widths of `WIDTH_AT` and attention at `ATTENTION_AT`; shapes64's other settings."""
    sizes = [s for s in WIDTH_AT if s <= 64 // f]
    base = WIDTH_AT[sizes[0]]
    return dataclasses.replace(
        load_preset("shapes64").unet, in_channels=channels, out_channels=channels, model_channels=base,
        channel_mults=tuple(WIDTH_AT[s] // base for s in sizes),
        attention_levels=tuple(k for k, s in enumerate(sizes) if s in ATTENTION_AT),
    )


def diffusion_preset(f: int) -> Preset:
    """shapes64 (f > 1) or shapes64-pixel (f = 1) with `unet_for`'s UNet; log.csv every step (its clock is
    the training time), no preview grids, no TensorBoard, a checkpoint only at the end of each stretch."""
    preset = load_preset("shapes64-pixel" if f == 1 else "shapes64")
    channels = 3 if f == 1 else LATENT_CHANNELS[f]
    unet = unet_for(f, channels)
    if f == 1:
        assert unet == preset.unet, "shapes64-pixel's UNet is the f = 1 UNet of this benchmark"
    if f == 4:  # shapes64's UNet, on the zoo's c = 3 (shapes64's own autoencoder has c = 4)
        assert unet == dataclasses.replace(preset.unet, in_channels=3, out_channels=3)
    train = dataclasses.replace(preset.train, log_every=1, sample_every=10**9, checkpoint_every=10**9,
                                tensorboard=False)
    return dataclasses.replace(preset, unet=unet, train=train)


# --------------------------------------------------------------------------------------------------
# The autoencoders


def autoencoder_folder(f: int, args, results: dict) -> Path:
    """The frozen KL autoencoder at factor f: the zoo's if ``--zoo`` holds it, else trained into OUT/ae
    (resumed if a run stopped), its training time recorded in ``results``."""
    entry = ZooEntry("kl", f, LATENT_CHANNELS[f])
    zoo = args.zoo / entry.name
    record = results["autoencoders"].setdefault(str(f), {"name": entry.name})
    if (zoo / "autoencoder.safetensors").is_file() and not args.smoke:
        record.setdefault("source", f"the zoo ({zoo})")
        record.setdefault("train_seconds", _zoo_seconds(args.zoo, entry.name))
        return zoo
    folder = args.out / "ae" / entry.name
    if "train_seconds" not in record:
        preset = zoo_preset(entry, load_preset("shapes64"), args.ae_width, args.ae_batch)
        preset = dataclasses.replace(preset, autoencoder_train=dataclasses.replace(
            preset.autoencoder_train, scale_samples=64 if args.smoke else 512))
        print(f"== autoencoder {entry.name}: {args.ae_steps} steps", flush=True)
        start = time.time()
        train_autoencoder(preset, folder, steps=args.ae_steps, resume="auto", device="cpu", progress=args.progress)
        record |= {"source": f"trained here ({args.ae_steps} steps, batch {args.ae_batch}, width {args.ae_width})",
                   "train_seconds": round(time.time() - start, 1)}
    if (folder / "log.csv").is_file():  # the training loop's own clock, over every stretch of a resumed run
        record["train_seconds"] = round(sum(s["wall"] for s in training_stretches(folder / "log.csv")), 1)
    save_results(args, results)
    return folder


def _zoo_seconds(zoo: Path, name: str) -> float | None:
    """The zoo run's training time for ``name`` from its results.json, or None."""
    path = zoo / "results.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return next((r["train_seconds"] for r in rows if r["name"] == name), None)


def autoencoder_floor(folder: Path, args, record: dict) -> None:
    """R-FID and PSNR of the autoencoder on the held-out images, once."""
    if "R-FID" in record:
        return
    report = evaluate_autoencoder(folder, args.num_images, 64, [ShapesFeatures()], progress=args.progress)
    record |= {"R-FID": report["R-FID (shapes-cnn)"].value, "PSNR": report["PSNR (dB)"].value}


# --------------------------------------------------------------------------------------------------
# Training in stretches


def trained(folder: Path) -> tuple[int, float]:
    """(step of the newest checkpoint, seconds of the training loop up to it): the clock of log.csv
    (restarted by each stretch, so the seconds are the sum of the stretches' last readings), counting rows
    up to the checkpoint only (rows past it belong to a stretch that stopped before writing one)."""
    checkpoints = list_checkpoints(checkpoint_dir(folder)) if checkpoint_dir(folder).is_dir() else []
    step = max((s for s, _ in checkpoints), default=0)
    if step == 0 or not (folder / "log.csv").is_file():
        return step, 0.0
    total, last = 0.0, 0.0
    with open(folder / "log.csv") as file:
        for row in csv.DictReader(file):
            if int(row["step"]) > step:
                continue
            t = float(row["time"])
            if t < last:
                total += last
            last = t
    return step, total + last


def train_until(f: int, preset: Preset, ae: Path | None, folder: Path, seconds: float, args) -> tuple[int, float]:
    """Train (resuming) until the loop has run about ``seconds``: a probe stretch gives the rate, then one
    stretch of as many steps as the rate says fit. Returns `trained`."""
    step, spent = trained(folder)
    while True:
        rate = spent / step if step else None
        if rate is not None and seconds - spent < rate / 2:
            return step, spent
        more = args.probe_steps if rate is None else max(1, round((seconds - spent) / rate))
        print(f"== {name_of(f)}: steps {step}–{step + more} (loop {spent / 60:.1f} of {seconds / 60:.1f} min)",
              flush=True)
        train_diffusion(preset, ae, folder, steps=step + more, resume="auto", device="cpu", progress=args.progress)
        step, spent = trained(folder)


def step_flops(folder: Path, batch_size: int) -> float:
    """GFLOP of one training step at ``batch_size`` (encoding by the frozen E, the denoising loss's forward
    and backward), as FlopCounterMode counts them on the model of ``folder``."""
    model = LatentDiffusion.load(folder)
    objective = DenoisingLoss(model)
    held = heldout_shapes(batch_size, 64, start=2 * 10**6)
    f = model.autoencoder.downsample_factor
    shape = (batch_size, model.autoencoder.latent_channels, 64 // f, 64 // f)
    posterior = torch.randn(shape) if hasattr(model.autoencoder, "posterior") else None

    def one_step():
        latents = encode_latents(model.autoencoder, held.images, posterior)
        t = torch.randint(0, model.config.diffusion.num_timesteps, (batch_size,))
        objective(latents, list(held.captions), t, torch.randn(shape)).backward()

    _, flops = count_flops(one_step)
    return flops / 1e9


# --------------------------------------------------------------------------------------------------
# Measuring


def evaluate(folder: Path, reference: RealReference, predictor: AttributePredictor, args) -> dict:
    """FID, one-/two-object prompt accuracy of the EMA model at ``folder`` (DDIM 25 steps, guidance 4)."""
    pipe = load_pipeline(folder, "cpu")
    start = time.time()
    images = generate_for_prompts(pipe, reference.heldout.captions, SAMPLER, args.eval_batch, args.progress)
    seconds = time.time() - start
    report = score_generated(images, reference, predictor, args.eval_batch, args.progress)
    accuracy = report.prompt_accuracy
    return {"FID": report["FID (shapes-cnn)"].value, "one": accuracy["one object"]["all"],
            "two": accuracy["two objects"]["all"], "generation_seconds": round(seconds, 1)}


def sampling_seconds(folder: Path, repeats: int) -> float:
    """Seconds per image: a batch of 8 prompts, DDIM 25 steps, guidance 4 (two UNet passes a step), decoded;
    one untimed warm-up, then the median of ``repeats`` runs, divided by 8."""
    pipe = load_pipeline(folder, "cpu")
    prompts = list(heldout_shapes(8, 64).captions)

    def run() -> float:
        start = time.perf_counter()
        pipe.generate_tensors(prompts, **SAMPLER.generate_kwargs())
        return time.perf_counter() - start

    run()
    return statistics.median(run() for _ in range(repeats)) / len(prompts)


def save_results(args, results: dict) -> None:
    write_text_atomic(args.out / "results.json", json.dumps(results, indent=2) + "\n")


def run(args) -> dict:
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"autoencoders": {}, "models": {}}
    settings = {"budget_min": args.budget_min, "evals": args.evals, "num_images": args.num_images}
    if results.setdefault("settings", settings) != settings:
        raise SystemExit(f"{path} was made with {results['settings']}; give the same settings or another --out")
    ae = {f: autoencoder_folder(f, args, results) for f in FACTORS if f > 1}
    for f, folder in ae.items():
        autoencoder_floor(folder, args, results["autoencoders"][str(f)])
        save_results(args, results)
    network, budget = ShapesFeatures(), args.budget_min * 60
    reference = RealReference(heldout_shapes(args.num_images, 64), [network], args.eval_batch, args.progress)
    results["FID floor"] = reference.floor[network.name]
    predictor = AttributePredictor(network.module)
    for k in range(1, args.evals + 1):  # rounds: every model to the k-th share of the budget, then measured
        for f in FACTORS:
            record = results["models"].setdefault(str(f), {"evals": []})
            folder = args.out / f"model-f{f}"
            if any(e["round"] == k for e in record["evals"]):
                continue
            step, spent = train_until(f, diffusion_preset(f), ae.get(f), folder, budget * k / args.evals,
                                      args)
            print(f"== {name_of(f)}: evaluating step {step} ({spent / 60:.1f} min of training)", flush=True)
            record["evals"].append({"round": k, "step": step, "train_seconds": round(spent, 1),
                                    **evaluate(folder, reference, predictor, args)})
            save_results(args, results)
    for f in FACTORS:
        record, folder = results["models"][str(f)], args.out / f"model-f{f}"
        if "sample_seconds" not in record:
            model = LatentDiffusion.load(folder)
            record |= {"params": sum(p.numel() for p in model.unet.parameters()),
                       "latent": [model.autoencoder.latent_channels, 64 // f, 64 // f],
                       "step_gflop": step_flops(folder, diffusion_preset(f).train.batch_size),
                       "sample_seconds": sampling_seconds(folder, args.timing_repeats)}
            save_results(args, results)
    return results


# --------------------------------------------------------------------------------------------------
# The results file and its two plots (drawn with PIL: matplotlib is not a dependency)


def _font(size: int):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one size
        return ImageFont.load_default()


def plot(path: Path, panels: list[dict]) -> None:
    """Panels side by side, each {"title", "x", "y", "series": {f: [(x, y), …]}, optional "log_x" and
    "y_range"}: lines with dots."""
    width, height, margin = 420, 320, 56
    image = Image.new("RGB", (width * len(panels), height + 40), "white")
    draw, font = ImageDraw.Draw(image), _font(13)
    for p, panel in enumerate(panels):
        points = [pt for series in panel["series"].values() for pt in series if math.isfinite(pt[1])]
        if not points:
            continue
        tx = (lambda v: math.log10(v)) if panel.get("log_x") else (lambda v: v)
        xs, ys = [tx(x) for x, _ in points], [y for _, y in points]
        pad_x = (max(xs) - min(xs)) * 0.08 or 0.1
        x0, x1 = min(xs) - pad_x, max(xs) + pad_x
        pad_y = (max(ys) - min(ys)) * 0.1 or 1.0
        y0, y1 = panel.get("y_range", (min(ys) - pad_y, max(ys) + pad_y))
        left, top, right, bottom = p * width + margin, 30, (p + 1) * width - 12, height - 30

        def at(x: float, y: float) -> tuple[float, float]:
            return (left + (tx(x) - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, 8), panel["title"], fill="black", font=font)
        draw.text((left + (right - left) // 2 - 60, bottom + 22), panel["x"], fill="black", font=font)
        draw.text((p * width + 4, top - 26), panel["y"], fill="black", font=font)
        for i in range(5):
            yv, xv = y0 + (y1 - y0) * i / 4, x0 + (x1 - x0) * i / 4
            draw.text((p * width + 4, bottom - i / 4 * (bottom - top) - 6), f"{yv:.4g}", fill="gray", font=font)
            label = 10**xv if panel.get("log_x") else xv
            draw.text((left + i / 4 * (right - left) - 12, bottom + 4), f"{label:.3g}", fill="gray", font=font)
        for f, series in panel["series"].items():
            pts = [at(x, y) for x, y in series if math.isfinite(y)]
            if len(pts) > 1:
                draw.line(pts, fill=COLOURS[f], width=2)
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS[f])
    for i, f in enumerate(FACTORS):
        draw.rectangle([12 + i * 120, height + 14, 24 + i * 120, height + 26], fill=COLOURS[f])
        draw.text((30 + i * 120, height + 12), name_of(f), fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def markdown(results: dict, args, figures: tuple[Path, Path]) -> str:
    models, aes = results["models"], results["autoencoders"]
    last = {f: models[str(f)]["evals"][-1] for f in FACTORS}
    pixel_time = models["1"]["sample_seconds"]
    rows = []
    for f in FACTORS:
        m, e, a = models[str(f)], last[f], aes.get(str(f), {})
        ae_time = a.get("train_seconds")
        rows.append([
            name_of(f), "×".join(map(str, m["latent"])), f"{m['params'] / 1e6:.2f}M", f"{m['step_gflop']:.0f}",
            f"{e['step'] * args.batch_size / e['train_seconds']:.1f}" if e["train_seconds"] else "–", str(e["step"]),
            f"{e['train_seconds'] / 60:.1f}",
            "–" if f == 1 else ("not timed" if ae_time is None else f"{ae_time / 60:.1f}"),
            "– (x itself)" if f == 1 else f"{a['R-FID']:.1f} / {a['PSNR']:.1f}",
            f"{e['FID']:.1f}", _pct(e["one"]), _pct(e["two"]), f"{m['sample_seconds']:.3f}",
            f"{pixel_time / m['sample_seconds']:.1f}×",
        ])
    best_fid = min(FACTORS, key=lambda f: last[f]["FID"])
    best_acc = max(FACTORS, key=lambda f: (last[f]["one"] + last[f]["two"]))
    curve = [[name_of(f), str(e["round"]), str(e["step"]), f"{e['train_seconds'] / 60:.1f}", f"{e['FID']:.1f}",
              _pct(e["one"]), _pct(e["two"])] for f in FACTORS for e in models[str(f)]["evals"]]
    threads = torch.get_num_threads()
    lines = [
        "# Pixel space against latent space at f = 2, 4, 8 (the lecture's LDM-1 … LDM-8, small)",
        "",
        f"Made by `{command_line(args.argv)}` on {platform.machine()} CPU, {threads} torch thread"
        f"{'s' if threads > 1 else ''}, torch {torch.__version__.split('+')[0]}"
        + (" — **a smoke run: tiny budget, numbers mean nothing**." if args.smoke else "."),
        "",
        "Held equal (benchmarks/latent_vs_pixel.py says it in full): data, prompt model, objective, optimiser and "
        "batch (shapes64's); the UNet's width at each resolution and cross-attention at 8×8 and 4×4; "
        f"**{args.budget_min:g} min of training loop each**; the measurement (DDIM 25 steps, guidance 4, "
        f"{args.num_images} held-out captions, FID on shapes-cnn features, real-vs-real floor "
        f"{results['FID floor']:.1f} at this count). Autoencoder training is counted apart.",
        "",
        markdown_table(["model", "latent", "UNet params", "GFLOP / train step (batch 32)", "samples/s", "steps",
                        "train min", "AE train min", "AE R-FID / PSNR (floor)", "FID ↓", "one-object ↑",
                        "two-object ↑", "s / image (25 steps)", "faster than pixel"], rows),
        "",
        f"At equal training time the best FID is {name_of(best_fid)}'s, the best prompt accuracy "
        f"(one- plus two-object) {name_of(best_acc)}'s; at 25 steps f = 4 samples "
        f"{pixel_time / models['4']['sample_seconds']:.1f}× as fast as pixel space (the issue expects ≥ 4×).",
        "",
        f"![quality against training time]({figures[0].name})",
        "",
        f"![quality against sampling time]({figures[1].name})",
        "",
        "Every checkpoint measured (round k: after k/" + str(args.evals) + " of the budget):",
        "",
        markdown_table(["model", "round", "step", "train min", "FID", "one-object", "two-object"], curve),
    ]
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, args) -> None:
    results_path = args.results or args.out / "LATENT_VS_PIXEL.md"
    stem = results_path.parent / "latent_vs_pixel"
    figures = (Path(f"{stem}_training.png"), Path(f"{stem}_sampling.png"))
    models = results["models"]
    series = {key: {f: [(e["train_seconds"] / 60, e[key] if key == "FID" else 100 * e[key])
                        for e in models[str(f)]["evals"]] for f in FACTORS} for key in ("FID", "one", "two")}
    plot(figures[0], [
        {"title": "FID (shapes-cnn) vs training time", "x": "training loop, min", "y": "FID", "series": series["FID"]},
        {"title": "one-object prompts all right", "x": "training loop, min", "y": "%", "series": series["one"],
         "y_range": (0, 100)},
        {"title": "two-object prompts all right", "x": "training loop, min", "y": "%", "series": series["two"],
         "y_range": (0, 100)},
    ])
    final = {key: {f: [(models[str(f)]["sample_seconds"], s[f][-1][1])] for f in FACTORS} for key, s in series.items()}
    plot(figures[1], [
        {"title": "FID vs sampling time (25 steps)", "x": "s / image (log)", "y": "FID", "series": final["FID"],
         "log_x": True},
        {"title": "one-object accuracy vs sampling time", "x": "s / image (log)", "y": "%", "series": final["one"],
         "log_x": True, "y_range": (0, 100)},
        {"title": "two-object accuracy vs sampling time", "x": "s / image (log)", "y": "%", "series": final["two"],
         "log_x": True, "y_range": (0, 100)},
    ])
    write_text_atomic(results_path, markdown(results, args, figures))
    print(f"wrote {results_path}, {figures[0]}, {figures[1]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=30.0, help="training-loop minutes per model (default 30)")
    parser.add_argument("--evals", type=int, default=4,
                        help="checkpoints measured per model, at equal shares of the budget")
    parser.add_argument("--num-images", type=int, default=256, help="held-out captions per measurement (default 256)")
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--probe-steps", type=int, default=10, help="a model's first stretch, which measures its rate")
    parser.add_argument("--zoo", type=Path, default=Path("runs/zoo"), help="autoencoder_zoo.py's --out, if run")
    parser.add_argument("--ae-steps", type=int, default=1200, help="steps for an autoencoder trained here (the zoo's)")
    parser.add_argument("--ae-width", type=int, default=8)
    parser.add_argument("--ae-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: a CPU shared with other jobs)")
    parser.add_argument("--out", type=Path, default=Path("runs/latent-vs-pixel"))
    parser.add_argument("--results", type=Path, help="the markdown to write (default OUT/LATENT_VS_PIXEL.md); its "
                                                     "plots go beside it")
    parser.add_argument("--smoke", action="store_true", help="a check of the script: 0.3-minute budget, 2 rounds, "
                                                            "8 images, 5 autoencoder steps; never a measurement")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.smoke:
        args.budget_min, args.evals, args.num_images, args.ae_steps, args.timing_repeats = 0.3, 2, 8, 5, 1
        args.eval_batch, args.probe_steps = 8, 2
    for option in ("budget_min", "evals", "num_images", "eval_batch", "timing_repeats", "ae_steps", "threads",
                   "probe_steps"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive")
    if args.num_images < 2:
        parser.error("--num-images must be at least 2 (FID compares sets)")
    args.batch_size = load_preset("shapes64").train.batch_size
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(run(args), args)


if __name__ == "__main__":
    main()
