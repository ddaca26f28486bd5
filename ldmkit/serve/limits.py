"""What a request may ask of the model being served: the bounds that depend on the model.

The fixed bounds (prompt length, steps, guidance, number of images, seed) live in the request schema
(schemas.py), where FastAPI checks them and lists them in the OpenAPI schema. The bounds here depend
on the model (its latent factor, its smallest image and its trained size), so they are checked after
parsing, with errors in the same shape as FastAPI's 422 so that a client sees one format.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldmkit.bounds import DEFAULT_MAX_SIDE, max_side  # noqa: F401  (DEFAULT_MAX_SIDE re-exported)
from ldmkit.diffusion import SAMPLERS
from ldmkit.errors import UsageError
from ldmkit.settings import DEFAULT_GUIDANCE, check_cache_depth


@dataclass(frozen=True)
class Limits:
    """Model-dependent bounds on a request.

    ``latent_factor``: height and width must be multiples of it: the autoencoder's factor f
    (`LatentDiffusion.size_multiple`; the UNet takes a latent of any size).
    ``lowest_side``: an image whose sides are both at most this is too small, its UNet's lowest level 1×1 with
    one value per GroupNorm group (`LatentDiffusion.check_image_size`; the tiny presets); 0: none is.
    ``default_size``: the size the model was trained at, used when a request gives none.
    ``max_size``: the largest height or width; by default 4× the trained size but no more than 1024
    (or the trained size, if larger), because time and memory grow with the pixel count (attention's
    with its square) and a model draws poorly far from the size it was trained at.
    ``num_timesteps``: T, the most sampler steps a schedule has.
    ``samplers``: the samplers the model runs, its default first (ddim; lcm alone for a consistency
    student); ``default_steps``: the steps a request without any gets (25; a student's own);
    ``default_guidance``: the guidance scale of a text-to-image request without any (4; a student's own,
    `Pipeline.default_guidance`). ``blocks_per_level``: the UNet's num_res_blocks, the largest feature-reuse
    ``cache_depth``.
    """

    latent_factor: int
    default_size: int
    max_size: int
    num_timesteps: int
    samplers: tuple[str, ...] = ("ddim", "ddpm", "euler", "dpmpp-2m")
    default_steps: int = 25
    lowest_side: int = 0
    default_guidance: float = DEFAULT_GUIDANCE
    blocks_per_level: int = 2

    @classmethod
    def from_pipeline(cls, pipe, max_size: int | None = None) -> "Limits":
        model = pipe.model
        size = model.config.image_size
        k = model.size_multiple
        cap = max_side(size, max_size)
        if cap < size:
            raise UsageError(f"max size {cap} is below the model's trained size {size}")
        sampler, steps = pipe.sampling_defaults(None, None)
        runs = ("lcm",) if sampler == "lcm" else (sampler, *(n for n in SAMPLERS if n not in (sampler, "lcm")))
        return cls(latent_factor=k, default_size=size, max_size=cap - cap % k,
                   num_timesteps=model.schedule.num_timesteps, samplers=runs, default_steps=steps,
                   lowest_side=model.latent_factor if model.unet.too_small(1, 1) else 0,
                   default_guidance=pipe.default_guidance, blocks_per_level=model.config.unet.num_res_blocks)

    @property
    def min_size(self) -> int:
        """The smallest side from which any width and height (multiples of the latent factor, up to
        ``max_size``) go together: the least multiple of the latent factor above ``lowest_side``."""
        k = self.latent_factor
        return k * (self.lowest_side // k + 1)

    def smallest_sizes(self) -> str:
        """The smallest images allowed, as "WxH": "4x12 and 12x4" where 8x8 is too small, else "4x4"."""
        k = self.latent_factor
        return f"{k}x{k}" if not self.lowest_side else f"{k}x{self.min_size} and {self.min_size}x{k}"

    def too_small(self, width: int, height: int) -> str | None:
        """Why a ``width`` × ``height`` image (each side allowed on its own) is too small for the model, as a
        clause ("too small for this model: …"); None when it is not."""
        if not self.lowest_side or max(width, height) > self.lowest_side:
            return None
        return (f"too small for this model: its UNet's lowest level would be 1x1, one value per GroupNorm group; "
                f"the smallest sizes allowed are {self.smallest_sizes()}")

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

    def cache_depth_errors(self, cache_depth: int) -> list[dict]:
        """An entry for a feature-reuse depth beyond the UNet's blocks per level: the library's rule and words
        (`check_cache_depth`, as the pipelines and `ldmkit generate --cache-depth` refuse it); empty otherwise."""
        try:
            check_cache_depth(cache_depth, self.blocks_per_level)
        except UsageError as e:
            return [{"loc": ("body", "cache_depth"), "msg": str(e), "type": "value_error"}]
        return []

    def steps_errors(self, steps: int | None) -> list[dict]:
        if steps is None or steps <= self.num_timesteps:
            return []
        msg = f"steps must be at most the model's {self.num_timesteps} timesteps, got {steps}"
        return [{"loc": ("body", "steps"), "msg": msg, "type": "value_error"}]
