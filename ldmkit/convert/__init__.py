"""Stable Diffusion / diffusers weight layouts ↔ ldmkit.

Three formats hold the same model:

- an **ldmkit folder** (``config.yaml``, ``unet/autoencoder/text_encoder.safetensors``, ``tokenizer.json``);
- an **original single file** (``.safetensors``, or ``.ckpt`` read with ``torch.load(weights_only=True)``)
  in the CompVis/Stability layout, whose architecture is inferred from its keys and shapes;
- a **diffusers folder** (``model_index.json`` and one folder per part).

`read_checkpoint` turns any of them into a `Checkpoint` (ldmkit's keys, the source's leftovers kept
aside), `write_checkpoint` writes one in any format, `load_model` builds the `LatentDiffusion`. Key
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

__all__ = ["Checkpoint", "FORMATS", "convert", "detect_format", "load_model", "read_checkpoint", "write_checkpoint"]


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
    has them (folders hold one set); ``prediction`` ("epsilon"/"v") overrides what the source says or
    inference assumes; ``config`` overrides inference for original files.

    ``.safetensors`` tensors are views of the files' memory mappings, read only when used. ``cast``
    (single files and diffusers folders): floating-point weights of another dtype are read as ``cast``,
    one tensor at a time; None keeps the source's dtypes (what converting between formats needs)."""
    fmt = detect_format(path)
    if fmt == "ldmkit":
        return read_folder(path, prediction)
    if fmt == "diffusers":
        return read_diffusers(path, prediction, cast)
    return read_original(path, ema, prediction, config, cast)


def write_checkpoint(ckpt: Checkpoint, out: str | Path, to: Format) -> Path:
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


def load_model(path: str | Path, ema: bool = True, prediction: str | None = None):
    """The `LatentDiffusion` of a model in any format, in eval mode, weights in fp32.

    A Stable Diffusion single file or diffusers folder loads without a second copy of its weights: the
    model is built with its parameters on the meta device (`meta.empty_parameters`: no memory, no random
    initialisation), and the file's tensors, converted key by key to ldmkit's names, become the model's
    parameters (`meta.assign_weights`). The weights are bit-identical to those of copying the file into
    a randomly initialised model.

    Memory: an fp32 tensor of a ``.safetensors`` file (or of a ``.ckpt`` that torch can memory-map) stays
    in the file's private, copy-on-write memory mapping, so the process grows by the pages of the weights
    it uses as they are first read, to about the model's fp32 size, and never holds them twice. Writing
    into a parameter copies the pages written; the file is never written. The file must stay unchanged
    while the model is in use: replacing it by a rename (as ldmkit writes files) is safe, overwriting it
    in place is not. An fp16/bf16 ``.safetensors`` tensor is read into a buffer of its own and cast to
    fp32 one tensor at a time, so the peak is the fp32 model plus one tensor (a ``.ckpt``'s half-precision
    tensors are cast from its mapping, whose pages stay resident until the load returns). An ldmkit
    folder's model is built as usual and its weights copied in.
    """
    from ldmkit.convert.meta import assign_weights, empty_parameters
    from ldmkit.model import LatentDiffusion

    if detect_format(path) == "ldmkit":
        ckpt = read_checkpoint(path, ema, prediction)
        model = LatentDiffusion(ckpt.config, ckpt.tokenizer)
        missing, unexpected = model.load_state_dict(ckpt.weights, strict=False)
        if missing or unexpected:  # read_checkpoint validated the keys; this guards the two against drifting
            raise CheckpointError(f"{path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model.eval()
    ckpt = read_checkpoint(path, ema, prediction, cast=torch.float32)
    with empty_parameters():
        model = LatentDiffusion(ckpt.config, ckpt.tokenizer)
    assign_weights(model, ckpt.weights, str(path))
    return model.eval()
