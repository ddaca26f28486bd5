"""The JSON the API reads and writes (pydantic models; FastAPI turns them into the OpenAPI schema).

Numbers must be JSON numbers and text must be JSON strings (strict types): ``"steps": "25"`` or
``"steps": true`` is a 422 naming ``steps`` rather than a guess. Unknown fields are refused too, so a
typo such as ``"step": 50`` is reported instead of silently running with the default.

One request shape (`GenerateRequest`) serves every mode (`MODES`); which of its fields a mode takes, and
their defaults there, are `ldmkit.serve.modes`'. A job's settings are one of `Settings` (text to image),
`ClassSettings` or `ImageSettings` (the modes that start from an image), each with the ``model`` and
``mode`` it ran with.
"""

from __future__ import annotations

import secrets
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator
from pydantic_core import PydanticCustomError

from ldmkit.bounds import MAX_BINDING, MAX_CACHE_DEPTH, MAX_CACHE_INTERVAL, MAX_ETA, MAX_GUIDANCE, MAX_IMAGES
from ldmkit.diffusion import SAMPLERS
from ldmkit.serve.limits import Limits
from ldmkit.settings import DEFAULT_GUIDANCE, PROMPT_SYNTAXES  # DEFAULT_GUIDANCE: a request's that gives none

MAX_PROMPT_CHARS = 500
MAX_STEPS = 200
MAX_SEED = 2**32 - 1  # fits a JavaScript number exactly and torch.Generator.manual_seed


def random_seed() -> int:
    """A seed drawn for a request that gave none: uniform over 0 … `MAX_SEED`."""
    return secrets.randbelow(MAX_SEED + 1)


def not_blank(text: str | None) -> str | None:
    """``text`` (None: not given) when it holds a character that is not whitespace: a prompt of spaces is
    refused as an empty one is."""
    if text is not None and not text.strip():
        raise PydanticCustomError("string_blank", "String should hold a word, not only whitespace")
    return text


SamplerName = Literal[tuple(SAMPLERS)]
PromptSyntax = Literal[PROMPT_SYNTAXES]  # the enum in the OpenAPI schema follows the library's samplers
# What a request may ask of a model: the names of the `ldmkit` commands that do the same (class: generate --class).
MODES = ("generate", "class", "img2img", "upscale", "inpaint", "colorize")
IMAGE_MODES = ("img2img", "upscale", "inpaint", "colorize")  # the modes that start from an input image
ModeName = Literal[MODES]
# A file name shown in a reproduce command only (never a path on the server): no folder, no control characters.
FILE_NAME_PATTERN = r"^[^/\\\x00-\x1f]{1,100}$"


class GenerateRequest(BaseModel):
    """What to generate, with which model and in which mode. Which fields a mode takes, and which it needs
    (``prompt`` to generate, ``image`` to upscale, …), is listed per model by GET /v1/ldmkit/models."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = Field(None, description="the id of a model served (GET /v1/ldmkit/models); null: "
                                                      "the first")
    mode: ModeName | None = Field(None, description="what to do with the model; null: the model's first mode")
    prompt: StrictStr | None = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS,
                                     description="what to draw (optional for upscale, inpaint and colorize)")
    negative_prompt: StrictStr = Field("", max_length=MAX_PROMPT_CHARS,
                                       description="the prompt guidance steers away from (empty: unconditional)")
    class_name: StrictStr | None = Field(None, min_length=1, max_length=100,
                                         description="class: one of the model's classes (GET /v1/ldmkit/models)")
    image: StrictStr | None = Field(None, description="img2img, upscale, inpaint, colorize: the input image, base64 "
                                                      "of a PNG/JPEG/WebP file (a data: URL prefix allowed)")
    mask: StrictStr | None = Field(None, description="inpaint: the mask, as image; white repaints, black keeps")
    image_name: StrictStr | None = Field(None, pattern=FILE_NAME_PATTERN,
                                         description="the input's file name, for the reproduce command only "
                                                     "(default image.png)")
    mask_name: StrictStr | None = Field(None, pattern=FILE_NAME_PATTERN,
                                        description="the mask's file name, for the command only (default mask.png)")
    strength: StrictFloat | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False,
                                         description="img2img: how far the input is noised (default 0.6)")
    steps: StrictInt | None = Field(None, ge=1, le=MAX_STEPS,
                                    description="sampler steps; null: the model's default (GET /v1/ldmkit/models)")
    guidance: StrictFloat | None = Field(None, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                         description="classifier-free guidance scale s; null: the mode's default "
                                                     f"(GET /v1/ldmkit/models: {DEFAULT_GUIDANCE:g}, or a consistency "
                                                     "student's own; 1 for upscale, inpaint, colorize)")
    binding: StrictFloat = Field(0.0, ge=0.0, le=MAX_BINDING, allow_inf_nan=False,
                                 description="attribute-binding guidance λ (docs/binding.md; 0.2 for the shipped "
                                             "model); 0: none")
    cache_interval: StrictInt = Field(1, ge=1, le=MAX_CACHE_INTERVAL,
                                      description="feature reuse: the whole UNet at every N-th step, its shallow "
                                                  "branch alone between (docs/performance.md); 1: off")
    cache_depth: StrictInt = Field(1, ge=0, le=MAX_CACHE_DEPTH,
                                   description="with cache_interval > 1: blocks of the UNet's first level that the "
                                               "shallow branch recomputes, 0 … its blocks per level (GET "
                                               "/v1/ldmkit/models); 1: DeepCache's branch 0; 0: the shallowest")
    sampler: SamplerName | None = Field(None, description="null: the model's default, the first of its samplers "
                                                           "(GET /v1/ldmkit/models)")
    eta: StrictFloat = Field(0.0, ge=0.0, le=MAX_ETA, allow_inf_nan=False,
                             description="DDIM η, ddim only (0: deterministic, 1: DDPM's noise), as ldmkit generate "
                                         "--eta")
    karras: StrictBool = Field(False, description="Karras et al.'s noise levels for the sampler's grid (dpmpp-2m "
                                                  "with karras is A1111's \"DPM++ 2M Karras\")")
    prompt_syntax: PromptSyntax = Field("plain", description="plain: the prompt read as written; a1111: "
                                                             "AUTOMATIC1111's (word:1.3), [word], BREAK and long "
                                                             "prompts in chunks, as ldmkit generate --prompt-syntax")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED,
                                   description="null: the server picks one and reports it with the images")
    num_images: StrictInt = Field(1, ge=1, le=MAX_IMAGES, description="images drawn together as one batch")
    width: StrictInt | None = Field(None, ge=1, description="a multiple of the model's latent factor "
                                    "(GET /v1/ldmkit/models); null: the size the model was trained at")
    height: StrictInt | None = Field(None, ge=1, description="as width")

    _prompt_not_blank = field_validator("prompt")(not_blank)

    @field_validator("prompt", mode="before")
    @classmethod
    def _empty_prompt_is_none(cls, prompt):
        """An empty prompt is none, as an image job's settings write the prompt it was not given; a mode that
        needs one says so (`ldmkit.serve.modes.field_errors`)."""
        return None if prompt == "" else prompt

    def limit_errors(self, limits: Limits) -> list[dict]:
        """The checks that depend on the model, as FastAPI-style error entries."""
        return (limits.image_size_errors(self.width, self.height) + limits.steps_errors(self.steps)
                + limits.sampler_errors(self.sampler) + limits.cache_depth_errors(self.cache_depth))

    def resolve(self, limits: Limits, model: str | None = None) -> "Settings":
        """The text-to-image settings: what the request left open (seed, size, steps, sampler) filled in,
        so that the settings reproduce the images. ``model``: the name of the model that runs them."""
        return Settings(
            model=model, prompt=self.prompt, negative_prompt=self.negative_prompt,
            steps=self.steps if self.steps is not None else limits.default_steps,
            guidance=self.guidance if self.guidance is not None else limits.default_guidance, binding=self.binding,
            cache_interval=self.cache_interval, cache_depth=self.cache_depth,
            sampler=self.sampler or limits.samplers[0], karras=self.karras, eta=self.eta,
            prompt_syntax=self.prompt_syntax, seed=self.seed if self.seed is not None else random_seed(),
            num_images=self.num_images,
            width=self.width or limits.default_size, height=self.height or limits.default_size,
        )


class Settings(BaseModel):
    """A text-to-image request with every choice made. POSTing these to /v1/generate again gives the same
    images, and `ldmkit generate` with the same options writes them as ``{seed}_{index:03d}.png``.
    ``model``: the served model's name (None: the server's first, for settings made outside a server)."""

    model_config = ConfigDict(frozen=True)

    model: str | None = None
    mode: Literal["generate"] = "generate"
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    binding: float
    cache_interval: int = 1
    cache_depth: int = 1
    sampler: str
    seed: int
    num_images: int
    width: int
    height: int
    karras: bool = False
    eta: float = 0.0  # DDIM η (ddim only)
    prompt_syntax: PromptSyntax = "plain"  # "a1111": A1111's emphasis and chunks (`ldmkit.text.weighted`)


class ClassSettings(BaseModel):
    """A class-conditional request with every choice made; `ldmkit generate --class` with the same options
    writes the same images as ``{seed}_{index:03d}.png``."""

    model_config = ConfigDict(frozen=True)

    model: str | None = None
    mode: Literal["class"] = "class"
    class_name: str
    steps: int
    guidance: float
    cache_interval: int = 1
    cache_depth: int = 1
    sampler: str
    seed: int
    num_images: int
    width: int
    height: int
    eta: float = 0.0


ImageMode = Literal["img2img", "img2img-masked", "inpaint", "upscale", "colorize"]


class ImageSettings(BaseModel):
    """A job that starts from an image, with every choice made. ``mode``: img2img (SDEdit over the whole
    image), img2img-masked (SDEdit, then only the mask's white pixels taken from it), inpaint (the
    inpainting model), upscale or colorize. ``image`` and ``mask`` are PNGs (not written to JSON); ``width``
    × ``height`` is the output's size (``image``'s, times the factor for upscale). ``strength``: img2img's (and
    inpaint's, from A1111's ``denoising_strength``; 1: from noise, the inpainting model's own start). ``image_name`` and
    ``mask_name``: what the reproduce command calls the input files."""

    model_config = ConfigDict(frozen=True)

    model: str | None = None
    mode: ImageMode
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    sampler: str
    seed: int
    num_images: int
    strength: float
    width: int
    height: int
    karras: bool = False
    eta: float = 0.0
    prompt_syntax: PromptSyntax = "plain"  # "a1111" reads A1111's emphasis (the A1111 route's)
    image_name: str = "image.png"
    mask_name: str | None = None
    image: bytes = Field(b"", exclude=True, repr=False)
    mask: bytes | None = Field(None, exclude=True, repr=False)


# The settings of a job of the /v1/jobs routes, told apart by their mode.
JobSettings = Annotated[Settings | ClassSettings | ImageSettings, Field(discriminator="mode")]


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
    command: str | None = Field(description="a shell command that writes this image again (null where no command "
                                            "does: an image job of several images, or with karras)")
    read_as: str | None = Field(None, description="the prompt as the model read it, where it read a word it never "
                                                  "saw in training as the nearest word it knows; null: as sent")


class JobInfo(BaseModel):
    id: str
    status: JobState
    step: int = Field(description="sampler steps done")
    total: int = Field(description="sampler steps in all")
    queue_position: int | None = Field(description="1: next to run; null once it has left the queue")
    settings: JobSettings
    images: list[ImageInfo]
    error: str | None
    elapsed_s: float = Field(description="seconds since the job was submitted (until it finished)")


class GeneratedImage(ImageInfo):
    png_base64: str


class GenerateResponse(BaseModel):
    id: str
    settings: JobSettings
    images: list[GeneratedImage]
    elapsed_s: float


class ModelInfo(BaseModel):
    id: str
    kind: str = Field(description="the model's condition: text, class, sr (super-resolution), inpaint or colorize")
    default: bool = Field(description="whether a request without a model gets this one (the first)")
    modes: list[str] = Field(description="what a request may ask of it (mode), its default first")
    accepts: dict[str, list[str]] = Field(description="mode → the request fields it takes (the others are refused)")
    required: dict[str, list[str]] = Field(description="mode → the fields it needs")
    default_guidance: dict[str, float] = Field(description="mode → the guidance scale of a request without one")
    classes: list[str] = Field(description="class: the names class_name may take; empty for other kinds")
    sr_factor: int | None = Field(description="upscale: output side / input side; null for other kinds")
    can_edit: bool = Field(description="whether Prompt-to-Prompt edits (/v1/edit) run on it")
    default_size: int
    latent_factor: int = Field(description="width and height are multiples of it: the autoencoder's factor f")
    max_size: int
    min_size: int = Field(description="the smallest width and height that go with any other allowed side")
    lowest_side: int = Field(description="an image whose sides are both at most this is too small (its UNet's "
                                         "lowest level would be 1x1); 0: none is. A side below min_size is allowed "
                                         "where the other is above it (4x12 where 8x8 is too small)")
    samplers: list[str] = Field(description="the samplers this model runs, its default first")
    default_steps: int
    max_steps: int
    max_images: int
    max_prompt_chars: int
    max_guidance: float
    max_cache_depth: int = Field(description="the largest cache_depth: the UNet's blocks per level")


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    queued: int
    running: bool
    max_queue: int


class ErrorMessage(BaseModel):
    detail: str
