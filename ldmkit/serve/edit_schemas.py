"""The JSON of the edit API (Prompt-to-Prompt, docs/prompt_to_prompt.md): strict types and unknown fields
refused, as for generating (schemas.py).

An edit draws ``num_images`` pairs in one batch: each pair is the source prompt's image and the edited
prompt's, sampled side by side from one z_T with the edit's attention taken from the source for the first
steps. Images are the model's trained size; the sampler is deterministic DDIM, the one Prompt-to-Prompt
is defined for. The field names are `ldmkit edit`'s options.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, StringConstraints, field_validator

from ldmkit.bounds import MAX_GUIDANCE, MAX_IMAGES
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, JobState, not_blank, random_seed

MODES = ("replace", "refine", "reweight")  # ldmkit.diffusion.prompt_to_prompt.MODES, without importing torch
MAX_EDIT_IMAGES = MAX_IMAGES // 2  # pairs: the batch holds a source and an edit for each, MAX_IMAGES in all
MAX_BLEND_WORDS = 16
DEFAULT_STEPS = 25

BlendWord = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=50, pattern=r"^[^\s,]+$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]


class EditRequest(BaseModel):
    """What to edit. Everything but the two prompts has a default (`ldmkit edit`'s)."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = Field(None, description="the id of a model served (GET /v1/ldmkit/models); null: "
                                                      "the first")
    source_prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                                     description="the prompt of the image to edit")
    target_prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                                     description="the edited prompt; a weight after a word scales its attention: "
                                                 "'a red(2) circle'")
    mode: Literal[MODES] = Field("replace", description="replace: swap words one for one; refine: add words; "
                                                         "reweight: the source's words with weights")
    cross_replace: Fraction = Field(0.8, description="the first fraction of the steps take the source's "
                                                     "cross-attention")
    self_replace: Fraction = Field(0.4, description="the first fraction of the steps take the source's "
                                                    "self-attention")
    blend_words: list[BlendWord] = Field(default_factory=list, max_length=MAX_BLEND_WORDS,
                                         description="local blend: change only where these words (of either "
                                                     "prompt) attend; empty: no local blend")
    blend_threshold: StrictFloat = Field(0.3, ge=0.0, lt=1.0, allow_inf_nan=False,
                                         description="the local-blend mask is where the words' averaged map exceeds "
                                                     "this fraction of its maximum (below 1: at 1 the mask is empty)")
    steps: StrictInt = Field(DEFAULT_STEPS, ge=1, le=MAX_STEPS, description="DDIM steps")
    guidance: StrictFloat = Field(4.0, gt=0.0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                  description="classifier-free guidance scale s (above 0: at 0 the prompts have "
                                              "no effect, so nothing is edited)")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED,
                                   description="null: the server picks one and reports it with the images")
    num_images: StrictInt = Field(1, ge=1, le=MAX_EDIT_IMAGES,
                                  description="source/edit pairs drawn together as one batch")

    _prompts_not_blank = field_validator("source_prompt", "target_prompt")(not_blank)

    def resolve(self, model: str | None = None) -> "EditSettings":
        """Fill in the seed, so that the settings reproduce the images; ``model``: the name of the model
        that runs them."""
        seed = self.seed if self.seed is not None else random_seed()
        return EditSettings(**self.model_dump(exclude={"seed", "model"}), seed=seed, model=model)


class EditSettings(BaseModel):
    """An edit request with every choice made. POSTing these to /v1/edit again gives the same images, and
    `ldmkit edit` with the same options writes them (the job's ``command``)."""

    model_config = ConfigDict(frozen=True)

    model: str | None = None
    source_prompt: str
    target_prompt: str
    mode: str
    cross_replace: float
    self_replace: float
    blend_words: list[str]
    blend_threshold: float
    steps: int
    guidance: float
    seed: int
    num_images: int


def pair_filenames(num_images: int) -> list[tuple[str, str]]:
    """(source, edit) file names of each pair, as `ldmkit edit --out-dir DIR` names them: source.png and
    edit.png for one pair, source_K.png and edit_K.png for several."""
    if num_images == 1:
        return [("source.png", "edit.png")]
    return [(f"source_{k}.png", f"edit_{k}.png") for k in range(num_images)]


class EditImage(BaseModel):
    url: str
    filename: str = Field(description="the name `ldmkit edit --out-dir DIR` gives this image")


class EditImageData(EditImage):
    png_base64: str


class EditPair(BaseModel):
    index: int = Field(description="position in the batch: pair `index` of `num_images` drawn from `seed`")
    source: EditImage
    edit: EditImage


class EditPairData(BaseModel):
    index: int
    source: EditImageData
    edit: EditImageData


class EditJobInfo(BaseModel):
    id: str
    status: JobState
    step: int = Field(description="sampler steps done")
    total: int = Field(description="sampler steps in all")
    queue_position: int | None = Field(description="1: next to run; null once it has left the queue")
    settings: EditSettings
    command: str = Field(description="a shell command that writes the job's images again, into out/")
    pairs: list[EditPair] = Field(description="empty until the job is done")
    error: str | None
    elapsed_s: float = Field(description="seconds since the job was submitted (until it finished)")


class EditResponse(BaseModel):
    id: str
    settings: EditSettings
    command: str
    pairs: list[EditPairData]
    elapsed_s: float


class EditInfo(BaseModel):
    """Whether a model served can edit, and what an edit request may ask of it."""

    model: str
    available: bool
    reason: str | None = Field(description="why the model cannot edit; null when it can")
    size: int = Field(description="the images' height and width (the model's trained size)")
    modes: list[str]
    default_steps: int
    max_steps: int
    max_images: int = Field(description="the most pairs one edit may draw")
    max_blend_words: int
    max_prompt_chars: int
    max_guidance: float

    @classmethod
    def of(cls, model: str, limits: Limits, reason: str | None) -> "EditInfo":
        return cls(model=model, available=reason is None, reason=reason, size=limits.default_size, modes=list(MODES),
                   default_steps=DEFAULT_STEPS, max_steps=min(MAX_STEPS, limits.num_timesteps),
                   max_images=MAX_EDIT_IMAGES, max_blend_words=MAX_BLEND_WORDS, max_prompt_chars=MAX_PROMPT_CHARS,
                   max_guidance=MAX_GUIDANCE)
