"""A model on its way between formats, and reading weight files without unpickling code."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from ldmkit.config import ConfigError, ModelConfig
from ldmkit.storage import CheckpointError

SAFETENSORS = (".safetensors",)
PICKLES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass
class Checkpoint:
    """A latent diffusion model in ldmkit's layout, read from any format.

    ``weights`` holds ldmkit keys (``unet.*``, ``autoencoder.*`` including ``autoencoder.scale_factor``,
    ``text_encoder.*``) in the dtype of the source file. ``extras`` holds the source's tensors that
    ldmkit does not use (schedule buffers, the EMA or non-EMA copy not chosen, SD 2's unused last text
    block, …) under their source names, and ``source`` says how they fit back: ``layout`` ("original",
    "diffusers"), ``unet_weights`` ("model" or "model_ema"), ``scale_factor_key`` ("present"/"absent").
    Writing back to the source layout restores the file's key set and tensors bit for bit.
    """

    config: ModelConfig
    weights: dict[str, Tensor]
    tokenizer: object
    extras: dict[str, Tensor] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    description: str = ""


def read_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str], dict]:
    """(state dict, safetensors metadata, other top-level entries) of one weights file.

    ``.safetensors`` is read directly. ``.ckpt``/``.pt``/``.pth``/``.bin`` go through
    ``torch.load(weights_only=True)``, which refuses pickles that would run code; a Lightning-style
    ``{"state_dict": …}`` wrapper is unwrapped and its other entries (``global_step``, …) returned.
    """
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS:
        try:
            with safe_open(str(path), "pt") as f:
                metadata = dict(f.metadata() or {})
            return load_file(str(path)), metadata, {}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if suffix not in PICKLES:
        raise CheckpointError(f"{path}: unknown weights format {suffix!r}; expected .safetensors or .ckpt")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).splitlines() or [""])[0]
        raise CheckpointError(
            f"{path} needs to unpickle code objects to load, which ldmkit refuses (a pickle can run any "
            f"code). Get the .safetensors version of this model, or convert it where you trust the file. "
            f"({first})"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict")
    top: dict = {}
    if isinstance(data.get("state_dict"), dict):
        top = {k: v for k, v in data.items() if k != "state_dict"}
        data = data["state_dict"]
    tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    return tensors, {}, top


def with_prediction(config: ModelConfig, prediction: str) -> ModelConfig:
    """``config`` with its diffusion prediction ("epsilon" or "v") replaced."""
    if prediction not in ("epsilon", "v"):
        raise ConfigError(f"prediction = {prediction!r}; allowed: epsilon, v")
    return replace(config, diffusion=replace(config.diffusion, prediction=prediction))
