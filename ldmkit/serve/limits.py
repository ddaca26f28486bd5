"""What a request may ask of the model being served: the bounds that depend on the model.

The fixed bounds (prompt length, steps, guidance, number of images, seed) live in the request schema
(schemas.py), where FastAPI checks them and lists them in the OpenAPI schema. The bounds here depend
on the model (its latent factor, its smallest image and its trained size), so they are checked after
parsing, with errors in the same shape as FastAPI's 422 so that a client sees one format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ldmkit.bounds import DEFAULT_MAX_SIDE, max_side  # noqa: F401  (DEFAULT_MAX_SIDE re-exported)
from ldmkit.diffusion import SAMPLERS
from ldmkit.errors import UsageError


@dataclass(frozen=True)
class Limits:
    """Model-dependent bounds on a request.

    ``latent_factor``: height and width must be multiples of it (autoencoder f × UNet downsampling).
    ``min_area``: the fewest pixels, height × width, an image may have (`LatentDiffusion.min_image_area`;
    0: no bound but the latent factor).
    ``default_size``: the size the model was trained at, used when a request gives none.
    ``max_size``: the largest height or width; by default 4× the trained size but no more than 1024
    (or the trained size, if larger), because time and memory grow with the pixel count (attention's
    with its square) and a model draws poorly far from the size it was trained at.
    ``num_timesteps``: T, the most sampler steps a schedule has.
    ``samplers``: the samplers the model runs, its default first (ddim; lcm alone for a consistency
    student); ``default_steps``: the steps a request without any gets (25; a student's own).
    """

    latent_factor: int
    default_size: int
    max_size: int
    num_timesteps: int
    samplers: tuple[str, ...] = ("ddim", "ddpm", "euler", "dpmpp-2m")
    default_steps: int = 25
    min_area: int = 0

    @classmethod
    def from_pipeline(cls, pipe, max_size: int | None = None) -> "Limits":
        model = pipe.model
        size = model.config.image_size
        k = model.latent_factor
        cap = max_side(size, max_size)
        if cap < size:
            raise UsageError(f"max size {cap} is below the model's trained size {size}")
        sampler, steps = pipe.sampling_defaults(None, None)
        runs = ("lcm",) if sampler == "lcm" else (sampler, *(n for n in SAMPLERS if n not in (sampler, "lcm")))
        return cls(latent_factor=k, default_size=size, max_size=cap - cap % k,
                   num_timesteps=model.schedule.num_timesteps, samplers=runs, default_steps=steps,
                   min_area=model.min_image_area)

    @property
    def min_size(self) -> int:
        """The smallest side from which any width and height (multiples of the latent factor, up to
        ``max_size``) go together: the least multiple of the latent factor whose square holds ``min_area`` pixels."""
        side = self.latent_factor
        while side * side < self.min_area:
            side += self.latent_factor
        return side

    def smallest_sizes(self) -> str:
        """The smallest images allowed, as "WxH": "8x16 and 16x8" where 8x8 is too small, else "8x8"."""
        k = self.latent_factor
        other = k * max(1, math.ceil(self.min_area / (k * k)))
        return f"{k}x{k}" if other == k else f"{k}x{other} and {other}x{k}"

    def too_small(self, width: int, height: int) -> str | None:
        """Why a ``width`` × ``height`` image (each side allowed on its own) is too small for the model, as a
        clause ("too small for this model: …"); None when it is not."""
        if width * height >= self.min_area:
            return None
        return (f"too small for this model: width × height must be at least {self.min_area} pixels (its UNet's "
                f"lowest level would be 1x1); the smallest sizes allowed are {self.smallest_sizes()}")

    def size_errors(self, field: str, value: int | None) -> list[dict]:
        """FastAPI-style error entries for ``width`` or ``height`` on its own; empty when the value is allowed
        (`image_size_errors` checks the two together)."""
        if value is None:
            return []
        k = self.latent_factor
        if value <= 0 or value % k:
            msg = f"{field} must be a positive multiple of {k} (the model's latent factor), got {value}"
        elif value > self.max_size:
            msg = f"{field} must be at most {self.max_size}, got {value}"
        else:
            return []
        return [{"loc": ("body", field), "msg": msg, "type": "value_error"}]

    def image_size_errors(self, width: int | None, height: int | None) -> list[dict]:
        """FastAPI-style error entries for a request's ``width`` and ``height`` (None: the trained size): each
        side on its own, then the two together (an image `too_small`, on both fields); empty when allowed."""
        errors = self.size_errors("width", width) + self.size_errors("height", height)
        if errors:
            return errors
        width, height = width or self.default_size, height or self.default_size
        reason = self.too_small(width, height)
        if reason is None:
            return []
        return [{"loc": ("body", field), "msg": f"width × height {width}x{height} is {reason}", "type": "value_error"}
                for field in ("width", "height")]

    def sampler_errors(self, sampler: str | None) -> list[dict]:
        if sampler is None or sampler in self.samplers:
            return []
        msg = f"this model samples with {', '.join(self.samplers)}, not {sampler}"
        return [{"loc": ("body", "sampler"), "msg": msg, "type": "value_error"}]

    def steps_errors(self, steps: int | None) -> list[dict]:
        if steps is None or steps <= self.num_timesteps:
            return []
        msg = f"steps must be at most the model's {self.num_timesteps} timesteps, got {steps}"
        return [{"loc": ("body", "steps"), "msg": msg, "type": "value_error"}]
