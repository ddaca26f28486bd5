"""A real server over loopback for the client tests (webuiapi, openai): `create_app` under uvicorn in a
thread, on a free port, with the tiny random-weight models of `tests.tiny_models`."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from ldmkit.pipelines import InpaintingPipeline
from ldmkit.serve import create_app
from tests.tiny_models import build_tiny_model


def build_tiny_inpaint_model(folder: Path) -> Path:
    """`tests.tiny_models.build_tiny_model` on the `tiny-inpaint` preset (condition kind inpaint)."""
    return build_tiny_model(folder, "tiny-inpaint")


def inpaint_pipeline(folder: Path) -> InpaintingPipeline:
    return InpaintingPipeline.from_folder(build_tiny_inpaint_model(folder))


@contextmanager
def live_server(pipeline=None, **kwargs):
    """Serve ``create_app(pipeline, **kwargs)`` (or ``models=`` in ``kwargs``) on 127.0.0.1 and yield its
    port; stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(pipeline, **kwargs), log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
