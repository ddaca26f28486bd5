"""`ldmkit generate`: text-to-image sampling, or class-conditional sampling with ``--class NAME``."""

from __future__ import annotations

import sys

from ldmkit.bounds import MAX_BINDING, MAX_CANDIDATES, MAX_GUIDANCE, MAX_IMAGES, max_side
from ldmkit.cli.common import (
    SAMPLER_HELP, UsageError, add_load_options, bounded_float, bounded_int, check_sampler, check_text, fraction,
    non_negative_float, non_negative_int, note_reading, positive_int, seed_int,
)
from ldmkit.cli.outputs import image_output
from ldmkit.data import save_grid
from ldmkit.device import resolve_device
from ldmkit.diffusion.binding import BindingGuidance
from ldmkit.diffusion.grids import SPACINGS
from ldmkit.pipelines import ClassConditionalPipeline
from ldmkit.pipelines.adapters import apply_adapters
from ldmkit.pipelines.by_kind import condition_kind
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import NAMES_HELP, resolve_model
from ldmkit.settings import PROMPT_SYNTAXES, GenerationSettings, check_steps as check_step_count
from ldmkit.text.emphasis import uses_syntax


def cmd_generate(args) -> None:
    check_sampler(args.sampler, args.eta, args.spacing, args.steps_offset)
    if args.prompt is None and args.class_name is None:
        raise UsageError("give a prompt (a text model) or --class NAME (a class-conditional model)")
    if args.prompt is not None and args.class_name is not None:
        raise UsageError("give a prompt or --class NAME, not both: a model is conditioned on one of them")
    check_text(args.prompt, "the prompt")
    check_text(args.negative_prompt, "--negative-prompt")
    check_text(args.class_name, "--class")
    # Checked before the model loads and samples: a result that cannot be written loses the run's work.
    out_kind, out = image_output(args.out, allow_folder=True, overwrite=args.overwrite)
    model = resolve_model(args.model)
    kind = condition_kind(model)
    settings = GenerationSettings.from_args(args)
    if args.cache_depth != 1 and args.cache_interval == 1:
        print("ldmkit generate: note: --cache-depth applies with --cache-interval N > 1 (feature reuse); every step "
              "runs the whole UNet here", file=sys.stderr)
    if kind == "class":
        pipe = ClassConditionalPipeline.from_folder(model, resolve_device(args.device), ema=not args.no_ema,
                                                    prediction=args.prediction, precision=args.precision)
        if args.class_name is None:
            raise UsageError(
                f"{model} is a class-conditional model: give --class NAME instead of a prompt "
                f"(classes: {', '.join(pipe.classes)})"
            )
        if args.lora or args.embedding:
            raise UsageError("--lora and --embedding apply to text models only")
        if args.as_written:
            raise UsageError("--as-written applies to text models only: a class model reads no prompt words")
        if args.prompt_syntax != "plain":
            raise UsageError("--prompt-syntax applies to text models only: a class model reads no prompt")
        if args.negative_prompt:
            raise UsageError("--negative-prompt applies to text models only; a class model guides against the null class")
        if args.spacing or args.karras or args.steps_offset is not None:
            raise UsageError("--spacing, --steps-offset and --karras apply to text models only here")
        if args.binding or args.binding_candidates != BindingGuidance.candidates:
            raise UsageError("--binding and --binding-candidates apply to text models only: they bind a prompt's words")
        check_size(pipe.model, args.height, args.width, args.steps)
        images = pipe(args.class_name, settings=settings, progress=not args.no_progress)
    elif args.class_name is not None:
        raise UsageError(
            f"--class needs a class-conditional model (trained with --preset shapes64-class); {model} is a "
            f"{kind!r} model"
        )
    else:
        if kind != "text":
            raise UsageError(
                f"{model} is a {kind!r} model; `ldmkit generate` needs a text or class model "
                f"(see `ldmkit {_COMMAND_OF_KIND[kind]} --help`)"
            )
        pipe = load_pipeline(model, resolve_device(args.device), ema=not args.no_ema, prediction=args.prediction,
                             precision=args.precision)
        apply_adapters(pipe, args.lora, args.embedding)
        if args.as_written:
            pipe.model.known_words = None
        if args.prompt_syntax == "plain" and (uses_syntax(args.prompt) or uses_syntax(args.negative_prompt)):
            print("ldmkit generate: note: brackets and BREAK weigh nothing here, as in diffusers; "
                  "--prompt-syntax a1111 reads AUTOMATIC1111's emphasis, (word:1.3), [word], BREAK", file=sys.stderr)
        if args.prompt_syntax == "plain":
            note_reading("generate", pipe.model, args.prompt)
        check_size(pipe.model, args.height, args.width, args.steps)
        images = pipe(args.prompt, settings=settings, progress=not args.no_progress)
    if out_kind == "file":
        save_grid(images, out)  # in the format the suffix names
        print(f"wrote {out}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_grid([image], out / f"{args.seed}_{i:03d}.png")
        print(f"wrote {len(images)} image{'s' if len(images) != 1 else ''} to {out}")


def check_steps(model, steps: int | None) -> None:
    """Refuse more --steps than the model has timesteps, before sampling starts (None: the model's own)."""
    check_step_count(steps, model.schedule.num_timesteps, "--steps")


def check_size(model, height: int | None, width: int | None, steps: int | None = None) -> None:
    """Refuse a --height/--width the model cannot take, or larger than the server allows (time and memory
    grow with the pixel count), and more --steps than it has timesteps: before any sampling."""
    if steps is not None:
        check_steps(model, steps)
    size = model.config.image_size
    largest = max_side(size)
    for option, value in (("--height", height), ("--width", width)):
        if value is not None and value > largest:
            raise UsageError(f"{option} {value} is too large: at most {largest} for this model (trained at {size} px; "
                             "as `ldmkit serve` allows)")
    model.check_image_size(height or size, width or size)


_COMMAND_OF_KIND = {"sr": "upscale", "inpaint": "inpaint", "colorize": "colorize"}


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="text-to-image sampling, or class-conditional with --class NAME")
    p.add_argument("prompt", nargs="?", help="what to draw (text models)")
    p.add_argument("--class", dest="class_name", metavar="NAME",
                   help="the class to draw (class-conditional models: --model must be one)")
    p.add_argument(
        "--model",
        help="a model folder written by `ldmkit train`, a Stable Diffusion .safetensors/.ckpt file, or a diffusers "
             f"folder, or a shipped model's name: {NAMES_HELP}",
    )
    add_load_options(p)
    p.add_argument("--out", required=True,
                   help="an image file, .png, .jpg/.jpeg or .webp (several images form a grid), or a folder (one "
                        "SEED_INDEX.png per image; it must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into a --out folder that already holds files")
    p.add_argument("--num-images", type=bounded_int(1, MAX_IMAGES, "one batch; run again with another --seed for more"),
                   default=1)
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: 25; a consistency student's own, 4)")
    p.add_argument("--guidance", type=bounded_float(MAX_GUIDANCE, "guidance scale"),
                   help="classifier-free guidance scale s (default 4; a consistency student's own)")
    p.add_argument("--sampler", help=SAMPLER_HELP)
    p.add_argument("--eta", type=non_negative_float, default=0.0, help="DDIM η (0: deterministic)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--prompt-syntax", choices=PROMPT_SYNTAXES, default="plain",
                   help="plain (the default: every character read as written, as diffusers reads a prompt) or a1111 "
                        "(AUTOMATIC1111's emphasis: (word) ×1.1, [word] ÷1.1, (word:1.3), BREAK, and a prompt longer "
                        "than the text encoder's 75 tokens read in chunks instead of cut)")
    p.add_argument("--height", type=positive_int, help="default: the size the model was trained at")
    p.add_argument("--width", type=positive_int)
    p.add_argument("--guidance-stop", type=fraction, default=0.0, metavar="F",
                   help="run the last fraction F of the steps (t < F·T) without guidance: one UNet pass instead of "
                        "two there (default 0: guide every step)")
    p.add_argument("--cache-interval", type=positive_int, default=1, metavar="N",
                   help="feature reuse (DeepCache): the whole UNet at every N-th step, only its shallow branch "
                        "on the reused deep features between (default 1: off; "
                        "docs/performance.md)")
    p.add_argument("--cache-depth", type=non_negative_int, default=1, metavar="K",
                   help="with --cache-interval: blocks of the UNet's first level that the shallow branch recomputes, "
                        "0 … its blocks per level (default 1: DeepCache's branch 0; 0: the shallowest branch, faster "
                        "where the first level has attention, as Stable Diffusion's)")
    p.add_argument("--spacing", choices=SPACINGS,
                   help="the sampler's timesteps: trailing (starts at T−1), leading (the original LDM's and Stable "
                        "Diffusion's: 981, 961, …, 1 for 50 steps) or linspace (T−1 … 0); default: a diffusers "
                        "folder's scheduler config, else trailing for ddim/ddpm/plms and linspace for euler/euler-a/dpmpp-2m/unipc")
    p.add_argument("--steps-offset", type=non_negative_int, metavar="K",
                   help="with --spacing leading: added to its timesteps (default 1, as Stable Diffusion's config)")
    p.add_argument("--karras", action="store_true",
                   help="Karras et al.'s noise levels (denser at low noise) between the grid's first and last σ, "
                        "for any sampler: --sampler dpmpp-2m --karras is A1111's \"DPM++ 2M Karras\"")
    p.add_argument("--binding", type=bounded_float(MAX_BINDING, "binding λ"), default=0.0, metavar="λ",
                   help="attribute-binding guidance of scale λ (default 0: none; 0.2 for the shipped models): steers "
                        "the first half of sampling so that each shape's colour and size words attend where the "
                        "shape word does and a two-object prompt's nouns sit in the stated relation, and starts a "
                        "two-object prompt from the best of --binding-candidates noises; a two-object image takes "
                        "about 2.5x as long (docs/binding.md)")
    p.add_argument("--binding-candidates", type=bounded_int(1, MAX_CANDIDATES, "starting noises"),
                   default=BindingGuidance.candidates, metavar="N",
                   help="with --binding: starting noises z_T per two-object prompt, run for the first fifth of the "
                        "steps, the one whose binding loss is smallest going on (default %(default)s; 1: no selection)")
    p.add_argument("--lora", action="append", metavar="FILE[:SCALE]",
                   help="a LoRA adapter (diffusers/peft or kohya safetensors) at strength SCALE (default 1); repeatable "
                        "(docs/finetune.md)")
    p.add_argument("--embedding", action="append", metavar="FILE",
                   help="a textual-inversion embedding (diffusers learned_embeds or A1111 .safetensors/.pt); its token "
                        "is the file's own, else the file name; repeatable")
    p.add_argument("--as-written", action="store_true",
                   help="encode the prompt as given: by default a word the model never saw in training is read as the "
                        "nearest word it did, by WordNet, and a phrasing it never saw is said in its own "
                        "(docs/prompt_following.md)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_generate)
