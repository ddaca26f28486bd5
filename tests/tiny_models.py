"""Tiny random-weight models for tests that need a model folder but not a trained one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ldmkit.config import ModelConfig, load_preset
from ldmkit.model import LatentDiffusion
from ldmkit.text import PromptTokenizer

CAPTIONS = ["a red circle on the left", "a blue square above a yellow star", "a green triangle",
            "a small purple star on the right", "a large orange circle below a white square"]
CLASSES = ("circle", "square", "triangle")  # a random class model's classes (no data to read them from)
# Stable Diffusion 1.5's scheduler/scheduler_config.json: PLMS (PNDMScheduler with skip_prk_steps) on the leading grid
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                  "clip_sample": False}


def build_tiny_model(folder: Path, preset: str = "tiny") -> Path:
    """A model folder on a tiny preset (``tiny``; ``tiny-class``, ``tiny-sr``, ``tiny-inpaint``, ``tiny-colorize``
    for the other condition kinds) with random weights (seeded), written by the model's own save."""
    if (folder / "config.yaml").is_file():  # built already by another test this session
        return folder
    config = load_preset(preset)
    condition = config.condition
    if condition.kind == "class" and not condition.classes:
        condition = dataclasses.replace(condition, classes=CLASSES)
    model_config = ModelConfig(autoencoder=config.autoencoder, text=config.text, unet=config.unet,
                               diffusion=config.diffusion, image_size=config.data.image_size, condition=condition)
    tokenizer = (PromptTokenizer.train(CAPTIONS * 20, config.text.vocab_size, config.text.max_length)
                 if condition.uses_text else None)
    torch.manual_seed(0)
    LatentDiffusion(model_config, tokenizer).save(folder)
    return folder


def build_attentive_tiny_model(folder: Path, preset: str = "tiny") -> Path:
    """`build_tiny_model` (of ``preset``) with every UNet weight moved by N(0, 0.05²) noise (seeded): a fresh UNet's
    spatial-transformer output projections are zero, so its attention layers (where LoRA adapters go)
    would not reach the output at all."""
    if (folder / "config.yaml").is_file():
        return folder
    model = LatentDiffusion.load(build_tiny_model(folder.parent / (folder.name + "-plain"), preset))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.save(folder)
    return folder
