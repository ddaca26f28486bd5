"""The FastAPI app: routes that validate a request, hand it to the `JobQueue` and report on it.

Routes (the OpenAPI schema at /openapi.json describes each):

    GET    /                                 the web page
    GET    /healthz                          liveness and queue length
    GET    /v1/ldmkit/models                 the model served, and what a request may ask of it
    POST   /v1/jobs                          queue a job → 202 and its id (the page uses this)
    GET    /v1/jobs/{id}                     status, step of total, queue position, image URLs
    DELETE /v1/jobs/{id}                     cancel (a running job stops at its next step)
    GET    /v1/jobs/{id}/images/{k}.png      image k of a finished job
    POST   /v1/generate                      queue a job and wait: the images as base64 PNGs
    …/v1/edit…                               Prompt-to-Prompt edits, on the same queue (`ldmkit.serve.edit`)
    …/sdapi/v1/…                             the AUTOMATIC1111 web UI's API (`ldmkit.serve.a1111`)
    GET /v1/models, …/v1/images/…            OpenAI's models list and images API (`ldmkit.serve.openai_images`)

Status codes a client should expect: 413 for a body over the limit, 422 naming the field for any
invalid value, 503 with Retry-After when the queue is full, 504 when a job misses its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import shlex
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ldmkit import __version__
from ldmkit.serve import schemas
from ldmkit.serve.a1111 import add_a1111_routes
from ldmkit.serve.body_limit import BodyLimit
from ldmkit.serve.dispatch import by_settings_type
from ldmkit.serve.edit import add_edit_routes, edit_pipeline_for, edit_runner, edit_saver
from ldmkit.serve.edit_schemas import EditSettings
from ldmkit.serve.guard import BODY_TIMEOUT, HostCheck
from ldmkit.serve.handling import (
    PNG_RESPONSE, WAIT_ERRORS, finished_images, not_found, png_response, submit, wait_done,
)
from ldmkit.serve.image_jobs import ImageSettings, image_pipelines_for, image_runner, karras_option
from ldmkit.serve.job_routes import add_job_routes
from ldmkit.serve.jobs import Job, JobQueue
from ldmkit.serve.limits import Limits
from ldmkit.serve.openai_images import (
    add_openai_routes, http_error_response, is_openai_path, validation_error_response,
)
from ldmkit.serve.outputs import folder_saver, image_filename
from ldmkit.serve.schemas import (
    GeneratedImage, GenerateRequest, GenerateResponse, Health, ImageInfo, JobInfo, JobState,
    ModelInfo, ModelList, Settings,
)

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
# Routes whose bodies carry images (base64 or multipart): a 1024² PNG and its mask, with base64's 4/3.
MAX_IMAGE_BODY_BYTES = 16 * 1024 * 1024
IMAGE_ROUTES = ("/sdapi/v1/img2img", "/v1/images/edits")


def pipeline_runner(pipe):
    """The queue's ``run``: one pipeline call per job, so a job's images are one batch from one seed."""

    def run(settings: Settings, on_step):
        return pipe(
            settings.prompt, num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            generator=settings.seed, num_images_per_prompt=settings.num_images, sampler=settings.sampler, negative_prompt=settings.negative_prompt,
            height=settings.height, width=settings.width, callback=on_step, binding=settings.binding,
            cache_interval=settings.cache_interval, **karras_option(settings),
        )

    return run


SHIPPED = "shapes64 (shipped)"  # the model name of the shipped model, whose command needs no --model


def reproduce_command(settings: Settings, model: str, adapters: tuple[str, ...] = ()) -> str:
    """The `ldmkit generate` call that writes the same images (bit for bit) into ``out/`` (which may
    already hold other images: --overwrite). The shipped model (`SHIPPED`) is generate's default, so
    its command has no --model. ``adapters``: the server's ``--lora=…`` / ``--embedding=…`` options.

    Text goes in as ``--option=value`` or after ``--`` so that a prompt starting with "-" is not
    read as an option.
    """
    model_option = [] if model == SHIPPED else [f"--model={model}"]
    argv = ["ldmkit", "generate", *model_option, *adapters, "--out=out/", "--overwrite",
            f"--steps={settings.steps}", f"--guidance={settings.guidance!r}", f"--sampler={settings.sampler}",
            f"--seed={settings.seed}", f"--num-images={settings.num_images}", f"--height={settings.height}",
            f"--width={settings.width}"]
    if settings.negative_prompt:
        argv.append(f"--negative-prompt={settings.negative_prompt}")
    if settings.binding:
        argv.append(f"--binding={settings.binding!r}")
    if settings.cache_interval != 1:
        argv.append(f"--cache-interval={settings.cache_interval}")
    if settings.karras:
        argv.append("--karras")
    return shlex.join([*argv, "--", settings.prompt])


def create_app(
    pipeline,
    *,
    model_name: str = "model",
    limits: Limits | None = None,
    max_queue: int = 8,
    timeout: float = 300.0,
    output_dir: str | Path | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    allowed_hosts: set[str] | None = None,
    any_ip_host: bool = False,
    body_timeout: float | None = BODY_TIMEOUT,
    edit_pipeline=None,
    inpaint_pipeline=None,
    max_image_body_bytes: int = MAX_IMAGE_BODY_BYTES,
    adapters: tuple[str, ...] = (),
) -> FastAPI:
    """The app serving ``pipeline`` (a `TextToImagePipeline`, or anything called the same way).

    ``limits`` defaults to `Limits.from_pipeline` (a stand-in pipeline without ``.model`` must pass
    them). ``max_queue`` jobs may wait; each has ``timeout`` seconds from submission to finish.
    With ``output_dir`` every finished job's images and settings are also written there.
    The worker thread starts and stops with the app's lifespan (uvicorn, or ``with TestClient(app)``).
    ``allowed_hosts``: answer only requests whose ``Host`` is one of these names (`ldmkit.serve.guard`;
    None: any), and with ``any_ip_host`` any IP address too. ``body_timeout``: seconds a request body
    may take to arrive (then 408). ``edit_pipeline``: what runs edit jobs (called as
    `PromptToPromptPipeline`, with its ``.model``); None: one over ``pipeline``'s model, where it can edit.
    ``inpaint_pipeline``: an `InpaintingPipeline` for A1111 img2img with a mask and OpenAI image edits (None:
    a masked img2img is SDEdit with the unmasked pixels kept, and edits are refused). Bodies of the image
    routes (`IMAGE_ROUTES`) may be ``max_image_body_bytes``, the others ``max_body_bytes``.
    ``adapters``: the ``--lora=…`` / ``--embedding=…`` options the model was loaded with, which the commands
    shown to reproduce an image repeat.
    """
    limits = limits if limits is not None else Limits.from_pipeline(pipeline)
    edit_reason = None
    if edit_pipeline is None:
        edit_pipeline, edit_reason = edit_pipeline_for(pipeline)
    img2img_pipeline, inpaint_pipeline = image_pipelines_for(pipeline, inpaint_pipeline)
    run = by_settings_type({
        Settings: pipeline_runner(pipeline),
        EditSettings: edit_runner(edit_pipeline) if edit_pipeline is not None else None,
        ImageSettings: image_runner(img2img_pipeline, inpaint_pipeline),
    })
    on_done = None
    if output_dir is not None:
        saver = folder_saver(output_dir)
        on_done = by_settings_type({Settings: saver, ImageSettings: saver, EditSettings: edit_saver(output_dir)},
                                   settings_of=lambda job: job.settings)
    queue = JobQueue(run, max_queue=max_queue, timeout=timeout, on_done=on_done)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        yield
        await asyncio.to_thread(queue.close)

    app = FastAPI(title="ldmkit", summary="Text-to-image with a latent diffusion model",
                  version=__version__, lifespan=lifespan)
    app.state.queue = queue
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout,
                       larger={route: max_image_body_bytes for route in IMAGE_ROUTES})
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts, any_ip=any_ip_host)  # added last: runs first
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---------------------------------------------------------------------------------------------
    # helpers shared by the routes

    def settings_for(request: GenerateRequest) -> Settings:
        errors = request.limit_errors(limits)
        if errors:
            raise RequestValidationError(errors)
        return request.resolve(limits)

    def find(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None or not isinstance(job.settings, Settings):
            raise not_found(job_id, None if job is None else f"/v1/edit/jobs/{job_id}")
        return job

    def images_of(job: Job) -> list[ImageInfo]:
        if job.state is not JobState.done:
            return []
        command = reproduce_command(job.settings, model_name, adapters)
        return [ImageInfo(index=k, seed=job.settings.seed, url=f"/v1/jobs/{job.id}/images/{k}.png",
                          filename=image_filename(job.settings.seed, k), command=command)
                for k in range(len(job.images))]

    def info(job: Job) -> JobInfo:
        state = job.state  # read once: the worker may move it on while this runs
        return JobInfo(id=job.id, status=state, step=job.step, total=job.total,
                       queue_position=queue.position(job) if state is JobState.queued else None,
                       settings=job.settings, images=images_of(job), error=job.error,
                       elapsed_s=round(job.elapsed(queue.clock()), 3))

    # ---------------------------------------------------------------------------------------------
    # routes

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        queued, running = queue.load()
        return Health(queued=queued, running=running, max_queue=queue.max_queue)

    @app.get("/v1/ldmkit/models", response_model=ModelList)
    def models() -> ModelList:
        return ModelList(models=[ModelInfo(
            id=model_name, default_size=limits.default_size, latent_factor=limits.latent_factor,
            max_size=limits.max_size, samplers=list(limits.samplers), default_steps=limits.default_steps,
            max_steps=min(schemas.MAX_STEPS, limits.num_timesteps), max_images=schemas.MAX_IMAGES,
            max_prompt_chars=schemas.MAX_PROMPT_CHARS, max_guidance=schemas.MAX_GUIDANCE,
        )])

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

    add_edit_routes(app, queue, edit_pipeline, edit_reason, limits, None if model_name == SHIPPED else model_name)
    add_a1111_routes(app, queue, limits, model_name,
                     lambda settings: reproduce_command(settings, model_name, adapters),
                     img2img_pipeline, inpaint_pipeline)
    add_openai_routes(app, queue, limits, model_name, inpaint_pipeline)
    return app


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """OpenAI's error shape under /v1/images (`ldmkit.serve.openai_images`), FastAPI's elsewhere."""
    if is_openai_path(request.url.path):
        return http_error_response(exc)
    return await http_exception_handler(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without the echoed ``input``: echoing a rejected value back can fail (a NaN is not
    JSON) and makes an over-long prompt travel twice. ``loc`` names the field, ``msg`` says why. Under
    /v1/images, OpenAI's 400 instead."""
    if is_openai_path(request.url.path):
        return validation_error_response(exc.errors())
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)

