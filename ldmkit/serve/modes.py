"""What each mode of ldmkit's own job routes takes, and a request turned into the settings of one job.

A request (`GenerateRequest`) names a model and a mode, or gets the first model and its first mode. Each
mode takes the fields of the `ldmkit` command that does the same, and refuses the others, so that a field
the mode would ignore is reported instead of dropped:

    generate  prompt, negative_prompt, prompt_syntax, binding, cache_interval, cache_depth, karras,
              num_images, width, height                                                   (`ldmkit generate`)
    class     class_name, cache_interval, cache_depth, num_images, width, height        (`ldmkit generate --class`)
    img2img   image, prompt, negative_prompt, strength, karras                            (`ldmkit img2img`)
    upscale   image, prompt                                                               (`ldmkit upscale`)
    inpaint   image, mask, prompt, karras                                                 (`ldmkit inpaint`)
    colorize  image, prompt                                                               (`ldmkit colorize`)

and all of them steps, guidance, sampler, eta (DDIM's η, with sampler ddim only) and seed (the image modes
prompt_syntax and the input files' names too). The image modes draw one image per job, as their commands do,
at the input's size (upscale: ``sr_factor`` times it). So that a job's settings (GET /v1/jobs/ID) can be sent
back, an image mode also takes the fields of its settings that it does not read (`IMPLIED`) where they hold
what the job has anyway: ``width`` × ``height`` the output's size, ``num_images`` 1, ``strength`` 1 (not
img2img), ``negative_prompt`` "" and ``karras`` false where the mode takes none, ``mask_name`` null (not
inpaint), and ``prompt`` "" where the prompt is optional; any other value is refused, as a field sent as null
is ignored. Every error is a FastAPI-style entry naming the field, raised together as one 422, before a job
is queued: an img2img ``strength`` with which no step would run among them (`strength_errors`).
"""

from __future__ import annotations

import json

from fastapi.exceptions import RequestValidationError

from ldmkit.diffusion.samplers import check_grid_options
from ldmkit.errors import UsageError
from ldmkit.images import to_rgb
from ldmkit.serve.image_jobs import ImageInputError, decode_image, png_bytes, strength_errors, white_mask
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import (
    IMAGE_MODES, ClassSettings, GenerateRequest, ImageSettings, random_seed,
)
from ldmkit.serve.served import KIND_NAMES, ServedModel

SAMPLING = ("steps", "guidance", "sampler", "eta", "seed")
FIELDS: dict[str, tuple[str, ...]] = {
    "generate": ("prompt", "negative_prompt", "prompt_syntax", "binding", "cache_interval", "cache_depth", "karras",
                 "num_images", "width", "height", *SAMPLING),
    "class": ("class_name", "cache_interval", "cache_depth", "num_images", "width", "height", *SAMPLING),
    "img2img": ("image", "image_name", "prompt", "negative_prompt", "prompt_syntax", "strength", "karras",
                *SAMPLING),
    "upscale": ("image", "image_name", "prompt", "prompt_syntax", *SAMPLING),
    "inpaint": ("image", "image_name", "mask", "mask_name", "prompt", "prompt_syntax", "karras", *SAMPLING),
    "colorize": ("image", "image_name", "prompt", "prompt_syntax", *SAMPLING),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "generate": ("prompt",), "class": ("class_name",), "img2img": ("image", "prompt"), "upscale": ("image",),
    "inpaint": ("image", "mask"), "colorize": ("image",),
}
# The commands' defaults: the image-conditioned modes guide the (optional) prompt with s = 1; the others take the
# model's own (`mode_guidance`: 4, or a consistency student's).
GUIDANCE = {"upscale": 1.0, "inpaint": 1.0, "colorize": 1.0}
DEFAULT_STRENGTH = 0.6
# The fields of an image job's settings (`ImageSettings`) that a mode may not read, taken back only with the
# value the job has anyway (`implied_errors`), so that the settings a job reports can be POSTed again.
IMPLIED = ("width", "height", "num_images", "strength", "negative_prompt", "karras", "mask_name")


def mode_guidance(mode: str, limits: Limits) -> float:
    """The guidance scale of a ``mode`` request that gives none: the image-conditioned mode's own (`GUIDANCE`),
    else the model's (``limits.default_guidance``)."""
    return GUIDANCE.get(mode, limits.default_guidance)


def _error(field: str, msg: str) -> dict:
    return {"loc": ("body", field), "msg": msg, "type": "value_error"}


def field_errors(request: GenerateRequest, mode: str) -> list[dict]:
    """Entries for the fields given (not null) that ``mode`` does not take, and for those it needs that are
    missing. An image mode's `IMPLIED` fields are `implied_errors`' to check."""
    given = {name for name in request.model_fields_set - {"model", "mode"} if getattr(request, name) is not None}
    if mode in IMAGE_MODES:
        given -= set(IMPLIED)
    takes = ", ".join(FIELDS[mode])
    errors = [_error(name, f"{name} does not apply to mode {mode}, which takes {takes}")
              for name in sorted(given - set(FIELDS[mode]))]
    empty = " (an empty prompt is none)" if "prompt" in request.model_fields_set else ""
    return errors + [_error(name, f"{name} is required for mode {mode}{empty if name == 'prompt' else ''}")
                     for name in REQUIRED[mode] if getattr(request, name) is None]


def implied_errors(request: GenerateRequest, mode: str, size: tuple[int, int] | None) -> list[dict]:
    """Entries for the `IMPLIED` fields given (not null) that image ``mode`` does not read, holding another value
    than the job has anyway; ``size``: the output's (width, height), None where the image is missing or at
    fault (then width and height are not checked)."""
    held = {"num_images": (1, "draws one image a job, as its command does"),
            "strength": (1.0, "runs every step"),
            "negative_prompt": ("", "takes no negative prompt"),
            "karras": (False, "samples without Karras σ"),
            "mask_name": (None, "takes no mask")}
    if size is not None:
        why = "draws at the input image's size" + (" times the model's factor" if mode == "upscale" else "")
        held |= {"width": (size[0], why), "height": (size[1], why)}
    errors = []
    for name in IMPLIED:
        value = getattr(request, name)
        if name in FIELDS[mode] or name not in request.model_fields_set or value is None or name not in held:
            continue
        implied, why = held[name]
        if value != implied:
            errors.append(_error(name, f"{name} {value!r} does not apply to mode {mode}, which {why}: leave it "
                                       f"out or send {json.dumps(implied)}"))
    return errors


def eta_errors(eta: float, sampler: str) -> list[dict]:
    """An entry for a DDIM η given with another ``sampler`` (the library's rule, `check_grid_options`, as
    `ldmkit generate --eta` refuses it); empty otherwise."""
    try:
        check_grid_options(sampler, eta)
    except UsageError as e:
        return [_error("eta", str(e))]
    return []


def resolve(request: GenerateRequest, served: ServedModel):
    """The settings of the job ``request`` asks of ``served`` (`Settings`, `ClassSettings` or `ImageSettings`),
    with everything the request left open filled in (mode, seed, size, steps, sampler, guidance); a 422
    (`RequestValidationError`) listing every field at fault otherwise."""
    mode = request.mode or served.modes[0]
    if mode not in served.modes:
        raise RequestValidationError([_error("mode", f"model {served.name!r} ({KIND_NAMES[served.kind]}) runs "
                                                     f"{', '.join(served.modes)}, not {mode}")])
    errors = field_errors(request, mode)
    limits = served.limits
    sampler = request.sampler or limits.samplers[0]
    if mode == "generate":
        errors += request.limit_errors(limits) + eta_errors(request.eta, sampler)
        if errors:
            raise RequestValidationError(errors)
        return request.resolve(limits, served.name)
    grid_errors = limits.steps_errors(request.steps) + limits.sampler_errors(request.sampler)
    errors += grid_errors
    common = dict(model=served.name, steps=request.steps if request.steps is not None else limits.default_steps,
                  guidance=request.guidance if request.guidance is not None else mode_guidance(mode, limits),
                  sampler=sampler, eta=request.eta, seed=request.seed if request.seed is not None else random_seed())
    errors += eta_errors(request.eta, sampler)
    if mode == "class":
        errors += limits.image_size_errors(request.width, request.height)
        errors += limits.cache_depth_errors(request.cache_depth)
        if request.class_name is not None and request.class_name not in served.classes:
            errors.append(_error("class_name", f"class {request.class_name!r} is not one of this model's: "
                                               f"{', '.join(served.classes)}"))
        if errors:
            raise RequestValidationError(errors)
        return ClassSettings(class_name=request.class_name, cache_interval=request.cache_interval,
                             cache_depth=request.cache_depth,
                             num_images=request.num_images, width=request.width or limits.default_size,
                             height=request.height or limits.default_size, **common)
    scale = served.sr_factor if mode == "upscale" else 1
    image, mask = _inputs(request, mode, served.limits, scale, errors)
    errors += implied_errors(request, mode, None if image is None else (image.size[0] * scale, image.size[1] * scale))
    strength = (request.strength or DEFAULT_STRENGTH) if mode == "img2img" else 1.0
    karras = request.karras if "karras" in FIELDS[mode] else False
    if mode == "img2img" and not grid_errors:  # the sampler's grid needs steps and a sampler it runs
        errors += strength_errors(served.pipelines[mode], "strength", strength, common["steps"], sampler, karras)
    if errors:
        raise RequestValidationError(errors)
    return ImageSettings(mode=mode, prompt=request.prompt or "", negative_prompt=request.negative_prompt,
                         prompt_syntax=request.prompt_syntax, num_images=1, strength=strength, karras=karras,
                         width=image.size[0] * scale, height=image.size[1] * scale,
                         image=png_bytes(to_rgb(image)), image_name=request.image_name or "image.png",
                         mask=None if mask is None else png_bytes(white_mask(mask)),
                         mask_name=None if mask is None else (request.mask_name or "mask.png"), **common)


def _inputs(request: GenerateRequest, mode: str, limits: Limits, scale: int, errors: list[dict]):
    """(image, mask) decoded (`decode_image`: as the mode's command reads its files) and checked against
    ``limits`` (the sides times ``scale``), each None where missing or at fault (its error appended to
    ``errors``)."""
    decoded = {}
    for field in ("image", "mask"):
        data = getattr(request, field)
        if data is None or field not in FIELDS[mode]:
            decoded[field] = None
            continue
        try:
            decoded[field] = decode_image(data, field, limits, scale)
        except ImageInputError as e:
            errors.append(_error(e.field, str(e)))
            decoded[field] = None
    image, mask = decoded["image"], decoded["mask"]
    if image is not None and mask is not None and mask.size != image.size:
        errors.append(_error("mask", f"mask is {mask.size[0]}×{mask.size[1]}, the image {image.size[0]}×"
                                     f"{image.size[1]}: they must match"))
    return image, mask
