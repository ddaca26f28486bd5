"""The models one server serves: each under its name, with its kind, its limits and the pipeline of each mode.

Every model is loaded when the server starts (`ldmkit serve` loads each ``--model`` before it listens),
and all stay in memory together: a request for any of them runs at once, with nothing to load, and a model
that cannot load stops the server at start instead of failing a request later. The memory is the sum of
the models' (the shipped ones are 15 MiB each; a Stable Diffusion model takes gigabytes). They share the
server's one queue and worker: one job runs at a time, whichever model it asks for.

A model's modes (`ldmkit.serve.schemas.MODES`) follow its condition kind: a text model generates, and
redraws images (img2img) unless it is a consistency student; a class model draws classes; an sr, inpaint
or colorize model upscales, inpaints or colorizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from ldmkit.errors import UsageError
from ldmkit.serve.commands import job_command
from ldmkit.serve.dispatch import by_settings_type
from ldmkit.serve.edit import edit_pipeline_for, edit_runner
from ldmkit.serve.edit_schemas import EditSettings
from ldmkit.serve.image_jobs import image_runner, img2img_pipeline_for
from ldmkit.serve.job_settings import to_settings
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import ClassSettings, ImageSettings, Settings

MODE_OF_KIND = {"class": "class", "sr": "upscale", "inpaint": "inpaint", "colorize": "colorize"}  # text: below
KIND_NAMES = {"text": "text-to-image", "class": "class-conditional", "sr": "super-resolution",
              "inpaint": "inpainting", "colorize": "colorization"}


def pipeline_runner(pipe) -> Callable:
    """The queue's ``run`` for `Settings`: one pipeline call per job, so a job's images are one batch from one
    seed, as `ldmkit generate --num-images` draws them."""

    def run(settings: Settings, on_step):
        return pipe(settings.prompt, settings=to_settings(settings), callback=on_step)

    return run


def class_runner(pipe) -> Callable:
    """The queue's ``run`` for `ClassSettings`: one batch from one seed, as `ldmkit generate --class` draws it."""

    def run(settings: ClassSettings, on_step):
        return pipe(settings.class_name, settings=to_settings(settings), callback=on_step)

    return run


@dataclass(frozen=True)
class ServedModel:
    """One model served under ``name``. ``kind``: its condition kind (text, class, sr, inpaint, colorize).
    ``pipelines``: mode → the pipeline that runs it, the model's default mode first. ``command_model``: the
    ``--model`` of the commands that reproduce its images (None: the shipped model, which `ldmkit generate`
    takes without one). ``edit_pipeline``: what runs its Prompt-to-Prompt edits, or None for ``edit_reason``.
    ``adapters``: the ``--lora=…``/``--embedding=…`` options it was loaded with, which its commands repeat.
    ``load_options``: the `ldmkit generate` options it was loaded with (``--prediction=…``, ``--no-ema``,
    ``--precision=bf16``: `ldmkit.cli.serve.command_options`), which its commands repeat too.
    ``borrowed``: modes run by another model's pipeline (a text model's ``inpaint_pipeline``), whose images
    no command over this model draws."""

    name: str
    kind: str
    limits: Limits
    pipelines: Mapping[str, object]
    command_model: str | None = None
    edit_pipeline: object | None = None
    edit_reason: str | None = None
    adapters: tuple[str, ...] = ()
    load_options: tuple[str, ...] = ()
    borrowed: tuple[str, ...] = ()
    _run: Callable = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_run", by_settings_type({
            Settings: _runner(pipeline_runner, self.pipelines.get("generate")),
            ClassSettings: _runner(class_runner, self.pipelines.get("class")),
            ImageSettings: image_runner(self.pipelines),
            EditSettings: _runner(edit_runner, self.edit_pipeline),
        }))

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.pipelines)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of a class model; () for the other kinds."""
        pipe = self.pipelines.get("class")
        return tuple(pipe.classes) if pipe is not None else ()

    @property
    def sr_factor(self) -> int | None:
        """Output side / input side of a super-resolution model; None for the other kinds."""
        pipe = self.pipelines.get("upscale")
        return pipe.factor if pipe is not None else None

    def run(self, settings, on_step):
        """Run one job of this model (the queue's ``run``): the pipeline of the settings' type and mode."""
        return self._run(settings, on_step)

    def read_as(self, settings) -> str | None:
        """The job's prompt as its pipeline read it, where that differs from the prompt sent (a word the model never
        saw read as the nearest it knows: `LatentDiffusion.in_known_words`); None otherwise, and for jobs without
        a prompt."""
        prompt = getattr(settings, "prompt", None)
        pipe = self.pipelines.get(getattr(settings, "mode", None) or "generate")
        read_in = getattr(getattr(pipe, "model", None), "in_known_words", None)  # a stand-in pipeline may have none
        if not prompt or read_in is None or getattr(settings, "mode", None) in self.borrowed:
            return None
        read = read_in([prompt])[0]
        return read if read != prompt else None

    def command(self, settings) -> str | None:
        """The `ldmkit` command that draws the images of a job of this model (`job_command`), or None."""
        if getattr(settings, "mode", None) in self.borrowed:
            return None
        return job_command(settings, self.command_model, self.adapters, self.load_options)


def _runner(make: Callable, pipe) -> Callable | None:
    return None if pipe is None else make(pipe)


def served_model(name: str, pipeline, *, command_model: str | None = None, limits: Limits | None = None,
                 max_size: int | None = None, edit_pipeline=None, inpaint_pipeline=None,
                 adapters: tuple[str, ...] = (), load_options: tuple[str, ...] = ()) -> ServedModel:
    """``pipeline`` (any ldmkit pipeline, or a stand-in called as `TextToImagePipeline`, which has no
    ``.model`` and is taken for a text model) served as ``name``, with the pipelines of its modes built over
    the same model (shared, not copied). ``limits``: default `Limits.from_pipeline` with ``max_size``.
    ``edit_pipeline``: None: a `PromptToPromptPipeline` over a text model. ``inpaint_pipeline``: an inpainting
    pipeline a text model also offers (its masked A1111 img2img and OpenAI edits then inpaint). ``adapters``,
    ``load_options``: the options it was loaded with, which its commands repeat (`ServedModel`)."""
    model = getattr(pipeline, "model", None)
    kind = model.config.condition.kind if model is not None else "text"
    limits = limits if limits is not None else Limits.from_pipeline(pipeline, max_size)
    if kind == "text":
        pipelines = {"generate": pipeline, "img2img": img2img_pipeline_for(pipeline), "inpaint": inpaint_pipeline}
        pipelines = {mode: pipe for mode, pipe in pipelines.items() if pipe is not None}
    else:
        pipelines = {MODE_OF_KIND[kind]: pipeline}
    edit_reason = None
    if edit_pipeline is None:
        edit_pipeline, edit_reason = edit_pipeline_for(pipeline)
    return ServedModel(name=name, kind=kind, limits=limits, pipelines=pipelines, command_model=command_model,
                       edit_pipeline=edit_pipeline, edit_reason=edit_reason, adapters=tuple(adapters),
                       load_options=tuple(load_options),
                       borrowed=("inpaint",) if kind == "text" and inpaint_pipeline is not None else ())


class ServedModels:
    """The models of one server by name, in the order given: the first is the default of a request that
    names none. Two models of one name are a `UsageError`."""

    def __init__(self, models: Sequence[ServedModel]):
        if not models:
            raise UsageError("a server needs at least one model")
        self._by_name: dict[str, ServedModel] = {}
        for model in models:
            if model.name in self._by_name:
                raise UsageError(f"two models are named {model.name!r}; give each its own name")
            self._by_name[model.name] = model

    @property
    def default(self) -> ServedModel:
        return next(iter(self._by_name.values()))

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._by_name.values())

    def get(self, name: str | None) -> ServedModel | None:
        """The model called ``name`` (None: the default), or None where no model has that name."""
        return self.default if name is None else self._by_name.get(name)

    def unknown(self, name: str) -> str:
        """What to answer a request for a model not served: the name, and the allowed names."""
        return f"no model {name!r} is served here; allowed: {', '.join(repr(n) for n in self._by_name)}"

    def having(self, mode: str) -> list[str]:
        """The names of the models that run ``mode``."""
        return [model.name for model in self if mode in model.pipelines]
