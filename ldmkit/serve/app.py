"""The FastAPI app: routes that validate a request, hand it to the `JobQueue` and report on it.

Routes (the OpenAPI schema at /openapi.json describes each):

    GET    /                                 the web page
    GET    /healthz                          liveness and queue length
    …/v1/ldmkit/models, …/v1/jobs…           ldmkit's own jobs and POST /v1/generate, every model and mode
                                             (`ldmkit.serve.generate_routes`)
    …/v1/edit…                               Prompt-to-Prompt edits, on the same queue (`ldmkit.serve.edit_routes`)
    …/sdapi/v1/…                             the AUTOMATIC1111 web UI's API (`ldmkit.serve.a1111`)
    GET /v1/models, …/v1/images/…            OpenAI's models list and images API (`ldmkit.serve.openai_images`)

One server serves one model or several (`ldmkit.serve.served`: all loaded at start, all in memory); every
request route takes a model by name, the first being the default. Status codes a client should expect:
413 for a body over the limit, 422 naming the field for any invalid value (an unknown model included, and
a request the pipeline refuses; a JSON body sent with another Content-Type than application/json is told
so), 503 with Retry-After when the queue is full (without, once the server is shutting down), 504 when a job
misses its deadline. Errors take each route family's shape: OpenAI's under /v1/images and /v1/models (400 for
a 422), A1111's under /sdapi (its validation errors are FastAPI's, as in A1111), FastAPI's elsewhere.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ldmkit import __version__
from ldmkit.errors import UsageError
from ldmkit.serve.a1111 import add_a1111_routes
from ldmkit.serve.a1111_checkpoints import A1111Error, a1111_error_body, a1111_error_response, is_a1111_path
from ldmkit.serve.body_limit import BodyLimit, fastapi_error_body
from ldmkit.serve.commands import SHIPPED, reproduce_command  # noqa: F401  (here since the server began)
from ldmkit.serve.dispatch import by_settings_type
from ldmkit.serve.edit import edit_saver
from ldmkit.serve.edit_routes import add_edit_routes
from ldmkit.serve.edit_schemas import EditSettings
from ldmkit.serve.generate_routes import add_generate_routes
from ldmkit.serve.guard import BODY_TIMEOUT, HostCheck
from ldmkit.serve.head import HeadAsGet
from ldmkit.serve.jobs import JobQueue
from ldmkit.serve.limits import Limits
from ldmkit.serve.openai_images import (
    add_openai_routes, http_error_response, is_openai_path, openai_error_body, validation_error_response,
)
from ldmkit.serve.outputs import folder_saver
from ldmkit.serve.schemas import IMAGE_MODES, ClassSettings, Health, ImageSettings, Settings
from ldmkit.serve.served import ServedModel, ServedModels, served_model

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
# Bodies that carry images (base64 or multipart): a 1024² PNG and its mask, with base64's 4/3.
MAX_IMAGE_BODY_BYTES = 16 * 1024 * 1024
# txt2img too: A1111 clients send images in fields ldmkit lists as not honoured (alwayson_scripts' ControlNet).
IMAGE_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/v1/images/edits")
JOB_ROUTES = ("/v1/jobs", "/v1/generate")  # image routes too where a model served has an image mode


def create_app(
    pipeline=None,
    *,
    models: Sequence[ServedModel] | None = None,
    model_name: str = "model",
    limits: Limits | None = None,
    edit_pipeline=None,
    inpaint_pipeline=None,
    adapters: tuple[str, ...] = (),
    max_queue: int = 8,
    timeout: float = 300.0,
    output_dir: str | Path | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    allowed_hosts: set[str] | None = None,
    any_ip_host: bool = False,
    body_timeout: float | None = BODY_TIMEOUT,
    max_image_body_bytes: int = MAX_IMAGE_BODY_BYTES,
    cors_allow_origins: Sequence[str] = (),
) -> FastAPI:
    """The app serving one ``pipeline`` (a `TextToImagePipeline`, any ldmkit pipeline, or anything called as
    `TextToImagePipeline`) as ``model_name``, or several ``models`` (`served_model`; the first is the default
    of a request that names none). Give one or the other.

    For one ``pipeline`` (`served_model`'s options): ``limits`` defaults to `Limits.from_pipeline` (a stand-in
    pipeline without ``.model`` must pass them); ``edit_pipeline``: what runs edit jobs (called as
    `PromptToPromptPipeline`, with its ``.model``; None: one over the pipeline's model, where it can edit);
    ``inpaint_pipeline``: an `InpaintingPipeline` for A1111 img2img with a mask and OpenAI image edits (None: a
    masked img2img is SDEdit with the unmasked pixels kept, and edits are refused); ``adapters``: the
    ``--lora=…`` / ``--embedding=…`` options the model was loaded with, which the commands shown repeat.
    ``model_name`` `SHIPPED` names the shipped model, whose `ldmkit generate` command needs no --model.

    For the server: ``max_queue`` jobs may wait, whichever model they ask for; each has ``timeout`` seconds
    from submission to finish. With ``output_dir`` every finished job's images and settings are also written
    there. The worker thread starts and stops with the app's lifespan (uvicorn, or ``with TestClient(app)``).
    ``allowed_hosts``: answer only requests whose ``Host`` is one of these names (`ldmkit.serve.guard`; None:
    any), and with ``any_ip_host`` any IP address too. ``body_timeout``: seconds a request body may take to
    arrive (then 408). Bodies of the routes that carry images (`IMAGE_ROUTES`, and `JOB_ROUTES` where a model
    has an image mode) may be ``max_image_body_bytes``, the others ``max_body_bytes``. ``cors_allow_origins``:
    the origins (``"http://localhost:3000"``; ``"*"``: any) whose pages a browser lets read the answers, as
    A1111's ``--cors-allow-origins`` (Starlette's `CORSMiddleware`, behind the ``Host`` check; none: no CORS
    headers, the browser's same-origin rule alone). HEAD is answered as GET without the body on every route.
    """
    if (pipeline is None) == (models is None):
        raise UsageError("create_app: give a pipeline or models=, not both or neither")
    if models is None:
        models = [served_model(model_name, pipeline, command_model=None if model_name == SHIPPED else model_name,
                               limits=limits, edit_pipeline=edit_pipeline, inpaint_pipeline=inpaint_pipeline,
                               adapters=adapters)]
    served = ServedModels(models)
    on_done = None
    if output_dir is not None:
        saver = folder_saver(output_dir)
        on_done = by_settings_type({Settings: saver, ClassSettings: saver, ImageSettings: saver,
                                    EditSettings: edit_saver(output_dir)}, settings_of=lambda job: job.settings)
    queue = JobQueue(lambda settings, on_step: served.get(settings.model).run(settings, on_step),
                     max_queue=max_queue, timeout=timeout, on_done=on_done)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        yield
        await asyncio.to_thread(queue.close)

    app = FastAPI(title="ldmkit", summary="Latent diffusion models: text to image and the other modes",
                  version=__version__, lifespan=lifespan)
    app.state.queue = queue
    app.state.models = served
    takes_images = any(mode in model.pipelines for model in served for mode in IMAGE_MODES)
    image_routes = IMAGE_ROUTES + (JOB_ROUTES if takes_images else ())
    app.add_middleware(HeadAsGet)  # added first: runs last, on the request the routes see
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout,
                       larger={route: max_image_body_bytes for route in image_routes}, error_body=_refusal_body)
    if cors_allow_origins:  # outside BodyLimit, so that its 413 and 408 carry the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_allow_origins), allow_methods=["*"],
                           allow_headers=["*"])
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts, any_ip=any_ip_host)  # added last: runs first
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # FastAPI's HTTPException is one too
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        queued, running = queue.load()
        return Health(queued=queued, running=running, max_queue=queue.max_queue)

    add_generate_routes(app, queue, served)
    add_edit_routes(app, queue, served)
    add_a1111_routes(app, queue, served)
    add_openai_routes(app, queue, served)
    return app


def begin_shutdown(app: FastAPI) -> None:
    """Answer the requests waiting for jobs of ``app`` (`create_app`'s) now: its queue takes no more jobs, the
    waiting ones end and the running one stops at its next step, and their requests answer 503 "the server is
    shutting down" in their family's shape. Returns at once; the lifespan's end waits for the worker."""
    app.state.queue.close(wait=0)


def closing_server(config):
    """A uvicorn ``Server`` for ``config``, whose app is `create_app`'s, that begins its shutdown (Ctrl-C,
    SIGTERM, ``should_exit``) with `begin_shutdown`: waiting clients get their 503 at once, instead of their
    requests being cancelled when uvicorn's graceful-shutdown timeout runs out."""
    import uvicorn

    class ClosingServer(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            begin_shutdown(self.config.app)
            await super().shutdown(sockets)

    return ClosingServer(config)


def _refusal_body(path: str, status: int, kind: str, message: str) -> dict:
    """The JSON of a body refused by `BodyLimit` (413, 408), in the shape of ``path``'s route family."""
    if is_openai_path(path):
        return openai_error_body(status, message, None, kind)
    if is_a1111_path(path):
        return a1111_error_body(message)
    return fastapi_error_body(path, status, kind, message)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """The app's HTTP errors and the router's (404 for no route, 405), in OpenAI's shape under /v1/images and
    /v1/models (`ldmkit.serve.openai_images`), A1111's under /sdapi, FastAPI's elsewhere; a body nested too deep
    for the JSON parser (FastAPI's 400 "error parsing the body" from a RecursionError) says so."""
    path = request.url.path
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body"
        exc = StarletteHTTPException(400, "the request body nests lists and objects too deep for the JSON parser; "
                                          "no field ldmkit reads nests more than a few levels")
    if isinstance(exc, A1111Error) or is_a1111_path(path):
        return a1111_error_response(exc)
    if is_openai_path(path):
        return http_error_response(_openai_route_error(request, exc))
    return await http_exception_handler(request, exc)


def _openai_route_error(request: Request, exc: StarletteHTTPException) -> StarletteHTTPException:
    """The router's 404 or 405 with OpenAI's message naming the method and path (and for 405 the methods
    allowed); any other error as it is."""
    if type(exc) is not StarletteHTTPException or exc.status_code not in (404, 405):
        return exc
    url = f"Invalid URL ({request.method} {request.url.path})"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return StarletteHTTPException(405, f"{url}: method not allowed; allowed: {allowed}", headers=exc.headers)
    return StarletteHTTPException(404, f"{url}: no such route", headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without the echoed ``input``: echoing a rejected value back can fail (a NaN is not
    JSON) and makes an over-long prompt travel twice. ``loc`` names the field, ``msg`` says why. Under
    /v1/images and /v1/models, OpenAI's 400 instead."""
    errors = _not_json_errors(request, exc.errors())
    if is_openai_path(request.url.path):
        return validation_error_response(errors)
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


def _not_json_errors(request: Request, errors: Sequence[dict]) -> list[dict]:
    """``errors``, where a JSON route's body was refused as no object because it came with another
    ``Content-Type`` (FastAPI reads a body as JSON only as application/json or without one; curl -d sends
    application/x-www-form-urlencoded), saying that JSON with Content-Type: application/json is expected."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if not media or media == "application/json" or media.endswith("+json"):
        return list(errors)
    msg = (f"the body must be JSON sent with Content-Type: application/json, not {media} (curl: -H 'Content-Type: "
           f"application/json')")
    return [{**e, "msg": msg, "type": "content_type"}
            if tuple(e["loc"]) == ("body",) and e["type"] in ("model_attributes_type", "dict_type") else e
            for e in errors]

