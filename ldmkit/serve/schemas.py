"""The JSON the API reads and writes (pydantic models; FastAPI turns them into the OpenAPI schema).

Numbers must be JSON numbers and text must be JSON strings (strict types): ``"steps": "25"`` or
``"steps": true`` is a 422 naming ``steps`` rather than a guess. Unknown fields are refused too, so a
typo such as ``"step": 50`` is reported instead of silently running with the default.
"""

from __future__ import annotations

import secrets
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ldmkit.bounds import MAX_BINDING, MAX_GUIDANCE, MAX_IMAGES
from ldmkit.diffusion import SAMPLERS
from ldmkit.serve.limits import Limits

MAX_PROMPT_CHARS = 500
MAX_STEPS = 200
MAX_CACHE_INTERVAL = 10
MAX_SEED = 2**32 - 1  # fits a JavaScript number exactly and torch.Generator.manual_seed
DEFAULT_GUIDANCE = 4.0  # the guidance scale of a request that gives none (the shapes models' setting)


def random_seed() -> int:
    """A seed drawn for a request that gave none: uniform over 0 … `MAX_SEED`."""
    return secrets.randbelow(MAX_SEED + 1)

SamplerName = Literal[tuple(SAMPLERS)]  # the enum in the OpenAPI schema follows the library's samplers


class GenerateRequest(BaseModel):
    """What to generate. Everything but ``prompt`` has a default."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: StrictStr = Field("", max_length=MAX_PROMPT_CHARS,
                                       description="the prompt guidance steers away from (empty: unconditional)")
    steps: StrictInt | None = Field(None, ge=1, le=MAX_STEPS,
                                    description="sampler steps; null: the model's default (GET /v1/models)")
    guidance: StrictFloat = Field(DEFAULT_GUIDANCE, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                  description="classifier-free guidance scale s")
    binding: StrictFloat = Field(0.0, ge=0.0, le=MAX_BINDING, allow_inf_nan=False,
                                 description="attribute-binding guidance λ (docs/binding.md; 0.3 for the shipped "
                                             "model); 0: none")
    cache_interval: StrictInt = Field(1, ge=1, le=MAX_CACHE_INTERVAL,
                                      description="feature reuse: the whole UNet at every N-th step, its shallow "
                                                  "branch alone between (docs/performance.md); 1: off")
    sampler: SamplerName | None = Field(None, description="null: the model's default, the first of its samplers "
                                                           "(GET /v1/models)")
    karras: StrictBool = Field(False, description="Karras et al.'s noise levels for the sampler's grid (dpmpp-2m "
                                                  "with karras is A1111's \"DPM++ 2M Karras\")")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED,
                                   description="null: the server picks one and reports it with the images")
    num_images: StrictInt = Field(1, ge=1, le=MAX_IMAGES, description="images drawn together as one batch")
    width: StrictInt | None = Field(None, ge=1, description="a multiple of the model's latent factor "
                                    "(GET /v1/models); null: the size the model was trained at")
    height: StrictInt | None = Field(None, ge=1, description="as width")

    def limit_errors(self, limits: Limits) -> list[dict]:
        """The checks that depend on the model, as FastAPI-style error entries."""
        return (limits.size_errors("width", self.width) + limits.size_errors("height", self.height)
                + limits.steps_errors(self.steps) + limits.sampler_errors(self.sampler))

    def resolve(self, limits: Limits) -> "Settings":
        """Fill in what the request left open (seed, size), so that the settings reproduce the images."""
        return Settings(
            prompt=self.prompt, negative_prompt=self.negative_prompt,
            steps=self.steps if self.steps is not None else limits.default_steps,
            guidance=self.guidance, binding=self.binding, cache_interval=self.cache_interval,
            sampler=self.sampler or limits.samplers[0], karras=self.karras,
            seed=self.seed if self.seed is not None else random_seed(),
            num_images=self.num_images,
            width=self.width or limits.default_size, height=self.height or limits.default_size,
        )


class Settings(BaseModel):
    """A request with every choice made. POSTing these to /v1/generate again gives the same images,
    and `ldmkit generate` with the same options writes them as ``{seed}_{index:03d}.png``."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    binding: float
    cache_interval: int = 1
    sampler: str
    seed: int
    num_images: int
    width: int
    height: int
    karras: bool = False


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"

    @property
    def finished(self) -> bool:
        return self not in (JobState.queued, JobState.running)


class ImageInfo(BaseModel):
    index: int = Field(description="position in the batch: image `index` of `num_images` drawn from `seed`")
    seed: int
    url: str
    filename: str = Field(description="the name `ldmkit generate --out DIR` gives this image")
    command: str = Field(description="a shell command that writes this image again")


class JobInfo(BaseModel):
    id: str
    status: JobState
    step: int = Field(description="sampler steps done")
    total: int = Field(description="sampler steps in all")
    queue_position: int | None = Field(description="1: next to run; null once it has left the queue")
    settings: Settings
    images: list[ImageInfo]
    error: str | None
    elapsed_s: float = Field(description="seconds since the job was submitted (until it finished)")


class GeneratedImage(ImageInfo):
    png_base64: str


class GenerateResponse(BaseModel):
    id: str
    settings: Settings
    images: list[GeneratedImage]
    elapsed_s: float


class ModelInfo(BaseModel):
    id: str
    default_size: int
    latent_factor: int
    max_size: int
    samplers: list[str] = Field(description="the samplers this model runs, its default first")
    default_steps: int
    max_steps: int
    max_images: int
    max_prompt_chars: int
    max_guidance: float


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    queued: int
    running: bool
    max_queue: int


class ErrorMessage(BaseModel):
    detail: str
