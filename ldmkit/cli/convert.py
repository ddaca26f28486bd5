"""`ldmkit convert`: move a model between ldmkit folders, Stable Diffusion single files and diffusers folders."""

from __future__ import annotations

from pathlib import Path

from ldmkit.cli.common import UsageError
from ldmkit.cli.outputs import check_output_file, replacing_folder
from ldmkit.convert import convert

FORMATS = ("ldmkit", "diffusers", "original")


def cmd_convert(args) -> None:


    if Path(args.out).resolve() == Path(args.input).resolve():
        raise UsageError("--out must differ from the input")
    if args.to == "original":
        if not args.out.lower().endswith(".safetensors"):
            raise UsageError(f"--out {args.out}: an original-layout file is written as .safetensors")
        out = check_output_file(args.out)
        if out.exists() and not args.overwrite:
            raise UsageError(f"--out {out} already exists; choose another name or pass --overwrite to replace it")
        ckpt = convert(args.input, args.to, out, ema=not args.no_ema, prediction=args.prediction)
    else:
        # Written into a new folder that replaces --out only when the conversion succeeded: never a
        # half-written folder, never an old model's files mixed with the new one's.
        with replacing_folder(args.out, overwrite=args.overwrite) as tmp:
            ckpt = convert(args.input, args.to, tmp, ema=not args.no_ema, prediction=args.prediction)
    print(f"read {args.input}: {ckpt.description}")
    print(f"wrote {args.to} model to {args.out}")


def add_parsers(sub) -> None:
    p = sub.add_parser("convert", help="convert between ldmkit, diffusers and original Stable Diffusion layouts")
    p.add_argument("input", help="an ldmkit folder, a diffusers folder, or a .safetensors/.ckpt single file")
    p.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    p.add_argument("--out", required=True, help="output folder (ldmkit, diffusers) or .safetensors file (original)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (a folder is replaced "
                                                            "whole, not merged)")
    p.add_argument("--no-ema", action="store_true", help="take a single file's training weights, not its EMA copy")
    p.add_argument("--prediction", choices=["epsilon", "v"], help="set what the model predicts (SD 2.x: v for 768-v)")
    p.set_defaults(func=cmd_convert)
