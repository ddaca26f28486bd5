"""The lecture's autoencoder zoo (its Table 8) on the built-in shapes: KL and VQ autoencoders at
f ∈ {4, 8, 16} with a few c and |Z|, each trained for the same short run and scored on held-out
64×64 shapes by R-FID, R-IS (shapes-cnn features), PSNR and SSIM.

    nice -n 10 python benchmarks/autoencoder_zoo.py --steps 1200 --out runs/zoo --table benchmarks/ZOO.md

``--only NAME …`` runs a subset (names as in the table, e.g. kl-f8-c4, vq-f16-c8-z1024). Each
autoencoder is the `shapes64` preset's (one ResBlock per level, no attention, its losses and
learning rate) at base width ``--width`` (8) and batch ``--batch-size`` (8), with one more
downsampling level per factor of 2 in f. Small and many steps beat wide and few on a CPU: in
3 minutes KL-f4 reached PSNR 26.5 at width 8 (1200 steps) but 24.0 at width 16 (600 steps). The
defaults fit the zoo into about half an hour of a shared 2-core CPU; give more steps for numbers
nearer convergence.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ldmkit.config import AutoencoderConfig, Preset, load_preset
from ldmkit.eval.autoencoder import evaluate_autoencoder
from ldmkit.eval.features import ShapesFeatures
from ldmkit.storage import write_text_atomic
from ldmkit.train.autoencoder import train_autoencoder

# f = 2^(levels − 1); f = 2 is not in the zoo, latent_vs_pixel.py trains it
CHANNEL_MULTS = {2: (1, 2), 4: (1, 2, 2), 8: (1, 2, 2, 4), 16: (1, 2, 2, 4, 4)}


@dataclass(frozen=True)
class ZooEntry:
    """One autoencoder of the zoo: kind "kl" or "vq", factor f, latent channels c, codebook |Z| (VQ)."""

    kind: str
    f: int
    c: int
    codebook_size: int | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}-f{self.f}-c{self.c}" + (f"-z{self.codebook_size}" if self.codebook_size else "")

    def config(self, base: AutoencoderConfig) -> AutoencoderConfig:
        return dataclasses.replace(
            base, kind=self.kind, channel_mults=CHANNEL_MULTS[self.f], latent_channels=self.c,
            codebook_size=self.codebook_size or base.codebook_size,
        )


# The lecture's rows, scaled to 64×64 shapes: c grows with f as in Table 8 (f4: c3, f8: c4,
# f16: c8), plus one c and one |Z| variation at f = 8.
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("kl", 4, 3),
    ZooEntry("kl", 8, 4),
    ZooEntry("kl", 8, 8),
    ZooEntry("kl", 16, 8),
    ZooEntry("vq", 4, 3, 256),
    ZooEntry("vq", 8, 4, 64),
    ZooEntry("vq", 8, 4, 256),
    ZooEntry("vq", 16, 8, 1024),
)


def zoo_preset(entry: ZooEntry, base: Preset, width: int, batch_size: int) -> Preset:
    """The base preset with this entry's autoencoder at base width ``width`` and ``batch_size``; no
    intermediate grids, checkpoints or TensorBoard files; scale_factor from 32 images (the zoo
    does not use it)."""
    train = dataclasses.replace(base.autoencoder_train, batch_size=batch_size, sample_every=10**9,
                                checkpoint_every=10**9, scale_samples=32, tensorboard=False)
    autoencoder = dataclasses.replace(entry.config(base.autoencoder), base_channels=width)
    return dataclasses.replace(base, autoencoder=autoencoder, autoencoder_train=train)


def run(entries, steps: int, width: int, batch_size: int, num_images: int, out: Path, progress: bool) -> list[dict]:
    base = load_preset("shapes64")
    network = ShapesFeatures()
    rows = []
    for entry in entries:
        print(f"== {entry.name}: training {steps} steps", flush=True)
        start = time.time()
        folder = train_autoencoder(zoo_preset(entry, base, width, batch_size), out / entry.name, steps=steps,
                                   device="cpu", progress=progress)
        train_seconds = time.time() - start
        report = evaluate_autoencoder(folder, num_images, base.data.image_size, [network], progress=progress)
        row = {"name": entry.name, "kind": entry.kind, "f": entry.f, "c": entry.c, "codebook_size": entry.codebook_size,
               "steps": steps, "width": width, "batch_size": batch_size, "threads": torch.get_num_threads(),
               "train_seconds": round(train_seconds, 1),
               "eval_seconds": round(time.time() - start - train_seconds, 1), **report.to_dict()}
        rows.append(row)
        print(report.format(), flush=True)
        write_text_atomic(out / "results.json", json.dumps(rows, indent=2) + "\n")  # after each, in case of a stop
    return rows


def markdown(rows: list[dict], command: str, num_images: int) -> str:
    first = rows[0]
    real_is = first["metrics"]["IS of the real images (shapes-cnn)"]
    lines = [
        "# Autoencoder zoo on shapes (the lecture's Table 8, small)",
        "",
        f"Made by `{command}` on {platform.machine()} CPU "
        f"({first['threads']} torch thread{'s' if first['threads'] > 1 else ''}, shared with other jobs: times are "
        "wall-clock and only roughly "
        "comparable), torch " + torch.__version__.split("+")[0] + ".",
        "",
        f"Each autoencoder (the `shapes64` preset's design at base width {first['width']}) trained for the step count "
        f"shown (batch {first['batch_size']}, 64×64 shapes, seed 0) and was scored on {num_images} held-out 64×64 shapes (seed "
        f"{first['settings']['heldout_seed']}). PSNR and SSIM: mean ± std over images. R-FID: FID between "
        "the real images and their reconstructions; R-IS: IS of the reconstructions (mean ± std over 10 splits of the images), "
        "both on the shapes-cnn features (the project's shapes judge, 256-d; 48 shape × colour classes, so R-IS ≤ 48; "
        f"the real images score {real_is['value']:.2f}). *Captions kept*: the share of images whose caption is still "
        "entirely true of the reconstruction, as the shapes judge reads it (on the real images it reads "
        "≥ 99.9%). These are short runs: the table ranks the designs at equal, small training budgets, "
        "it does not show what each converges to.",
        "",
        "| autoencoder | f | \\|Z\\| | c | R-FID (shapes-cnn) ↓ | R-IS (shapes-cnn) ↑ | PSNR (dB) ↑ | SSIM ↑ "
        "| captions kept ↑ | steps | train time | eval time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["metrics"]
        lines.append(
            f"| {r['kind'].upper()} | {r['f']} | {r['codebook_size'] or '–'} | {r['c']} "
            f"| {m['R-FID (shapes-cnn)']['value']:.2f} "
            f"| {m['R-IS (shapes-cnn)']['value']:.2f} ± {m['R-IS (shapes-cnn)']['std']:.2f} "
            f"| {m['PSNR (dB)']['value']:.2f} ± {m['PSNR (dB)']['std']:.2f} "
            f"| {m['SSIM']['value']:.3f} ± {m['SSIM']['std']:.3f} "
            f"| {100 * m['captions still true of the reconstructions (shapes judge)']['value']:.1f}% "
            f"| {r['steps']} | {r['train_seconds'] / 60:.1f} min | {r['eval_seconds']:.0f} s |"
        )
    total = sum(r["train_seconds"] + r["eval_seconds"] for r in rows) / 60
    lines += ["", f"Total: {total:.0f} min of training and scoring for {len(rows)} autoencoders."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train and score the autoencoder zoo on shapes.")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per autoencoder")
    parser.add_argument("--width", type=int, default=8, help="base channel width of every autoencoder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a CPU shared with other jobs a second thread mostly "
                             "waits at barriers)")
    parser.add_argument("--num-images", type=int, default=1024, help="held-out images to score on")
    parser.add_argument("--out", type=Path, default=Path("runs/zoo"), help="folder for the trained autoencoders")
    parser.add_argument("--table", type=Path, default=Path("benchmarks/ZOO.md"), help="the markdown table to write")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"a subset of: {' '.join(e.name for e in ZOO)}")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    entries = ZOO
    if args.only:
        known = {e.name: e for e in ZOO}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(f"unknown zoo entry {unknown[0]!r}; allowed: {', '.join(known)}")
        entries = [known[n] for n in args.only]
    taken = [e.name for e in entries if (args.out / e.name).exists()]
    if taken:
        parser.error(f"{args.out / taken[0]} exists; choose another --out or remove it")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(entries, args.steps, args.width, args.batch_size, args.num_images, args.out, not args.no_progress)
    command = "python benchmarks/autoencoder_zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_text_atomic(args.table, markdown(rows, command.strip(), args.num_images))
    print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
