"""Jobs that start from an image: image-to-image (SDEdit), inpainting, super-resolution and colorization,
for ldmkit's own job routes and the A1111 and OpenAI ones.

An `ImageSettings` job runs on the same queue as generate and edit jobs, on the pipeline of its mode:
`InpaintingPipeline` for inpaint (the masked region repainted, the rest kept), `SuperResolutionPipeline`
for upscale, `ColorizationPipeline` for colorize, and `ImageToImagePipeline` over a text model (SDEdit)
for img2img; img2img-masked is SDEdit whose output is pasted into the input only where the mask is white,
so that the unmasked pixels stay exactly the input's. The input image and mask travel as PNG bytes,
excluded from the settings' JSON. An upload is read as the CLI reads a file (`decode_image`, then
`ldmkit.images.to_rgb` for an image), so that the same file gives the same image whichever entry point reads
it; a mask by its client's convention (`white_mask`: ldmkit's, `a1111_mask`, `mask_from_alpha`: OpenAI's).
"""

from __future__ import annotations

import binascii
import base64
import io
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageOps

from ldmkit.errors import UsageError
from ldmkit.images import mask_grey
from ldmkit.pipelines.image_to_image import ImageToImagePipeline
from ldmkit.serve.job_settings import to_settings
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import ImageSettings

class ImageInputError(ValueError):
    """An input image that cannot be used; the message says why, for the field ``field``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def decode_image(data: bytes | str, field: str, limits: Limits, scale: int = 1) -> Image.Image:
    """``data`` (PNG/JPEG/WebP bytes, or base64 of them: a ``data:image/…;base64,`` prefix and line breaks
    allowed) as a loaded PIL image, upright per its EXIF orientation and in its own mode (alpha and bit depth
    kept), as `ldmkit.images.load_image` reads a file before its `to_rgb`: callers take `to_rgb` of an input
    image, and read a mask by their client's convention (`white_mask`, `a1111_mask`, `mask_from_alpha`). Its
    sides, times ``scale`` (a super-resolution model's factor: the output's sides), are multiples of the
    latent factor, at most ``limits.max_size``, and together not `Limits.too_small`; the size is checked from
    the header, before the pixels are decoded (the checks do not depend on which side is which, so a
    rotation by EXIF changes nothing). Anything else, an image too large for PIL to open (a decompression
    bomb) included, is an `ImageInputError` naming ``field``."""
    if isinstance(data, str):
        data = _from_base64(data, field)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageInputError(field, f"{field} cannot be read: {str(e).rstrip('.')}; each side may be at most "
                                     f"{limits.max_size}") from None
    except (OSError, SyntaxError, ValueError):
        raise ImageInputError(field, f"{field} is not an image PIL can read (PNG, JPEG or WebP)") from None
    _check_size(image.size, field, limits, scale)
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(field, f"{field} could not be decoded: {e}") from None


def _from_base64(text: str, field: str) -> bytes:
    """The bytes of base64 ``text``, after any ``data:…,`` prefix, with whitespace (the line breaks of
    ``base64 FILE``) ignored; `ImageInputError` for a data: URL without its comma or text that is not base64."""
    if text.startswith("data:"):
        _, comma, text = text.partition(",")
        if not comma:
            raise ImageInputError(field, f"{field} is not base64 of an image: a data: URL without its comma and "
                                         f"data")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(field, f"{field} is not base64 of an image") from None


def _check_size(size: tuple[int, int], field: str, limits: Limits, scale: int) -> None:
    """`ImageInputError` naming ``field`` when an image of ``size`` (width, height), its sides times ``scale``,
    is not one the model draws."""
    width, height = size
    k = limits.latent_factor
    times = "" if scale == 1 else f" times {scale} (the model's super-resolution factor)"
    if (width * scale) % k or (height * scale) % k or max(width, height) * scale > limits.max_size:
        raise ImageInputError(field, f"{field} is {width}×{height}; each side{times} must be a multiple of {k} and "
                                     f"at most {limits.max_size}")
    reason = limits.too_small(width * scale, height * scale)
    if reason is not None:
        raise ImageInputError(field, f"{field} is {width}×{height}{times}: {reason}")


def strength_errors(pipe, field: str, strength: float, steps: int, sampler: str, karras: bool) -> list[dict]:
    """A FastAPI-style entry naming ``field`` (``strength``, A1111's ``denoising_strength``) for a ``strength``
    with which ``pipe`` (an img2img or inpainting pipeline) would run none of the ``steps`` (int(strength ·
    steps) = 0, 0 itself included: `Pipeline.check_strength`, whose message names the smallest strength that
    runs one); empty otherwise. The routes check it before a job is queued, so that the request is answered
    at once, in the client's own shape, rather than by a job the pipeline refuses."""
    try:
        pipe.check_strength(strength, sampler, steps, karras)
    except UsageError as e:
        msg = str(e)  # "strength = 0.01 runs none of the 50 steps …", said in the request's name of the field
        return [{"loc": ("body", field), "type": "value_error",
                 "msg": field + msg.removeprefix("strength") if msg.startswith("strength =") else msg}]
    return []


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def alpha_channel(image: Image.Image) -> np.ndarray | None:
    """The alpha channel of ``image`` (H×W, 0 … 255) where it has one (RGBA, LA, PA, a palette with a
    transparent colour) that is not fully opaque; None otherwise."""
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    return None if alpha.min() == 255 else alpha


def mask_from_alpha(image: Image.Image) -> Image.Image | None:
    """OpenAI's convention: the fully transparent pixels of ``image`` are the ones to repaint. As an
    L mask (white = repaint), or None when ``image`` has no alpha channel or a fully opaque one."""
    alpha = alpha_channel(image)
    return None if alpha is None else Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8), mode="L")


def white_mask(mask: Image.Image, invert: bool = False) -> Image.Image:
    """``mask`` as an L image in {0, 255}, read as `ldmkit inpaint --mask` reads a file: its grey levels (a
    grey image of more than 8 bits scaled to 8, `to_8bit`; alpha ignored), white (> ½) repaints; ``invert``
    swaps the two."""
    grey = np.asarray(mask_grey(mask)) > 127
    return Image.fromarray(np.where(grey != invert, 255, 0).astype(np.uint8), mode="L")


def a1111_mask(mask: Image.Image, invert: bool = False) -> Image.Image:
    """``mask`` read as A1111 reads an img2img mask (``create_binary_mask``): where it has an alpha channel that
    is not fully opaque (strokes on a transparent layer), its opaque pixels (alpha > ½) repaint; otherwise
    `white_mask`'s grey levels, white repaints. ``invert`` (``inpainting_mask_invert``) swaps the two."""
    alpha = alpha_channel(mask)
    return white_mask(mask if alpha is None else Image.fromarray(alpha, mode="L"), invert)


def selects_nothing(mask: Image.Image) -> bool:
    """Whether the L ``mask`` (white = repaint) has no pixel to repaint."""
    return mask.getbbox() is None


def paste_masked(result: Image.Image, source: Image.Image, mask: Image.Image) -> Image.Image:
    """``result`` where ``mask`` is white, ``source`` elsewhere, pixel for pixel."""
    keep = np.asarray(mask.convert("L"))[..., None] > 127
    out = np.where(keep, np.asarray(result.convert("RGB")), np.asarray(source.convert("RGB")))
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def image_runner(pipelines: Mapping[str, object]) -> Callable:
    """The queue's ``run`` for `ImageSettings`: a batch of ``num_images`` from one seed, as `ldmkit img2img`,
    `inpaint`, `upscale` and `colorize` draw them, on ``pipelines[mode]`` (img2img-masked: the img2img one).
    A mode without a pipeline never gets here: the routes refuse such jobs before they are queued."""

    def run(settings: ImageSettings, on_step):
        source = Image.open(io.BytesIO(settings.image)).convert("RGB")
        batch = [source] * settings.num_images
        mask = None if settings.mask is None else Image.open(io.BytesIO(settings.mask)).convert("L")
        options = dict(settings=to_settings(settings), callback=on_step)
        if settings.mode == "inpaint":  # strength 1 (ldmkit's routes): from noise; below (A1111's): part-way
            return pipelines["inpaint"](batch, mask, settings.prompt, strength=settings.strength, **options)
        if settings.mode in ("upscale", "colorize"):
            return pipelines[settings.mode](batch, settings.prompt, **options)
        images = pipelines["img2img"](batch, settings.prompt, strength=settings.strength, **options)
        if settings.mode == "img2img-masked":
            images = [paste_masked(image, source, mask) for image in images]
        return images

    return run


def img2img_pipeline_for(pipeline) -> object | None:
    """An `ImageToImagePipeline` over ``pipeline``'s text model, sharing it (not a copy); None where the model
    is not a text model, or is a consistency student (which samples with lcm only)."""
    model = getattr(pipeline, "model", None)
    if model is None or model.config.condition.kind != "text" or getattr(pipeline, "is_student", False):
        return None
    return ImageToImagePipeline(model, pipeline.device, precision=getattr(pipeline, "precision", "fp32"))
