"""AUTOMATIC1111-compatible routes, on the server's one queue with its limits and deadlines.

    POST /sdapi/v1/txt2img      A1111's body → an ldmkit generate job; {"images": [base64 PNG], "parameters",
                                "info": a JSON string with the seed(s), the ldmkit settings and command}
    POST /sdapi/v1/img2img      init_images, denoising_strength, mask: inpainting with an inpainting model,
                                else SDEdit (with a mask: only the masked pixels change)
    GET  /sdapi/v1/sd-models    every model served (`a1111_checkpoints`)
    GET  /sdapi/v1/samplers     A1111's names of the samplers this model runs (`a1111_schemas.SAMPLER_NAMES`)
    GET  /sdapi/v1/progress     the running job's progress
    POST /sdapi/v1/interrupt    stop the running job at its next sampler step
    GET  /sdapi/v1/options      sd_model_checkpoint (the current model) and the few options ldmkit has
    POST /sdapi/v1/options      sd_model_checkpoint switches the model txt2img and img2img use, server-wide
    GET  /sdapi/v1/scripts      none (clients such as webuiapi ask)

A txt2img job is the same job as ``POST /v1/generate`` with the same settings, so ``seed``, ``steps``,
``cfg_scale``, ``sampler_name`` "DDIM" and ``eta`` give the image `ldmkit generate --seed --steps --guidance
--sampler ddim --eta` writes, bit for bit ("Euler a": --sampler euler-a; "DPM++ 2M Karras", or any name with
``scheduler`` "Karras": --karras). As in A1111, ``eta`` is DDIM's η (null: 0, A1111's ``eta_ddim``); img2img's
``denoising_strength`` noises the init image part-way, for SDEdit and for an inpainting model alike, and one
with which no step would run (0, A1111's "return the input", included) is a 422 naming it before any job.
txt2img and img2img run on the current model, or on the one their ``override_settings`` name for that
request alone (with ``override_settings_restore_afterwards: false``, from then on: `a1111_checkpoints`).
``info`` and ``infotexts`` name the sampler that ran in A1111's words (`a1111_sampler`). Validation errors are
FastAPI's 422 naming the field, as A1111's are (it is a FastAPI app too), a size the model cannot draw, a
request its pipeline refuses and a field ldmkit does not read but echoes that JSON cannot write back (NaN,
Infinity, nesting over 32 deep: `echo_errors`) included; the other errors take A1111's shape ``{"error",
"detail", "body", "errors"}``: 503 when the queue is full (with Retry-After) or the server is shutting down,
504 past the deadline, 409 when interrupted, 501 for a model that cannot do what is asked, 422 for an unknown
checkpoint, 413 for a body over 16 MiB.
"""

from __future__ import annotations

import base64
import json
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from ldmkit import __version__
from ldmkit.bounds import MAX_IMAGES
from ldmkit.images import to_rgb
from ldmkit.serve.a1111_schemas import (
    SAMPLER_NAMES, Img2ImgRequest, Txt2ImgRequest, a1111_sampler, eta_errors, eta_for, not_honoured, sampler_error,
    sampler_for, sampler_names, size_for,
)
from ldmkit.serve.a1111_checkpoints import Checkpoints, add_checkpoint_routes
from ldmkit.serve.handling import WAIT_ERRORS, echo_errors, submit, wait_done
from ldmkit.serve.image_jobs import (
    ImageInputError, a1111_mask, decode_image, png_bytes, selects_nothing, strength_errors,
)
from ldmkit.serve.jobs import Job, JobQueue
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import ImageSettings, JobState, Settings, random_seed
from ldmkit.serve.served import KIND_NAMES, ServedModel, ServedModels


def _cannot(served: ServedModel, what: str) -> HTTPException:
    return HTTPException(501, f"model {served.name!r} ({KIND_NAMES[served.kind]}) cannot {what}; switch to a model "
                              f"that can (GET /sdapi/v1/sd-models, POST /sdapi/v1/options)")


def image_mode(served: ServedModel, masked: bool, blank_mask: bool = False) -> str:
    """The mode an img2img request runs on ``served``: with a mask, inpaint on an inpainting model, else
    img2img-masked (SDEdit pasted into the mask); without, img2img. A 501 where ``served`` has no pipeline for
    it (a super-resolution or colorization model; a consistency student; an inpainting model without a
    mask, ``blank_mask``: the mask sent selects no pixel, and so is none)."""
    mode = "img2img" if not masked else ("inpaint" if "inpaint" in served.pipelines else "img2img-masked")
    if pipeline_mode(mode) not in served.pipelines:
        blank = " without a mask (the mask selects no pixel, so it is none, as an empty one)" if blank_mask else ""
        raise _cannot(served, f"draw from an image{blank} (img2img needs a text model that is not a consistency "
                              f"student, or, with a mask, an inpainting model)")
    return mode


def pipeline_mode(mode: str) -> str:
    """The mode whose pipeline runs an img2img request's ``mode`` (`image_mode`): img2img-masked is SDEdit."""
    return "inpaint" if mode == "inpaint" else "img2img"


def mask_blur_not_honoured(request: Img2ImgRequest) -> dict:
    """The mask blurs given that are not 0 (``mask_blur``, ``mask_blur_x``, ``mask_blur_y``; webuiapi sends
    A1111's ``mask_blur`` 4 on every call): ldmkit uses the mask as sent, unblurred, so with a mask they are
    not honoured."""
    given = request.extra_fields()
    return {name: given[name] for name in ("mask_blur", "mask_blur_x", "mask_blur_y") if given.get(name)}


def add_a1111_routes(app: FastAPI, queue: JobQueue, models: ServedModels) -> None:
    """Add the ``/sdapi/v1`` routes to ``app``, over ``models`` and A1111's current one."""
    checkpoints = Checkpoints(models)
    add_checkpoint_routes(app, checkpoints)

    def checked(request: Txt2ImgRequest, limits: Limits, errors: list[dict],
                sized: bool = True) -> tuple[tuple[str, bool], int, int, list[str]]:
        """((sampler, karras), width, height, notes), or a 422 with ``errors`` and the request's own.
        ``sized``: check width and height (img2img draws at its image's size instead)."""
        sampler = sampler_for(request, limits)
        if sampler is None:
            errors.append(sampler_error(request, limits))
        else:
            errors += eta_errors(request, sampler[0])
        width, height, size_errors, notes = size_for(request, limits)
        errors += (size_errors if sized else []) + limits.steps_errors(request.steps)
        if request.num_images() > MAX_IMAGES:
            errors.append({"loc": ("body", "n_iter"), "type": "value_error",
                           "msg": f"batch_size × n_iter must be at most {MAX_IMAGES}, got "
                                  f"{request.batch_size} × {request.n_iter}"})
        if errors:
            raise RequestValidationError(errors)
        return sampler, width, height, notes

    def check_echo(request: Txt2ImgRequest) -> None:
        """A 422 for what the answer, which echoes the fields ldmkit does not read, could not write as JSON
        (`echo_errors`), before anything else is done with the request."""
        errors = echo_errors({**request.extra_fields(), "override_settings": request.override_settings})
        if errors:
            raise RequestValidationError(errors)

    def queued(request: Txt2ImgRequest, settings):
        """The job of ``settings``, queued (`submit`); then the request's checkpoint kept as the current model where
        it asked so (``override_settings_restore_afterwards: false``, `Checkpoints.keep_override`)."""
        job = submit(queue, settings)
        checkpoints.keep_override(request.override_settings,
                                  request.extra_fields().get("override_settings_restore_afterwards"))
        return job

    def seed_of(request: Txt2ImgRequest) -> int:
        return request.seed if request.seed >= 0 else random_seed()

    def answer(job: Job, request: Txt2ImgRequest, settings, notes: list[str], served: ServedModel,
               extra: dict, unused: dict | None = None) -> dict:
        """A1111's answer: the job's images, the request echoed, and ``info`` (``not_honoured``: `not_honoured`'s
        fields and ``unused``, those the route found it does not act on)."""
        s = settings
        n = s.num_images
        sampler_name, schedule_type = a1111_sampler(s.sampler, s.karras)
        sampler_text = sampler_name if schedule_type is None else f"{sampler_name}, Schedule type: {schedule_type}"
        eta = f"Eta DDIM: {s.eta}, " if s.eta else ""  # as A1111 writes an η other than its default
        infotext = (f"{s.prompt}\nNegative prompt: {s.negative_prompt}\nSteps: {s.steps}, Sampler: "
                    f"{sampler_text}, CFG scale: {s.guidance}, Seed: {s.seed}, "
                    f"Size: {s.width}x{s.height}, Model: {served.name}, {eta}Version: ldmkit {__version__}")
        info = {
            "prompt": s.prompt, "all_prompts": [s.prompt] * n, "negative_prompt": s.negative_prompt,
            "all_negative_prompts": [s.negative_prompt] * n, "seed": s.seed, "all_seeds": [s.seed] * n,
            "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0, "width": s.width, "height": s.height,
            "sampler_name": sampler_name, "cfg_scale": s.guidance,
            "steps": s.steps, "batch_size": request.batch_size, "sd_model_name": served.name,
            "denoising_strength": getattr(s, "strength", None), "index_of_first_image": 0,
            "infotexts": [infotext] * n, "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
            "version": f"ldmkit {__version__}",
            "not_honoured": {**not_honoured(request, set(models.names), s.sampler), **(unused or {})},
            "ldmkit": {"job": job.id, "sampler": s.sampler, "settings": s.model_dump(), "notes": notes,
                       "batch": "image k is image k of one batch drawn from seed (as ldmkit generate "
                                "--num-images draws them), not seed + k", **extra},
        }
        parameters = request.model_dump()
        if isinstance(request, Img2ImgRequest) and not request.include_init_images:
            parameters["init_images"], parameters["mask"] = None, None
        sent = request.extra_fields().get("send_images", True) is not False  # A1111: false answers no images
        return {"images": [base64.b64encode(png).decode() for png in job.images] if sent else [],
                "parameters": parameters, "info": json.dumps(info)}

    @app.post("/sdapi/v1/txt2img", responses=WAIT_ERRORS, tags=["automatic1111"])
    async def txt2img(request: Txt2ImgRequest, http: Request):
        """Text to image with A1111's fields, on the current model (or ``override_settings``'); the same job as
        POST /v1/generate, the prompts read in A1111's syntax (``prompt_syntax`` a1111: emphasis, BREAK, chunks)."""
        check_echo(request)
        served = checkpoints.for_request(request.override_settings)
        if "generate" not in served.pipelines:
            raise _cannot(served, "draw from text (txt2img needs a text model)")
        (sampler, karras), width, height, notes = checked(request, served.limits, [])
        settings = Settings(model=served.name, prompt=request.prompt, negative_prompt=request.negative_prompt,
                            steps=request.steps, guidance=request.cfg_scale, binding=0.0, cache_interval=1,
                            sampler=sampler, karras=karras, eta=eta_for(request, sampler), seed=seed_of(request),
                            num_images=request.num_images(), width=width, height=height, prompt_syntax="a1111")
        job = queued(request, settings)
        gone = await wait_done(queue, job, http)
        if gone is not None:
            return gone
        return answer(job, request, settings, notes, served, {"command": served.command(settings)})

    @app.post("/sdapi/v1/img2img", responses=WAIT_ERRORS, tags=["automatic1111"])
    async def img2img(request: Img2ImgRequest, http: Request):
        """Image to image on the current model (or ``override_settings``'): with ``mask`` and an inpainting
        model, inpainting; otherwise SDEdit (with ``mask``, only the masked pixels change); both from the image
        noised to ``denoising_strength`` (an inpainting model from noise, its own start, at 1). The images are
        read as the CLI reads its files (`decode_image`, `to_rgb`), the mask as A1111 reads it (`a1111_mask`); a
        mask that selects no pixel is no mask, as an empty one. A strength that runs no step is a 422 naming
        ``denoising_strength`` before the job is queued (`strength_errors`)."""
        check_echo(request)
        served = checkpoints.for_request(request.override_settings)
        limits = served.limits
        image_mode(served, request.mask is not None)  # a model that cannot: 501 before the images are read
        errors: list[dict] = []
        try:
            image = decode_image(request.init_images[0], "init_images", limits)
            mask = None if request.mask is None else decode_image(request.mask, "mask", limits)
        except ImageInputError as e:
            raise RequestValidationError([{"loc": ("body", e.field), "msg": str(e), "type": "value_error"}]) from None
        if mask is not None and mask.size != image.size:
            errors.append({"loc": ("body", "mask"), "type": "value_error",
                           "msg": f"mask is {mask.size[0]}×{mask.size[1]}, the image {image.size[0]}×{image.size[1]}"})
        (sampler, karras), _, _, notes = checked(request, limits, errors, sized=False)
        notes = [note for note in notes if "512" not in note]
        mask = None if mask is None else a1111_mask(mask, bool(request.inpainting_mask_invert))
        blank = mask is not None and selects_nothing(mask)
        if blank:
            mask = None
            notes.append("the mask selects no pixel: img2img without a mask, as for an empty mask (A1111 too "
                         "switches to img2img on a blank mask)")
        mode = image_mode(served, mask is not None, blank)
        strength = strength_errors(served.pipelines[pipeline_mode(mode)], "denoising_strength",
                                   request.denoising_strength, request.steps, sampler, karras)
        if strength:
            raise RequestValidationError(strength)
        unused = {} if mask is None else mask_blur_not_honoured(request)
        if mode == "img2img-masked":
            notes.append("the model is not an inpainting model: SDEdit over the whole image, then only the "
                         "mask's pixels taken from it")
        if len(request.init_images) > 1:
            notes.append(f"only the first of {len(request.init_images)} init_images was used")
        if (request.width, request.height) != image.size:
            notes.append(f"drawn at the init image's size {image.size[0]}×{image.size[1]}, not width × height")
        width, height = image.size
        settings = ImageSettings(
            model=served.name, mode=mode, prompt=request.prompt, negative_prompt=request.negative_prompt,
            steps=request.steps, guidance=request.cfg_scale, sampler=sampler, karras=karras,
            eta=eta_for(request, sampler), seed=seed_of(request),
            num_images=request.num_images(), strength=request.denoising_strength, width=width, height=height,
            image=png_bytes(to_rgb(image)), mask=None if mask is None else png_bytes(mask),
            prompt_syntax="a1111")
        job = queued(request, settings)
        gone = await wait_done(queue, job, http)
        if gone is not None:
            return gone
        return answer(job, request, settings, notes, served, {"mode": mode, "command": served.command(settings)},
                      unused)

    @app.get("/sdapi/v1/samplers", tags=["automatic1111"])
    def samplers() -> list[dict]:
        """The samplers of the current model."""
        return [{"name": name, "aliases": list(SAMPLER_NAMES[name][2]),
                 "options": {"scheduler": "karras"} if SAMPLER_NAMES[name][1] else {}}
                for name in sampler_names(checkpoints.find(checkpoints.current).limits)]

    @app.get("/sdapi/v1/progress", tags=["automatic1111"])
    def progress() -> dict:
        """The running job's progress: ``eta_relative`` the seconds it has left at its rate so far (time since it
        started / steps done × steps left; 0 before its first step), ``job_timestamp`` when it started."""
        job = queue.running()
        queued, _ = queue.load()
        fraction = 0.0 if job is None or not job.total else job.step / job.total
        started = None if job is None else job.started
        spent = 0.0 if started is None else queue.clock() - started
        eta = spent / job.step * (job.total - job.step) if started is not None and job.step else 0.0
        timestamp = "0" if started is None else time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() - spent))
        return {"progress": round(fraction, 4), "eta_relative": round(max(eta, 0.0), 2), "current_image": None,
                "textinfo": None,
                "state": {"skipped": False, "interrupted": job is not None and job.stop_request is not None,
                          "job": "" if job is None else job.id, "job_count": queued + (job is not None),
                          "job_timestamp": timestamp, "job_no": 0, "sampling_step": 0 if job is None else job.step,
                          "sampling_steps": 0 if job is None else job.total}}

    @app.post("/sdapi/v1/interrupt", tags=["automatic1111"])
    def interrupt() -> dict:
        """Stop the running job at its next sampler step (its request answers 409); waiting jobs stay."""
        job = queue.running()
        if job is not None:
            queue.cancel(job, JobState.cancelled, "interrupted (POST /sdapi/v1/interrupt)")
        return {}

    @app.get("/sdapi/v1/scripts", tags=["automatic1111"])
    def scripts() -> dict:
        return {"txt2img": [], "img2img": []}
