"""`ldmkit convert`: move a model between ldmkit folders, Stable Diffusion single files and diffusers folders."""

from __future__ import annotations

from ldmkit.cli.common import UsageError

FORMATS = ("ldmkit", "diffusers", "original")


def cmd_convert(args) -> None:
    from ldmkit.convert import convert

    if args.to == "original" and not args.out.lower().endswith(".safetensors"):
        raise UsageError(f"--out {args.out}: an original-layout file is written as .safetensors")
    ckpt = convert(args.input, args.to, args.out, ema=not args.no_ema, prediction=args.prediction)
    print(f"read {args.input}: {ckpt.description}")
    print(f"wrote {args.to} model to {args.out}")


def add_parsers(sub) -> None:
    p = sub.add_parser("convert", help="convert between ldmkit, diffusers and original Stable Diffusion layouts")
    p.add_argument("input", help="an ldmkit folder, a diffusers folder, or a .safetensors/.ckpt single file")
    p.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    p.add_argument("--out", required=True, help="output folder (ldmkit, diffusers) or .safetensors file (original)")
    p.add_argument("--no-ema", action="store_true", help="take a single file's training weights, not its EMA copy")
    p.add_argument("--prediction", choices=["epsilon", "v"], help="set what the model predicts (SD 2.x: v for 768-v)")
    p.set_defaults(func=cmd_convert)
