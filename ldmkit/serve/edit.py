"""Prompt-to-Prompt edits (`PromptToPromptPipeline`) as jobs of the server's queue: the pipeline over a served
model, the queue's runner, the saver of the output folder, the `ldmkit edit` command that redraws an edit,
and the prompt checks made before an edit is queued. The routes are `ldmkit.serve.edit_routes`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from ldmkit.errors import UsageError
from ldmkit.serve.edit_schemas import EditRequest, EditSettings, pair_filenames
from ldmkit.serve.jobs import Job
from ldmkit.storage import atomic_path


def edit_pipeline_for(pipeline) -> tuple[object | None, str | None]:
    """(a `PromptToPromptPipeline` over ``pipeline``'s model, on its device and precision, None), or
    (None, why the model cannot edit). The model is shared, not copied."""
    model = getattr(pipeline, "model", None)
    if model is None or getattr(model, "tokenizer", None) is None or model.config.condition.kind != "text":
        return None, "Prompt-to-Prompt needs a text model with a tokenizer; the model served is not one"
    if getattr(pipeline, "is_student", False):
        return None, ("the model served is a consistency student (ldmkit distill), which samples with lcm only; "
                      "Prompt-to-Prompt samples with DDIM: serve its teacher to edit")
    from ldmkit.pipelines.prompt_to_prompt import PromptToPromptPipeline

    edit = PromptToPromptPipeline(model, pipeline.device, precision=getattr(pipeline, "precision", "fp32"))
    return edit, None


def edit_runner(edit_pipe) -> Callable:
    """The queue's ``run`` for `EditSettings`: one call, the images as [source 0, edit 0, source 1, …]."""

    def run(settings: EditSettings, on_step):
        out = edit_pipe(settings.source_prompt, settings.target_prompt, mode=settings.mode,
                        cross_replace_steps=settings.cross_replace, self_replace_steps=settings.self_replace,
                        local_blend_words=list(settings.blend_words) or None,
                        blend_threshold=settings.blend_threshold, num_inference_steps=settings.steps,
                        guidance_scale=settings.guidance, generator=settings.seed,
                        num_images_per_prompt=settings.num_images, callback=on_step)
        return list(out.images)

    return run


def edit_saver(folder: str | Path) -> Callable[[Job], None]:
    """``on_done`` for edit jobs: ``{job id}_source.png``, ``{job id}_edit.png`` (``_source_K``, ``_edit_K``
    for several pairs) and ``{job id}.json`` (the settings). Names come from the job id only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def save(job: Job) -> None:
        names = [name for pair in pair_filenames(job.settings.num_images) for name in pair]
        for name, png in zip(names, job.images):
            with atomic_path(folder / f"{job.id}_{name}") as tmp:
                tmp.write_bytes(png)
        with atomic_path(folder / f"{job.id}.json") as tmp:
            tmp.write_text(job.settings.model_dump_json(indent=2) + "\n")

    return save


def edit_command(settings: EditSettings, model: str | None, load_options: tuple[str, ...] = ()) -> str:
    """The `ldmkit edit` call that writes the same images (bit for bit) into ``out/`` as source.png and
    edit.png (source_K.png, edit_K.png for several pairs); ``model`` None: the shipped model (no --model).
    ``load_options``: the options the model was loaded with (--prediction, --no-ema, --precision), repeated so
    that the command loads the model the server ran. Text goes in as ``--option=value`` or after ``--``, so
    that a prompt starting with "-" is no option."""
    s = settings
    argv = ["ldmkit", "edit", *([] if model is None else [f"--model={model}"]), *load_options, "--out-dir=out/",
            f"--mode={s.mode}", f"--cross-replace={s.cross_replace!r}", f"--self-replace={s.self_replace!r}"]
    if s.blend_words:
        argv += [f"--blend={' '.join(s.blend_words)}", f"--blend-threshold={s.blend_threshold!r}"]
    argv += [f"--steps={s.steps}", f"--guidance={s.guidance!r}", f"--seed={s.seed}", f"--num-images={s.num_images}"]
    return shlex.join([*argv, "--", s.source_prompt, s.target_prompt])


def prompt_errors(tokenizer, request: EditRequest) -> list[dict]:
    """FastAPI-style error entries for prompts that do not align for the mode (on the prompt at fault)
    and for blend words in neither prompt (on ``blend_words[k]``); empty when the edit can run."""
    from ldmkit.diffusion.prompt_to_prompt import align, blend_selections, parse_weights

    def error(loc: tuple, e: Exception | str) -> list[dict]:
        msg = str(e).replace("--mode ", "mode ")  # the CLI's wording; here the field is "mode"
        return [{"loc": ("body", *loc), "msg": msg, "type": "value_error"}]

    source, target = request.source_prompt, request.target_prompt
    try:
        if parse_weights(source)[1]:
            return error(("source_prompt",), "weights such as red(2) go in the target prompt, not the source")
    except UsageError as e:
        return error(("source_prompt",), e)
    try:
        align(tokenizer, source, target, request.mode)
    except UsageError as e:
        return error(("target_prompt",), e)
    errors = []
    for k, word in enumerate(request.blend_words):
        try:
            blend_selections(tokenizer, source, target, [word])
        except UsageError as e:
            errors += error(("blend_words", k), e)
    return errors
