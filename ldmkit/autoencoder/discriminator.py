"""The PatchGAN discriminator of pix2pix, as VQGAN and the LDM autoencoders use it."""

from __future__ import annotations

import torch
from torch import nn

from ldmkit.nn.layers import group_norm


class NLayerDiscriminator(nn.Module):
    """D(x): (B, in_channels, H, W) → (B, 1, H', W') real/fake logits, one per overlapping patch.

    conv4×4/2 → LeakyReLU, then ``n_layers − 1`` × [conv4×4/2 → norm → LeakyReLU] doubling the width
    (at most 8× ``channels``), one conv4×4/1 → norm → LeakyReLU and a conv4×4/1 to one logit. With
    n_layers = 3 the receptive field is 70×70 pixels; images need H, W ≥ 24 for a non-empty output.

    Normalisation is GroupNorm instead of pix2pix's BatchNorm: the same in train and eval, independent
    of the batch size, and it needs no SyncBatchNorm under DDP.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, n_layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            # No conv bias before a norm layer: the norm's shift makes it redundant.
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False), group_norm(out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images)


def _init_weights(module: nn.Module) -> None:
    # pix2pix's init: N(0, 0.02) convolutions, N(1, 0.02) norm scales.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
