"""HEAD answered as GET without the body (RFC 9110 §9.3.2), for every route: FastAPI's routes take only the
methods they are declared with, so without this a HEAD of ``/healthz`` or of an image is a 405."""

from __future__ import annotations


class HeadAsGet:
    """ASGI middleware: a HEAD request runs as the GET of the same URL, whose status and headers (its
    ``Content-Length`` included) are sent and whose body is dropped; a route without GET answers 405 as for GET."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def without_body(message):
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)
