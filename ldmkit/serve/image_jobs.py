"""Jobs that start from an image: image-to-image (SDEdit) and inpainting, for the A1111 and OpenAI routes.

An `ImageSettings` job runs on the same queue as generate and edit jobs. Which pipeline runs it is
decided by the model: with a mask and an inpainting pipeline, `InpaintingPipeline` (the masked region
repainted, the rest kept); otherwise `ImageToImagePipeline` over the served text model (SDEdit), and with
a mask its output is pasted into the input only where the mask is white, so that the unmasked pixels stay
exactly the input's. The input image and mask travel as PNG bytes, excluded from the settings' JSON.
"""

from __future__ import annotations

import binascii
import base64
import io
from typing import Callable, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from ldmkit.pipelines.image_to_image import ImageToImagePipeline
from ldmkit.serve.limits import Limits

ImageMode = Literal["img2img", "img2img-masked", "inpaint"]


class ImageSettings(BaseModel):
    """An image job with every choice made. ``mode``: img2img (SDEdit over the whole image),
    img2img-masked (SDEdit, then only the mask's white pixels taken from it) or inpaint (the inpainting
    model). ``image`` and ``mask`` are PNGs of ``width`` × ``height`` (not written to JSON)."""

    model_config = ConfigDict(frozen=True)

    mode: ImageMode
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    sampler: str
    seed: int
    num_images: int
    strength: float
    width: int
    height: int
    karras: bool = False
    image: bytes = Field(exclude=True, repr=False)
    mask: bytes | None = Field(None, exclude=True, repr=False)


class ImageInputError(ValueError):
    """An input image that cannot be used; the message says why, for the field ``field``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def decode_image(data: bytes | str, field: str, limits: Limits) -> Image.Image:
    """``data`` (PNG/JPEG/WebP bytes, or base64 of them, a ``data:image/…;base64,`` prefix allowed) as a
    loaded PIL image whose sides are multiples of the latent factor and at most ``limits.max_size``.
    The size is checked from the header, before the pixels are decoded."""
    if isinstance(data, str):
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ImageInputError(field, f"{field} is not base64 of an image") from None
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise ImageInputError(field, f"{field} is not an image PIL can read (PNG, JPEG or WebP)") from None
    width, height = image.size
    k = limits.latent_factor
    if width % k or height % k or max(width, height) > limits.max_size:
        raise ImageInputError(field, f"{field} is {width}×{height}; each side must be a multiple of {k} and at most "
                                     f"{limits.max_size}")
    try:
        image.load()
    except (OSError, ValueError) as e:
        raise ImageInputError(field, f"{field} could not be decoded: {e}") from None
    return image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def mask_from_alpha(image: Image.Image) -> Image.Image | None:
    """OpenAI's convention: the fully transparent pixels of ``image`` are the ones to repaint. As an
    L mask (white = repaint), or None when ``image`` has no alpha channel."""
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    return Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8), mode="L")


def white_mask(mask: Image.Image, invert: bool = False) -> Image.Image:
    """``mask`` as an L image in {0, 255}: white (grey level > ½) repaints; ``invert`` swaps the two."""
    grey = np.asarray(mask.convert("L")) > 127
    return Image.fromarray(np.where(grey != invert, 255, 0).astype(np.uint8), mode="L")


def paste_masked(result: Image.Image, source: Image.Image, mask: Image.Image) -> Image.Image:
    """``result`` where ``mask`` is white, ``source`` elsewhere, pixel for pixel."""
    keep = np.asarray(mask.convert("L"))[..., None] > 127
    out = np.where(keep, np.asarray(result.convert("RGB")), np.asarray(source.convert("RGB")))
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def karras_option(settings) -> dict:
    """``karras=True`` where the settings ask for Karras σ; nothing otherwise, so that a pipeline without
    the option (a stand-in in tests, an older subclass) still runs every other request."""
    return {"karras": True} if settings.karras else {}


def image_runner(img2img_pipe, inpaint_pipe) -> Callable:
    """The queue's ``run`` for `ImageSettings`: a batch of ``num_images`` from one seed, as `ldmkit
    img2img` / `ldmkit inpaint` draw them. ``img2img_pipe`` or ``inpaint_pipe`` may be None when the
    server has none (the routes refuse such jobs before queueing them)."""

    def run(settings: ImageSettings, on_step):
        source = Image.open(io.BytesIO(settings.image)).convert("RGB")
        batch = [source] * settings.num_images
        mask = None if settings.mask is None else Image.open(io.BytesIO(settings.mask)).convert("L")
        if settings.mode == "inpaint":
            return inpaint_pipe(batch, mask, settings.prompt, num_inference_steps=settings.steps,
                                guidance_scale=settings.guidance, generator=settings.seed, sampler=settings.sampler,
                                negative_prompt=settings.negative_prompt, callback=on_step,
                                **karras_option(settings))
        images = img2img_pipe(batch, settings.prompt, strength=settings.strength, num_inference_steps=settings.steps,
                              guidance_scale=settings.guidance, generator=settings.seed, sampler=settings.sampler,
                              negative_prompt=settings.negative_prompt, callback=on_step,
                              **karras_option(settings))
        if settings.mode == "img2img-masked":
            images = [paste_masked(image, source, mask) for image in images]
        return images

    return run


def image_pipelines_for(pipeline, inpaint_pipeline=None) -> tuple[object | None, object | None]:
    """(an `ImageToImagePipeline` over ``pipeline``'s text model, sharing it; None where the model is not
    a text model), and the inpainting pipeline given (None: the server cannot inpaint)."""
    model = getattr(pipeline, "model", None)
    img2img = None
    if model is not None and model.config.condition.kind == "text" and not getattr(pipeline, "is_student", False):
        img2img = ImageToImagePipeline(model, pipeline.device, precision=getattr(pipeline, "precision", "fp32"))
    return img2img, inpaint_pipeline

