"""What the job routes of every family share: find the model a request names (422 for one not served), queue
a job (503 when the queue is full or the server is shutting down), wait for it without holding a thread (504
past its deadline, 409 cancelled, 422 refused by the pipeline as the request's mistake, 500 failed, 503 when
the server shuts down, 499 when the client left), and serve one of a finished job's images; and refuse, before
any job, what an answer could not echo (`echo_errors`)."""

from __future__ import annotations

import asyncio
import math

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from ldmkit.serve.jobs import SHUTTING_DOWN, Job, JobQueue, QueueClosed, QueueFull
from ldmkit.serve.schemas import ErrorMessage, JobState
from ldmkit.serve.served import ServedModel, ServedModels

QUEUE_FULL = {503: {"model": ErrorMessage, "description": "queue full (the Retry-After header says when to retry), "
                                                          "or the server is shutting down"}}
NOT_FOUND = {404: {"model": ErrorMessage, "description": "no such job (or it was forgotten)"}}
WAIT_ERRORS = {
    **QUEUE_FULL,
    504: {"model": ErrorMessage, "description": "the job did not finish within the server's timeout"},
    409: {"model": ErrorMessage, "description": "the job was cancelled"},
    500: {"model": ErrorMessage, "description": "the model failed"},
}


def requested_model(models: ServedModels, name: str | None, loc: tuple = ("body", "model")) -> ServedModel:
    """The model called ``name`` (None: the first served); a 422 naming the field ``loc`` and the allowed
    names for one not served."""
    served = models.get(name)
    if served is None:
        raise RequestValidationError([{"loc": loc, "msg": models.unknown(name), "type": "value_error"}])
    return served


def submit(queue: JobQueue, settings) -> Job:
    """Queue a job for ``settings``; HTTP 503 with Retry-After when the queue is full, without once the server
    is shutting down."""
    try:
        return queue.submit(settings)
    except QueueFull as e:
        raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after)}) from None
    except QueueClosed:
        raise HTTPException(503, SHUTTING_DOWN) from None


def not_found(job_id: str, elsewhere: str | None = None) -> HTTPException:
    """404 for an unknown job id, or (``elsewhere``: the route of its kind) one of the other kind of job."""
    if elsewhere is not None:
        return HTTPException(404, f"job {job_id!r} is followed at {elsewhere}, not here")
    return HTTPException(404, f"no job {job_id!r}: unknown, or one of the oldest finished jobs, which the server "
                              f"forgets")


def find_job(queue, job_id: str, kind, elsewhere: str) -> Job:
    """The job ``job_id`` of ``queue`` whose settings are of type(s) ``kind``; 404 otherwise, naming
    ``elsewhere`` (the route prefix of the other kind, e.g. "/v1/jobs") when the job is of another kind."""
    job = queue.get(job_id)
    if job is None or not isinstance(job.settings, kind):
        raise not_found(job_id, None if job is None else f"{elsewhere}/{job_id}")
    return job


# How deep the lists and objects of a field ldmkit echoes but does not read may nest (A1111's deepest, a
# ControlNet unit in alwayson_scripts, nests 5); the JSON parser reads far deeper than an answer can write.
MAX_ECHO_DEPTH = 32


def echo_errors(fields: dict, loc: tuple = ("body",)) -> list[dict]:
    """FastAPI-style entries (``loc`` + the path to the value) for what the answer that echoes ``fields`` (the
    fields a route accepts without reading them: A1111's and OpenAI's extra fields, ``override_settings``)
    could not write as JSON: a non-finite number (NaN, Infinity: Python's ``json.dumps`` writes them, the
    parser reads them, JSON has none), text holding a lone surrogate (not UTF-8), and lists and objects
    nested deeper than `MAX_ECHO_DEPTH`. At most one entry per field; checked before a job is queued, so that
    such a request is a 4xx at once instead of a job whose answer fails."""
    errors = []
    for name, value in fields.items():
        field = (*loc, name)
        stack = [(value, field, 1)]
        while stack:
            value, where, depth = stack.pop()
            msg = None
            if isinstance(value, float) and not math.isfinite(value):
                spelt = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
                msg = (f"{spelt} is not a JSON number (Python's json.dumps writes it unless allow_nan=False); "
                       f"send a finite number")
            elif isinstance(value, str) and not _is_utf8(value):
                msg = "text holding a lone surrogate (\\ud800 … \\udfff) is not UTF-8"
            elif isinstance(value, (dict, list)) and depth > MAX_ECHO_DEPTH:
                msg = f"lists and objects nested more than {MAX_ECHO_DEPTH} deep are not taken"
                where = field  # the field, not a path 32 deep
            elif isinstance(value, dict):
                bad_key = next((key for key in value if not _is_utf8(key)), None)
                if bad_key is not None:
                    msg = "a key holding a lone surrogate (\\ud800 … \\udfff) is not UTF-8"
                stack += [(item, (*where, key), depth + 1) for key, item in value.items()]
            elif isinstance(value, list):
                stack += [(item, (*where, k), depth + 1) for k, item in enumerate(value)]
            if msg is not None:
                errors.append({"loc": where, "msg": msg, "type": "value_error"})
                break
    return errors


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


PNG_RESPONSE = {200: {"content": {"image/png": {}}, "description": "the PNG"}, **NOT_FOUND}


def finished_images(job: Job, job_id: str) -> list[bytes]:
    """The PNGs of a finished ``job``; 404 while it is not done."""
    if job.state is not JobState.done:
        raise HTTPException(404, f"job {job_id} has no images: it is {job.state.value}")
    return job.images


def png_response(png: bytes, filename: str) -> Response:
    """One of a job's images as an inline PNG named ``filename``, cacheable (a job's images never change)."""
    return Response(png, media_type="image/png", headers={
        "Content-Disposition": f'inline; filename="{filename}"',
        "Cache-Control": "private, max-age=3600, immutable",
    })


async def wait_done(queue: JobQueue, job: Job, http: Request) -> Response | None:
    """Wait until ``job`` is done: None then. When the client hangs up first, the job is cancelled (the one
    worker is freed for others) and the answer is a 499 `Response`, which nobody reads. Otherwise an
    `HTTPException`: 503 once the queue closes (the server is shutting down: at once, not when the running
    job stops), 504 past the deadline (a running job is stopped at its next step), 409 cancelled, 500 failed;
    or a `RequestValidationError` (422) with the message of a job the pipeline refused as the request's
    mistake (`Job.refused`). Cancelled itself (the server gave up waiting), it cancels the job too."""
    try:
        while not job.state.finished and not queue.closed:
            left = job.deadline - queue.clock()
            if left <= 0:
                queue.cancel(job, JobState.timeout, queue.timeout_message())
                await wait_finished(job, 1.0)  # a running job stops at its next step; don't wait long
                break
            await wait_finished(job, min(left, 0.5))
            if not job.state.finished and await http.is_disconnected():
                queue.cancel(job, message="the client went away")
                return Response(status_code=499)  # nginx's "client closed request"
    except asyncio.CancelledError:
        queue.cancel(job, message="the request was cancelled")
        raise
    return _outcome(queue, job)


def _outcome(queue: JobQueue, job: Job) -> None:
    """None for a job done; the error its request answers otherwise (`wait_done`)."""
    state = job.state  # read once: the worker may finish the job while this runs
    if state is JobState.done:
        return None
    if queue.closed and state in (JobState.queued, JobState.running, JobState.cancelled):
        raise HTTPException(503, SHUTTING_DOWN)
    if job.refused:
        raise RequestValidationError([{"loc": ("body",), "msg": job.error, "type": "value_error"}])
    if state is JobState.timeout or not state.finished:  # not finished: still in its last step
        raise HTTPException(504, queue.timeout_message())
    raise HTTPException(409 if state is JobState.cancelled else 500, job.error)


async def wait_finished(job: Job, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``job`` to finish without holding a thread; True if it did."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def wake() -> None:  # runs in the worker thread
        try:
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    job.add_listener(wake)
    try:
        await asyncio.wait_for(finished, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        job.remove_listener(wake)
