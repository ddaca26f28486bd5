"""The `ldmkit` command that writes a job's images again, bit for bit, for each kind of job.

Text goes in as ``--option=value`` or after ``--`` so that a prompt or file name starting with "-" is not
read as an option. Every command writes into ``out/``: `ldmkit generate` one ``{seed}_{index:03d}.png`` per
image (``--overwrite``: the folder may hold other images), the image commands (`img2img`, `upscale`,
`inpaint`, `colorize`) the one file ``out/{seed}_000.png``, reading the input under the name the request
gave it (``image_name``, ``mask_name``). A model loaded with --prediction, --no-ema or --precision
(``load_options``, `ldmkit.cli.serve.command_options`) has them in each of its commands.
"""

from __future__ import annotations

import shlex

from ldmkit.pretrained import DEFAULT
from ldmkit.serve.outputs import image_filename
from ldmkit.serve.schemas import IMAGE_MODES, ClassSettings, ImageSettings, Settings

SHIPPED = f"{DEFAULT} (shipped)"  # a model name whose generate command needs no --model: generate's default


def _model_option(model: str | None) -> list[str]:
    return [] if model in (None, SHIPPED) else [f"--model={model}"]


def _sampling(settings) -> list[str]:
    """The options every command takes: steps, guidance, sampler, seed, and DDIM's η where it is not 0."""
    eta = [f"--eta={settings.eta!r}"] if settings.eta else []
    return [f"--steps={settings.steps}", f"--guidance={settings.guidance!r}", f"--sampler={settings.sampler}",
            *eta, f"--seed={settings.seed}"]


def reproduce_command(settings: Settings, model: str | None, adapters: tuple[str, ...] = (),
                      load_options: tuple[str, ...] = ()) -> str:
    """The `ldmkit generate` call that writes the same images into ``out/``. ``model``: its ``--model``
    (None or `SHIPPED`: none, the shipped model being generate's default). ``adapters``: the server's
    ``--lora=…`` / ``--embedding=…`` options; ``load_options``: the model's --prediction, --no-ema, --precision."""
    argv = ["ldmkit", "generate", *_model_option(model), *load_options, *adapters, "--out=out/", "--overwrite",
            *_sampling(settings),
            f"--num-images={settings.num_images}", f"--height={settings.height}", f"--width={settings.width}"]
    if settings.negative_prompt:
        argv.append(f"--negative-prompt={settings.negative_prompt}")
    if settings.binding:
        argv.append(f"--binding={settings.binding!r}")
    argv += _reuse(settings)
    if settings.karras:
        argv.append("--karras")
    if settings.prompt_syntax != "plain":
        argv.append(f"--prompt-syntax={settings.prompt_syntax}")
    return shlex.join([*argv, "--", settings.prompt])


def class_command(settings: ClassSettings, model: str | None, load_options: tuple[str, ...] = ()) -> str:
    """The `ldmkit generate --class` call that writes the same images into ``out/`` (``load_options``: as
    `reproduce_command`'s)."""
    argv = ["ldmkit", "generate", *_model_option(model), *load_options, f"--class={settings.class_name}", "--out=out/",
            "--overwrite", *_sampling(settings), f"--num-images={settings.num_images}",
            f"--height={settings.height}", f"--width={settings.width}"]
    argv += _reuse(settings)
    return shlex.join(argv)


def image_command(settings: ImageSettings, model: str | None, adapters: tuple[str, ...] = (),
                  load_options: tuple[str, ...] = ()) -> str | None:
    """The `ldmkit img2img | upscale | inpaint | colorize` call that writes the same image as
    ``out/{seed}_000.png`` (with the model's ``load_options``); None where no command draws it: several images
    in one batch (the commands draw one), Karras σ, a model served with ``adapters`` (LoRA, embeddings: these
    commands take none), an inpainting from the image noised part-way (A1111's ``denoising_strength``
    below 1: `ldmkit inpaint` has no --strength), or A1111's masked img2img."""
    if (settings.mode not in IMAGE_MODES or settings.num_images != 1 or settings.karras or adapters
            or (settings.mode == "inpaint" and settings.strength < 1)):
        return None
    s = settings
    argv = ["ldmkit", s.mode, f"--model={DEFAULT if model in (None, SHIPPED) else model}", *load_options,
            f"--out=out/{image_filename(s.seed, 0)}", *_sampling(s)]
    inputs = [s.image_name]
    if s.mode == "img2img":
        argv.append(f"--strength={s.strength!r}")
        if s.negative_prompt:
            argv.append(f"--negative-prompt={s.negative_prompt}")
        inputs.append(s.prompt)
    elif s.mode == "inpaint":
        argv.append(f"--mask={s.mask_name or 'mask.png'}")
        inputs += [s.prompt] if s.prompt else []
    elif s.prompt:
        argv.append(f"--prompt={s.prompt}")
    if s.prompt_syntax != "plain":
        argv.append(f"--prompt-syntax={s.prompt_syntax}")
    return shlex.join([*argv, "--", *inputs])


def job_command(settings, model: str | None, adapters: tuple[str, ...] = (),
                load_options: tuple[str, ...] = ()) -> str | None:
    """The command of any job of the /v1/jobs routes (`Settings`, `ClassSettings`, `ImageSettings`), or None
    where no command draws its images (`image_command`)."""
    if isinstance(settings, ClassSettings):
        return class_command(settings, model, load_options)
    if isinstance(settings, ImageSettings):
        return image_command(settings, model, adapters, load_options)
    return reproduce_command(settings, model, adapters, load_options)


def _reuse(settings) -> list[str]:
    """The feature-reuse options of ``settings`` that differ from generate's defaults."""
    if settings.cache_interval == 1:
        return []
    depth = [f"--cache-depth={settings.cache_depth}"] if settings.cache_depth != 1 else []
    return [f"--cache-interval={settings.cache_interval}", *depth]
