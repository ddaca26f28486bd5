"""The edit routes: Prompt-to-Prompt (`ldmkit.serve.edit`) through the same queue as generating.

    GET    /v1/edit/info?model=NAME             whether the model can edit, and the bounds of a request
    POST   /v1/edit/jobs                        queue an edit → 202 and its id (the page uses this)
    GET    /v1/edit/jobs/{id}                   status, step of total, queue position, image URLs
    DELETE /v1/edit/jobs/{id}                   cancel (a running edit stops at its next step)
    GET    /v1/edit/jobs/{id}/images/{name}     source.png / edit.png (source_K.png / edit_K.png for K pairs)
    POST   /v1/edit                             queue an edit and wait: each pair as base64 PNGs

A request's ``model`` picks the model (default: the first served). Edit jobs share the one worker, the
queue, its deadlines and its 503 with generate jobs, but not the job routes: an edit's id is found under
/v1/edit/jobs only. Prompts that do not align for the mode and blend words in neither prompt are 422s
naming the field, checked with the tokenizer before queueing. A model that cannot edit (not a text model,
or a consistency student, which samples with lcm only) answers 501 on the POST routes.
"""

from __future__ import annotations

import base64
from functools import partial

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from ldmkit.serve.edit import edit_command, prompt_errors
from ldmkit.serve.edit_schemas import (
    EditImage, EditImageData, EditInfo, EditJobInfo, EditPair, EditPairData, EditRequest, EditResponse,
    EditSettings, pair_filenames,
)
from ldmkit.serve.handling import (
    PNG_RESPONSE, WAIT_ERRORS, find_job, finished_images, png_response, requested_model, submit, wait_done,
)
from ldmkit.serve.job_routes import add_job_routes
from ldmkit.serve.jobs import Job, JobQueue
from ldmkit.serve.schemas import ErrorMessage, JobState
from ldmkit.serve.served import ServedModels

_UNAVAILABLE = {501: {"model": ErrorMessage,
                       "description": "the model cannot edit (GET /v1/edit/info says why)"}}


def add_edit_routes(app: FastAPI, queue: JobQueue, models: ServedModels) -> None:
    """Add the edit routes to ``app``, for the edits of ``models``."""

    def settings_for(request: EditRequest) -> EditSettings:
        served = requested_model(models, request.model)
        if served.edit_pipeline is None:
            raise HTTPException(501, served.edit_reason)
        errors = served.limits.steps_errors(request.steps) + prompt_errors(served.edit_pipeline.model.tokenizer,
                                                                           request)
        if errors:
            raise RequestValidationError(errors)
        return request.resolve(served.name)

    def command(settings: EditSettings) -> str:
        served = models.get(settings.model)
        return edit_command(settings, served.command_model, served.load_options)

    def pairs_of(job: Job) -> list[EditPair]:
        if job.state is not JobState.done:
            return []
        base = f"/v1/edit/jobs/{job.id}/images"
        return [EditPair(index=k, source=EditImage(url=f"{base}/{source}", filename=source),
                         edit=EditImage(url=f"{base}/{edit}", filename=edit))
                for k, (source, edit) in enumerate(pair_filenames(job.settings.num_images))]

    def info(job: Job) -> EditJobInfo:
        state = job.state  # read once: the worker may move it on while this runs
        return EditJobInfo(id=job.id, status=state, step=job.step, total=job.total,
                           queue_position=queue.position(job) if state is JobState.queued else None,
                           settings=job.settings, command=command(job.settings),
                           pairs=pairs_of(job), error=job.error, elapsed_s=round(job.elapsed(queue.clock()), 3))

    @app.get("/v1/edit/info", response_model=EditInfo)
    def edit_info(model: str | None = None) -> EditInfo:
        """Whether ``model`` (default: the first served) can edit, and the bounds of an edit request."""
        served = requested_model(models, model, ("query", "model"))
        return EditInfo.of(served.name, served.limits, served.edit_reason)

    find = partial(find_job, queue, kind=EditSettings, elsewhere="/v1/jobs")
    add_job_routes(app, "/v1/edit/jobs", "edit", EditRequest, EditJobInfo, queue, settings_for, find, info,
                   responses=_UNAVAILABLE)

    @app.get("/v1/edit/jobs/{job_id}/images/{name}", response_class=Response, responses=PNG_RESPONSE)
    def get_edit_image(job_id: str, name: str) -> Response:
        job = find(job_id)
        images = finished_images(job, job_id)
        names = [n for pair in pair_filenames(job.settings.num_images) for n in pair]
        if name not in names:
            raise HTTPException(404, f"job {job_id} has images {', '.join(names)}, not {name!r}")
        return png_response(images[names.index(name)], name)

    @app.post("/v1/edit", response_model=EditResponse, responses={**WAIT_ERRORS, **_UNAVAILABLE})
    async def edit(request: EditRequest, http: Request) -> EditResponse:
        """Queue an edit and wait for its pairs (base64 PNGs, with the settings that reproduce them)."""
        job = submit(queue, settings_for(request))
        gone = await wait_done(queue, job, http)
        if gone is not None:
            return gone

        def data(image: EditImage, png: bytes) -> EditImageData:
            return EditImageData(**image.model_dump(), png_base64=base64.b64encode(png).decode())

        pairs = [EditPairData(index=p.index, source=data(p.source, job.images[2 * p.index]),
                              edit=data(p.edit, job.images[2 * p.index + 1])) for p in pairs_of(job)]
        return EditResponse(id=job.id, settings=job.settings, command=command(job.settings),
                            pairs=pairs, elapsed_s=round(job.elapsed(queue.clock()), 3))
