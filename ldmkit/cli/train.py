"""`ldmkit train-autoencoder` and `ldmkit train`."""

from __future__ import annotations

import argparse

from ldmkit.cli.common import UsageError, positive_int
from ldmkit.config import Preset, load_preset, load_yaml, preset_names


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


def add_parsers(sub) -> None:
    p = sub.add_parser("train-autoencoder", help="stage 1: train the autoencoder on images")
    _add_training_options(p)
    p.set_defaults(func=cmd_train_autoencoder)

    p = sub.add_parser("train", help="stage 2: train the UNet and text encoder on frozen latents")
    _add_training_options(p)
    p.add_argument("--autoencoder", required=True, help="folder written by `ldmkit train-autoencoder`")
    p.set_defaults(func=cmd_train)
