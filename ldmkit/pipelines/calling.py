"""diffusers' calling convention for the pipelines' ``__call__``.

    out = pipe("a red circle", num_inference_steps=25, guidance_scale=4.0, num_images_per_prompt=4,
               generator=torch.Generator().manual_seed(0), output_type="pil")
    out.images                      # four PIL images (``out`` is also that list)

Options are keyword-only, under diffusers' names: ``num_inference_steps`` (ldmkit's ``steps``),
``guidance_scale`` (``guidance``), ``num_images_per_prompt`` (``num_images``), ``generator`` (a CPU
``torch.Generator``, or an int seed; ldmkit's ``seed``) and ``output_type`` ("pil", "pt": B×3×H×W float in
[0, 1], "np": B×H×W×3 float in [0, 1]; "latent": z_0, where the pipeline's ``output_types`` has it). ldmkit's
own names still work, with a DeprecationWarning, until ldmkit 0.2. The other options (``negative_prompt``,
``height``, ``width``, ``sampler``, ``binding`` …) keep their names. An option whose settings field defaults to
None (``num_inference_steps``, ``guidance_scale``, ``height``, ``sampler`` …) given as None is the pipeline's
own, as left out; ``return_dict=False`` makes ``__call__`` return diffusers' tuple ``(images, None)``.

The sampling options may instead come as one `ldmkit.settings.GenerationSettings`:
``pipe("a red circle", settings=GenerationSettings(num_inference_steps=25, seed=0))`` draws what the same
keywords draw. The keywords that only steer a call (``output_type``, ``callback``, ``progress``, img2img's
``strength`` …) go beside it, and so does a ``generator=torch.Generator(…)`` where the settings leave their
seed unset; a sampling option given both ways is a TypeError naming it, never a silent override.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import warnings
from typing import Callable

import numpy as np
import torch

from ldmkit.bounds import MAX_SEED
from ldmkit.errors import UsageError
from ldmkit.images import tensor_to_pil
from ldmkit.settings import CALL_NAMES, OWN_NAMES, GenerationSettings

DIFFUSERS_NAMES = OWN_NAMES  # diffusers' name → ldmkit's earlier one
OWN_TO_DIFFUSERS = {own: name for name, own in DIFFUSERS_NAMES.items()}
OUTPUT_TYPES = ("pil", "pt", "np")  # every pipeline's; "latent" too where its ``output_types`` says so
# The `GenerationSettings` fields whose default is None, "the pipeline's own": None in a call means the same.
OWN_DEFAULT_FIELDS = {f.name for f in dataclasses.fields(GenerationSettings) if f.default is None}
STEP_END_TENSOR_INPUTS = ("latents",)  # what ``callback_on_step_end_tensor_inputs`` may name
# Every keyword that sets a field of `GenerationSettings` (diffusers', ldmkit's and the call's names) → the field.
SETTINGS_KEYWORDS = {alias: f.name for f in dataclasses.fields(GenerationSettings)
                     for alias in (f.name, OWN_NAMES.get(f.name, f.name), CALL_NAMES.get(f.name, f.name))}


class ImagePipelineOutput(list):
    """A call's images as ``.images`` (diffusers' output): PIL images, or for ``output_type`` "pt" / "np" a
    B×3×H×W tensor / B×H×W×3 array in [0, 1]. The output is also the list of its images, one entry per image
    (``out[0]`` the first: a PIL image, a 3×H×W tensor or an H×W×3 array), what ldmkit's calls returned before."""

    def __init__(self, images):
        super().__init__(images if isinstance(images, list) else list(images))
        self.images = self if isinstance(images, list) else images


def image_output(images: torch.Tensor, output_type: str = "pil") -> ImagePipelineOutput:
    """``images`` (B×3×H×W in [−1, 1], as ``generate_tensors`` returns them) in the form ``output_type`` asks.
    Samples that hold NaN or inf are a `UsageError`: numbers that pass their checks can still overflow the
    sampler (a guidance scale of 1e300, a LoRA scale of 1e30), and 8-bit images would hide it as black."""
    if not torch.isfinite(images).all():
        raise UsageError("the samples hold NaN or infinite values (a guidance scale, LoRA scale, η or strength too "
                         "large for the sampler's numbers?); nothing was made of them")
    if output_type == "latent":  # z_0 itself (B×C×h×w, as the sampler returns it: D reads z_0 / scaling factor)
        return ImagePipelineOutput(images.float().cpu())
    if output_type == "pil":
        return ImagePipelineOutput([tensor_to_pil(x) for x in images])
    unit = ((images.float() + 1) / 2).clamp(0, 1)
    return ImagePipelineOutput(unit if output_type == "pt" else unit.permute(0, 2, 3, 1).numpy().astype(np.float32))


def seed_or_generator(generator, lists: bool = False,
                      where: str = "this call") -> int | torch.Generator | list[torch.Generator]:
    """What the pipelines' ``seed`` takes: an int 0 … `MAX_SEED` (a NumPy integer too), or a CPU
    ``torch.Generator`` (z_T and every later noise drawn from it; ldmkit draws noise on the CPU so that a seed gives
    the same image on every device); with ``lists``, also a non-empty list of CPU generators, one per image
    (`Pipeline.sample_latents` checks their number). ``where``: the call, named in messages."""
    if isinstance(generator, (list, tuple)):
        if not lists:
            raise UsageError(f"generator is a list: {where} takes one CPU torch.Generator or an int seed")
        if not generator:
            raise UsageError("generator is an empty list; give one CPU torch.Generator per image, or one generator")
        for g in generator:
            if not isinstance(g, torch.Generator):
                raise UsageError(f"generator is a list holding {g!r}; give a list of CPU torch.Generators, one per "
                                 "image, or one generator or int seed")
            seed_or_generator(g)
        return list(generator)
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise UsageError(f"generator on {generator.device}: give a CPU torch.Generator (ldmkit draws noise on the "
                             "CPU, so that a seed gives the same image on every device), or an int seed")
        return generator
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral) or not 0 <= generator <= MAX_SEED:
        raise UsageError(f"generator={generator!r}: give a CPU torch.Generator or an int seed 0 … {MAX_SEED}")
    return int(generator)


def check_callback(callback) -> None:
    """``callback`` must take (i, n), ldmkit's step callback; diffusers' old ``callback(step, timestep, latents)``
    is a `UsageError` saying so, before any work."""
    if callback is None:
        return
    if not callable(callback):
        raise UsageError(f"callback = {callback!r}; give a function callback(i, n) called after step i of n")
    try:
        inspect.signature(callback).bind(0, 1)
    except TypeError:
        raise UsageError("callback must take (i, n), called after sampler step i of n; diffusers' "
                         "callback(step, timestep, latents) is not supported") from None
    except ValueError:  # a builtin without a signature: it is called as it is
        pass


def check_step_end(callback_on_step_end, tensor_inputs) -> None:
    """diffusers' ``callback_on_step_end(pipe, step_index, timestep, callback_kwargs) -> dict`` must be a function
    taking those four arguments, and ``tensor_inputs`` a list of names of `STEP_END_TENSOR_INPUTS`; a
    `UsageError` otherwise, before any work."""
    allowed = ", ".join(repr(n) for n in STEP_END_TENSOR_INPUTS)
    if isinstance(tensor_inputs, str) or not isinstance(tensor_inputs, (list, tuple)) \
            or any(n not in STEP_END_TENSOR_INPUTS for n in tensor_inputs):
        raise UsageError(f"callback_on_step_end_tensor_inputs = {tensor_inputs!r}; give a list of names from: "
                         f"{allowed}")
    if callback_on_step_end is None:
        return
    shape = "callback_on_step_end(pipe, step_index, timestep, callback_kwargs) returning a dict"
    if not callable(callback_on_step_end):
        raise UsageError(f"callback_on_step_end = {callback_on_step_end!r}; give a function {shape}")
    try:
        inspect.signature(callback_on_step_end).bind(None, 0, 0, {})
    except TypeError:
        raise UsageError(f"callback_on_step_end must take four arguments: {shape} (diffusers' "
                         "PipelineCallback objects are not supported)") from None
    except ValueError:  # a builtin without a signature: it is called as it is
        pass


def step_end(pipe, callback_on_step_end: Callable, tensor_inputs, step_index: int, timestep: int,
             latents: torch.Tensor) -> torch.Tensor:
    """diffusers' ``callback_on_step_end`` after sampler step ``step_index`` (at ``timestep``, given as a 0-d int64
    tensor): called with ``{"latents": z}`` where ``tensor_inputs`` names them (z after the step, B×C×h×w); the
    dict it returns may replace them (``"latents"``), as in diffusers. The latents the sampling goes on from."""
    kwargs = {"latents": latents} if "latents" in tensor_inputs else {}
    outputs = callback_on_step_end(pipe, step_index, torch.tensor(timestep), kwargs)
    if not isinstance(outputs, dict):
        raise UsageError(f"callback_on_step_end returned {type(outputs).__name__}; it must return a dict (the "
                         "callback_kwargs it was given, with \"latents\" replaced to change them)")
    new = outputs.get("latents", latents)
    if not isinstance(new, torch.Tensor) or new.shape != latents.shape:
        shown = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise UsageError(f"callback_on_step_end returned latents of {shown}; they must be a tensor of the shape it "
                         f"was given, {tuple(latents.shape)}")
    return new.float().to(latents.device)


def checked_options(kwargs: dict) -> dict:
    """``kwargs`` (ldmkit's names) with each option that is a field of `GenerationSettings` checked as the settings
    check it (a `UsageError` naming the option in diffusers' name and what it allows) and NumPy numbers made
    Python ones; an option given as None whose field defaults to None (`OWN_DEFAULT_FIELDS`) is left out, so that
    the pipeline's own default applies, as the settings read None. The seed (`seed_or_generator`) and the
    negative prompt (a list, or None for none, is allowed here) are checked where they are read."""
    checked = dict(kwargs)
    check_callback(kwargs.get("callback"))
    if "callback_on_step_end" in kwargs or "callback_on_step_end_tensor_inputs" in kwargs:
        check_step_end(kwargs.get("callback_on_step_end"), kwargs.get("callback_on_step_end_tensor_inputs",
                                                                      list(STEP_END_TENSOR_INPUTS)))
    for name, value in kwargs.items():
        field = SETTINGS_KEYWORDS.get(OWN_TO_DIFFUSERS.get(name, name))
        if field is None or field in ("seed", "negative_prompt"):
            continue
        if value is None and field in OWN_DEFAULT_FIELDS:
            del checked[name]
            continue
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, (bool, float)):
            value = float(value)
        GenerationSettings(**{field: value})
        checked[name] = value
    return checked


def diffusers_call(inputs: int) -> Callable:
    """Decorate a pipeline's ``__call__(self, <inputs positional>, *, steps, guidance, seed, num_images, …,
    output_type)`` so that it takes diffusers' names (the module docstring) and its options by keyword only."""

    def decorate(method: Callable) -> Callable:
        own = inspect.signature(method).parameters
        input_names = list(own)[1: inputs + 1]  # after self
        forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values())

        def where(self) -> str:
            return type(self).__name__ + ("()" if method.__name__ == "__call__" else f".{method.__name__}()")

        @functools.cache
        def accepted(cls: type) -> dict:
            """The keywords the call takes: a __call__ that forwards **options to generate_tensors takes
            what generate_tensors takes (computed once per pipeline class)."""
            parameters = ({**inspect.signature(cls.generate_tensors).parameters, **own} if forwards else own)
            return {n: p for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}

        @functools.wraps(method)
        def call(self, *args, settings: GenerationSettings | None = None, **kwargs):
            parameters = accepted(type(self))
            if settings is not None:
                kwargs = {**settings_keywords(settings, kwargs, where(self)), **kwargs}
            if len(args) > inputs:
                names = ", ".join(input_names)
                raise TypeError(f"{where(self)} takes {names} by position and every option by keyword "
                                f"(diffusers' names: num_inference_steps=, guidance_scale=, …); got {len(args)} "
                                "positional arguments")
            kwargs = bind_inputs(args, kwargs, input_names, where(self))
            args = ()
            given = {}  # ldmkit's name → the name the caller used, for messages
            for new, old in DIFFUSERS_NAMES.items():
                if old in kwargs and old in parameters:
                    if new in kwargs:
                        raise TypeError(f"both {old}= and {new}= given; give {new}= only")
                    warnings.warn(f"{old}= is deprecated: give diffusers' name {new}= (the old name works until "
                                  "ldmkit 0.2)", DeprecationWarning, stacklevel=2)
                elif new in kwargs:
                    kwargs[old] = kwargs.pop(new)
                    given[old] = new
            return_dict = kwargs.pop("return_dict", True) if method.__name__ == "__call__" else True
            if not isinstance(return_dict, bool):
                raise UsageError(f"return_dict={return_dict!r}; give True (the output) or False (diffusers' tuple "
                                 "(images, None))")
            lists = getattr(self, "generator_lists", False)
            if "generator" in kwargs:
                if "seed" in kwargs:
                    raise TypeError("both seed= and generator= given; give generator= only")
                kwargs["seed"] = seed_or_generator(kwargs.pop("generator"), lists, where(self))
            elif "seed" in kwargs:
                warnings.warn("seed= is deprecated: give diffusers' name generator= (an int seed or a CPU "
                              "torch.Generator; the old name works until ldmkit 0.2)", DeprecationWarning, stacklevel=2)
            output_type = kwargs.get("output_type", "pil")
            output_types = getattr(self, "output_types", OUTPUT_TYPES)
            if output_type not in output_types:
                raise UsageError(f"output_type={output_type!r}; allowed: {', '.join(output_types)}")
            unknown = sorted(set(kwargs) - set(parameters))
            if unknown:
                options = ["generator" if n == "seed" else OWN_TO_DIFFUSERS.get(n, n)
                           for n in parameters if n != "self" and n not in input_names] + ["settings"]
                field = SETTINGS_KEYWORDS.get(unknown[0]) if settings is not None else None
                what = (f"settings.{field} = {getattr(settings, field)!r}, which it does not take (leave it at its "
                        "default)" if field else f"an unexpected keyword {given.get(unknown[0], unknown[0])!r}")
                raise TypeError(f"{where(self)} got {what}; its options: {', '.join(options)}")
            out = method(self, **checked_options(kwargs))
            return out if return_dict else (out.images, None)  # diffusers': (images, nsfw_content_detected)

        return call

    return decorate


def bind_inputs(args: tuple, kwargs: dict, input_names: list[str], where: str) -> dict:
    """``kwargs`` with the positional ``args`` bound to the inputs not given by keyword, in their order: diffusers
    callers write ``img2img("a blue square", image=img)``, which binds the string to ``prompt``."""
    free = [name for name in input_names if name not in kwargs]
    if len(args) > len(free):
        taken = ", ".join(f"{name}=" for name in input_names if name in kwargs)
        raise TypeError(f"{where} got {len(args)} positional arguments beside {taken}; its inputs are "
                        f"{', '.join(input_names)}, in that order")
    return {**dict(zip(free, args)), **kwargs}


def settings_keywords(settings: GenerationSettings, kwargs: dict, where: str) -> dict:
    """The call keywords of ``settings`` (`GenerationSettings.pipeline_kwargs`), after checking that none of
    its fields is also among the call's ``kwargs``: TypeError naming the first such keyword."""
    if not isinstance(settings, GenerationSettings):
        raise TypeError(f"{where}: settings={settings!r}; give an ldmkit.settings.GenerationSettings")
    for name in kwargs:
        if name == "generator" and isinstance(kwargs[name], (torch.Generator, list)) and settings.seed == 0:
            continue  # a torch.Generator (or a list of them) has no place in the settings: it goes beside them,
            # their seed left unset
        if name in SETTINGS_KEYWORDS:
            field = SETTINGS_KEYWORDS[name]
            raise TypeError(f"{where} got {name}= beside settings=; give {field} in the settings "
                            f"(dataclasses.replace(settings, {field}=…)) or as a keyword, not both")
    return settings.pipeline_kwargs()
