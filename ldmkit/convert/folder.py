"""ldmkit model folders as `Checkpoint`s (the layout `ldmkit.model.LatentDiffusion.save` writes), plus
``extras.safetensors``: what a converted model's source file held beyond ldmkit's weights, so that
converting back restores that file exactly. Loading reads it only for ``ema=False`` (below).

Every file of the folder that `LatentDiffusion.load` reads travels: the config, the weights of each part
(``text_encoder`` and ``tokenizer.json``, or ``class_embedding`` for a class-conditional model),
``known_words.json`` (the training captions' words, with which the pipelines read words the model never
saw; `ldmkit.text.known_words`) and ``scheduler.json`` (`read_scheduler_grid`: the sampling grid of a model
converted from a diffusers folder, ``{"timestep_spacing": …, "steps_offset": …}`` in diffusers' names, which its
samples default to; absent for a model that samples on each sampler's own grid). ``SHA256SUMS`` (the shipped
models' checksums) does not: it would not match the files written.

With ``ema=False`` (``--no-ema``) a folder converted from an original single file that held EMA and training
weights gives the training weights, which it keeps in ``extras.safetensors`` (`with_training_unet`); any other
folder holds no training weights and refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from ldmkit.config import ModelConfig
from ldmkit.convert.checkpoint import (
    Checkpoint, grid_from_fields, no_training_weights, read_tensors, scheduler_fields, with_prediction,
)
from ldmkit.convert.original import EMA_ONLY, with_training_unet
from ldmkit.storage import CheckpointError, atomic_path, load_config, save_config, save_weights
from ldmkit.text import load_tokenizer
from ldmkit.text.known_words import FILE as KNOWN_WORDS, KnownWords

PARTS = ("autoencoder", "text_encoder", "unet")
CLASS_PARTS = ("autoencoder", "class_embedding", "unet")  # condition.kind class: τθ is the class table
EXTRAS = "extras.safetensors"
SOURCE_KEY = "ldmkit_source"
SCHEDULER = "scheduler.json"  # the sampling grid (`read_scheduler_grid`)


def is_ldmkit_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file()


def model_parts(config: ModelConfig) -> tuple[str, ...]:
    """The weight files (without ``.safetensors``) of a model folder with ``config``; each part's keys are
    ``part.`` + its state-dict keys in a `Checkpoint`."""
    return PARTS if config.condition.uses_text else CLASS_PARTS


def read_scheduler_grid(folder: str | Path) -> dict:
    """The sampling grid of the model folder at ``folder`` (`Checkpoint.scheduler_grid`, as
    `ldmkit.convert.infer.grid_from_scheduler` gives it) from its ``scheduler.json``; {} without one (each
    sampler's own grid). `CheckpointError` for a file that is not such a grid."""
    path = Path(folder) / SCHEDULER
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not readable ({e})") from None
    return grid_from_fields(text, str(path))


def write_scheduler_grid(folder: str | Path, grid: dict) -> None:
    """Write ``grid`` (`Checkpoint.scheduler_grid`) as the ``scheduler.json`` of the model folder at ``folder``,
    which `read_scheduler_grid` reads back; remove the file for {} (a stale one would be read as this model's)."""
    path = Path(folder) / SCHEDULER
    if not grid:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(scheduler_fields(grid), indent=2) + "\n", encoding="utf-8")


def read_folder(folder: str | Path, prediction: str | None = None, ema: bool = True) -> Checkpoint:
    """The model folder at ``folder`` (text-conditioned or class-conditional; not a pixel-space model, which
    no other layout holds) as a `Checkpoint`, with its ``known_words.json`` and ``scheduler.json`` when it has them.
    ``ema=False``: the training weights of the single file it was converted from (`with_training_unet`;
    `CheckpointError` for a folder that holds none)."""
    folder = Path(folder)
    config = load_config(ModelConfig, folder)
    if config.autoencoder.kind == "identity":
        if not ema:  # ldmkit trains pixel-space models; none is converted from a file with training weights
            raise no_training_weights(str(folder), EMA_ONLY)
        raise CheckpointError(f"{folder} is a pixel-space model (autoencoder.kind identity): conversion handles "
                              "latent models, whose layouts have an autoencoder; use the folder as it is")
    if prediction is not None:
        config = with_prediction(config, prediction)
    weights = {}
    for part in model_parts(config):
        tensors, _, _ = read_tensors(folder / f"{part}.safetensors")
        weights.update({f"{part}.{k}": v for k, v in tensors.items()})
    tokenizer = known_words = None
    if config.condition.uses_text:
        try:
            tokenizer = load_tokenizer(config.text, folder / "tokenizer.json")
        except (ValueError, OSError) as e:
            raise CheckpointError(f"{folder}: {e}") from None
        if (folder / KNOWN_WORDS).is_file():  # as `LatentDiffusion.load` reads it
            try:
                known_words = KnownWords.load(folder / KNOWN_WORDS)
            except (ValueError, OSError) as e:
                raise CheckpointError(f"{folder / KNOWN_WORDS}: {e}") from None
    extras, source = {}, {}
    if (folder / EXTRAS).is_file():
        tensors, metadata, _ = read_tensors(folder / EXTRAS)
        extras = dict(tensors)
        source = json.loads(metadata.get(SOURCE_KEY, "{}"))
    ckpt = Checkpoint(config, weights, tokenizer, extras, source, description="ldmkit model folder",
                      scheduler_grid=read_scheduler_grid(folder), known_words=known_words)
    return ckpt if ema else with_training_unet(ckpt, str(folder))


def write_folder(ckpt: Checkpoint, folder: str | Path) -> Path:
    """Write ``ckpt`` as a model folder that `LatentDiffusion.load` reads, each file atomically. Files a model of
    another kind would have, or that ``ckpt`` has no content for (``known_words.json``, ``scheduler.json``,
    ``extras.safetensors``), are removed from an existing ``folder``: the loader would read them as this model's."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"--out {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    parts = model_parts(ckpt.config)
    for part in parts:
        save_weights({k.split(".", 1)[1]: v for k, v in ckpt.weights.items() if k.startswith(part + ".")},
                     folder / f"{part}.safetensors")
    stale = [f"{part}.safetensors" for part in (*PARTS, *CLASS_PARTS) if part not in parts]
    if ckpt.config.condition.uses_text:
        with atomic_path(folder / "tokenizer.json") as tmp:
            ckpt.tokenizer.save(tmp)
    else:
        stale.append("tokenizer.json")
    if ckpt.known_words is not None:
        with atomic_path(folder / KNOWN_WORDS) as tmp:
            ckpt.known_words.save(tmp)
    else:
        stale.append(KNOWN_WORDS)
    write_scheduler_grid(folder, ckpt.scheduler_grid)
    if ckpt.extras or ckpt.source:
        tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.extras.items()}
        with atomic_path(folder / EXTRAS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", SOURCE_KEY: json.dumps(ckpt.source)})
    else:
        stale.append(EXTRAS)  # a stale one would be written back into a later conversion
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    save_config(ckpt.config, folder / "config.yaml")  # last: a folder without it is no model
    return folder
