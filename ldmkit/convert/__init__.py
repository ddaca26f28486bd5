"""Stable Diffusion / diffusers weight layouts ↔ ldmkit.

Three formats hold the same model:

- an **ldmkit folder** (``config.yaml``, ``unet/autoencoder/text_encoder.safetensors``, ``tokenizer.json``,
  ``known_words.json``; a class-conditional model's ``class_embedding.safetensors`` in place of the text encoder
  and tokenizer, which only this format holds);
- an **original single file** (``.safetensors``, or ``.ckpt`` read with ``torch.load(weights_only=True)``)
  in the CompVis/Stability layout, whose architecture is inferred from its keys and shapes;
- a **diffusers folder** (``model_index.json`` and one folder per part).

`read_checkpoint` turns any of them into a `Checkpoint` (ldmkit's keys, the source's leftovers kept
aside), `write_checkpoint` writes one in any format (`ldmkit.model.load_model` builds the `LatentDiffusion`). Key
rules live in `unet`, `vae` and `text`; `infer` holds the architecture rules; `meta` builds models
without memory for their weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from ldmkit.config import ModelConfig
from ldmkit.convert.checkpoint import PICKLES, SAFETENSORS, Checkpoint
from ldmkit.convert.diffusers_folder import is_diffusers_folder, read_diffusers, write_diffusers
from ldmkit.convert.folder import is_ldmkit_folder, read_folder, write_folder
from ldmkit.convert.original import read_original, write_original
from ldmkit.storage import CheckpointError

Format = Literal["ldmkit", "diffusers", "original"]
FORMATS: tuple[str, ...] = ("ldmkit", "diffusers", "original")

__all__ = ["Checkpoint", "FORMATS", "convert", "detect_format", "read_checkpoint", "write_checkpoint"]


def detect_format(path: str | Path) -> Format:
    """"ldmkit" (a folder with config.yaml), "diffusers" (a folder with model_index.json) or "original"
    (a .safetensors / .ckpt file)."""
    path = Path(path)
    if is_ldmkit_folder(path):
        return "ldmkit"
    if is_diffusers_folder(path):
        return "diffusers"
    if path.is_file() and path.suffix.lower() in SAFETENSORS + PICKLES:
        return "original"
    if not path.exists():
        raise CheckpointError(f"model not found: {path}")
    raise CheckpointError(
        f"{path} is not a model: expected an ldmkit folder (config.yaml), a diffusers folder "
        "(model_index.json) or a single .safetensors/.ckpt file"
    )


def read_checkpoint(
    path: str | Path,
    ema: bool = True,
    prediction: str | None = None,
    config: ModelConfig | None = None,
    cast: torch.dtype | None = None,
) -> Checkpoint:
    """Any of the three formats as a `Checkpoint`. ``ema`` picks an original file's EMA weights when it
    has them; ``ema=False`` takes its training weights, also from a model folder converted from such a file, and
    is refused for a model that holds none (`read_folder`, `read_diffusers`); ``prediction`` ("epsilon"/"v")
    overrides what the source says or inference assumes; ``config`` overrides inference for original files.

    ``.safetensors`` tensors are views of the files' memory mappings, read only when used. ``cast``
    (single files and diffusers folders): floating-point weights of another dtype are read as ``cast``,
    one tensor at a time; None keeps the source's dtypes (what converting between formats needs)."""
    fmt = detect_format(path)
    if fmt == "ldmkit":
        return read_folder(path, prediction, ema)
    if fmt == "diffusers":
        return read_diffusers(path, prediction, cast, ema)
    return read_original(path, ema, prediction, config, cast)


def write_checkpoint(ckpt: Checkpoint, out: str | Path, to: Format) -> Path:
    """Write ``ckpt`` at ``out`` in format ``to``. A class-conditional model (``condition.kind: class``) is
    written as an ldmkit folder only: Stable Diffusion files and diffusers folders hold text-conditioned models,
    and there is no layout of theirs for a class table in place of the text encoder (a `CheckpointError`,
    before anything is written)."""
    if to in ("diffusers", "original") and not ckpt.config.condition.uses_text:
        layout = "diffusers layout" if to == "diffusers" else "Stable Diffusion single-file layout"
        raise CheckpointError(f"a class-conditional model (condition.kind class) has no {layout}: Stable Diffusion "
                              "files and diffusers folders hold text-conditioned models; convert it --to ldmkit")
    if to == "ldmkit":
        return write_folder(ckpt, out)
    if to == "diffusers":
        return write_diffusers(ckpt, out)
    if to == "original":
        return write_original(ckpt, out)
    raise ValueError(f"unknown format {to!r}; allowed: {', '.join(FORMATS)}")


def convert(src: str | Path, to: Format, out: str | Path, ema: bool = True, prediction: str | None = None) -> Checkpoint:
    """Convert the model at ``src`` to format ``to`` at ``out``; returns what was read."""
    if Path(out).resolve() == Path(src).resolve():
        raise CheckpointError("--out must differ from the input")
    ckpt = read_checkpoint(src, ema, prediction)
    write_checkpoint(ckpt, out, to)
    return ckpt
