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
