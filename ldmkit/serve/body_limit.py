"""Refuse request bodies over a size limit with 413, before the app parses them.

A JSON request here is a prompt and a few numbers (well under 2 KiB), so a large body is a mistake or
an attack; reading it whole into memory before refusing it is what this avoids. The middleware reads
at most ``max_bytes + 1`` bytes, whether or not the client sent a Content-Length, then replays the
buffered body to the app.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

# (path, status, kind, message) → the JSON body of a refusal
ErrorBody = Callable[[str, int, str, str], dict]


def fastapi_error_body(path: str, status: int, kind: str, message: str) -> dict:
    """A FastAPI-style error naming ``body``: ``{"detail": [{"loc": ["body"], "type", "msg"}]}``."""
    return {"detail": [{"loc": ["body"], "type": kind, "msg": message}]}


class BodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` get 413, with ``error_body``'s JSON (by default a
    FastAPI-style error naming ``body``)."""

    def __init__(self, app, max_bytes: int, timeout: float | None = None, larger: dict[str, int] | None = None,
                 error_body: ErrorBody = fastapi_error_body):
        """``timeout``: seconds the whole body may take to arrive; a client that stops half way (or
        trickles it) gets 408 and the connection closes, instead of holding it open for ever.
        ``larger``: route path → its own limit, for the routes whose bodies carry images. ``error_body``:
        the JSON of a refusal for the request's path (each route family's own error shape)."""
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.larger = dict(larger or {})
        self.error_body = error_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.larger.get(path, self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, path, limit=limit)
        chunks, size = [], 0
        deadline = None if self.timeout is None else asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                message = await (receive() if deadline is None else
                                 asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time())))
            except asyncio.TimeoutError:
                return await self._refuse(send, path, 408, "timeout", f"the request body did not arrive within "
                                                                      f"{self.timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._refuse(send, path, limit=limit)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _refuse(self, send, path: str, status: int = 413, kind: str = "too_large", message: str | None = None,
                      limit: int | None = None):
        message = message or f"the request body is larger than {limit or self.max_bytes} bytes"
        payload = json.dumps(self.error_body(path, status, kind, message)).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": payload})
