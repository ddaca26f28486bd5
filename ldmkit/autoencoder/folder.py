"""An autoencoder folder: ``config.yaml`` (AutoencoderConfig) and ``autoencoder.safetensors``
(weights and ``scale_factor``), as written by `ldmkit train-autoencoder`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ldmkit.autoencoder import build_autoencoder
from ldmkit.config import AutoencoderConfig
from ldmkit.errors import UsageError
from ldmkit.storage import load_config, load_weights, save_config, save_weights

WEIGHTS = "autoencoder.safetensors"


def save_autoencoder(model: nn.Module, folder: str | Path) -> None:
    folder = Path(folder)
    save_weights(model.state_dict(), folder / WEIGHTS)
    save_config(model.config, folder / "config.yaml")


def load_autoencoder(folder: str | Path) -> nn.Module:
    """The frozen autoencoder of ``folder``, in eval mode."""
    folder = Path(folder)
    model = build_autoencoder(load_config(AutoencoderConfig, folder))
    load_weights(model, folder / WEIGHTS)
    return model.requires_grad_(False).eval()


def first_stage(cfg: AutoencoderConfig, folder: str | Path | None) -> nn.Module:
    """The frozen first stage a diffusion run trains on: the autoencoder of ``folder`` (written by
    `ldmkit train-autoencoder`) for a latent preset, or, for a pixel preset (``cfg.kind`` identity, f = 1),
    the identity built from ``cfg``, which has no folder. A folder given to a pixel preset, or none to a
    latent one, is a `UsageError`."""
    if cfg.kind == "identity":
        if folder is not None:
            raise UsageError(f"--autoencoder {folder}: this preset is pixel-space diffusion (autoencoder.kind "
                             "identity, f = 1) and takes no autoencoder; leave --autoencoder out")
        return build_autoencoder(cfg).requires_grad_(False).eval()
    if folder is None:
        raise UsageError(f"this preset is a latent diffusion model (autoencoder.kind {cfg.kind}) and needs "
                         "--autoencoder, a folder written by `ldmkit train-autoencoder`")
    return load_autoencoder(folder)
