"""Image conditions concatenated to z_t: the UNet sees cat(z_t, c) with c at latent resolution h×w.

- super-resolution: c = resize(x_LR, h×w), the low-resolution image itself (3 channels);
- inpainting: c = cat(scale · E(x ⊙ (1 − m)), resize(m, h×w)), the masked image's latent and the
  mask (c + 1 channels), m = 1 where pixels are repainted;
- colorization: c = scale · E(gray(x)), the latent of the grayscale image (c channels). The latent
  rather than the pixels: at f = 4 a pixel-space condition of h×w would keep one grey value per 4×4
  block, the latent keeps the block's edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldmkit.config import ConditionConfig
from ldmkit.errors import UsageError

# ITU-R BT.601 luma, as PIL's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)


def check_images(images: torch.Tensor, what: str = "image") -> torch.Tensor:
    """``images`` as B×3×H×W (a 3×H×W image gets a batch axis); other shapes are a one-line `UsageError`. It
    names the shape only: the range depends on the caller (a pipeline call reads [0, 1], as diffusers does;
    ``generate_tensors`` and training read [-1, 1])."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        channels = images.shape[1] if images.ndim == 4 else "?"
        raise UsageError(
            f"the {what} must have 3 channels (RGB: B×3×H×W or 3×H×W); got shape {tuple(images.shape)} "
            f"({channels} channels)"
        )
    return images


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``mask`` as B×1×H×W in [0, 1] matching ``images`` (B×3×H×W): an H×W or 1×H×W mask is shared
    by the batch. A mask of another size, or with other than one channel, is a ValueError."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise UsageError(f"the mask must have 1 channel (H×W, 1×H×W or B×1×H×W); got shape {tuple(mask.shape)}")
    if mask.shape[-2:] != images.shape[-2:]:
        (mh, mw), (ih, iw) = mask.shape[-2:], images.shape[-2:]
        raise UsageError(f"the mask is {mw}×{mh} pixels but the image is {iw}×{ih}; they must be the same size")
    if mask.shape[0] not in (1, images.shape[0]):
        raise UsageError(f"{mask.shape[0]} masks for {images.shape[0]} images; give one, or one per image")
    return mask.to(images.dtype).clamp(0, 1).expand(images.shape[0], -1, -1, -1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """The luma Y = 0.299 R + 0.587 G + 0.114 B of B×3×H×W ``images``, repeated to 3 channels."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True).expand(-1, 3, -1, -1)


def resize_to(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking); the identity at the same size."""
    if images.shape[-2:] == (height, width):
        return images
    shrink = height < images.shape[-2] or width < images.shape[-1]
    return F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False, antialias=shrink)


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """x_LR: ``images`` shrunk ``factor`` times by antialiased bicubic resizing (the degradation the
    super-resolution model learns to undo; sides must be multiples of ``factor``)."""
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise UsageError(f"image size {w}×{h} is not a multiple of the super-resolution factor {factor}")
    return resize_to(images, h // factor, w // factor).clamp(-1, 1)


def mean_fill(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``images`` with the pixels to repaint (m = 1) set to the mean colour of each image's known ones:
    the simplest guess at the hole, the baseline an inpainting model must beat."""
    known = 1 - mask
    mean = (images * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
    return mask * mean + known * images


def masked_images(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x ⊙ (1 − m): the pixels to repaint (m = 1) set to 0, mid-grey in [-1, 1]."""
    return images * (1 - mask)


def mask_to_latent(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """m at latent resolution: the share of each latent cell's pixels that is repainted (area average)."""
    return F.interpolate(mask, size=(height, width), mode="area")


def concat_condition(
    condition: ConditionConfig, encode, source: torch.Tensor, latent_size: tuple[int, int],
    mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """c, the tensor concatenated to z_t (None for "text" and "class" models).

    ``encode``: z_0 = scale · E(x) (`LatentDiffusion.encode_images`); ``source``: what the condition is
    made from — the low-resolution image (sr), the image with the region to repaint (inpaint, with
    ``mask``), the grayscale image (colorize) — B×3×H×W in [-1, 1]; ``latent_size``: (h, w) of z_t.
    """
    h, w = latent_size
    if condition.kind == "sr":
        return resize_to(source, h, w)
    if condition.kind == "inpaint":
        if mask is None:
            raise ValueError("an inpainting condition needs a mask")
        return torch.cat([encode(masked_images(source, mask)), mask_to_latent(mask, h, w)], dim=1)
    if condition.kind == "colorize":
        return encode(source)
    return None


def condition_source(condition: ConditionConfig, images: torch.Tensor) -> torch.Tensor:
    """What a training sample's image condition is made from: x_LR = x shrunk ``sr_factor`` times (sr),
    gray(x) (colorize), x itself (inpaint, masked later by `ldmkit.condition.concat_condition`)."""
    if condition.kind == "sr":
        return downsample(images, condition.sr_factor)
    if condition.kind == "colorize":
        return grayscale(images)
    return images
