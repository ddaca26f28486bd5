"""ldmkit model folders as `Checkpoint`s (the layout `ldmkit.model.LatentDiffusion.save` writes), plus
``extras.safetensors``: what a converted model's source file held beyond ldmkit's weights, so that
converting back restores that file exactly. `LatentDiffusion.load` ignores it."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from ldmkit.config import ModelConfig
from ldmkit.convert.checkpoint import Checkpoint, read_tensors, with_prediction
from ldmkit.storage import CheckpointError, atomic_path, load_config, save_config, save_weights
from ldmkit.text import load_tokenizer

PARTS = ("autoencoder", "text_encoder", "unet")
EXTRAS = "extras.safetensors"
SOURCE_KEY = "ldmkit_source"


def is_ldmkit_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file()


def read_folder(folder: str | Path, prediction: str | None = None) -> Checkpoint:
    folder = Path(folder)
    config = load_config(ModelConfig, folder)
    if config.autoencoder.kind == "identity":
        raise CheckpointError(f"{folder} is a pixel-space model (autoencoder.kind identity): conversion handles "
                              "latent models, whose layouts have an autoencoder; use the folder as it is")
    if prediction is not None:
        config = with_prediction(config, prediction)
    weights = {}
    for part in PARTS:
        tensors, _, _ = read_tensors(folder / f"{part}.safetensors")
        weights.update({f"{part}.{k}": v for k, v in tensors.items()})
    try:
        tokenizer = load_tokenizer(config.text, folder / "tokenizer.json")
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{folder}: {e}") from None
    extras, source = {}, {}
    if (folder / EXTRAS).is_file():
        tensors, metadata, _ = read_tensors(folder / EXTRAS)
        extras = dict(tensors)
        source = json.loads(metadata.get(SOURCE_KEY, "{}"))
    return Checkpoint(config, weights, tokenizer, extras, source, description="ldmkit model folder")


def write_folder(ckpt: Checkpoint, folder: str | Path) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"--out {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        save_weights({k.split(".", 1)[1]: v for k, v in ckpt.weights.items() if k.startswith(part + ".")},
                     folder / f"{part}.safetensors")
    ckpt.tokenizer.save(folder / "tokenizer.json")
    save_config(ckpt.config, folder / "config.yaml")
    if ckpt.extras or ckpt.source:
        tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.extras.items()}
        with atomic_path(folder / EXTRAS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", SOURCE_KEY: json.dumps(ckpt.source)})
    elif (folder / EXTRAS).exists():
        (folder / EXTRAS).unlink()  # a stale one would be written back into a later conversion
    return folder
