"""`ldmkit eval autoencoder` and `ldmkit eval generate`: measure a trained model, print a table,
optionally write JSON."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ldmkit.bounds import (
    DEFAULT_MAX_SIDE, MAX_BINDING, MAX_CACHE_DEPTH, MAX_CACHE_INTERVAL, MAX_CANDIDATES, MAX_ETA, MAX_GUIDANCE,
)
from ldmkit.cli.common import SAMPLER_HELP, bounded_float, bounded_int, check_sampler, positive_int, seed_int
from ldmkit.cli.outputs import check_output_file
from ldmkit.config import AutoencoderConfig, ModelConfig
from ldmkit.device import resolve_device
from ldmkit.diffusion.binding import BindingGuidance
from ldmkit.eval.autoencoder import check_image_size, evaluate_autoencoder
from ldmkit.eval.features import InceptionV3Features, ShapesFeatures
from ldmkit.eval.generation import evaluate_generation
from ldmkit.eval.heldout import PHRASINGS
from ldmkit.pretrained import NAMES_HELP, resolve_model
from ldmkit.settings import GenerationSettings
from ldmkit.storage import _folder_kind, load_config


def _networks(args) -> list:
    """The feature networks: the shapes CNN always, Inception-v3 when its weights are given.
    Built first, so that a bad weights file fails before any long work."""
    networks = [ShapesFeatures()]
    if args.inception_weights:
        networks.append(InceptionV3Features(args.inception_weights))
    return networks


def _check_outputs(args) -> None:
    """The JSON (and results) files, checked before any evaluation runs: a long evaluation whose result
    cannot be written is lost."""
    for option in ("json", "results"):
        value = getattr(args, option, None)
        if value:
            check_output_file(value, f"--{option}")


def _run(args, evaluate) -> None:
    _check_outputs(args)
    device = resolve_device(args.device)
    networks = _networks(args)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # each warning of the evaluation, one line each (`ldmkit.cli.main`)
        report = evaluate(networks, device)
    written = report.save_json(args.json) if args.json else None  # before printing: a closed pipe loses no file
    print(report.format())
    if written:
        print(f"wrote {written}")


def _check_image_size(model: str, image_size: int) -> None:
    """--image-size must be a multiple of the autoencoder's factor f (`check_image_size`), read here from an
    ldmkit folder's config before any weights load."""
    config = Path(model) / "config.yaml"
    kind = _folder_kind(config) if config.is_file() else None
    if kind is None:
        return  # a Stable Diffusion file or diffusers folder: the evaluation checks it once loaded, before its work
    loaded = load_config(AutoencoderConfig if kind == "autoencoder" else ModelConfig, model)
    check_image_size(image_size, (loaded if kind == "autoencoder" else loaded.autoencoder).downsample_factor)


def cmd_eval_autoencoder(args) -> None:
    model = resolve_model(args.model)  # a shipped model by its name too
    _check_image_size(model, args.image_size)
    _run(args, lambda networks, device: evaluate_autoencoder(
        model, args.num_images, args.image_size, networks, args.batch_size, device, not args.no_progress))


def cmd_eval_generate(args) -> None:
    model = resolve_model(args.model)
    check_sampler(args.sampler, args.eta)
    settings = GenerationSettings.from_args(args, skip=("num_images",))  # --num-images: held-out images in all

    def evaluate(networks, device):
        # --as-written: the model alone, prompts encoded as given (LatentDiffusion.in_known_words)
        return evaluate_generation(model, args.num_images, settings, networks, args.batch_size, device,
                                   not args.no_progress, args.phrasing, as_written=args.as_written)

    _run(args, evaluate)


def _common(p: argparse.ArgumentParser, default_images: int) -> None:
    p.add_argument("--num-images", type=bounded_int(2, 10**7, "FID and KID compare sets of at least 2"),
                   default=default_images,
                   help=f"held-out images to evaluate on (default {default_images}; FID wants ≥ 1024 for shapes-cnn)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--inception-weights", metavar="FILE",
                   help="local FID Inception-v3 weights (pytorch-fid's pt_inception-2015-12-05-*.pth): "
                        "adds FID/KID/IS on Inception features; nothing is downloaded")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="measure a model: PSNR/SSIM/R-FID, or FID/KID/IS/prompt accuracy")
    esub = p.add_subparsers(dest="eval_command", required=True)

    a = esub.add_parser("autoencoder", help="PSNR, SSIM, R-FID and R-IS of an autoencoder on held-out shapes")
    a.add_argument("--model", required=True, help="an autoencoder folder written by `ldmkit train-autoencoder`, "
                                                  "or a text-to-image model (its frozen autoencoder is measured)")
    a.add_argument("--image-size", type=bounded_int(11, DEFAULT_MAX_SIDE, "SSIM's window is 11×11; memory grows with the "
                                                                           "pixel count"), default=64,
                   help="size of the held-out shapes (default 64; an autoencoder folder does not record the "
                        "size it was trained at, so give it: 32 for the demo preset)")
    _common(a, 1024)
    a.set_defaults(func=cmd_eval_autoencoder)

    g = esub.add_parser("generate", help="FID, KID, IS and prompt accuracy of a text-to-image model")
    g.add_argument("--model", help=f"a model folder written by `ldmkit train`, or a shipped model's name: {NAMES_HELP}")
    g.add_argument("--steps", type=positive_int,
                   help="sampling steps (default 25, a consistency student's own 4; ddpm: give T for the full chain)")
    g.add_argument("--guidance", type=bounded_float(MAX_GUIDANCE, "guidance scale"),
                   help="classifier-free guidance scale s (default 4; a consistency student's own)")
    g.add_argument("--sampler", help=SAMPLER_HELP)
    g.add_argument("--eta", type=bounded_float(MAX_ETA, "DDIM η: 0 deterministic, 1 DDPM's noise"), default=0.0,
                   help="DDIM η (0: deterministic, the default; 1: DDPM's noise)")
    g.add_argument("--seed", type=seed_int, default=0)
    g.add_argument("--binding", type=bounded_float(MAX_BINDING, "binding λ"), default=0.0, metavar="λ",
                   help="attribute-binding guidance of this scale (default 0: none; see `ldmkit generate --help`)")
    g.add_argument("--binding-candidates", type=bounded_int(1, MAX_CANDIDATES, "starting noises"),
                   default=BindingGuidance.candidates, metavar="N",
                   help="with --binding: starting noises per two-object prompt to choose from (default %(default)s)")
    g.add_argument("--as-written", action="store_true",
                   help="encode the captions as given, without reading never-seen words as the nearest known ones "
                        "nor saying a never-seen phrasing in the model's own (the model alone; "
                        "docs/prompt_following.md)")
    g.add_argument("--cache-interval", type=bounded_int(1, MAX_CACHE_INTERVAL, "as `ldmkit serve` allows"), default=1,
                   metavar="N", help="feature reuse: the whole UNet at every N-th step, N below the steps (default 1: "
                                     "off; see `ldmkit generate --help`)")
    g.add_argument("--cache-depth", type=bounded_int(0, MAX_CACHE_DEPTH, "at most the UNet's blocks per level"),
                   default=1, metavar="K",
                   help="with --cache-interval: first-level blocks the shallow branch recomputes (default 1; see "
                        "`ldmkit generate --help`)")
    g.add_argument("--phrasing", choices=PHRASINGS, default="templates",
                   help="how the held-out captions are worded: the dataset's templates (default), or the seen or "
                        "unseen (never trained on) part of the broad caption grammar")
    _common(g, 1024)
    g.set_defaults(func=cmd_eval_generate)
