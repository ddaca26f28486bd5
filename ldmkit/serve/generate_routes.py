"""ldmkit's own job routes, for every model served and each of its modes (`ldmkit.serve.modes`):

    GET    /v1/ldmkit/models                 every model: kind, modes, the fields each mode takes, limits
    POST   /v1/jobs                          queue a job → 202 and its id (the page uses this)
    GET    /v1/jobs/{id}                     status, step of total, queue position, image URLs
    DELETE /v1/jobs/{id}                     cancel (a running job stops at its next step)
    GET    /v1/jobs/{id}/images/{k}.png      image k of a finished job
    POST   /v1/generate                      queue a job and wait: the images as base64 PNGs

A request's ``model`` picks the model (default: the first served; one not served is a 422 listing the
names) and its ``mode`` what to do with it (default: the model's first mode). Each image comes with the
`ldmkit` command that writes it again (`ldmkit.serve.commands`).
"""

from __future__ import annotations

import base64
from functools import partial

from fastapi import FastAPI, HTTPException, Request, Response

from ldmkit.serve import schemas
from ldmkit.serve.handling import (
    PNG_RESPONSE, WAIT_ERRORS, find_job, finished_images, png_response, requested_model, submit, wait_done,
)
from ldmkit.serve.job_routes import add_job_routes
from ldmkit.serve.jobs import Job, JobQueue
from ldmkit.serve.modes import FIELDS, REQUIRED, mode_guidance, resolve
from ldmkit.serve.outputs import image_filename
from ldmkit.serve.schemas import (
    ClassSettings, GeneratedImage, GenerateRequest, GenerateResponse, ImageInfo, ImageSettings, JobInfo, JobState,
    ModelInfo, ModelList, Settings,
)
from ldmkit.serve.served import ServedModel, ServedModels

JOB_SETTINGS = (Settings, ClassSettings, ImageSettings)  # the jobs of these routes (edits have their own)
# What a consistency student (`ldmkit distill`) refuses: it has no unconditional pass for a negative prompt or
# binding guidance to steer, and its few steps are too far apart to reuse features (`check_student_options`).
STUDENT_REFUSES = ("negative_prompt", "binding", "cache_interval", "cache_depth")


def accepted_fields(served: ServedModel, mode: str) -> list[str]:
    """The request fields ``mode`` of ``served`` takes: the mode's own (`FIELDS`), less those a consistency
    student refuses where the model is one, and ``eta`` (DDIM's η) where the model does not sample with ddim
    (the page shows only these, so that it offers nothing that fails)."""
    student = getattr(served.pipelines.get(mode), "is_student", False) is True
    refused = (STUDENT_REFUSES if student else ()) + (() if "ddim" in served.limits.samplers else ("eta",))
    return ["model", "mode", *(f for f in FIELDS[mode] if f not in refused)]


def model_info(served: ServedModel, default: bool) -> ModelInfo:
    """What GET /v1/ldmkit/models says of one model."""
    limits = served.limits
    return ModelInfo(
        id=served.name, kind=served.kind, default=default, modes=list(served.modes),
        accepts={mode: accepted_fields(served, mode) for mode in served.modes},
        required={mode: list(REQUIRED[mode]) for mode in served.modes},
        default_guidance={mode: mode_guidance(mode, limits) for mode in served.modes}, classes=list(served.classes),
        sr_factor=served.sr_factor, can_edit=served.edit_pipeline is not None,
        default_size=limits.default_size, latent_factor=limits.latent_factor, max_size=limits.max_size,
        min_size=limits.min_size, lowest_side=limits.lowest_side,
        samplers=list(limits.samplers), default_steps=limits.default_steps,
        max_steps=min(schemas.MAX_STEPS, limits.num_timesteps), max_images=schemas.MAX_IMAGES,
        max_prompt_chars=schemas.MAX_PROMPT_CHARS, max_guidance=schemas.MAX_GUIDANCE,
        max_cache_depth=limits.blocks_per_level,
    )


def add_generate_routes(app: FastAPI, queue: JobQueue, models: ServedModels) -> None:
    """Add the routes above to ``app``, for the jobs of ``models``."""

    def settings_for(request: GenerateRequest):
        return resolve(request, requested_model(models, request.model))

    def images_of(job: Job) -> list[ImageInfo]:
        if job.state is not JobState.done:
            return []
        served = models.get(job.settings.model)
        command, read_as = served.command(job.settings), served.read_as(job.settings)
        return [ImageInfo(index=k, seed=job.settings.seed, url=f"/v1/jobs/{job.id}/images/{k}.png",
                          filename=image_filename(job.settings.seed, k), command=command, read_as=read_as)
                for k in range(len(job.images))]

    def info(job: Job) -> JobInfo:
        state = job.state  # read once: the worker may move it on while this runs
        return JobInfo(id=job.id, status=state, step=job.step, total=job.total,
                       queue_position=queue.position(job) if state is JobState.queued else None,
                       settings=job.settings, images=images_of(job), error=job.error,
                       elapsed_s=round(job.elapsed(queue.clock()), 3))

    @app.get("/v1/ldmkit/models", response_model=ModelList)
    def ldmkit_models() -> ModelList:
        """Every model served, the default first: its kind, its modes, the fields each mode takes, its limits."""
        return ModelList(models=[model_info(served, k == 0) for k, served in enumerate(models)])

    find = partial(find_job, queue, kind=JOB_SETTINGS, elsewhere="/v1/edit/jobs")
    add_job_routes(app, "/v1/jobs", "job", GenerateRequest, JobInfo, queue, settings_for, find, info)

    @app.get("/v1/jobs/{job_id}/images/{index}.png", response_class=Response, responses=PNG_RESPONSE)
    def get_image(job_id: str, index: int) -> Response:
        job = find(job_id)
        images = finished_images(job, job_id)
        if not 0 <= index < len(images):
            raise HTTPException(404, f"job {job_id} has images 0 … {len(images) - 1}, not {index}")
        return png_response(images[index], image_filename(job.settings.seed, index))

    @app.post("/v1/generate", response_model=GenerateResponse, responses=WAIT_ERRORS)
    async def generate(request: GenerateRequest, http: Request) -> GenerateResponse:
        """Queue a job and wait for its images (base64 PNGs, with the settings that reproduce them)."""
        job = submit(queue, settings_for(request))
        gone = await wait_done(queue, job, http)
        if gone is not None:
            return gone
        images = [GeneratedImage(**image.model_dump(), png_base64=base64.b64encode(job.images[image.index]).decode())
                  for image in images_of(job)]
        return GenerateResponse(id=job.id, settings=job.settings, images=images,
                                elapsed_s=round(job.elapsed(queue.clock()), 3))
