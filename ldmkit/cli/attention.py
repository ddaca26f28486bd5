"""`ldmkit attention`: sample one image and draw where each prompt token's cross-attention lands."""

from __future__ import annotations

from ldmkit.bounds import MAX_GUIDANCE
from ldmkit.cli.common import (
    SAMPLER_HELP, UsageError, bounded_float, check_sampler, check_text, note_reading, positive_int, seed_int,
)
from ldmkit.cli.generate import check_steps
from ldmkit.cli.outputs import check_output_file
from ldmkit.device import resolve_device
from ldmkit.eval.attention_maps import attention_figure, cross_attention_maps
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.storage import atomic_path


def cmd_attention(args) -> None:
    check_sampler(args.sampler)
    check_text(args.prompt, "the prompt")
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out {args.out}: give a .png file for the figure")
    out = check_output_file(args.out, kind=".png file")
    pipe = load_pipeline(args.model, resolve_device(args.device))
    if args.as_written:
        pipe.model.known_words = None
    check_steps(pipe.model, args.steps)
    note_reading("attention", pipe.model, args.prompt)
    result = cross_attention_maps(pipe, args.prompt, args.steps, args.guidance, args.seed, args.sampler,
                                  progress=not args.no_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        attention_figure(result).save(tmp, format="PNG")
    shares = result.share()
    listing = ", ".join(f"{result.tokens[j]} {100 * float(shares[j]):.0f}%" for j in range(result.real_tokens))
    print(f"wrote {out}; attention shares: {listing}, padding {100 * float(shares[result.real_tokens:].sum()):.0f}%")


def add_parsers(sub) -> None:
    p = sub.add_parser("attention", help="sample one image and show each prompt token's cross-attention map")
    p.add_argument("prompt", help="what to draw")
    p.add_argument("--model", help="a text model folder, a Stable Diffusion file or a diffusers folder "
                                   "(default: shapes64-grounded, shipped with ldmkit)")
    p.add_argument("--out", required=True, help="the figure, a .png file")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps (default 25; a consistency student's own 4)")
    p.add_argument("--guidance", type=bounded_float(MAX_GUIDANCE, "guidance scale"),
                   default=4.0, help="classifier-free guidance scale s")
    p.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--as-written", action="store_true",
                   help="encode the prompt as given: by default a word the model never saw in training is read as the "
                        "nearest word it did, by WordNet, a phrasing it never saw said in its own, and the maps are "
                        "those of the words read "
                        "(docs/prompt_following.md)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_attention)
