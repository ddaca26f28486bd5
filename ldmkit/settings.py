"""The settings of one sampling run, the one type that the pipelines, the CLI, the server and the evaluation
share: how many steps, which sampler, the guidance scale s, the seed, the size, … of one image request.

    settings = GenerationSettings(num_inference_steps=25, guidance_scale=4.0, seed=0, sampler="dpmpp-2m")
    images = pipe("a red circle", settings=settings).images        # what the same keywords draw
    settings.describe()                                              # "dpmpp-2m, 25 steps, guidance 4"

Fields take diffusers' names where diffusers has one (``num_inference_steps``, ``guidance_scale``,
``num_images_per_prompt``, ``negative_prompt``, ``height``, ``width``, ``eta``; ``seed`` is the int a call's
``generator`` takes) and ldmkit's elsewhere (``sampler``, ``karras``, ``spacing``, ``steps_offset``,
``guidance_stop``, ``binding``, ``binding_candidates``, ``cache_interval``, ``cache_depth``, ``prompt_syntax``).
Every default means "the pipeline's own" (None) or "off", the same in every pipeline, so a field left at its
default is left out of the call (`pipeline_kwargs`), and a pipeline without that option (a class model has no
negative prompt) still takes the settings. What belongs to one pipeline's input rather than to sampling (img2img's
``strength``, ``start_from_input``) and what only observes a run (``callback``, ``progress``, ``output_type``) stay
keywords of the call.

The server's JSON (`ldmkit.serve.schemas`) and the CLI's options keep their own names (``steps``,
``guidance``, ``num_images``): `OWN_NAMES` maps them, `from_args` reads a command's options, and
`ldmkit.serve.job_settings.to_settings` converts a server job.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ldmkit.bounds import MAX_CACHE_DEPTH, MAX_CACHE_INTERVAL, MAX_ETA, MAX_SEED
from ldmkit.diffusion.binding import BindingGuidance
from ldmkit.diffusion.grids import SPACINGS
from ldmkit.diffusion.samplers import SAMPLERS
from ldmkit.errors import UsageError

DEFAULT_GUIDANCE = 4.0  # the guidance scale s of the text-to-image and class pipelines when none is given
# diffusers' name of a field → ldmkit's own (`generate_tensors`' parameters, the CLI's options, the server's JSON).
OWN_NAMES = {"num_inference_steps": "steps", "guidance_scale": "guidance", "num_images_per_prompt": "num_images"}
CALL_NAMES = {"seed": "generator"}  # a field whose keyword in a pipeline call has another name
PROMPT_SYNTAXES = ("plain", "a1111")  # how a prompt's brackets and BREAK are read (`ldmkit.text.weighted`)


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    """How the images of one request are drawn (the module docstring); checked when made: a value no
    pipeline takes is a `UsageError` (a ``ValueError``) of one line naming the field and what is allowed.
    Checks that need the model (a sampler a consistency student cannot run, more steps than its
    timesteps, a size that is not a multiple of its latent factor) happen when a pipeline samples."""

    num_inference_steps: int | None = None  # None: the model's own (25; a consistency student's distilled count)
    guidance_scale: float | None = None  # classifier-free guidance s; None: the pipeline's own (4; 1 for sr, …)
    num_images_per_prompt: int = 1
    negative_prompt: str = ""  # the prompt guidance steers away from ("": unconditional, ∅)
    height: int | None = None  # None: the size the model was trained at
    width: int | None = None
    eta: float = 0.0  # DDIM η ∈ [0, 1] (0: deterministic, 1: DDPM's posterior noise)
    seed: int = 0  # z_T and every later noise drawn from a CPU generator seeded with it
    sampler: str | None = None  # a name of `ldmkit.diffusion.SAMPLERS`; None: the model's own (ddim; lcm)
    karras: bool = False  # Karras et al.'s noise levels for the sampler's grid
    spacing: str | None = None  # trailing, leading or linspace; None: the model's scheduler config or the sampler's
    steps_offset: int | None = None  # with spacing leading: added to its timesteps; None: the config's, else 1
    guidance_stop: float = 0.0  # the steps at t < guidance_stop · T run unguided
    binding: float = 0.0  # attribute-binding guidance λ (`ldmkit.diffusion.binding`); 0: none
    binding_candidates: int = BindingGuidance.candidates  # with binding: starting noises per two-object prompt
    cache_interval: int = 1  # feature reuse (`ldmkit.nn.feature_cache`): the whole UNet every N-th step; 1: off;
    # at most MAX_CACHE_INTERVAL and below the steps run (`check_cache_interval`)
    cache_depth: int = 1  # with feature reuse: the first-level blocks its shallow branch recomputes, 0 … the UNet's
    # num_res_blocks (`check_cache_depth`); 1: DeepCache's branch 0; 0: shallower, faster, further from the full UNet
    prompt_syntax: str = "plain"  # "a1111": AUTOMATIC1111's (word:1.3), [word], BREAK and long prompts in chunks

    def __post_init__(self):
        _check_int("num_inference_steps", self.num_inference_steps, 1, optional=True)
        _check_number("guidance_scale", self.guidance_scale, optional=True)
        _check_int("num_images_per_prompt", self.num_images_per_prompt, 1)
        if not isinstance(self.negative_prompt, str):
            raise UsageError(f"negative_prompt = {self.negative_prompt!r}; must be a string ('' for none)")
        _check_int("height", self.height, 1, optional=True)
        _check_int("width", self.width, 1, optional=True)
        _check_number("eta", self.eta, at_most=MAX_ETA, why="DDIM's η: 0 deterministic, 1 DDPM's noise")
        _check_int("seed", self.seed, 0, MAX_SEED)
        _check_choice("sampler", self.sampler, SAMPLERS)
        if not isinstance(self.karras, bool):
            raise UsageError(f"karras = {self.karras!r}; must be True or False")
        _check_choice("spacing", self.spacing, SPACINGS)
        _check_int("steps_offset", self.steps_offset, 0, optional=True)
        _check_number("guidance_stop", self.guidance_stop, below=1.0)
        _check_number("binding", self.binding)
        _check_int("binding_candidates", self.binding_candidates, 1)
        check_cache_interval(self.cache_interval, self.num_inference_steps)
        check_cache_depth(self.cache_depth)
        check_prompt_syntax(self.prompt_syntax)

    def describe(self) -> str:
        """One line for a table or a progress bar: "ddim, 25 steps, guidance 4", then binding and feature reuse
        where on (the wording of the evaluation's results files)."""
        guidance = "the pipeline's own" if self.guidance_scale is None else f"{self.guidance_scale:g}"
        binding = f", binding {self.binding:g} (best of {self.binding_candidates})" if self.binding else ""
        cache = f", cache interval {self.cache_interval}" if self.cache_interval != 1 else ""
        cache += f" at depth {self.cache_depth}" if cache and self.cache_depth != 1 else ""
        return f"{self.sampler}, {self.num_inference_steps} steps, guidance {guidance}{binding}{cache}"

    def changed(self) -> dict:
        """The fields that differ from their defaults, by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def pipeline_kwargs(self) -> dict:
        """The keywords of a pipeline call that draws what ``pipe(…, settings=self)`` draws, in diffusers'
        names (``generator`` for ``seed``); fields at their defaults are left out (the module docstring)."""
        return {CALL_NAMES.get(name, name): value for name, value in self.changed().items()}

    def generate_kwargs(self) -> dict:
        """The same keywords in ldmkit's own names (``steps``, ``guidance``, ``seed``, ``num_images``), for a
        pipeline's ``generate_tensors``, which returns the images as a tensor in [-1, 1]."""
        return {OWN_NAMES.get(name, name): value for name, value in self.changed().items()}

    @classmethod
    def from_args(cls, args, skip: tuple[str, ...] = ()) -> "GenerationSettings":
        """The settings a command's parsed options ask for (an ``argparse.Namespace``): each field from the
        option of its own name (``--steps``, ``--guidance``, ``--num-images``, ``--seed``, ``--sampler``, …);
        a field the command has no option for, or whose option is in ``skip`` (an option of that name that
        means something else, as `ldmkit eval`'s --num-images), keeps its default."""
        given = {name: value for name, value in vars(args).items() if name not in skip}
        return cls(**{f.name: given[own] for f in dataclasses.fields(cls)
                      if (own := OWN_NAMES.get(f.name, f.name)) in given})


def SamplerSettings(sampler: str | None = None, steps: int | None = None, guidance: float = DEFAULT_GUIDANCE,
                    eta: float = 0.0, seed: int = 0, binding: float = 0.0,
                    binding_candidates: int = BindingGuidance.candidates,
                    cache_interval: int = 1, cache_depth: int = 1) -> GenerationSettings:
    """The `GenerationSettings` of ldmkit's earlier evaluation type, under its names and argument order
    (``SamplerSettings("ddim", 25, 4.0, seed=0)``), so that scripts written against it keep running; its
    guidance scale defaults to 4, the text-to-image pipeline's."""
    return GenerationSettings(sampler=sampler, num_inference_steps=steps, guidance_scale=guidance, eta=eta, seed=seed,
                              binding=binding, binding_candidates=binding_candidates, cache_interval=cache_interval,
                              cache_depth=cache_depth)


def check_prompt_syntax(prompt_syntax) -> str:
    """``prompt_syntax`` if it is one of `PROMPT_SYNTAXES`; a UsageError naming the allowed ones otherwise."""
    if prompt_syntax not in PROMPT_SYNTAXES:
        raise UsageError(f"prompt_syntax = {prompt_syntax!r}; allowed: {', '.join(PROMPT_SYNTAXES)}")
    return prompt_syntax


def check_cache_interval(cache_interval, steps: int | None) -> None:
    """UsageError unless the feature-reuse interval N is an integer 1 … `MAX_CACHE_INTERVAL` (the server's bound)
    and, with reuse on (N > 1), below the n steps that run (``steps``; None: the model's own, checked once known).
    The whole UNet runs at steps 0, N, 2N, … (`ldmkit.nn.feature_cache`): with N ≥ n only step 0 would run it,
    and every later step would reuse the deep features of the noisiest one."""
    _check_int("cache_interval", cache_interval, 1, MAX_CACHE_INTERVAL)
    if cache_interval > 1 and steps is not None and cache_interval >= steps:
        allowed = "1 (off)" if steps <= 2 else f"1 … {min(steps - 1, MAX_CACHE_INTERVAL)} (1: off)"
        raise UsageError(f"cache_interval = {cache_interval} with {steps} steps: the whole UNet would run at the "
                         f"first step only; must be below the steps, allowed: {allowed}")


def check_cache_depth(cache_depth, num_res_blocks: int | None = None) -> None:
    """UsageError unless the feature-reuse depth k is an integer 0 … the UNet's blocks per level (``num_res_blocks``;
    None: `MAX_CACHE_DEPTH`, checked against the model once known). The shallow branch that runs between full
    steps is conv_in, the first k blocks of the first encoder level and the last k + 1 of the last decoder level
    (`UNet.forward_split`): k = 1 is DeepCache's branch 0, k = 0 the shallowest (fastest) one."""
    top = MAX_CACHE_DEPTH if num_res_blocks is None else num_res_blocks
    if isinstance(cache_depth, bool) or not isinstance(cache_depth, int) or not 0 <= cache_depth <= top:
        what = f"this UNet has {top} block{'s' * (top != 1)} per level" if num_res_blocks is not None else \
            "at most the UNet's blocks per level"
        raise UsageError(f"cache_depth = {cache_depth!r}; allowed: an integer 0 … {top} ({what}; 1: DeepCache's "
                         "branch 0, the default; 0: the shallowest branch)")


def check_steps(steps: int | None, num_timesteps: int, name: str = "num_inference_steps =") -> None:
    """UsageError for more sampling steps than the model's T = ``num_timesteps`` (every step is at a timestep of its
    own, 0 … T−1); None: the model's own count. ``name``: how the message names the value ("--steps" on the
    command line)."""
    if steps is not None and steps > num_timesteps:
        raise UsageError(f"{name} {steps} is more than the model's {num_timesteps} timesteps; "
                         f"allowed: 1 … {num_timesteps}")


def _check_int(name: str, value, low: int, high: int | None = None, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        _refuse(name, value, f"an integer {low} … {high}" if high is not None else f"an integer ≥ {low}", optional)


def _check_number(name: str, value, optional: bool = False, below: float = math.inf,
                  at_most: float = math.inf, why: str = "") -> None:
    """UsageError unless ``value`` is a number with 0 ≤ value < ``below`` and value ≤ ``at_most`` (finite); ``why``:
    what the range means, said after it."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < below and value <= at_most):
        allowed = "a finite number ≥ 0"
        if below != math.inf:
            allowed = f"a number in [0, {below:g})"
        elif at_most != math.inf:
            allowed = f"a number in [0, {at_most:g}]"
        _refuse(name, value, allowed + (f" ({why})" if why else ""), optional)


def _check_choice(name: str, value, allowed) -> None:
    if value is not None and value not in allowed:
        raise UsageError(f"{name} = {value!r}; allowed: {', '.join(allowed)} or None (the model's own)")


def _refuse(name: str, value, allowed: str, optional: bool) -> None:
    raise UsageError(f"{name} = {value!r}; must be {allowed}" + (" or None (the pipeline's own)" if optional else ""))
