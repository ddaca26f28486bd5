"""`ldmkit generate`: text-to-image sampling."""

from __future__ import annotations

from pathlib import Path

from ldmkit.cli.common import UsageError, non_negative_float, positive_int


def cmd_generate(args) -> None:
    from ldmkit.data import save_grid
    from ldmkit.diffusion import SAMPLERS
    from ldmkit.pipelines.text_to_image import load_pipeline
    from ldmkit.device import resolve_device
    from ldmkit.pretrained import shipped_model

    if args.sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {args.sampler!r}; allowed: {', '.join(SAMPLERS)}")
    out = Path(args.out)
    if out.suffix.lower() != ".png" and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder or a .png file")
    pipe = load_pipeline(args.model or shipped_model(), resolve_device(args.device), ema=not args.no_ema, prediction=args.prediction)
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


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="text-to-image sampling")
    p.add_argument("prompt")
    p.add_argument(
        "--model",
        help="a model folder written by `ldmkit train`, a Stable Diffusion .safetensors/.ckpt file, or a diffusers "
             "folder (default: the shapes64 model shipped with ldmkit)",
    )
    p.add_argument("--no-ema", action="store_true", help="use a single file's training weights, not its EMA copy")
    p.add_argument("--prediction", choices=["epsilon", "v"], help="override what the model predicts (SD 2.x: v for 768-v)")
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
