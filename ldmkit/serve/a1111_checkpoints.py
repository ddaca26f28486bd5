"""AUTOMATIC1111's checkpoints: the models served, by name, and the server-wide current one.

    GET  /sdapi/v1/sd-models    every model served (title = model_name = the name given to `ldmkit serve`)
    GET  /sdapi/v1/options      sd_model_checkpoint (the current model) and the few options ldmkit has
    POST /sdapi/v1/options      sd_model_checkpoint: switch the model txt2img and img2img use

As in A1111 the current model is the server's, not a client's: a switch holds for every later request
from anyone until the next switch, and starts as the first model served. ``override_settings:
{"sd_model_checkpoint": NAME}`` in a txt2img or img2img body uses NAME for that request alone, or, with
``override_settings_restore_afterwards: false``, makes NAME the current model from that request on (as
POST /sdapi/v1/options would, once the request is valid and its job queued; A1111 keeps the override
so). Nothing is
loaded by a switch: every model is in memory from the start (`ldmkit.serve.served`). A name not served is
answered in A1111's error shape, ``{"error", "detail", "body", "errors"}`` (`A1111Error`), with status 422
(A1111 itself answers an unknown checkpoint in POST options with 500).
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ldmkit.serve.handling import echo_errors
from ldmkit.serve.served import ServedModel, ServedModels


class A1111Error(HTTPException):
    """An error answered as A1111's API answers one (its ``api_middleware``): ``error`` the exception's kind,
    ``detail`` and ``errors`` the message, ``body`` empty."""

    def __init__(self, status: int, message: str, kind: str = "RuntimeError"):
        super().__init__(status, message)
        self.kind = kind


A1111_PREFIX = "/sdapi/"


def is_a1111_path(path: str) -> bool:
    """Whether ``path`` is one of A1111's routes, whose errors other than validation take A1111's shape."""
    return path.startswith(A1111_PREFIX)


def a1111_error_body(message: str, kind: str = "HTTPException") -> dict:
    """A1111's error object (its ``api_middleware``'s): ``error`` the exception's kind, ``detail`` and ``errors``
    the message, ``body`` empty."""
    return {"error": kind, "detail": message, "body": "", "errors": message}


def a1111_error_response(exc: HTTPException) -> JSONResponse:
    """``exc`` in A1111's shape: an `A1111Error` with its kind, any other HTTP error as A1111 answers an
    ``HTTPException``."""
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(a1111_error_body(detail, getattr(exc, "kind", "HTTPException")), status_code=exc.status_code,
                        headers=exc.headers)


class Checkpoints:
    """The models served and A1111's current one (``current``, a name)."""

    def __init__(self, models: ServedModels):
        self.models = models
        self.current = models.default.name

    def find(self, name) -> ServedModel:
        """The model called ``name``; `A1111Error` (422) naming the models served for any other."""
        served = self.models.get(name) if isinstance(name, str) else None
        if served is None:
            raise A1111Error(422, f"model {name!r} not found; this server serves "
                                  f"{', '.join(repr(n) for n in self.models.names)} (GET /sdapi/v1/sd-models)")
        return served

    def for_request(self, override_settings: dict) -> ServedModel:
        """The model of one txt2img/img2img request: its ``override_settings``' checkpoint, else the current one."""
        name = override_settings.get("sd_model_checkpoint")
        return self.find(self.current if name is None else name)

    def keep_override(self, override_settings: dict, restore_afterwards) -> None:
        """After a request's job is queued: its ``override_settings``' checkpoint becomes the current model where
        the request said ``override_settings_restore_afterwards: false`` (A1111 keeps the override then)."""
        name = override_settings.get("sd_model_checkpoint")
        if restore_afterwards is False and name is not None:
            self.current = self.find(name).name


def add_checkpoint_routes(app: FastAPI, checkpoints: Checkpoints) -> None:
    """Add A1111's model list and options routes to ``app``."""

    @app.get("/sdapi/v1/sd-models", tags=["automatic1111"])
    def sd_models() -> list[dict]:
        return [{"title": model.name, "model_name": model.name, "hash": None, "sha256": None, "filename": model.name,
                 "config": None} for model in checkpoints.models]

    @app.get("/sdapi/v1/options", tags=["automatic1111"])
    def get_options() -> dict:
        return {"sd_model_checkpoint": checkpoints.current, "samples_format": "png", "sd_checkpoint_hash": None,
                "eta_ddim": 0.0}

    @app.post("/sdapi/v1/options", tags=["automatic1111"])
    def set_options(options: dict) -> dict:
        """``sd_model_checkpoint`` switches the model txt2img and img2img use, for every later request (A1111's
        semantics); other options are listed back under ``not_honoured``."""
        errors = echo_errors(options)
        if errors:
            raise RequestValidationError(errors)
        name = options.get("sd_model_checkpoint")
        if name is not None:
            checkpoints.current = checkpoints.find(name).name
        return {"not_honoured": sorted(k for k in options if k != "sd_model_checkpoint")}
