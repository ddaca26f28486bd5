"""Grounded training (after TokenCompose, Wang et al. 2024): the cross-attention maps of the words that
name an object are supervised with the object's mask, next to the denoising loss.

For a training image with objects g = 1 … G, each with a mask M_g (the share of each pixel it covers,
area-resized to the layer's h_ℓ × w_ℓ) and the tokens T_g its naming words become, and A_ℓ[u, i] the
cross-attention weight of pixel u on token i in layer ℓ (mean over heads; each pixel's row sums to 1):

    L_token = mean_{ℓ, g, i ∈ T_g} (1 − Σ_u M_g(u) A_ℓ[u, i] / Σ_u A_ℓ[u, i])²

pushes each naming token's attention inside its object (zero when all of it lies there), and

    L_pixel = mean_{ℓ, g, u} BCE(a_g(u), M_g(u)),   a_g(u) = Σ_{i ∈ T_g} A_ℓ[u, i],

pulls the object's pixels toward its tokens and the other pixels away from them. The training loss is

    L = L_LDM + w_token L_token + w_pixel L_pixel

over the items that carry targets (`ldmkit.data.grounding`; a dropped caption carries none). A batch
without targets computes L_LDM exactly as an ungrounded run. ``levels`` picks the UNet levels whose
cross-attention layers count (level k works at 1/2^k of the latent's side; () = all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ldmkit.data.grounding import Grounding
from ldmkit.errors import ConfigError
from ldmkit.text.phrases import parse_phrases
from ldmkit.text.tokenizer import FixedLengthTokenizer


@dataclass
class GroundingTargets:
    """A micro-batch's targets: ``tokens[b, g, i]`` 1 where token i names object g of item b,
    ``masks[b, g]`` float[H, W] at image size, ``valid[b, g]`` whether object g of item b exists."""

    tokens: Tensor  # float[B, G, L]
    masks: Tensor  # float[B, G, H, W]
    valid: Tensor  # bool[B, G]

    def to(self, device) -> GroundingTargets:
        return GroundingTargets(self.tokens.to(device), self.masks.to(device), self.valid.to(device))


def grounding_targets(groundings: list[Grounding | None], captions: list[str],
                      tokenizer: FixedLengthTokenizer, words: str = "all") -> GroundingTargets | None:
    """The targets of a micro-batch (None where an item has none: no grounding, or a dropped caption);
    None when no object of any item has a token left (so the step trains as an ungrounded one).
    ``words``: "all" grounds every word the targets name; "nouns" only those of its words that are the head
    nouns of the caption's noun phrases (`noun_spans`), as TokenCompose grounds noun tokens."""
    items = [(b, g) for b, g in enumerate(groundings) if g is not None and captions[b]]
    if not items:
        return None
    size = next(g.masks.shape[-2:] for _, g in items)
    count = max(g.masks.shape[0] for _, g in items)
    tokens = torch.zeros(len(captions), count, tokenizer.max_length)
    masks = torch.zeros(len(captions), count, *size)
    valid = torch.zeros(len(captions), count, dtype=torch.bool)
    for b, g in items:
        nouns = noun_spans(captions[b]) if words == "nouns" else None
        for k, spans in enumerate(g.spans):
            if nouns is not None:
                spans = tuple(sp for sp in spans if any(sp[0] < end and start < sp[1] for start, end in nouns))
            indices = tokenizer.token_indices(captions[b], spans)
            if indices:
                tokens[b, k, indices] = 1.0
                masks[b, k] = g.masks[k]
                valid[b, k] = True
    return GroundingTargets(tokens, masks, valid) if valid.any() else None


def noun_spans(caption: str) -> list[tuple[int, int]]:
    """The character spans of the head nouns of ``caption``'s noun phrases, by the general rule of
    `ldmkit.text.phrases` (no vocabulary): "a small red circle above a big box" → circle, box."""
    return [phrase.noun for phrase in parse_phrases(caption).objects]


def layer_level(layer_hw: tuple[int, int], latent_hw: tuple[int, int]) -> int:
    """The UNet level of a layer working at ``layer_hw`` on a latent of ``latent_hw``: how many times the latent's
    sides are halved, rounding up as the UNet's downsampling does, to reach it (9 → 5 → 3 → 2: level 3)."""
    level, hw = 0, tuple(latent_hw)
    while hw != tuple(layer_hw) and hw != (1, 1):
        hw, level = (-(-hw[0] // 2), -(-hw[1] // 2)), level + 1
    return level


def grounding_losses(layers: list[Tensor], targets: GroundingTargets, latent_hw: tuple[int, int],
                     levels: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
    """(L_token, L_pixel) of the recorded maps ``layers`` (each float[B, L, h_ℓ, w_ℓ], as
    `ldmkit.nn.cross_attention_maps.CrossAttentionRecorder` keeps them) against ``targets``."""
    # in float32 whatever autocast the training step runs under: in bfloat16, a_g(u) near 1 rounds to 1 and
    # log(1 − a_g) to −inf (CUDA autocast also refuses F.binary_cross_entropy outright)
    with torch.autocast(layers[0].device.type if layers else "cpu", enabled=False):
        return _grounding_losses(layers, targets, latent_hw, levels)


def _grounding_losses(layers: list[Tensor], targets: GroundingTargets, latent_hw: tuple[int, int],
                      levels: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    token_terms, pixel_terms = [], []
    valid = targets.valid.float()  # [B, G]
    for maps in layers:
        hw = tuple(maps.shape[-2:])
        if levels and layer_level(hw, latent_hw) not in levels:
            continue
        masks = F.adaptive_avg_pool2d(targets.masks, hw).flatten(2)  # [B, G, N]
        a = maps.float().flatten(2)  # [B, L, N]
        inside = torch.einsum("bgn,bln->bgl", masks, a)  # [B, G, L]: mass of token l inside object g
        total = a.sum(dim=-1).clamp_min(1e-8)[:, None, :]  # [B, 1, L]
        weight = targets.tokens * valid[..., None]
        token_terms.append((weight * (1 - inside / total) ** 2).sum() / weight.sum().clamp_min(1))
        group = torch.einsum("bgl,bln->bgn", targets.tokens, a).clamp(1e-6, 1 - 1e-6)  # a_g(u)
        bce = F.binary_cross_entropy(group, masks, reduction="none").mean(dim=-1)  # [B, G]
        pixel_terms.append((bce * valid).sum() / valid.sum().clamp_min(1))
    if not token_terms:
        raise ConfigError(f"train.grounding.levels = {list(levels)} selects no UNet level with cross-attention")
    return torch.stack(token_terms).mean(), torch.stack(pixel_terms).mean()
