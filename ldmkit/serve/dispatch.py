"""One queue, several kinds of job: call the function registered for the type of a job's settings."""

from __future__ import annotations

from typing import Callable

from ldmkit.errors import UsageError


def by_settings_type(table: dict[type, Callable | None], settings_of: Callable = lambda x: x) -> Callable:
    """A function that calls ``table[type(settings_of(first argument))]`` with all its arguments: the
    queue's ``run`` and ``on_done`` serve generate, edit and image jobs alike. A kind whose entry is None
    raises `UsageError` (the routes refuse such requests before they are queued)."""

    def call(first, *rest):
        kind = type(settings_of(first))
        fn = table.get(kind)
        if fn is None:
            raise UsageError(f"this server cannot run {kind.__name__} jobs")
        return fn(first, *rest)

    return call
