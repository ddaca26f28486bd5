"""Refuse request bodies over a size limit with 413, before the app parses them.

A JSON request here is a prompt and a few numbers (well under 2 KiB), so a large body is a mistake or
an attack; reading it whole into memory before refusing it is what this avoids. The middleware reads
at most ``max_bytes + 1`` bytes, whether or not the client sent a Content-Length, then replays the
buffered body to the app.
"""

from __future__ import annotations

import asyncio
import json


class BodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` get 413 and a FastAPI-style error naming ``body``."""

    def __init__(self, app, max_bytes: int, timeout: float | None = None, larger: dict[str, int] | None = None):
        """``timeout``: seconds the whole body may take to arrive; a client that stops half way (or
        trickles it) gets 408 and the connection closes, instead of holding it open for ever.
        ``larger``: route path → its own limit, for the routes whose bodies carry images."""
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.larger = dict(larger or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, limit=limit)
        chunks, size = [], 0
        deadline = None if self.timeout is None else asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                message = await (receive() if deadline is None else
                                 asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time())))
            except asyncio.TimeoutError:
                return await self._refuse(send, 408, "timeout", f"the request body did not arrive within "
                                                                f"{self.timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._refuse(send, limit=limit)
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

    async def _refuse(self, send, status: int = 413, kind: str = "too_large", message: str | None = None,
                      limit: int | None = None):
        payload = json.dumps({"detail": [{
            "loc": ["body"], "type": kind,
            "msg": message or f"the request body is larger than {limit or self.max_bytes} bytes",
        }]}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": payload})
