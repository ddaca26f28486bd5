"""One settings type (`ldmkit.settings.GenerationSettings`) for the pipelines, the CLI, the server and the
evaluation: the same request draws bit-identical images whichever way it arrives (keywords, a settings
object, `ldmkit generate`, a server job, the evaluation's batches); a value no pipeline takes is one line
naming the field; a sampling option given both as a keyword and in the settings is a TypeError; every default
means what each pipeline's own default means."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.cli import build_parser, main
from ldmkit.errors import UsageError
from ldmkit.eval.generation import generate_for_prompts
from ldmkit.pipelines import (
    ClassConditionalPipeline, ColorizationPipeline, ImageToImagePipeline, InpaintingPipeline, SuperResolutionPipeline,
    TextToImagePipeline,
)
from ldmkit.settings import GenerationSettings, SamplerSettings
from tests.tiny_models import build_tiny_model

PROMPT = "a red circle on the left"
# Several fields away from their defaults, so that each reaches the sampler.
SETTINGS = GenerationSettings(num_inference_steps=3, guidance_scale=3.0, num_images_per_prompt=2, seed=5,
                              sampler="dpmpp-2m", karras=True, negative_prompt="a blue square", cache_interval=2,
                              height=32, width=32)
KEYWORDS = dict(num_inference_steps=3, guidance_scale=3.0, num_images_per_prompt=2, generator=5, sampler="dpmpp-2m",
                karras=True, negative_prompt="a blue square", cache_interval=2, height=32, width=32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.getbasetemp() / "settings-tiny-model")


@pytest.fixture(scope="module")
def pipe(folder):
    return load_pipeline(folder)


@pytest.fixture(scope="module")
def drawn(pipe) -> np.ndarray:
    """The images of `KEYWORDS`, the call as it was before the settings type."""
    return arrays(pipe(PROMPT, **KEYWORDS).images)


def arrays(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB")) for im in images])


def test_a_settings_object_draws_what_the_keywords_draw(pipe, drawn):
    assert SETTINGS.pipeline_kwargs() == KEYWORDS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated name is involved
        assert np.array_equal(arrays(pipe(PROMPT, settings=SETTINGS).images), drawn)
    as_tensors = pipe(PROMPT, settings=SETTINGS, output_type="pt").images  # steering keywords go beside it
    assert torch.equal(as_tensors, pipe(PROMPT, **KEYWORDS, output_type="pt").images)


def test_ldmkit_generate_builds_the_settings_and_draws_the_same_images(folder, drawn, tmp_path):
    argv = ["generate", PROMPT, "--model", str(folder), "--out", str(tmp_path / "out"), "--num-images", "2",
            "--steps", "3", "--guidance", "3", "--seed", "5", "--sampler", "dpmpp-2m", "--karras",
            "--negative-prompt", "a blue square", "--cache-interval", "2", "--height", "32", "--width", "32",
            "--device", "cpu", "--no-progress"]
    assert GenerationSettings.from_args(build_parser().parse_args(argv)) == SETTINGS
    assert main(argv) == 0
    written = arrays(Image.open(tmp_path / "out" / f"5_00{k}.png") for k in range(2))
    assert np.array_equal(written, drawn)


def test_a_server_job_converts_in_one_place_and_draws_the_same_images(pipe, drawn):
    pytest.importorskip("fastapi")
    from ldmkit.serve.image_jobs import image_runner, png_bytes
    from ldmkit.serve.job_settings import to_settings
    from ldmkit.serve.limits import Limits
    from ldmkit.serve.schemas import GenerateRequest, ImageSettings
    from ldmkit.serve.served import pipeline_runner

    request = GenerateRequest(prompt=PROMPT, steps=3, guidance=3.0, num_images=2, seed=5, sampler="dpmpp-2m",
                              karras=True, negative_prompt="a blue square", cache_interval=2)
    job = request.resolve(Limits.from_pipeline(pipe))
    assert to_settings(job) == SETTINGS
    assert np.array_equal(arrays(pipeline_runner(pipe)(job, lambda i, n: None)), drawn)

    # An image job: its batch of inputs and its output size are not sampling settings.
    source = Image.fromarray(drawn[0])
    img2img = ImageToImagePipeline(pipe.model)
    image_job = ImageSettings(mode="img2img", prompt="a blue circle", negative_prompt="", steps=3, guidance=3.0,
                              sampler="euler", seed=2, num_images=1, strength=0.5, width=32, height=32, karras=True,
                              image=png_bytes(source))
    assert to_settings(image_job) == GenerationSettings(num_inference_steps=3, guidance_scale=3.0, sampler="euler",
                                                        seed=2, karras=True)
    served = image_runner({"img2img": img2img})(image_job, lambda i, n: None)
    direct = img2img(source, "a blue circle", strength=0.5, num_inference_steps=3, guidance_scale=3.0,
                     sampler="euler", generator=2, karras=True)
    assert np.array_equal(arrays(served), arrays(direct))


def test_the_evaluation_draws_what_its_keywords_drew(pipe):
    prompts = ["a red circle", "a blue square above a yellow star", "a green triangle"]
    settings = SamplerSettings("ddim", 2, 4.0, seed=3)  # the earlier name and argument order
    assert settings == GenerationSettings(sampler="ddim", num_inference_steps=2, guidance_scale=4.0, seed=3)
    images = generate_for_prompts(pipe, prompts, settings, batch_size=2)
    before = torch.cat([pipe.generate_tensors(prompts[:2], steps=2, guidance=4.0, seed=3, num_images=1, sampler="ddim",
                                              eta=0.0, binding=0.0, cache_interval=1),
                        pipe.generate_tensors(prompts[2:], steps=2, guidance=4.0, seed=4, num_images=1, sampler="ddim",
                                              eta=0.0, binding=0.0, cache_interval=1)])
    assert torch.equal(images, before)


def test_describe_keeps_the_wording_of_the_results_files():
    assert SamplerSettings("ddim", 25).describe() == "ddim, 25 steps, guidance 4"
    assert (GenerationSettings(sampler="euler", num_inference_steps=10, guidance_scale=7.5, binding=0.3,
                               cache_interval=3).describe()
            == "euler, 10 steps, guidance 7.5, binding 0.3 (best of 2), cache interval 3")
    assert GenerationSettings(sampler="ddim", num_inference_steps=20, guidance_scale=4.0, cache_interval=3,
                              cache_depth=0).describe() == "ddim, 20 steps, guidance 4, cache interval 3 at depth 0"
    assert "depth" not in GenerationSettings(cache_depth=0).describe()  # no reuse: the depth does nothing


@pytest.mark.parametrize("field, value, allowed", [
    ("num_inference_steps", 0, "an integer ≥ 1 or None"),
    ("guidance_scale", float("nan"), "a finite number ≥ 0 or None"),
    ("guidance_scale", -1.0, "a finite number ≥ 0"),
    ("num_images_per_prompt", 2.0, "an integer ≥ 1"),
    ("height", True, "an integer ≥ 1 or None"),
    ("eta", float("inf"), r"a number in \[0, 1\]"),
    ("eta", 1.5, r"a number in \[0, 1\] \(DDIM's η: 0 deterministic, 1 DDPM's noise\)"),
    ("seed", -1, "an integer 0 … 18446744073709551615"),
    ("sampler", "heun", "allowed: ddpm, ddim, euler, dpmpp-2m, euler-a, plms, unipc, lcm"),
    ("spacing", "even", "allowed: trailing, leading, linspace"),
    ("karras", 1, "True or False"),
    ("guidance_stop", 1.0, r"a number in \[0, 1\)"),
    ("binding_candidates", 0, "an integer ≥ 1"),
    ("cache_interval", 0, "an integer 1 … 10"),
    ("cache_interval", 11, "an integer 1 … 10"),
    ("cache_depth", -1, "an integer 0 … 4"),
    ("cache_depth", 5, "an integer 0 … 4"),
    ("negative_prompt", None, "a string"),
])
def test_a_value_no_pipeline_takes_is_one_line_naming_the_field(field, value, allowed):
    with pytest.raises(UsageError, match=f"^{field} = .*{allowed}") as caught:
        GenerationSettings(**{field: value})
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_a_cache_interval_must_be_below_the_steps_it_runs_over(pipe):
    """With N ≥ n only step 0 would run the whole UNet: refused in one line, by the settings and the call."""
    assert GenerationSettings(num_inference_steps=4, cache_interval=3).cache_interval == 3
    assert GenerationSettings(num_inference_steps=1).cache_interval == 1  # 1 is off at any step count
    for steps, interval, allowed in ((25, 25, "1 … 10"), (5, 5, "1 … 4"), (2, 2, "1 \\(off\\)")):
        with pytest.raises(UsageError, match=f"cache_interval = {interval}"
                                             f"{'' if interval > 10 else f' with {steps} steps'}.*{allowed}") as caught:
            GenerationSettings(num_inference_steps=steps, cache_interval=interval)
        assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="cache_interval = 11; must be an integer 1 … 10"):
        pipe(PROMPT, cache_interval=11)
    with pytest.raises(UsageError, match="cache_interval = 3 with 3 steps"):
        pipe(PROMPT, settings=GenerationSettings(num_inference_steps=3, cache_interval=3))


def test_an_option_given_twice_is_a_type_error_naming_it(pipe):
    for keyword in ("guidance_scale", "generator", "steps", "num_images_per_prompt", "karras"):
        with pytest.raises(TypeError, match=f"got {keyword}= beside settings="):
            pipe(PROMPT, settings=SETTINGS, **{keyword: KEYWORDS.get(keyword, 3)})
    with pytest.raises(TypeError, match="give an ldmkit.settings.GenerationSettings"):
        pipe(PROMPT, settings=KEYWORDS)
    # A field the pipeline has no option for is named as the settings' field, not silently dropped.
    with pytest.raises(TypeError, match="settings.binding = 0.2, which it does not take"):
        ImageToImagePipeline(pipe.model)(Image.new("RGB", (32, 32)), PROMPT,
                                         settings=GenerationSettings(binding=0.2))


def test_from_args_skips_an_option_that_means_something_else():
    args = build_parser().parse_args(["eval", "generate", "--num-images", "64", "--steps", "4", "--binding", "0.3"])
    assert (GenerationSettings.from_args(args, skip=("num_images",))
            == GenerationSettings(num_inference_steps=4, binding=0.3))  # guidance: the model's own
    img2img = build_parser().parse_args(["img2img", "in.png", "a star", "--model", "m", "--negative-prompt", "a box"])
    assert GenerationSettings.from_args(img2img) == GenerationSettings(  # steps, sampler, guidance: the model's own
        negative_prompt="a box")


CALLS = [TextToImagePipeline.generate_tensors, ClassConditionalPipeline.__call__, ImageToImagePipeline.__call__,
         InpaintingPipeline.__call__, InpaintingPipeline.uncrop, SuperResolutionPipeline.__call__,
         ColorizationPipeline.__call__]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__qualname__)
def test_a_default_field_means_the_pipelines_own_default(call):
    """Why a field at its default can be left out of a call: None (the pipeline's own) or the very default of
    every pipeline option of that name."""
    own = {"steps": "num_inference_steps", "guidance": "guidance_scale", "num_images": "num_images_per_prompt"}
    defaults = {f.name: f.default for f in dataclasses.fields(GenerationSettings)}
    for name, parameter in inspect.signature(call).parameters.items():
        field = own.get(name, name)
        if field in defaults and defaults[field] is not None:
            assert parameter.default == defaults[field], (call.__qualname__, name)
