"""Where each prompt token lands: the cross-attention maps of εθ while it samples one image.

In every cross-attention layer ℓ of the UNet, the query pixels (the layer's h_ℓ × w_ℓ feature map) attend
to the L context vectors c = τθ(y) with the weights

    A_ℓ = softmax(Q Kᵀ / √d),   Q = W_Q φ_ℓ(z_t),  K = W_K c,   A_ℓ ∈ [0, 1]^{h_ℓ w_ℓ × L},

each row summing to 1 over the tokens. Averaged over the heads, column j of A_ℓ is a map of token j
over the layer's pixels. The maps here are those columns, bilinearly resized to the latent grid and
averaged over the layers and the sampler's steps (the aggregation of Prompt-to-Prompt, Hertz et al.
2022, and DAAM, Tang et al. 2023), recorded from the conditional pass only (with guidance, the second
half of each batch). Every latent pixel's maps still sum to 1 over the L tokens.

The recording is read-only (`ldmkit.nn.cross_attention_maps`): forward hooks on the cross-attention
modules recompute A from the same inputs, so the image is the one the pipeline draws without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ldmkit.nn.cross_attention_maps import CrossAttentionRecorder, cross_attention_layers, recording


@dataclass
class AttentionMaps:
    """An image and, for each of its prompt's L context tokens, the cross-attention map on the latent grid."""

    image: Image.Image
    tokens: list[str]  # the L context positions: the tokens of ``prompt``, special ones and padding included
    maps: torch.Tensor  # float32[L, h, w]: Ā (see the module docstring); each pixel sums to 1 over L
    real_tokens: int  # the first real_tokens positions are the prompt's; the rest are padding
    prompt: str  # the prompt as encoded: in the words the model knows (`LatentDiffusion.in_known_words`)

    def share(self) -> torch.Tensor:
        """float32[L]: each token's share of the attention, averaged over the latent pixels (sums to 1)."""
        return self.maps.mean(dim=(1, 2))


def cross_attention_maps(pipe, prompt: str, steps: int | None = None, guidance: float = 4.0, seed: int = 0,
                         sampler: str | None = None, progress: bool = False) -> AttentionMaps:
    """Sample one image for ``prompt`` with a `TextToImagePipeline` and return it with its maps (``sampler``,
    ``steps`` None: the model's own, `Pipeline.sampling_defaults`). The maps are labelled with the tokens the
    pipeline encodes: those of the prompt read in the words the model knows (`LatentDiffusion.in_known_words`,
    ``AttentionMaps.prompt``), which may differ from the prompt as written."""
    model = pipe.model
    if not cross_attention_layers(model.unet) or model.tokenizer is None:
        raise ValueError("this model has no cross-attention on a prompt (attention maps need a text model)")
    size = model.config.image_size
    # the batch's last row: the conditional pass (with guidance the batch is [unconditional; conditional])
    recorder = CrossAttentionRecorder(pipe.latent_size(size, size), rows=slice(-1, None))
    with recording(model.unet, recorder):
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, generator=seed, sampler=sampler,
                     progress=progress).images[0]
    read = model.in_known_words([prompt])[0]  # what the pipeline encoded
    tokens, real = model.tokenizer.tokens(read)
    maps = recorder.mean()[0]
    if maps.shape[0] != len(tokens):
        raise ValueError(f"the context has {maps.shape[0]} positions but the tokenizer gave {len(tokens)} tokens")
    return AttentionMaps(image, tokens, maps.cpu(), real, read)


def _heat(values: np.ndarray) -> np.ndarray:
    """A black → red → yellow → white colour ramp for values in [0, 1]: uint8[..., 3]."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def attention_figure(result: AttentionMaps, panel: int = 128, per_row: int = 8) -> Image.Image:
    """One picture: the image, then one panel per prompt token (padding summed into one panel), each the
    token's map over the dimmed image, stretched from its own minimum (black) to its maximum (white), and
    labelled with the token and its share of the attention."""
    shares = result.share()
    n = result.real_tokens
    panels = [(result.image.convert("RGB"), "image")]
    entries = [(result.maps[j], result.tokens[j], float(shares[j])) for j in range(n)]
    if len(result.tokens) > n:
        entries.append((result.maps[n:].sum(0), f"padding ({len(result.tokens) - n})", float(shares[n:].sum())))
    base = np.asarray(result.image.convert("L").resize((panel, panel), Image.BILINEAR), dtype=np.float32) / 255
    for m, token, share in entries:
        m = F.interpolate(m[None, None], size=(panel, panel), mode="bilinear", align_corners=False)[0, 0].numpy()
        heat = _heat((m - m.min()) / max(float(m.max() - m.min()), 1e-12)).astype(np.float32)
        blend = 0.35 * base[..., None] * 255 + 0.65 * heat
        panels.append((Image.fromarray(blend.astype(np.uint8)), f"{token} {100 * share:.0f}%"))

    font = ImageFont.load_default()
    label_h = 14
    cols = min(per_row, len(panels))
    rows = math.ceil(len(panels) / cols)
    figure = Image.new("RGB", (cols * (panel + 2) + 2, rows * (panel + label_h + 2) + 2), "white")
    draw = ImageDraw.Draw(figure)
    for i, (picture, label) in enumerate(panels):
        row, col = divmod(i, cols)
        x, y = 2 + col * (panel + 2), 2 + row * (panel + label_h + 2)
        figure.paste(picture.resize((panel, panel), Image.NEAREST), (x, y))
        draw.text((x + 2, y + panel + 1), label, fill="black", font=font)
    return figure
