"""Tiny random-weight models for tests that need a model folder but not a trained one."""

from __future__ import annotations

from pathlib import Path

import torch

from ldmkit.config import ModelConfig, load_preset
from ldmkit.model import LatentDiffusion
from ldmkit.text import PromptTokenizer

CAPTIONS = ["a red circle on the left", "a blue square above a yellow star", "a green triangle",
            "a small purple star on the right", "a large orange circle below a white square"]


def build_tiny_model(folder: Path) -> Path:
    """A model folder on the `tiny` preset with random weights (seeded), written by the model's own save."""
    if (folder / "config.yaml").is_file():  # built already by another test this session
        return folder
    preset = load_preset("tiny")
    config = ModelConfig(autoencoder=preset.autoencoder, text=preset.text, unet=preset.unet,
                         diffusion=preset.diffusion, image_size=preset.data.image_size)
    tokenizer = PromptTokenizer.train(CAPTIONS * 20, preset.text.vocab_size, preset.text.max_length)
    torch.manual_seed(0)
    LatentDiffusion(config, tokenizer).save(folder)
    return folder


def build_attentive_tiny_model(folder: Path) -> Path:
    """`build_tiny_model` with every UNet weight moved by N(0, 0.05²) noise (seeded): a fresh UNet's
    spatial-transformer output projections are zero, so its attention layers (where LoRA adapters go)
    would not reach the output at all."""
    if (folder / "config.yaml").is_file():
        return folder
    model = LatentDiffusion.load(build_tiny_model(folder.parent / (folder.name + "-plain")))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.save(folder)
    return folder
