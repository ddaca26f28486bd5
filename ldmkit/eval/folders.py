"""Telling the two kinds of model folder apart, so that the wrong one gets a one-line error."""

from __future__ import annotations

from pathlib import Path

import yaml

from ldmkit.storage import CheckpointError

AUTOENCODER = "autoencoder"
TEXT_TO_IMAGE = "text-to-image"

_WRITTEN_BY = {AUTOENCODER: "`ldmkit train-autoencoder`", TEXT_TO_IMAGE: "`ldmkit train`"}
_EVAL_COMMAND = {AUTOENCODER: "`ldmkit eval autoencoder`", TEXT_TO_IMAGE: "`ldmkit eval generate`"}


def folder_kind(folder: str | Path) -> str:
    """`AUTOENCODER` or `TEXT_TO_IMAGE`.

    An ldmkit folder tells by the keys of its ``config.yaml``: a model's holds the autoencoder,
    text and UNet sections, an autoencoder's only its own fields. What `LatentDiffusion.load` also
    reads — a Stable Diffusion single file (``.safetensors``/``.ckpt``) or a diffusers folder
    (``model_index.json``) — is a text-to-image model.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix in (".safetensors", ".ckpt"):
        return TEXT_TO_IMAGE
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    if (folder / "model_index.json").is_file():
        return TEXT_TO_IMAGE
    path = folder / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an ldmkit model folder: it has no config.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if isinstance(config, dict) and "unet" in config:
        return TEXT_TO_IMAGE
    if isinstance(config, dict) and "kind" in config:
        return AUTOENCODER
    raise CheckpointError(f"{path} is neither an autoencoder's nor a text-to-image model's config")


def require_kind(folder: str | Path, expected: str) -> None:
    """Raise `CheckpointError` naming both kinds when ``folder`` is not of the ``expected`` kind."""
    kind = folder_kind(folder)
    if kind != expected:
        raise CheckpointError(
            f"{folder} is {'an' if kind == AUTOENCODER else 'a'} {kind} folder (written by {_WRITTEN_BY[kind]}), "
            f"but {_EVAL_COMMAND[expected]} needs {'an' if expected == AUTOENCODER else 'a'} {expected} folder "
            f"written by {_WRITTEN_BY[expected]}; use {_EVAL_COMMAND[kind]} for this one"
        )
