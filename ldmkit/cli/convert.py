"""`ldmkit convert`: move a model between ldmkit folders, Stable Diffusion single files and diffusers folders."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from ldmkit.cli.common import UsageError
from ldmkit.cli.outputs import check_output_file, replacing_folder
from ldmkit.convert import convert
from ldmkit.convert.lora import load_lora, parse_lora_spec, read_lora
from ldmkit.model import LatentDiffusion
from ldmkit.nn import lora
from ldmkit.pretrained import resolve_model

FORMATS = ("ldmkit", "diffusers", "original")


def cmd_convert(args) -> None:
    source = resolve_model(args.input)  # a shipped model by its name too
    if Path(args.out).resolve() == Path(source).resolve():
        raise UsageError("--out must differ from the input")
    out = None
    if args.to == "original":
        if not args.out.lower().endswith(".safetensors"):
            raise UsageError(f"--out {args.out}: an original-layout file is written as .safetensors")
        out = check_output_file(args.out)
        if out.exists() and not args.overwrite:
            raise UsageError(f"--out {out} already exists; choose another name or pass --overwrite to replace it")
    with tempfile.TemporaryDirectory(prefix="ldmkit-merge-") as merged:
        if args.merge_lora:  # the LoRAs folded in first; the merged model is then converted as any folder
            source = merge_loras(source, args.merge_lora, Path(merged), not args.no_ema, args.prediction)
        if out is not None:
            ckpt = convert(source, args.to, out, ema=not args.no_ema, prediction=args.prediction)
        else:
            # Written into a new folder that replaces --out only when the conversion succeeded: never a
            # half-written folder, never an old model's files mixed with the new one's.
            with replacing_folder(args.out, overwrite=args.overwrite) as tmp:
                ckpt = convert(source, args.to, tmp, ema=not args.no_ema, prediction=args.prediction)
    merged_note = f" with {len(args.merge_lora)} LoRA(s) merged" if args.merge_lora else ""
    print(f"read {args.input}: {ckpt.description}{merged_note}")
    print(f"wrote {args.to} model to {args.out}")


def merge_loras(model: str, specs: list[str], folder: Path, ema: bool, prediction: str | None) -> str:
    """The model at ``model`` with each LoRA ``FILE[:SCALE]`` of ``specs`` folded into its weights
    (W ← W + s (α/r) B A, `ldmkit.nn.lora.merge`), saved as an ldmkit folder in ``folder``."""
    loaded = LatentDiffusion.load(model, ema=ema, prediction=prediction)
    for spec in specs:
        path, scale = parse_lora_spec(spec)
        file = read_lora(path)
        load_lora(loaded, file, scale, embeddings=False)
        if file.embeddings:
            warnings.warn(f"{path} bundles the embedding(s) {', '.join(file.embeddings)}, which a model folder does "
                          "not hold: merged without them (load the LoRA file itself for them)", stacklevel=2)
    lora.merge(loaded)
    loaded.known_words = None  # the LoRAs may have taught it words no file lists: prompts are read as written
    loaded.save(folder)
    return str(folder)


def add_parsers(sub) -> None:
    p = sub.add_parser("convert", help="convert between ldmkit, diffusers and original Stable Diffusion layouts")
    p.add_argument("input", help="an ldmkit folder, a diffusers folder, or a .safetensors/.ckpt single file")
    p.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    p.add_argument("--out", required=True, help="output folder (ldmkit, diffusers) or .safetensors file (original)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (a folder is replaced "
                                                            "whole, not merged)")
    p.add_argument("--no-ema", action="store_true",
                   help="take the training weights, not the EMA copy: of a single file that holds both, or of a folder "
                        "converted from one")
    p.add_argument("--prediction", choices=["epsilon", "v"], help="set what the model predicts (SD 2.x: v for 768-v)")
    p.add_argument("--merge-lora", action="append", metavar="FILE[:SCALE]",
                   help="fold this LoRA (at strength SCALE, default 1) into the weights before writing; repeatable")
    p.set_defaults(func=cmd_convert)
