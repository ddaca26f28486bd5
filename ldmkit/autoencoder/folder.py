"""An autoencoder folder: ``config.yaml`` (AutoencoderConfig) and ``autoencoder.safetensors``
(weights and ``scale_factor``), as written by `ldmkit train-autoencoder`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ldmkit.autoencoder import build_autoencoder
from ldmkit.config import AutoencoderConfig
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
