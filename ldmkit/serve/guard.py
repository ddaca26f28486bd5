"""Two guards for a server with no authentication, in front of the app.

`HostCheck`: a page on another site can make the browser send requests to ``localhost`` under its own
domain name, by pointing that name at 127.0.0.1 (DNS rebinding); the browser then lets the page read
the answers. Such requests carry the attacker's name in ``Host``, so the server answers only requests
whose ``Host`` is an address it listens on, ``localhost``, or a name given with ``--allowed-host``.

`guarded_protocol`: uvicorn closes a connection idle after a response, but not one that never
completes its request (a slow-loris client sending headers a byte at a time, or nothing at all); this
protocol closes a connection whose request headers have not all arrived within ``header_timeout``
seconds. (A body that stops half way is `BodyLimit`'s ``timeout``.)
"""

from __future__ import annotations

import ipaddress
import json

HEADER_TIMEOUT = 10.0  # seconds from connecting (or from the last response) to a complete request head
BODY_TIMEOUT = 30.0  # seconds for a request body to arrive whole


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without the port (``[::1]:80`` → ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed_hosts(bound: str, extra: list[str] | tuple[str, ...] = ()) -> set[str] | None:
    """The ``Host`` names a server listening on ``bound`` answers: that address, the loopback names
    when it is loopback or every interface, and ``extra``; None (no check) when ``extra`` holds "*"."""
    if "*" in extra:
        return None
    names = {host_name(h) for h in extra} | {host_name(bound)}
    try:
        address = ipaddress.ip_address(host_name(bound))
    except ValueError:
        address = None
    if address is None or address.is_loopback or address.is_unspecified:
        names |= {"localhost", "127.0.0.1", "::1"}
    return names


class HostCheck:
    """ASGI middleware: 400 for a request whose ``Host`` is not in ``allowed``. With ``any_ip`` (a
    server on every interface, which cannot know its addresses), any IP literal is accepted too: a
    rebinding attack needs a name."""

    def __init__(self, app, allowed: set[str], any_ip: bool = False):
        self.app = app
        self.allowed = allowed
        self.any_ip = any_ip

    def _ok(self, host: str) -> bool:
        if host in self.allowed:
            return True
        if self.any_ip:
            try:
                ipaddress.ip_address(host)
                return True
            except ValueError:
                return False
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if self._ok(host_name(header)):
            return await self.app(scope, receive, send)
        payload = json.dumps({"detail": f"Host {header!r} is not served here (allowed: "
                                        f"{', '.join(sorted(self.allowed))}; add names with --allowed-host)"}).encode()
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send({"type": "http.response.start", "status": 400, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": payload})


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT):
    """The uvicorn protocol class (``uvicorn.Config(http=…)``) that closes a connection whose request
    head has not arrived ``header_timeout`` seconds after it opened or after its last response."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

    
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_timer = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(self.header_timeout, self._expire)

        def _disarm(self) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request head arrived whole: its cycle has begun
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head must come in time too

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    GuardedH11Protocol.header_timeout = header_timeout
    return GuardedH11Protocol
