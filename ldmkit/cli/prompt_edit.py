"""`ldmkit edit`: Prompt-to-Prompt, an image edited by editing its prompt (docs/prompt_to_prompt.md)."""

from __future__ import annotations

from pathlib import Path

from ldmkit.bounds import MAX_GUIDANCE, MAX_IMAGES
from ldmkit.cli.common import (
    add_load_options, bounded_float, bounded_int, check_text, fraction, positive_int, read_image, seed_int, unit_interval,
)
from ldmkit.cli.outputs import check_output_dir, check_output_file
from ldmkit.data import save_grid
from ldmkit.device import resolve_device
from ldmkit.diffusion.prompt_to_prompt import MODES
from ldmkit.errors import UsageError
from ldmkit.pipelines import PromptToPromptPipeline
from ldmkit.pipelines.prompt_to_prompt import check_edit_guidance
from ldmkit.pretrained import resolve_model


def _outputs(args) -> tuple[Path | None, Path | None]:
    """(--out, --out-dir), one of them None, each checked writable (tried, not guessed) before any work; --out-dir
    must be new or empty unless --overwrite (two runs' images would mix), as `ldmkit generate --out DIR`."""
    if bool(args.out) == bool(args.out_dir):
        raise UsageError("give exactly one of --out FILE (source and edit side by side) or --out-dir DIR")
    if args.out:
        return check_output_file(args.out, "--out", suffixes=(".png",)), None
    return None, check_output_dir(args.out_dir, "--out-dir", empty=True, overwrite=args.overwrite, what="images",
                                  remedy="choose a new folder, or pass --overwrite to write into it anyway (images of "
                                         "the same names are replaced, the others kept)")


def cmd_edit(args) -> None:
    check_text(args.source_prompt, "SOURCE_PROMPT")
    check_text(args.target_prompt, "TARGET_PROMPT")
    out, out_dir = _outputs(args)
    check_edit_guidance(args.guidance, "--guidance")
    image = read_image(args.image) if args.image else None
    if image is not None and args.num_images != 1:
        raise UsageError("--num-images applies to generated images; a real image (--image) is edited once")
    blend = [w for w in args.blend.replace(",", " ").split() if w] if args.blend is not None else None
    if blend is not None and not blend:
        raise UsageError("--blend needs at least one word of the prompts")
    pipe = PromptToPromptPipeline.from_folder(resolve_model(args.model), resolve_device(args.device),
                                              ema=not args.no_ema, prediction=args.prediction,
                                              precision=args.precision)
    result = pipe(args.source_prompt, args.target_prompt, mode=args.mode, cross_replace_steps=args.cross_replace,
                  self_replace_steps=args.self_replace, local_blend_words=blend,
                  blend_threshold=args.blend_threshold, image=image, null_text=args.inversion == "null-text",
                  num_inference_steps=args.steps, guidance_scale=args.guidance, generator=args.seed,
                  num_images_per_prompt=args.num_images,
                  progress=not args.no_progress)
    pairs = list(zip(result.source_images, result.edited_images))
    if out is not None:
        save_grid([im for pair in pairs for im in pair], out, nrow=2)
        print(f"wrote {out} (source | edit)")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, (source, edited) in enumerate(pairs):
        suffix = "" if len(pairs) == 1 else f"_{k}"
        save_grid([source], out_dir / f"source{suffix}.png")
        save_grid([edited], out_dir / f"edit{suffix}.png")
    print(f"wrote {2 * len(pairs)} images to {out_dir}")


def add_parsers(sub) -> None:
    p = sub.add_parser("edit", help="Prompt-to-Prompt: edit a generated or real image by editing its prompt")
    p.add_argument("source_prompt", metavar="SOURCE_PROMPT", help="the prompt of the image to edit")
    p.add_argument("target_prompt", metavar="TARGET_PROMPT", help="the edited prompt; a weight after a word scales its attention: 'a red(2) circle'")
    p.add_argument("--model", help="a text model folder, a Stable Diffusion file or a diffusers folder "
                                   "(default: shapes64-grounded, shipped with ldmkit)")
    add_load_options(p)
    p.add_argument("--image", metavar="FILE",
                   help="edit this image (of the model's size) instead of a generated one: it is inverted under "
                        "SOURCE_PROMPT, and source.png is the reconstruction")
    p.add_argument("--mode", choices=MODES, default="replace",
                   help="replace: swap words one for one (default); refine: add words; reweight: scale the "
                        "attention of the words weighted in TARGET_PROMPT, same words otherwise")
    p.add_argument("--cross-replace", type=unit_interval, default=0.8, metavar="F",
                   help="the first fraction F of the steps take the source's cross-attention (default 0.8)")
    p.add_argument("--self-replace", type=unit_interval, default=0.4, metavar="F",
                   help="the first fraction F of the steps take the source's self-attention (default 0.4)")
    p.add_argument("--blend", metavar="WORDS",
                   help="local blend: change only where these words (of either prompt; space- or comma-separated) "
                        "attend; the rest of the latent is the source's")
    p.add_argument("--blend-threshold", type=fraction, default=0.3, metavar="T",
                   help="the local-blend mask is where the words' averaged map exceeds T times its maximum, "
                        "T in [0, 1) (default 0.3)")
    p.add_argument("--inversion", choices=["null-text", "ddim"], default="null-text",
                   help="with --image: null-text inversion (default; reconstructs closely, ~10x slower) or plain "
                        "DDIM inversion")
    p.add_argument("--out", metavar="FILE", help="one .png with source and edit side by side (one row per image)")
    p.add_argument("--out-dir", metavar="DIR",
                   help="a folder for source.png and edit.png (source_K.png, edit_K.png with --num-images > 1); it "
                        "must be new or empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="write into a --out-dir folder that already holds files")
    p.add_argument("--num-images", type=bounded_int(1, MAX_IMAGES, "one batch; run again with another --seed for more"),
                   default=1, metavar="N")
    p.add_argument("--steps", type=positive_int, default=25, metavar="N")
    p.add_argument("--guidance", type=bounded_float(MAX_GUIDANCE, "guidance scale"),
                   default=4.0, help="classifier-free guidance scale s > 0 (at 0 neither prompt acts)")
    p.add_argument("--seed", type=seed_int, default=0, metavar="S")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_edit)
