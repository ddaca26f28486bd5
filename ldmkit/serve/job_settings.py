"""A server job's settings (`Settings`, `ClassSettings`, `ImageSettings`: the JSON of the API, in its own
names) as the `GenerationSettings` its pipeline call takes: the one place where the server's names become
the library's, for ldmkit's own routes and the A1111 and OpenAI ones alike (they all make these jobs)."""

from __future__ import annotations

from ldmkit.serve.schemas import ClassSettings, ImageSettings, Settings
from ldmkit.settings import GenerationSettings


def to_settings(job: Settings | ClassSettings | ImageSettings) -> GenerationSettings:
    """The sampling settings of ``job``. A field a job type does not have keeps its default (a class job has
    no negative prompt, binding or Karras σ; a text job's binding candidates are the library's). An image job
    draws one image per input at the input's size, so its ``num_images`` (the batch of inputs its runner
    builds), ``width`` and ``height`` (the output's size, reported) are not sampling settings."""
    image_job = isinstance(job, ImageSettings)
    return GenerationSettings(
        num_inference_steps=job.steps, guidance_scale=job.guidance, seed=job.seed, sampler=job.sampler,
        num_images_per_prompt=1 if image_job else job.num_images,
        height=None if image_job else job.height, width=None if image_job else job.width,
        negative_prompt=getattr(job, "negative_prompt", ""), karras=getattr(job, "karras", False),
        binding=getattr(job, "binding", 0.0), cache_interval=getattr(job, "cache_interval", 1),
        cache_depth=getattr(job, "cache_depth", 1), eta=job.eta,
        prompt_syntax=getattr(job, "prompt_syntax", "plain"),
    )
