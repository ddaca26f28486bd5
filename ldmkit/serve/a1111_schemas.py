"""The AUTOMATIC1111 web UI's request bodies (``/sdapi/v1/txt2img``, ``/sdapi/v1/img2img``), its sampler
names, and which of a request's fields ldmkit cannot honour.

Field names and defaults are A1111's (``StableDiffusionProcessingTxt2Img``/``…Img2Img``): ``cfg_scale``
7, ``steps`` 50, ``seed`` -1 (random), ``batch_size`` × ``n_iter`` images, ``width``/``height`` 512, ``eta``
null (A1111's ``eta_ddim`` option, 0, for DDIM: `eta_for`). Prompts may be long, as in A1111, which has no
bound: up to `A1111_MAX_PROMPT_CHARS` characters. Any other field A1111 knows (``restore_faces``,
``enable_hr``, ``styles``, scripts, …) is accepted; those set to something other than A1111's neutral value
are reported in the response's ``info`` as not honoured, never dropped unsaid (``eta`` where the sampler
runs with another η than A1111 would: `eta_not_honoured`). As in A1111, a field sent as null means its
default (``seed`` null: random) and an empty ``mask`` means none. 512, A1111's default side, means the
model's trained size when the model cannot draw 512 (a small ldmkit model); any other size is checked
against the model's limits.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ldmkit.bounds import MAX_ETA, MAX_GUIDANCE, MAX_IMAGES
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import MAX_SEED, MAX_STEPS

A1111_DEFAULT_SIDE = 512
# A1111 bounds no prompt, and long negative prompts are pasted in routinely; this bound only keeps a request's
# text (and its echo in ``info``) far below the 16 MiB body limit. The tokenizer reads what fits the model.
A1111_MAX_PROMPT_CHARS = 20_000

# A1111's sampler name → (ldmkit's sampler, Karras σ), and the other names A1111 accepts for it. A1111 ≥ 1.9
# also takes ``scheduler: "Karras"`` beside a plain name, which gives any sampler Karras σ (`sampler_for`).
SAMPLER_NAMES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "DDIM": ("ddim", False, ("ddim",)),
    "DDPM": ("ddpm", False, ("ddpm",)),
    "Euler": ("euler", False, ("k_euler",)),
    "DPM++ 2M": ("dpmpp-2m", False, ("k_dpmpp_2m",)),
    "Euler a": ("euler-a", False, ("k_euler_a", "k_euler_ancestral")),
    "DPM++ 2M Karras": ("dpmpp-2m", True, ("k_dpmpp_2m_ka",)),
    "PLMS": ("plms", False, ("plms",)),
    "UniPC": ("unipc", False, ("unipc",)),
    "LCM": ("lcm", False, ("lcm", "k_lcm")),
}

# The η of ldmkit's samplers that A1111 gives a request's ``eta`` to: DDIM (A1111's ``eta_ddim``) runs with the
# request's (None here), Euler a (``eta_ancestral``) with η = 1 always. A1111 gives no η to the others (Euler,
# DPM++ 2M, PLMS, UniPC, LCM; it has no DDPM), so their ``eta`` is not acted on there either.
SAMPLER_ETA: dict[str, float | None] = {"ddim": None, "euler-a": 1.0}

# Fields ldmkit does not act on, with the values that mean "off" in A1111 (and the webuiapi client's
# defaults, which it sends on every call). Any other value is reported as not honoured.
# (override_settings_restore_afterwards false is acted on: the request's checkpoint stays the current model,
# `Checkpoints.keep_override`; without a checkpoint in override_settings it changes nothing.)
NEUTRAL: dict[str, tuple] = {
    "styles": ([],), "subseed": (-1, 0), "subseed_strength": (0, 0.0), "seed_resize_from_h": (-1, 0),
    "seed_resize_from_w": (-1, 0), "restore_faces": (False, None), "tiling": (False, None),
    "do_not_save_samples": (False, True), "do_not_save_grid": (False, True),
    "s_min_uncond": (None, 0, 0.0), "s_churn": (None, 0, 0.0), "s_tmax": (None, 0, 0.0), "s_tmin": (None, 0, 0.0),
    "s_noise": (None, 1, 1.0), "override_settings_restore_afterwards": (True, False, None),
    "refiner_checkpoint": (None, ""), "refiner_switch_at": (None, 0, 0.0), "disable_extra_networks": (False, None),
    "comments": (None, {}), "enable_hr": (False, None), "firstphase_width": (0,), "firstphase_height": (0,),
    "hr_scale": (2, 2.0), "hr_upscaler": (None, "Latent", ""), "hr_second_pass_steps": (0,), "hr_resize_x": (0,),
    "hr_resize_y": (0,), "hr_checkpoint_name": (None, ""), "hr_sampler_name": (None, ""),
    "hr_scheduler": (None, ""), "hr_prompt": ("",), "hr_negative_prompt": ("",), "script_name": (None, ""),
    "script_args": ([],), "send_images": (True, False), "save_images": (False,), "alwayson_scripts": ({},),
    "infotext": (None, ""), "force_task_id": (None, ""), "scheduler": (None, "automatic", "Automatic", "karras", "Karras"),
    "sampler_index": (None, "Euler", "Euler a"), "include_init_images": (False, True), "resize_mode": (0,),
    "image_cfg_scale": (None, 1.5, 0), "mask_blur": (None, 4, 0), "mask_blur_x": (4,), "mask_blur_y": (4,),
    "inpainting_fill": (0, 1), "inpaint_full_res": (True, False, 0, 1), "inpaint_full_res_padding": (0, 32),
    "initial_noise_multiplier": (None, 1, 1.0), "latent_mask": (None,), "denoising_strength": (None, 0.7, 0.75),
    "override_settings": ({},), "user": (None, ""),
}


class Txt2ImgRequest(BaseModel):
    """The body of ``POST /sdapi/v1/txt2img``: A1111's fields that ldmkit acts on; others are accepted."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field("", max_length=A1111_MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=A1111_MAX_PROMPT_CHARS)
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1: random")
    sampler_name: str | None = Field(None, description="an A1111 name (GET /sdapi/v1/samplers); null: the "
                                                         "model's default")
    sampler_index: str | None = Field(None, description="the old name of sampler_name, read when that is null")
    batch_size: int = Field(1, ge=1, le=MAX_IMAGES)
    n_iter: int = Field(1, ge=1, le=MAX_IMAGES)
    steps: int = Field(50, ge=1, le=MAX_STEPS)
    cfg_scale: float = Field(7.0, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False)
    eta: float | None = Field(None, allow_inf_nan=False, description="DDIM's η (0 … 1); null: 0, A1111's "
                                                                         "eta_ddim default")
    width: int = Field(A1111_DEFAULT_SIDE, ge=1)
    height: int = Field(A1111_DEFAULT_SIDE, ge=1)
    override_settings: dict = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, body):
        """The declared fields sent as null left out, so that they take their defaults, as A1111 reads them."""
        if not isinstance(body, dict):
            return body
        return {name: value for name, value in body.items() if not (value is None and name in cls.model_fields)}

    def num_images(self) -> int:
        return self.batch_size * self.n_iter

    def extra_fields(self) -> dict:
        return dict(self.model_extra or {})


class Img2ImgRequest(Txt2ImgRequest):
    """The body of ``POST /sdapi/v1/img2img``. ``init_images``: base64 images, the first is used (its size
    is the output's); ``mask``: white repaints (``inpainting_mask_invert`` 1: black repaints)."""

    init_images: list[str] = Field(min_length=1)
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0, allow_inf_nan=False)
    mask: str | None = None
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    include_init_images: bool = False

    @field_validator("mask")
    @classmethod
    def _empty_mask_is_none(cls, mask: str | None) -> str | None:
        return mask or None


def sampler_for(request: Txt2ImgRequest, limits: Limits) -> tuple[str, bool] | None:
    """(ldmkit's sampler, Karras σ) for the request's A1111 name (``sampler_name``, else ``sampler_index``;
    None: the model's default) and ``scheduler`` ("Karras": Karras σ for any sampler), or None with nothing
    found: the caller reports `sampler_error`."""
    name = request.sampler_name or request.sampler_index
    karras_scheduler = str(request.extra_fields().get("scheduler") or "").lower() == "karras"
    if name is None:
        return limits.samplers[0], karras_scheduler
    for a1111, (ours, karras, aliases) in SAMPLER_NAMES.items():
        if name == a1111 or name.lower() in aliases:
            return (ours, karras or karras_scheduler) if ours in limits.samplers else None
    return None


def a1111_sampler(sampler: str, karras: bool) -> tuple[str, str | None]:
    """(A1111's name of ldmkit's ``sampler`` with or without Karras σ, the schedule type to write beside it):
    the one name A1111 has for the pair where it has one ("DPM++ 2M Karras", None), else the plain name with
    "Karras" as A1111 ≥ 1.9 writes a scheduler ("Euler", "Karras"); ldmkit's name for a sampler A1111 lacks."""
    for name, (ours, with_karras, _) in SAMPLER_NAMES.items():
        if (ours, with_karras) == (sampler, karras):
            return name, None
    plain = next((name for name, (ours, with_karras, _) in SAMPLER_NAMES.items()
                  if ours == sampler and not with_karras), sampler)
    return plain, "Karras" if karras else None


def sampler_names(limits: Limits) -> list[str]:
    """The A1111 names of the samplers this model runs, its default first, the Karras variants last."""
    return [a1111 for with_karras in (False, True) for ours in limits.samplers
            for a1111, (name, karras, _) in SAMPLER_NAMES.items() if name == ours and karras == with_karras]


def sampler_error(request: Txt2ImgRequest, limits: Limits) -> dict:
    field = "sampler_name" if request.sampler_name else "sampler_index"
    name = request.sampler_name or request.sampler_index
    msg = f"sampler {name!r} is not one this model runs; allowed: {', '.join(sampler_names(limits))}"
    return {"loc": ("body", field), "msg": msg, "type": "value_error"}


def size_for(request: Txt2ImgRequest, limits: Limits) -> tuple[int, int, list[dict], list[str]]:
    """(width, height, error entries, notes): 512 that the model cannot draw becomes the trained size."""
    sides, notes = {}, []
    for field in ("width", "height"):
        value = getattr(request, field)
        if value == A1111_DEFAULT_SIDE and value > limits.max_size:
            notes.append(f"{field} 512 (A1111's default) is over this model's largest side {limits.max_size}: "
                         f"drawn at the trained size {limits.default_size}")
            value = limits.default_size
        sides[field] = value
    return sides["width"], sides["height"], limits.image_size_errors(sides["width"], sides["height"]), notes


def eta_for(request: Txt2ImgRequest, sampler: str) -> float:
    """The DDIM η a job of ``request`` runs with on ``sampler``: the request's ``eta`` for ddim (null: 0, A1111's
    ``eta_ddim`` default), 0 for every other sampler, which takes none (`eta_not_honoured`)."""
    return request.eta if sampler == "ddim" and request.eta is not None else 0.0


def eta_errors(request: Txt2ImgRequest, sampler: str) -> list[dict]:
    """An entry for an ``eta`` DDIM cannot run with (outside 0 … `MAX_ETA`), on ``sampler`` ddim; empty
    otherwise (another sampler does not run the request's η: `eta_not_honoured`)."""
    eta = eta_for(request, sampler)
    if 0 <= eta <= MAX_ETA:
        return []
    return [{"loc": ("body", "eta"), "type": "value_error",
             "msg": f"eta must be 0 … {MAX_ETA:g} for DDIM (0: deterministic, 1: DDPM's noise), got {eta}"}]


def eta_not_honoured(request: Txt2ImgRequest, sampler: str) -> dict:
    """``{"eta": value}`` where A1111 would sample with the request's ``eta`` and ldmkit's ``sampler`` runs with
    another η (Euler a: 1 always, `SAMPLER_ETA`); empty for DDIM, which runs the request's, and for the samplers
    A1111 gives no η to."""
    if request.eta is None or SAMPLER_ETA.get(sampler, request.eta) in (None, request.eta):
        return {}
    return {"eta": request.eta}


def not_honoured(request: Txt2ImgRequest, served: set[str], sampler: str) -> dict:
    """The fields given that ldmkit does not act on, with their values: those outside `NEUTRAL`'s off
    values, any field A1111 does not know, ``override_settings`` other than a checkpoint of ``served``
    (the names of the models served), and an ``eta`` that ``sampler`` does not run with (`eta_not_honoured`)."""
    out = eta_not_honoured(request, sampler)
    given = request.extra_fields()
    for name in ("include_init_images",):
        given.pop(name, None)
    if request.sampler_name:
        given.pop("sampler_index", None)  # the deprecated twin, ignored when sampler_name is given
    for name, value in given.items():
        if value not in NEUTRAL.get(name, ()):
            out[name] = value
    overrides = {k: v for k, v in request.override_settings.items()
                 if not (k == "sd_model_checkpoint" and v in served)}
    if overrides:
        out["override_settings"] = overrides
    return out
