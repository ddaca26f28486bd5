"""What a `ModelConfig` looks like as tensors: its ldmkit keys and shapes, and the full rule set to the
original or diffusers layout."""

from __future__ import annotations

import torch
from torch import nn

from ldmkit.autoencoder import build_autoencoder
from ldmkit.config import ModelConfig, TextEncoderConfig
from ldmkit.convert.meta import no_transformers_init
from ldmkit.convert.rules import Rule
from ldmkit.convert.text import text_rules
from ldmkit.convert.unet import ema_key, unet_rules
from ldmkit.convert.vae import SCALE_FACTOR, vae_rules
from ldmkit.nn.unet import UNet
from ldmkit.storage import CheckpointError
from ldmkit.text import build_text_encoder
from ldmkit.text.encoder import TextTransformerBlock
from ldmkit.text.minilm import WIDTH as MINILM_WIDTH


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every ldmkit state-dict key of the model ``config`` describes (``unet.``, ``autoencoder.``,
    ``text_encoder.`` prefixes) with its shape. Built on the meta device: no memory, no init time."""
    if config.autoencoder.kind != "kl":
        raise CheckpointError("only KL autoencoders have Stable Diffusion / diffusers layouts")
    parts = {}
    with torch.device("meta"), no_transformers_init():
        parts["unet"] = UNet(config.unet)
        parts["autoencoder"] = build_autoencoder(config.autoencoder)
        # the frozen MiniLM has no weights in the state dict (its package provides them); its trained adapter does
        parts["text_encoder"] = minilm_adapter(config.text) if config.text.kind == "minilm" \
            else build_text_encoder(config.text)
    return {f"{name}.{k}": tuple(v.shape) for name, module in parts.items() for k, v in module.state_dict().items()}


def minilm_adapter(cfg: TextEncoderConfig) -> nn.Module:
    """A module with the state-dict keys of a MiniLM text encoder (``adapter.*``: `MiniLMTextEncoder`'s trained
    blocks; none by default), without building MiniLM itself."""
    module = nn.Module()
    module.adapter = nn.ModuleList(TextTransformerBlock(MINILM_WIDTH, cfg.heads) for _ in range(cfg.adapter_layers))
    return module


def layout_rules(
    config: ModelConfig, shapes: dict[str, tuple[int, ...]], layout: str, unet_ema: bool = False
) -> list[Rule]:
    """All rules between ldmkit and ``layout`` ("original" or "diffusers") except ``scale_factor``.

    ``unet_ema``: the UNet's weights are the ``model_ema.*`` copy of an original file.
    """
    keys = list(shapes)
    unet = unet_rules(config.unet, [k for k in keys if k.startswith("unet.")], layout)
    if unet_ema:
        unet = [Rule(r.ldmkit, tuple(ema_key(k) for k in r.other), r.op) for r in unet]
    vae = vae_rules(config.autoencoder, [k for k in keys if k.startswith("autoencoder.") and k != SCALE_FACTOR], layout)
    text = text_rules(config.text, [k for k in keys if k.startswith("text_encoder.")], layout)
    rules = unet + vae + text
    seen: set[str] = set()
    for rule in rules:  # a clash would silently drop a tensor; the LitEma naming makes one conceivable
        for key in rule.other:
            if key in seen:
                raise CheckpointError(f"two ldmkit tensors map to the same {layout} key {key}")
            seen.add(key)
    return rules
