"""`ldmkit upscale | inpaint | uncrop | colorize | img2img`: image-conditioned generation.

Each reads one image, runs the pipeline of its model's condition kind and writes one PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from PIL import Image

from ldmkit.bounds import MAX_GUIDANCE, max_side
from ldmkit.cli.common import (
    SAMPLER_HELP, UsageError, add_load_options, bounded_float, check_sampler, check_text, non_negative_float,
    positive_int, read_image, seed_int,
)
from ldmkit.cli.generate import check_steps
from ldmkit.cli.outputs import image_output
from ldmkit.data import save_grid
from ldmkit.images import mask_grey
from ldmkit.device import resolve_device
from ldmkit.pipelines import ColorizationPipeline, ImageToImagePipeline, InpaintingPipeline, SuperResolutionPipeline
from ldmkit.pretrained import resolve_model
from ldmkit.settings import PROMPT_SYNTAXES, GenerationSettings


def _read_mask(path: str):
    try:
        with Image.open(path) as image:
            image.load()
            return mask_grey(image)
    except FileNotFoundError:
        raise UsageError(f"mask not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UsageError(f"cannot read mask {path}: {e}") from None


def _out_path(args) -> Path:
    """The output file, checked (with the prompts) before the model loads: an image suffix, a place
    that can be written."""
    check_sampler(args.sampler, args.eta)
    check_text(getattr(args, "prompt", None), "the prompt")
    check_text(getattr(args, "negative_prompt", None), "--negative-prompt")
    out = Path(args.out) if args.out else Path(f"{Path(args.input).stem}_{args.command}.png")
    return image_output(out)[1]


def _pipeline(cls, args, image=None):
    """The pipeline of --model, with --steps and the output's size (the input's, ×4 for upscale) checked
    against the model before sampling: at most what `ldmkit generate` and the server allow."""
    pipe = cls.from_folder(resolve_model(args.model), resolve_device(args.device), ema=not args.no_ema,
                           prediction=args.prediction, precision=args.precision)
    check_steps(pipe.model, args.steps)
    if image is not None:
        config = pipe.model.config
        scale = config.condition.sr_factor if config.condition.kind == "sr" else 1
        largest = max_side(config.image_size)
        if max(image.size) * scale > largest:
            raise UsageError(
                f"{args.input} is {image.size[0]}×{image.size[1]} pixels: the output would be "
                f"{image.size[0] * scale}×{image.size[1] * scale}, larger than {largest} (this model was trained at "
                f"{config.image_size} px); resize the input first"
            )
    return pipe


def _sampling(args) -> dict:
    """The pipeline call's keywords: the settings of the command's options, and whether to show progress."""
    check_sampler(args.sampler, args.eta)
    return dict(settings=GenerationSettings.from_args(args), progress=not args.no_progress)


def _write(images, out: Path) -> None:
    save_grid(images, out)
    print(f"wrote {out}")


def cmd_upscale(args) -> None:
    out, image = _out_path(args), read_image(args.input)
    pipe = _pipeline(SuperResolutionPipeline, args, image)
    _write(pipe(image, args.prompt, start_from_input=not args.noise_start, **_sampling(args)), out)


def cmd_inpaint(args) -> None:
    out, image, mask = _out_path(args), read_image(args.input), _read_mask(args.mask)
    if mask.size != image.size:
        raise UsageError(
            f"the mask is {mask.size[0]}×{mask.size[1]} pixels but the image is {image.size[0]}×{image.size[1]}; "
            "they must be the same size"
        )
    pipe = _pipeline(InpaintingPipeline, args, image)
    _write(pipe(image, mask, args.prompt, start_from_input=not args.noise_start, **_sampling(args)), out)


def cmd_uncrop(args) -> None:
    if not 0 < args.amount < 1:
        raise UsageError(f"--amount {args.amount}: must be between 0 and 1 (the share of the image to paint)")
    out, image = _out_path(args), read_image(args.input)
    pipe = _pipeline(InpaintingPipeline, args, image)
    _write(pipe.uncrop(image, args.side, args.amount, args.prompt, start_from_input=not args.noise_start,
                       **_sampling(args)), out)


def cmd_colorize(args) -> None:
    out, image = _out_path(args), read_image(args.input)
    pipe = _pipeline(ColorizationPipeline, args, image)
    _write(pipe(image, args.prompt, start_from_input=not args.noise_start, **_sampling(args)), out)


def cmd_img2img(args) -> None:
    if not 0 < args.strength <= 1:
        raise UsageError(f"--strength {args.strength}: must be in (0, 1] (0 would return the input)")
    out, image = _out_path(args), read_image(args.input)
    pipe = _pipeline(ImageToImagePipeline, args, image)
    _write(pipe(image, args.prompt, strength=args.strength, **_sampling(args)), out)


def _common(p: argparse.ArgumentParser, guidance: float | None, what: str) -> None:
    p.add_argument("input", help="the input image (PNG, JPEG, …)")
    p.add_argument("--model", required=True, help=f"a model folder written by `ldmkit train` ({what}); img2img also "
                                                  "takes a shipped text model: shapes64-grounded, shapes64")
    p.add_argument("--out", help="the output image, .png, .jpg/.jpeg or .webp (default: INPUT-STEM_COMMAND.png here)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps (default 25; a consistency student's own 4)")
    own = "4; a consistency student's own" if guidance is None else f"{guidance:g}"
    p.add_argument("--guidance", type=bounded_float(MAX_GUIDANCE, "guidance scale"), default=guidance,
                   help=f"classifier-free guidance scale s on the prompt (default {own})")
    p.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    p.add_argument("--eta", type=non_negative_float, default=0.0, help="DDIM η (0: deterministic)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--prompt-syntax", choices=PROMPT_SYNTAXES, default="plain",
                   help="plain (as written, the default) or a1111 (AUTOMATIC1111's emphasis and BREAK; as "
                        "ldmkit generate --prompt-syntax)")
    add_load_options(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def _start_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--noise-start", action="store_true",
                   help="start from z_T ~ N(0, I) instead of the input's own guess at the output noised to t = T "
                        "(the default, which keeps the layout the model expects in z_T)")


def _unit_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_parsers(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolution with an 'sr' model (×4 on shapes: 16 → 64 px)")
    _common(p, 1.0, "preset *-sr")
    _start_option(p)
    p.add_argument("--prompt", default="", help="an optional caption of the image")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("inpaint", help="repaint where the mask is white, with an 'inpaint' model")
    _common(p, 1.0, "preset *-inpaint")
    _start_option(p)
    p.add_argument("--mask", required=True, help="a mask image of the input's size: white = repaint, black = keep")
    p.add_argument("prompt", nargs="?", default="", help="an optional caption of the result")
    p.set_defaults(func=cmd_inpaint, prompt_may_trail=True)  # the prompt may follow the options, as usage shows

    p = sub.add_parser("uncrop", help="paint beyond one border, with an 'inpaint' model")
    _common(p, 1.0, "preset *-inpaint")
    _start_option(p)
    p.add_argument("--side", required=True, choices=["left", "right", "top", "bottom"],
                   help="the border to paint beyond")
    p.add_argument("--amount", type=_unit_float, default=0.5,
                   help="the share of the output that is new, between 0 and 1 (default 0.5)")
    p.add_argument("--prompt", default="", help="an optional caption of the result")
    p.set_defaults(func=cmd_uncrop)

    p = sub.add_parser("colorize", help="colour a grayscale image, with a 'colorize' model")
    _common(p, 1.0, "preset *-colorize")
    _start_option(p)
    p.add_argument("--prompt", default="", help="an optional caption of the image")
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("img2img", help="SDEdit: redraw an image with a new prompt, with a text model")
    _common(p, None, "a text-to-image model")
    p.add_argument("prompt", help="what the result should show")
    p.add_argument("--strength", type=_unit_float, default=0.6,
                   help="how far the input is noised, in (0, 1]: the last int(strength × steps) of the steps run, as "
                        "in diffusers; 1 keeps little of it (default 0.6)")
    p.add_argument("--negative-prompt", default="")
    p.set_defaults(func=cmd_img2img)
