"""The edit routes: Prompt-to-Prompt (`PromptToPromptPipeline`) through the same queue as generating.

    GET    /v1/edit/info                        whether the model can edit, and the bounds of a request
    POST   /v1/edit/jobs                        queue an edit → 202 and its id (the page uses this)
    GET    /v1/edit/jobs/{id}                   status, step of total, queue position, image URLs
    DELETE /v1/edit/jobs/{id}                   cancel (a running edit stops at its next step)
    GET    /v1/edit/jobs/{id}/images/{name}     source.png / edit.png (source_K.png / edit_K.png for K pairs)
    POST   /v1/edit                             queue an edit and wait: each pair as base64 PNGs

Edit jobs share the one worker, the queue, its deadlines and its 503 with generate jobs, but not the
job routes: an edit's id is found under /v1/edit/jobs only. Prompts that do not align for the mode and
blend words in neither prompt are 422s naming the field, checked with the tokenizer before queueing.
A model that cannot edit (not a text model, or a consistency student, which samples with lcm only)
answers 501 on the POST routes.
"""

from __future__ import annotations

import base64
import shlex
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from ldmkit.errors import UsageError
from ldmkit.serve.edit_schemas import (
    EditImage, EditImageData, EditInfo, EditJobInfo, EditPair, EditPairData, EditRequest, EditResponse,
    EditSettings, pair_filenames,
)
from ldmkit.serve.handling import (
    PNG_RESPONSE, WAIT_ERRORS, finished_images, not_found, png_response, submit, wait_done,
)
from ldmkit.serve.job_routes import add_job_routes
from ldmkit.serve.jobs import Job, JobQueue
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import ErrorMessage, JobState
from ldmkit.storage import atomic_path

_UNAVAILABLE = {501: {"model": ErrorMessage,
                       "description": "the model served cannot edit (GET /v1/edit/info says why)"}}


def edit_pipeline_for(pipeline) -> tuple[object | None, str | None]:
    """(a `PromptToPromptPipeline` over ``pipeline``'s model, on its device and precision, None), or
    (None, why the model cannot edit). The model is shared, not copied."""
    model = getattr(pipeline, "model", None)
    if model is None or getattr(model, "tokenizer", None) is None or model.config.condition.kind != "text":
        return None, "Prompt-to-Prompt needs a text model with a tokenizer; the model served is not one"
    if getattr(pipeline, "is_student", False):
        return None, ("the model served is a consistency student (ldmkit distill), which samples with lcm only; "
                      "Prompt-to-Prompt samples with DDIM: serve its teacher to edit")
    from ldmkit.pipelines.prompt_to_prompt import PromptToPromptPipeline

    edit = PromptToPromptPipeline(model, pipeline.device, precision=getattr(pipeline, "precision", "fp32"))
    return edit, None


def edit_runner(edit_pipe) -> Callable:
    """The queue's ``run`` for `EditSettings`: one call, the images as [source 0, edit 0, source 1, …]."""

    def run(settings: EditSettings, on_step):
        out = edit_pipe(settings.source_prompt, settings.target_prompt, mode=settings.mode,
                        cross_replace_steps=settings.cross_replace, self_replace_steps=settings.self_replace,
                        local_blend_words=list(settings.blend_words) or None,
                        blend_threshold=settings.blend_threshold, steps=settings.steps, guidance=settings.guidance,
                        seed=settings.seed, num_images=settings.num_images, callback=on_step)
        return [image for pair in zip(out.source_images, out.edited_images) for image in pair]

    return run


def edit_saver(folder: str | Path) -> Callable[[Job], None]:
    """``on_done`` for edit jobs: ``{job id}_source.png``, ``{job id}_edit.png`` (``_source_K``, ``_edit_K``
    for several pairs) and ``{job id}.json`` (the settings). Names come from the job id only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def save(job: Job) -> None:
        names = [name for pair in pair_filenames(job.settings.num_images) for name in pair]
        for name, png in zip(names, job.images):
            with atomic_path(folder / f"{job.id}_{name}") as tmp:
                tmp.write_bytes(png)
        with atomic_path(folder / f"{job.id}.json") as tmp:
            tmp.write_text(job.settings.model_dump_json(indent=2) + "\n")

    return save


def edit_command(settings: EditSettings, model: str | None) -> str:
    """The `ldmkit edit` call that writes the same images (bit for bit) into ``out/`` as source.png and
    edit.png (source_K.png, edit_K.png for several pairs); ``model`` None: the shipped model (no --model).
    Text goes in as ``--option=value`` or after ``--``, so that a prompt starting with "-" is no option."""
    s = settings
    argv = ["ldmkit", "edit", *([] if model is None else [f"--model={model}"]), "--out-dir=out/",
            f"--mode={s.mode}", f"--cross-replace={s.cross_replace!r}", f"--self-replace={s.self_replace!r}"]
    if s.blend_words:
        argv += [f"--blend={' '.join(s.blend_words)}", f"--blend-threshold={s.blend_threshold!r}"]
    argv += [f"--steps={s.steps}", f"--guidance={s.guidance!r}", f"--seed={s.seed}", f"--num-images={s.num_images}"]
    return shlex.join([*argv, "--", s.source_prompt, s.target_prompt])


def prompt_errors(tokenizer, request: EditRequest) -> list[dict]:
    """FastAPI-style error entries for prompts that do not align for the mode (on the prompt at fault)
    and for blend words in neither prompt (on ``blend_words[k]``); empty when the edit can run."""
    from ldmkit.diffusion.prompt_to_prompt import align, blend_selections, parse_weights

    def error(loc: tuple, e: Exception | str) -> list[dict]:
        msg = str(e).replace("--mode ", "mode ")  # the CLI's wording; here the field is "mode"
        return [{"loc": ("body", *loc), "msg": msg, "type": "value_error"}]

    source, target = request.source_prompt, request.target_prompt
    try:
        if parse_weights(source)[1]:
            return error(("source_prompt",), "weights such as red(2) go in the target prompt, not the source")
    except UsageError as e:
        return error(("source_prompt",), e)
    try:
        align(tokenizer, source, target, request.mode)
    except UsageError as e:
        return error(("target_prompt",), e)
    errors = []
    for k, word in enumerate(request.blend_words):
        try:
            blend_selections(tokenizer, source, target, [word])
        except UsageError as e:
            errors += error(("blend_words", k), e)
    return errors


def add_edit_routes(app: FastAPI, queue: JobQueue, edit_pipe, reason: str | None, limits: Limits,
                    command_model: str | None) -> None:
    """Add the edit routes to ``app``. ``edit_pipe`` None: the model cannot edit, for ``reason``.
    ``command_model``: the ``--model`` of the reproduce command (None: the shipped model)."""
    info_of_model = EditInfo.of(limits, reason)

    def settings_for(request: EditRequest) -> EditSettings:
        if edit_pipe is None:
            raise HTTPException(501, reason)
        errors = limits.steps_errors(request.steps) + prompt_errors(edit_pipe.model.tokenizer, request)
        if errors:
            raise RequestValidationError(errors)
        return request.resolve()

    def find(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None or not isinstance(job.settings, EditSettings):
            raise not_found(job_id, None if job is None else f"/v1/jobs/{job_id}")
        return job

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
                           settings=job.settings, command=edit_command(job.settings, command_model),
                           pairs=pairs_of(job), error=job.error, elapsed_s=round(job.elapsed(queue.clock()), 3))

    @app.get("/v1/edit/info", response_model=EditInfo)
    def edit_info() -> EditInfo:
        return info_of_model

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
        return EditResponse(id=job.id, settings=job.settings, command=edit_command(job.settings, command_model),
                            pairs=pairs, elapsed_s=round(job.elapsed(queue.clock()), 3))
