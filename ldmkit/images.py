"""Conversions between PIL images and ``images`` tensors (3×H×W in [-1, 1]), and sample grids."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ldmkit.storage import atomic_path
from ldmkit.errors import UsageError


def to_8bit(image: Image.Image) -> Image.Image:
    """A grey image of more than 8 bits per pixel (PIL's modes I;16…, I, F: 16-bit PNGs and TIFFs) as 8-bit "L",
    its range scaled: 0 … 65535 → 0 … 255 (an "I" image whose values all fit 8 bits kept as they are; "F" read
    as 0 … 1 when it fits there, else 0 … 255). PIL's own ``convert`` clips these to 255, so that a 16-bit
    grey image reads almost white. Other images are returned as they are."""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    peak = values.max(initial=0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
        values = values / 257.0
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as RGB, transparent pixels composited over white, a grey image of more than 8 bits scaled
    to 8 (`to_8bit`).

    Plain ``convert("RGB")`` drops alpha and keeps whatever colour the transparent pixels happen to
    hold (often black), which would put dark halos around cut-out objects.
    """
    image = to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def mask_grey(mask: Image.Image) -> Image.Image:
    """A mask's grey levels as an "L" image, read as every entry point reads a mask (`ldmkit inpaint --mask`, the
    server, a PIL mask in Python): upright per its EXIF orientation, a grey image of more than 8 bits scaled to 8
    (`to_8bit`), alpha ignored."""
    return to_8bit(ImageOps.exif_transpose(mask)).convert("L")


def center_crop_resize(image: Image.Image, image_size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``image_size`` × ``image_size``.

    LANCZOS, with PIL's ``reducing_gap`` so that large photos are first shrunk by a cheap box
    filter: nearly the same pixels at a fraction of the cost.
    """
    w, h = image.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize((image_size, image_size), Image.LANCZOS, reducing_gap=3.0)
    return image


def image_to_tensor(image: Image.Image, image_size: int | None = None) -> torch.Tensor:
    """``images`` = x / 127.5 − 1: a float32 tensor 3×H×W in [-1, 1].

    With ``image_size``, the image is first centre-cropped to a square and resized to it.
    """
    image = to_rgb(image)
    if image_size is not None:
        image = center_crop_resize(image, image_size)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def tensor_to_pil(images: torch.Tensor) -> Image.Image:
    """One ``images`` tensor 3×H×W (or 1×3×H×W) in [-1, 1] as an RGB image; values are clamped."""
    if images.ndim == 4 and images.shape[0] == 1:
        images = images[0]
    if images.ndim != 3 or images.shape[0] != 3:
        raise ValueError(f"tensor_to_pil expects 3×H×W, got shape {tuple(images.shape)}")
    array = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), "RGB")


def make_grid(
    images: torch.Tensor | Sequence[Image.Image], nrow: int | None = None, padding: int = 2
) -> Image.Image:
    """Tile images into one picture, ``nrow`` images per row (default ⌈√B⌉), left to right.

    The grid is ncol·(W + padding) + padding wide and nrows·(H + padding) + padding high (as in
    torchvision), with a black border. Images of different sizes sit in cells of the largest size.
    A single image is returned as it is, without a border.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        pils = [tensor_to_pil(t) for t in images]
    else:
        pils = [to_rgb(p) for p in images]
    if not pils:
        raise ValueError("make_grid needs at least one image")
    if len(pils) == 1:
        return pils[0]
    ncol = nrow or math.ceil(math.sqrt(len(pils)))
    ncol = max(1, min(ncol, len(pils)))
    nrows = math.ceil(len(pils) / ncol)
    cell_w = max(p.width for p in pils)
    cell_h = max(p.height for p in pils)
    grid = Image.new("RGB", (ncol * (cell_w + padding) + padding, nrows * (cell_h + padding) + padding))
    for k, p in enumerate(pils):
        row, col = divmod(k, ncol)
        grid.paste(p, (padding + col * (cell_w + padding), padding + row * (cell_h + padding)))
    return grid


def save_grid(
    images: torch.Tensor | Sequence[Image.Image], path: str | Path, nrow: int | None = None, padding: int = 2
) -> Path:
    """Write `make_grid` (images) to ``path`` atomically: a reader never sees half a file.

    The format follows the suffix (.png, .jpg, .webp …); parent folders are created.
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"save_grid: cannot tell an image format from the suffix of {path}")
    grid = make_grid(images, nrow, padding)
    with atomic_path(path) as tmp:
        grid.save(tmp, format=fmt)  # tmp ends in .tmp, so the format has to be named
    return path


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` fully (not lazily), upright per its EXIF orientation, as RGB.

    Raises what PIL raises for unreadable files (OSError and its subclasses, mostly).
    """
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
