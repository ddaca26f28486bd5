"""OpenAI-compatible images routes, on the server's one queue with its limits and deadlines.

    GET  /v1/models                      OpenAI's list of every model served: {"object": "list", "data": [{"id",
                                         "object", "created", "owned_by"}]}
    GET  /v1/models/{id}                 one model, OpenAI's model object (404 model_not_found for another id)
    POST /v1/images/generations          prompt, n, size "WxH", response_format b64_json | url, model (a text model)
    POST /v1/images/edits                multipart: image, mask (transparent = repaint), prompt, n, size, model, …;
                                         needs an inpainting model
    GET  /v1/images/files/{job}/{k}.png  the PNG a ``url`` answer points to (kept with the server's last jobs)

Answers are ``{"created", "data": [{"b64_json" | "url", "revised_prompt": null}], "ldmkit": {…}}``:
``ldmkit`` carries the seed, the settings that reproduce the images, the fields given but not honoured
(``quality``, ``style``, …) and ``notes`` (an edit of n > 1 images: only image 0 is redrawn from the settings,
`EDIT_BATCH_NOTE`). ``model`` picks the model by its id; without one, the first model served. Every
error under /v1/images and /v1/models, validation included, is OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}`` (`openai_error_response`), so the ``openai`` client raises its usual exceptions (400
`BadRequestError`, 404, 503 after its retries).
"""

from __future__ import annotations

import base64
import re
import time

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from ldmkit.bounds import MAX_IMAGES
from ldmkit.images import to_rgb
from ldmkit.serve.handling import echo_errors, finished_images, not_found, png_response, submit, wait_done
from ldmkit.serve.image_jobs import (
    ImageInputError, decode_image, mask_from_alpha, png_bytes, selects_nothing, white_mask,
)
from ldmkit.serve.jobs import Job, JobQueue
from ldmkit.serve.limits import Limits
from ldmkit.serve.modes import GUIDANCE
from ldmkit.serve.multipart_form import FormError, parse_form
from ldmkit.serve.schemas import MAX_PROMPT_CHARS, ClassSettings, ImageSettings, Settings, random_seed
from ldmkit.serve.served import KIND_NAMES, ServedModel, ServedModels

PREFIX = "/v1/images"
MODELS_PATH = "/v1/models"
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
# Fields OpenAI defines that ldmkit does not act on, with the values that ask for nothing.
NEUTRAL = {"quality": (None, "auto", "standard"), "style": (None,), "user": None, "background": (None, "auto"),
           "moderation": (None, "auto"), "output_format": (None, "png"), "output_compression": (None, 100),
           "input_fidelity": (None,), "partial_images": (None, 0), "stream": (None, False)}
# What an edit of n > 1 images says of them: they are one batch, which no single-image call draws again.
EDIT_BATCH_NOTE = ("the {n} images are one batch drawn from seed: these settings redraw image 0 only, since "
                   "POST /v1/generate (mode inpaint) and `ldmkit inpaint` draw one image a call; ask n=1 for "
                   "each image you mean to redraw")


class OpenAIError(HTTPException):
    """An error answered in OpenAI's shape: ``param`` names the field at fault, ``code`` a short kind."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(status, message, headers=headers)
        self.param, self.code = param, code


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object: ``type`` invalid_request_error for a 4xx, server_error for a 5xx."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                          headers: dict | None = None) -> JSONResponse:
    return JSONResponse(openai_error_body(status, message, param, code), status_code=status, headers=headers)


def is_openai_path(path: str) -> bool:
    """Whether ``path`` is one of OpenAI's routes (/v1/images…, /v1/models, /v1/models/…), answered in its shape."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in (PREFIX, MODELS_PATH))


def validation_error_response(errors: list[dict]) -> JSONResponse:
    """The first of FastAPI's validation errors as OpenAI's 400: ``param`` is the field's name (None for the body
    as a whole), and the message starts with it."""
    first = errors[0]
    if first.get("type") == "json_invalid":  # loc is ("body", the character offset)
        return openai_error_response(400, f"the request body is not valid JSON: {_json_error(first)}", None,
                                     "invalid_json")
    loc = list(first["loc"])
    param = ".".join(str(part) for part in (loc[1:] if loc[:1] == ["body"] else loc)) or None
    message = first["msg"] if param is None or first["msg"].startswith(f"{param} ") else f"{param}: {first['msg']}"
    return openai_error_response(400, message, param, "invalid_value")


def _json_error(error: dict) -> str:
    """What the JSON parser said of a body it could not read, and where."""
    reason = (error.get("ctx") or {}).get("error") or error["msg"]
    offset = error["loc"][-1] if isinstance(error["loc"][-1], int) else None
    return reason if offset is None else f"{reason} (at character {offset})"


def http_error_response(exc: HTTPException) -> JSONResponse:
    """``exc`` (FastAPI's or Starlette's `HTTPException`, an `OpenAIError`) in OpenAI's shape."""
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return openai_error_response(exc.status_code, detail, getattr(exc, "param", None), getattr(exc, "code", None),
                                 headers=exc.headers)


class GenerationRequest(BaseModel):
    """The JSON body of ``POST /v1/images/generations``; other OpenAI fields are accepted (`NEUTRAL`)."""

    model_config = ConfigDict(extra="allow")

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: StrictStr | None = None
    n: StrictInt | None = Field(1, ge=1, le=MAX_IMAGES)
    size: StrictStr | None = Field(None, description='"WxH" (multiples of the latent factor) or "auto"')
    response_format: StrictStr | None = Field(None, pattern="^(url|b64_json)$")


class EditForm(GenerationRequest):
    """The text fields of ``POST /v1/images/edits``: a form's values are text, so ``n`` is read from its digits
    ("2"), and what is not an integer of 1 … `MAX_IMAGES` ("-1", "2.5", "two") is refused as such."""

    n: int | None = Field(1, ge=1, le=MAX_IMAGES)


def edit_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The L mask (white = repaint) of an edit of ``image`` with ``mask`` (None: none sent). OpenAI's convention:
    the fully transparent pixels of the mask, or without one of the image, are repainted; a mask without
    transparency (no alpha channel, or a fully opaque one) follows ldmkit's, white repaints (`white_mask`).
    An image without a mask or transparent pixels, a mask of another size, and a mask that selects no pixel
    are OpenAI's 400 naming ``mask``."""
    if mask is None:
        selected = mask_from_alpha(image)
        if selected is None or selects_nothing(selected):
            raise OpenAIError(400, "the image has no fully transparent pixel to edit; send a mask: its fully "
                                   "transparent pixels are repainted, or, in a mask without transparency, its white "
                                   "ones", "mask", "missing_required")
        return selected
    if mask.size != image.size:
        raise OpenAIError(400, f"mask is {mask.size[0]}x{mask.size[1]}, the image {image.size[0]}x{image.size[1]}: "
                               f"they must match", "mask", "invalid_image")
    selected = mask_from_alpha(mask)
    selected = white_mask(mask) if selected is None else selected
    if selects_nothing(selected):
        raise OpenAIError(400, "the mask selects no pixel to edit: repainted are its fully transparent pixels, or, "
                               "in a mask without transparency, its white ones", "mask", "invalid_image")
    return selected


def not_honoured(extra: dict) -> dict:
    return {k: v for k, v in extra.items() if NEUTRAL.get(k, ()) is not None and v not in NEUTRAL.get(k, ())}


def add_openai_routes(app: FastAPI, queue: JobQueue, models: ServedModels) -> None:
    """Add the OpenAI routes to ``app``, over ``models``: generations on a text model, edits on an
    inpainting one (any other answers 400 naming the models that can)."""
    created = int(time.time())

    def size_of(size: str | None, limits: Limits) -> tuple[int, int]:
        if size is None or size == "auto":
            return limits.default_size, limits.default_size
        match = _SIZE.match(size)
        allowed = (f'"WxH" with sides multiples of {limits.latent_factor} up to {limits.max_size}, '
                   f'{limits.smallest_sizes()} the smallest (trained at {limits.default_size}x{limits.default_size}), '
                   f'or "auto"')
        if match is None:
            raise OpenAIError(400, f"size {size!r} is not {allowed}", "size", "invalid_value")
        width, height = int(match.group(1)), int(match.group(2))
        if limits.image_size_errors(width, height):
            raise OpenAIError(400, f"size {size!r} is not allowed: {allowed}", "size", "invalid_value")
        return width, height

    def model_for(name: str | None, mode: str, what: str) -> ServedModel:
        """The model a request names (None: the first), which must run ``mode`` (``what`` it is called)."""
        served = models.get(name)
        if served is None:
            raise OpenAIError(400, f"model {name!r} is not served here; this server serves "
                                   f"{', '.join(repr(n) for n in models.names)} (GET /v1/models)", "model",
                              "model_not_found")
        if mode not in served.pipelines:
            can = ", ".join(repr(n) for n in models.having(mode)) or "none"
            raise OpenAIError(400, f"model {served.name!r} ({KIND_NAMES[served.kind]}) is not {what}; models here "
                                   f"that are: {can}", "model", "model_not_supported")
        return served

    async def answer(job: Job, http: Request, response_format: str | None, settings, ignored: dict,
                     notes: list[str] = ()):
        gone = await wait_done(queue, job, http)
        if gone is not None:
            return gone
        if response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(png).decode(), "revised_prompt": None} for png in job.images]
        else:
            base = str(http.base_url).rstrip("/")
            data = [{"url": f"{base}{PREFIX}/files/{job.id}/{k}.png", "revised_prompt": None}
                    for k in range(len(job.images))]
        return {"created": int(time.time()), "data": data,
                "ldmkit": {"job": job.id, "seed": settings.seed, "settings": settings.model_dump(),
                           "not_honoured": ignored, "notes": list(notes)}}

    def model_object(model: ServedModel) -> dict:
        return {"id": model.name, "object": "model", "created": created, "owned_by": "ldmkit"}

    @app.get(MODELS_PATH, tags=["openai"])
    def model_list() -> dict:
        """OpenAI's model list; ldmkit's own details of each model are at GET /v1/ldmkit/models."""
        return {"object": "list", "data": [model_object(model) for model in models]}

    @app.get(MODELS_PATH + "/{model_id:path}", tags=["openai"])
    def model_retrieve(model_id: str) -> dict:
        """One model served, as OpenAI's model object; 404 ``model_not_found`` for an id not served."""
        served = models.get(model_id)
        if served is None:
            raise OpenAIError(404, f"the model {model_id!r} does not exist here; this server serves "
                                   f"{', '.join(repr(n) for n in models.names)} (GET /v1/models)", "model",
                              "model_not_found")
        return model_object(served)

    @app.post(f"{PREFIX}/generations", tags=["openai"])
    async def generations(request: GenerationRequest, http: Request):
        """Text to image: the same job as POST /v1/generate (ddim or the model's default sampler, its default
        steps and guidance (4, or a consistency student's own), a random seed reported under ``ldmkit``). A field given that ldmkit does not read, which
        the answer echoes, is a 400 naming it where JSON cannot write it back (`echo_errors`: NaN, Infinity, …)."""
        errors = echo_errors(request.model_extra or {})
        if errors:
            return validation_error_response(errors)
        served = model_for(request.model, "generate", "a text-to-image model")
        limits = served.limits
        width, height = size_of(request.size, limits)
        settings = Settings(model=served.name, prompt=request.prompt, negative_prompt="",
                            steps=limits.default_steps, guidance=limits.default_guidance, binding=0.0, cache_interval=1,
                            sampler=limits.samplers[0], seed=random_seed(), num_images=request.n or 1, width=width,
                            height=height)
        job = submit(queue, settings)
        return await answer(job, http, request.response_format, settings, not_honoured(request.model_extra or {}))

    @app.post(f"{PREFIX}/edits", tags=["openai"])
    async def edits(http: Request):
        """Inpainting (multipart/form-data): ``image`` (PNG), ``mask`` (`edit_mask`: PNG whose transparent pixels
        are repainted, or white ones in a mask without transparency; without one, the image's own transparent
        pixels), ``prompt``, ``n``, ``size``, ``response_format``, ``model``. Needs an inpainting model; drawn
        as `ldmkit inpaint` draws with the model's default steps and sampler, guidance 1 (its default) and the
        seed reported. The image is read as the CLI reads a file (`decode_image`, `to_rgb`)."""
        try:
            form = parse_form(await http.body(), http.headers.get("content-type", ""))
            text = {name: parts[0].text() for name, parts in form.items() if parts[0].filename is None}
        except FormError as e:
            raise OpenAIError(400, str(e), None, "invalid_request") from None
        fields = {k: v for k, v in text.items() if k not in ("image", "image[]", "mask")}
        try:
            request = EditForm(**fields)
        except ValidationError as e:
            return validation_error_response(e.errors())
        served = model_for(request.model, "inpaint", "an inpainting model, which image edits need (condition "
                                                     "kind inpaint, e.g. `ldmkit train --preset shapes64-inpaint`)")
        limits = served.limits
        images = form.get("image") or form.get("image[]")
        if not images:
            raise OpenAIError(400, "image is required: a PNG file field named image", "image", "missing_required")
        try:
            image = decode_image(images[0].data, "image", limits)
            mask_source = decode_image(form["mask"][0].data, "mask", limits) if "mask" in form else None
        except ImageInputError as e:
            raise OpenAIError(400, str(e), e.field, "invalid_image") from None
        mask = edit_mask(image, mask_source)
        if request.size not in (None, "auto") and size_of(request.size, limits) != image.size:
            raise OpenAIError(400, f"size {request.size!r} differs from the image's {image.size[0]}x{image.size[1]}; "
                                   f"edits keep the image's size", "size", "invalid_value")
        settings = ImageSettings(model=served.name, mode="inpaint", prompt=request.prompt, negative_prompt="",
                                 steps=limits.default_steps, guidance=GUIDANCE["inpaint"], sampler=limits.samplers[0],
                                 seed=random_seed(), num_images=request.n or 1, strength=1.0,
                                 width=image.size[0], height=image.size[1], image=png_bytes(to_rgb(image)),
                                 mask=png_bytes(mask))
        job = submit(queue, settings)
        notes = [] if settings.num_images == 1 else [EDIT_BATCH_NOTE.format(n=settings.num_images)]
        return await answer(job, http, request.response_format, settings, not_honoured(request.model_extra or {}),
                            notes)

    @app.get(f"{PREFIX}/files/{{job_id}}/{{index}}.png", response_class=Response, tags=["openai"])
    def image_file(job_id: str, index: int) -> Response:
        job = queue.get(job_id)
        if job is None or not isinstance(job.settings, (Settings, ClassSettings, ImageSettings)):
            raise OpenAIError(404, not_found(job_id).detail, "job_id", "not_found")
        images = finished_images(job, job_id)
        if not 0 <= index < len(images):
            raise OpenAIError(404, f"job {job_id} has images 0 … {len(images) - 1}, not {index}", "index", "not_found")
        return png_response(images[index], f"{job.settings.seed}_{index:03d}.png")

