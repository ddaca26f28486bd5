"""The routes of a queued job resource, the same for generating and editing: ``POST {path}`` queues a job and
answers 202 at once, ``GET {path}/{job_id}`` follows it, ``DELETE {path}/{job_id}`` cancels it (a waiting job at
once, a running one after its current sampler step).

No ``from __future__ import annotations`` here: FastAPI reads the request and response models from the
annotations of the functions made below, so they must be the classes themselves, not their names.
"""

from typing import Callable

from fastapi import FastAPI

from ldmkit.serve.handling import NOT_FOUND, QUEUE_FULL, submit
from ldmkit.serve.jobs import Job, JobQueue


def add_job_routes(app: FastAPI, path: str, what: str, request_model: type, info_model: type, queue: JobQueue,
                   settings_for: Callable, find: Callable[[str], Job], info: Callable[[Job], object],
                   responses: dict | None = None) -> None:
    """Register the three routes of ``path`` for jobs of ``what`` ("job", "edit"): ``settings_for(request)``
    checks and resolves a request, ``find(job_id)`` raises 404 for an unknown job, ``info(job)`` describes one."""

    def create(request: request_model) -> info_model:
        return info(submit(queue, settings_for(request)))

    def get(job_id: str) -> info_model:
        return info(find(job_id))

    def cancel(job_id: str) -> info_model:
        job = find(job_id)
        queue.cancel(job)
        return info(job)

    article = "an" if what[0] in "aeiou" else "a"
    create.__doc__ = f"Queue {article} {what} and answer at once; follow it with GET {path}/{{id}}."
    cancel.__doc__ = f"Cancel {article} {what}: a waiting one at once, a running one after its current sampler step."
    name = what.replace(" ", "_")
    app.post(path, status_code=202, response_model=info_model, responses={**QUEUE_FULL, **(responses or {})},
             name=f"create_{name}")(create)
    app.get(f"{path}/{{job_id}}", response_model=info_model, responses=NOT_FOUND, name=f"get_{name}")(get)
    app.delete(f"{path}/{{job_id}}", response_model=info_model, responses=NOT_FOUND, name=f"cancel_{name}")(cancel)
