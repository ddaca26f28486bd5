"""The prompt model τθ: a small Transformer over prompt tokens, trained jointly with the UNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.config import ConfigError, TextEncoderConfig, UNetConfig
from ldmkit.nn.attention import Attention


class TextTransformerBlock(nn.Module):
    """Pre-LN encoder block: x ← x + SelfAttn(LN(x), mask); x ← x + W₂ GELU(W₁ LN(x)), inner width 4·d.

    Bidirectional: every token sees every real token of the prompt; ``mask`` (bool[B, L], True =
    real) keeps padding out of the keys, so real tokens' outputs do not depend on the padding.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, width // heads)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TextEncoder(nn.Module):
    """context = τθ(y) = LN(Blocks(E_tok[ids] + E_pos[0 … L−1])), shape [B, L, width].

    ``width`` is d_τ, the width of the keys and values in the UNet's cross-attention, so it must equal
    the UNet's ``context_dim`` (see `check_text_unet`). Outputs at padding positions are computed
    but meaningless; pass the same mask to the UNet so cross-attention ignores them.
    """

    # whether a real token's vector depends on the padding after it (`LatentDiffusion.encode_prompts` then
    # encodes every position); here the mask hides padding from every real token
    sees_padding = False

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ConfigError(f"text.width = {cfg.width} is not divisible by text.heads = {cfg.heads}")
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Parameter(torch.empty(cfg.max_length, cfg.width))
        self.blocks = nn.ModuleList(TextTransformerBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        # GPT-2 / CLIP-style small init: N(0, 1) token embeddings would swamp the positions.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def forward(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """token_ids: int64[B, L], L ≤ max_length; mask: bool[B, L] (True = real token) or None
        (every position attends to every other). Returns context [B, L, width]."""
        length = token_ids.shape[1]
        if length > self.cfg.max_length:
            raise ValueError(f"{length} tokens per prompt, more than text.max_length = {self.cfg.max_length}")
        x = self.token_embedding(token_ids) + self.position_embedding[:length]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def check_text_unet(text_cfg: TextEncoderConfig, unet_cfg: UNetConfig, tokenizer=None) -> None:
    """Raise ConfigError unless the tokenizer, text encoder and UNet fit together: τθ's width is the
    UNet's context_dim, and the tokenizer's ids and length fit the encoder's tables."""
    if text_cfg.width != unet_cfg.context_dim:
        raise ConfigError(f"text.width = {text_cfg.width} must equal unet.context_dim = {unet_cfg.context_dim}")
    if tokenizer is not None:
        if tokenizer.vocab_size > text_cfg.vocab_size:
            raise ConfigError(
                f"tokenizer has {tokenizer.vocab_size} tokens, more than text.vocab_size = {text_cfg.vocab_size}"
            )
        if tokenizer.max_length > text_cfg.max_length:
            raise ConfigError(
                f"tokenizer max_length = {tokenizer.max_length} exceeds text.max_length = {text_cfg.max_length}"
            )
