"""`ldmkit …` subcommands: parse, call the library, report. Thin on purpose.

A user's mistake (bad option, missing file, wrong size) ends with one line on stderr and exit
code 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ldmkit.config import ConfigError, Preset, load_preset, load_yaml, preset_names

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _preset(args) -> Preset:
    if bool(args.preset) == bool(args.config):
        raise UsageError(f"give exactly one of --preset NAME ({', '.join(preset_names())}) or --config FILE")
    return load_preset(args.preset) if args.preset else load_yaml(Preset, args.config)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"a built-in preset: {', '.join(preset_names())}")
    p.add_argument("--config", help="a YAML file in the preset layout (missing keys take defaults)")
    p.add_argument("--out", required=True, help="the output folder")
    p.add_argument("--steps", type=positive_int, help="total training steps (overrides the preset)")
    p.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_train_autoencoder(args) -> None:
    from ldmkit.train.autoencoder import train_autoencoder

    out = train_autoencoder(_preset(args), args.out, args.steps, args.resume, args.device, not args.no_progress)
    print(f"autoencoder written to {out}")


def cmd_train(args) -> None:
    from ldmkit.train.diffusion import train_diffusion

    out = train_diffusion(
        _preset(args), args.autoencoder, args.out, args.steps, args.resume, args.device, not args.no_progress
    )
    print(f"model written to {out} (samples in {out / 'samples'})")


def cmd_generate(args) -> None:
    from ldmkit.data import save_grid
    from ldmkit.diffusion import SAMPLERS
    from ldmkit.pipelines.text_to_image import load_pipeline
    from ldmkit.train.common import resolve_device

    if args.sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {args.sampler!r}; allowed: {', '.join(SAMPLERS)}")
    out = Path(args.out)
    if out.suffix.lower() != ".png" and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder or a .png file")
    pipe = load_pipeline(args.model, resolve_device(args.device))
    images = pipe(
        args.prompt, steps=args.steps, guidance=args.guidance, seed=args.seed, num_images=args.num_images,
        sampler=args.sampler, negative_prompt=args.negative_prompt, eta=args.eta,
        height=args.height, width=args.width, progress=not args.no_progress,
    )
    if out.suffix.lower() == ".png":
        save_grid(images, out)
        print(f"wrote {out}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_grid([image], out / f"{args.seed}_{i:03d}.png")
        print(f"wrote {len(images)} images to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldmkit", description="Latent diffusion: train, sample, measure.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-autoencoder", help="stage 1: train the autoencoder on images")
    _add_training_options(p)
    p.set_defaults(func=cmd_train_autoencoder)

    p = sub.add_parser("train", help="stage 2: train the UNet and text encoder on frozen latents")
    _add_training_options(p)
    p.add_argument("--autoencoder", required=True, help="folder written by `ldmkit train-autoencoder`")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="text-to-image sampling")
    p.add_argument("prompt")
    p.add_argument("--model", required=True, help="a model folder written by `ldmkit train`")
    p.add_argument("--out", required=True, help="a .png file (several images form a grid) or a folder")
    p.add_argument("--num-images", type=positive_int, default=1)
    p.add_argument("--steps", type=positive_int, default=25)
    p.add_argument("--guidance", type=non_negative_float, default=4.0, help="classifier-free guidance scale s")
    p.add_argument("--sampler", default="ddim", help="ddim (default), ddpm, euler or dpmpp-2m")
    p.add_argument("--eta", type=non_negative_float, default=0.0, help="DDIM η (0: deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--height", type=positive_int, help="default: the size the model was trained at")
    p.add_argument("--width", type=positive_int)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ldmkit.data import DataError
    from ldmkit.storage import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ConfigError, CheckpointError, DataError, FloatingPointError, ValueError) as e:
        if os.environ.get("LDMKIT_DEBUG"):
            raise
        print(f"ldmkit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ldmkit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
