"""diffusers' calling convention on the pipelines: its names give the images ldmkit's names give, the old names
still work with a DeprecationWarning, ``generator`` takes an int or a CPU torch.Generator, ``output_type``
gives PIL images, tensors or arrays, and a mistake in a call says what the call takes."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.errors import UsageError
from ldmkit.pipelines import ImageToImagePipeline, InpaintingPipeline
from ldmkit.pipelines.calling import ImagePipelineOutput
from tests.tiny_models import build_attentive_tiny_model, build_tiny_model


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(build_tiny_model(tmp_path_factory.getbasetemp() / "calling-tiny-model"))


@pytest.fixture(scope="module")
def attentive(tmp_path_factory):
    """A tiny model whose images follow its prompts (`build_attentive_tiny_model`)."""
    return load_pipeline(build_attentive_tiny_model(tmp_path_factory.getbasetemp() / "calling-attentive-model"))


def arrays(images) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images])


def test_diffusers_names_give_the_images_ldmkit_names_gave(pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the diffusers names warn about nothing
        out = pipe("a red circle", num_inference_steps=3, guidance_scale=3.0, generator=7, num_images_per_prompt=2)
    assert isinstance(out, ImagePipelineOutput) and isinstance(out, list)
    assert out.images is out and len(out.images) == 2 and isinstance(out.images[0], Image.Image)
    with pytest.warns(DeprecationWarning, match=r"steps= is deprecated: give diffusers' name num_inference_steps="):
        old = pipe("a red circle", steps=3, guidance=3.0, seed=7, num_images=2)
    assert np.array_equal(arrays(out.images), arrays(old))


def test_generator_is_an_int_seed_or_a_cpu_generator(pipe):
    seeded = pipe("a blue square", num_inference_steps=2, generator=5).images
    drawn = pipe("a blue square", num_inference_steps=2, generator=torch.Generator().manual_seed(5)).images
    assert np.array_equal(arrays(seeded), arrays(drawn))
    g = torch.Generator().manual_seed(5)
    first = pipe("a blue square", num_inference_steps=2, generator=g).images
    second = pipe("a blue square", num_inference_steps=2, generator=g).images  # the generator has moved on
    assert np.array_equal(arrays(first), arrays(seeded)) and not np.array_equal(arrays(second), arrays(first))
    with pytest.raises(UsageError, match="give a CPU torch.Generator or an int seed"):
        pipe("a blue square", num_inference_steps=2, generator="5")
    if torch.cuda.is_available():
        with pytest.raises(UsageError, match="give a CPU torch.Generator"):
            pipe("a blue square", num_inference_steps=2, generator=torch.Generator("cuda"))


def test_output_type_pt_and_np_are_the_images_in_zero_one(pipe):
    pil = pipe("a red circle", num_inference_steps=2, generator=1, num_images_per_prompt=2).images
    pt = pipe("a red circle", num_inference_steps=2, generator=1, num_images_per_prompt=2, output_type="pt").images
    arr = pipe("a red circle", num_inference_steps=2, generator=1, num_images_per_prompt=2, output_type="np").images
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 3, *pil[0].size[::-1]) and 0 <= pt.min() and pt.max() <= 1
    assert isinstance(arr, np.ndarray) and arr.shape == (2, *pil[0].size[::-1], 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy())
    assert np.abs(arr * 255 - arrays(pil)).max() <= 1  # PIL's are the same images in 8 bits
    with pytest.raises(UsageError, match="output_type='jpg'; allowed: pil, pt, np, latent"):
        pipe("a red circle", num_inference_steps=2, output_type="jpg")


def test_a_mistaken_call_says_what_the_call_takes(pipe):
    with pytest.raises(TypeError, match="takes prompt by position and every option by keyword"):
        pipe("a red circle", 3)
    with pytest.raises(TypeError, match="unexpected keyword 'num_steps'.*num_inference_steps, guidance_scale, generator"):
        pipe("a red circle", num_steps=3)
    with pytest.raises(TypeError, match="both steps= and num_inference_steps= given"):
        pipe("a red circle", steps=3, num_inference_steps=3)
    with pytest.raises(TypeError, match="both seed= and generator= given"):
        pipe("a red circle", seed=1, generator=1)


def test_image_to_image_takes_the_same_names(pipe):
    img2img = ImageToImagePipeline(pipe.model)
    source = pipe("a red circle", num_inference_steps=2, generator=0).images[0]
    new = img2img(source, "a blue circle", strength=0.5, num_inference_steps=4, guidance_scale=3.0, generator=2)
    with pytest.warns(DeprecationWarning):
        old = img2img(source, "a blue circle", strength=0.5, steps=4, guidance=3.0, seed=2)
    assert np.array_equal(arrays(new.images), arrays(old))


def test_a_list_of_negative_prompts_is_one_per_prompt(attentive):
    pipe = attentive
    prompts = ["a red circle", "a blue square"]
    each = pipe(prompts, negative_prompt=["a blue circle", "a red square"], num_inference_steps=2, generator=3,
                output_type="pt").images
    first = pipe(prompts, negative_prompt="a blue circle", num_inference_steps=2, generator=3, output_type="pt").images
    second = pipe(prompts, negative_prompt="a red square", num_inference_steps=2, generator=3, output_type="pt").images
    torch.testing.assert_close(each[0], first[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(each[1], second[1], rtol=0, atol=1e-6)
    assert (each[1] - first[1]).abs().max() > 1e-4  # the second negative was used for the second image
    shared = pipe(prompts, negative_prompt=["a blue circle"], num_inference_steps=2, generator=3, output_type="pt")
    torch.testing.assert_close(shared.images, first, rtol=0, atol=1e-6)  # a list of one is shared
    # with num_images_per_prompt each negative follows its prompt's images
    many = pipe(prompts, negative_prompt=["a blue circle", "a red square"], num_inference_steps=2, generator=3,
                num_images_per_prompt=2, output_type="pt").images
    assert many.shape[0] == 4
    with pytest.raises(UsageError, match="3 negative prompts for 2 prompts; give one, or one per prompt"):
        pipe(prompts, negative_prompt=["a", "b", "c"], num_inference_steps=2)
    with pytest.raises(UsageError, match="negative_prompt = 5; give a string or a non-empty list of strings"):
        pipe(prompts, negative_prompt=5, num_inference_steps=2)


def test_a_wrong_value_is_named_before_any_work(pipe):
    for keyword, value, allowed in [("num_inference_steps", 4.0, "an integer ≥ 1"),
                                    ("height", 64.0, "an integer ≥ 1"), ("num_images_per_prompt", 0, "an integer ≥ 1"),
                                    ("guidance_scale", "4", "a finite number ≥ 0")]:
        with pytest.raises(UsageError, match=f"^{keyword} = {value!r}; must be {allowed}"):
            pipe("a red circle", **{keyword: value})
    with pytest.raises(UsageError, match="generator=18446744073709551616: give a CPU torch.Generator or an int seed 0"):
        pipe("a red circle", generator=2**64)
    for prompt in ([], None, [1, 2]):
        with pytest.raises(UsageError, match="^prompt = .*; give a string or a non-empty list of strings"):
            pipe(prompt, num_inference_steps=2)
    # NumPy numbers are numbers
    numpy_made = pipe("a red circle", num_inference_steps=np.int64(2), guidance_scale=np.float32(3.0),
                      generator=np.int64(5), output_type="pt").images
    plain = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, generator=5, output_type="pt").images
    assert torch.equal(numpy_made, plain)


def test_image_to_image_takes_diffusers_order_by_keyword_and_numpy_images(pipe):
    img2img = ImageToImagePipeline(pipe.model)
    source = pipe("a red circle", num_inference_steps=2, generator=0).images[0]
    options = dict(strength=0.5, num_inference_steps=2, generator=2, output_type="pt")
    ours = img2img(source, "a blue circle", **options).images
    assert torch.equal(img2img("a blue circle", image=source, **options).images, ours)  # diffusers' call
    assert torch.equal(img2img(np.asarray(source), "a blue circle", **options).images, ours)  # uint8 H×W×3
    unit = np.asarray(source, dtype=np.float32)[None] / 255.0  # B×H×W×3 in [0, 1], diffusers' arrays
    torch.testing.assert_close(img2img(unit, "a blue circle", **options).images, ours, rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="the image is a str .*takes the image first: pass image= by keyword"):
        img2img("a blue circle", source, **options)
    assert img2img(source, "a blue circle", num_images_per_prompt=2, **options).images.shape[0] == 2


def test_a_diffusers_name_a_call_does_not_take_is_named_as_given(tmp_path_factory):
    inpainting = InpaintingPipeline.from_folder(
        build_tiny_model(tmp_path_factory.getbasetemp() / "calling-tiny-inpaint", "tiny-inpaint"))
    with pytest.raises(TypeError, match="unexpected keyword 'num_images_per_prompt'"):  # the name the caller gave
        inpainting.uncrop(Image.new("RGB", (32, 32)), num_images_per_prompt=2)


def test_an_attention_hook_set_in_one_thread_changes_nothing_in_another(attentive):
    """Prompt-to-Prompt sets hooks on the model's attention layers; a call in another thread on the same model
    must draw what it draws alone."""
    import threading

    pipe = attentive

    from ldmkit.nn.transformer import BasicTransformerBlock

    alone = pipe("a red circle", num_inference_steps=2, generator=4, output_type="pt").images
    blocks = [m for m in pipe.model.unet.modules() if isinstance(m, BasicTransformerBlock)]
    for block in blocks:
        block.attn2.probs_hook = torch.zeros_like  # in this thread: attention to nothing
    try:
        here = pipe("a red circle", num_inference_steps=2, generator=4, output_type="pt").images
        there = []
        worker = threading.Thread(target=lambda: there.append(
            pipe("a red circle", num_inference_steps=2, generator=4, output_type="pt").images))
        worker.start()
        worker.join()
    finally:
        for block in blocks:
            block.attn2.probs_hook = None
    assert not torch.equal(here, alone) and torch.equal(there[0], alone)


def test_a_scheduler_swap_as_in_diffusers_says_how_ldmkit_picks_a_sampler(pipe):
    with pytest.raises(AttributeError, match="the sampler is chosen per call, e.g. pipe\\(prompt, sampler="):
        pipe.scheduler.config
    with pytest.raises(AttributeError, match="the sampler is chosen per call"):
        pipe.scheduler = object()


def test_samples_that_overflow_are_refused_not_turned_black(pipe):
    with pytest.raises(UsageError, match="the samples hold NaN or infinite values"):
        pipe("a red circle", num_inference_steps=2, guidance_scale=1e300)


def test_the_output_is_the_list_of_its_images_whatever_their_type(pipe):
    arr = pipe("a red circle", num_inference_steps=2, generator=1, num_images_per_prompt=2, output_type="np")
    assert len(arr) == 2 and np.array_equal(arr[1], arr.images[1]) and arr[0].shape == arr.images.shape[1:]
    pt = pipe("a red circle", num_inference_steps=2, generator=1, num_images_per_prompt=2, output_type="pt")
    assert len(pt) == 2 and torch.equal(pt[0], pt.images[0])


def test_a_generator_goes_beside_settings_that_leave_the_seed_unset(pipe):
    from ldmkit.settings import GenerationSettings

    settings = GenerationSettings(num_inference_steps=2)
    beside = pipe("a red circle", settings=settings, generator=torch.Generator().manual_seed(6), output_type="pt")
    assert torch.equal(beside.images, pipe("a red circle", num_inference_steps=2, generator=6, output_type="pt").images)
    with pytest.raises(TypeError, match="generator= beside settings="):
        pipe("a red circle", settings=GenerationSettings(seed=3), generator=torch.Generator())


def test_a_callback_of_diffusers_old_shape_is_refused_before_any_work(pipe):
    steps = []
    pipe("a red circle", num_inference_steps=2, callback=lambda i, n: steps.append((i, n)))
    assert steps == [(0, 2), (1, 2)]
    with pytest.raises(UsageError, match=r"callback must take \(i, n\)"):
        pipe("a red circle", num_inference_steps=2, callback=lambda step, timestep, latents: None)


def test_a_device_that_is_not_here_is_refused_before_the_model_loads(tmp_path_factory, monkeypatch):
    """load_pipeline(…, device=…) checks the device as the command line's --device does, before any loading: a CUDA
    device on a machine without one, and names torch has no device for ("gpu") or ldmkit does not run on ("mps"),
    are one line each (were torch's AssertionError after the load, and RuntimeErrors)."""
    from ldmkit.model import LatentDiffusion
    from ldmkit.pipelines import TextToImagePipeline

    folder = build_tiny_model(tmp_path_factory.getbasetemp() / "calling-tiny-model")
    loads, real_load = [], LatentDiffusion.load.__func__
    monkeypatch.setattr(LatentDiffusion, "load",
                        classmethod(lambda cls, *a, **k: loads.append(a) or real_load(cls, *a, **k)))
    refused = ["gpu", "mps", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda", torch.device("cuda")])
    for device in refused:
        with pytest.raises(UsageError, match=r"^device='(gpu|mps|cuda(:99)?)' (is not a device ldmkit runs on; "
                                             r"allowed: auto, cpu, cuda, cuda:N|was asked for, but)"):
            load_pipeline(folder, device=device)
    assert loads == []
    with pytest.raises(UsageError, match="^device='mps' is not a device"):
        TextToImagePipeline(load_pipeline(folder).model, device="mps")
    assert load_pipeline(folder, device=torch.device("cpu")).device == torch.device("cpu")


def test_to_moves_the_pipeline_and_returns_it_as_in_diffusers(pipe):
    before = pipe("a red circle", num_inference_steps=2, generator=3, output_type="np").images
    assert pipe.to("cpu") is pipe and pipe.to(torch.device("cpu")) is pipe and pipe.device == torch.device("cpu")
    assert np.array_equal(pipe("a red circle", num_inference_steps=2, generator=3, output_type="np").images, before)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="^device='cuda' was asked for, but no CUDA device is available"):
            pipe.to("cuda")
        assert pipe.device == torch.device("cpu") and next(pipe.model.parameters()).device.type == "cpu"
    else:
        assert pipe.to("cuda").device.type == "cuda" and next(pipe.model.parameters()).device.type == "cuda"
        cuda = pipe("a red circle", num_inference_steps=2, generator=3, output_type="np").images
        assert np.abs(cuda - before).max() < 0.05  # the same z_T (a CPU generator): the same image but for rounding
        pipe.to("cpu")
    with pytest.raises(UsageError, match="^device='gpu' is not a device"):
        pipe.to("gpu")


def test_a_cache_interval_not_below_the_steps_is_refused_in_a_keyword_call(pipe):
    """The settings check sees one option at a time; the call checks the interval against the steps it runs."""
    with pytest.raises(UsageError, match="cache_interval = 5 with 5 steps"):
        pipe("a red circle", num_inference_steps=5, cache_interval=5)


def test_none_for_an_option_whose_default_is_none_is_the_pipelines_own(pipe, tmp_path_factory):
    """guidance_scale=None (and num_inference_steps, height, sampler … = None) is the pipeline's own default, as the
    settings read None and the error message for a bad value promises (was a TypeError in the guidance)."""
    own = pipe("a red circle", num_inference_steps=2, generator=3, output_type="pt").images
    nones = pipe("a red circle", num_inference_steps=2, generator=3, output_type="pt", guidance_scale=None,
                 height=None, width=None, sampler=None, spacing=None, steps_offset=None).images
    assert torch.equal(nones, own)
    img2img = ImageToImagePipeline(pipe.model)
    source = pipe("a red circle", num_inference_steps=2, generator=0).images[0]
    options = dict(strength=0.5, num_inference_steps=2, generator=2, output_type="pt")
    assert torch.equal(img2img(source, "a blue circle", guidance_scale=None, **options).images,
                       img2img(source, "a blue circle", **options).images)
    inpainting = InpaintingPipeline.from_folder(
        build_tiny_model(tmp_path_factory.getbasetemp() / "calling-tiny-inpaint", "tiny-inpaint"))
    image, mask = Image.new("RGB", (32, 32), "red"), Image.new("L", (32, 32), 255)
    assert torch.equal(inpainting(image, mask, guidance_scale=None, num_inference_steps=None, generator=1,
                                  output_type="pt").images,
                       inpainting(image, mask, generator=1, output_type="pt").images)


def test_negative_prompt_none_is_no_negative_prompt(pipe):
    """diffusers' default negative_prompt=None means none, as ""."""
    none = pipe("a red circle", negative_prompt=None, num_inference_steps=2, generator=3, output_type="pt").images
    assert torch.equal(none, pipe("a red circle", num_inference_steps=2, generator=3, output_type="pt").images)
    img2img = ImageToImagePipeline(pipe.model)
    source = pipe("a red circle", num_inference_steps=2, generator=0).images[0]
    options = dict(strength=0.5, num_inference_steps=2, generator=2, output_type="pt")
    assert torch.equal(img2img(source, "a blue circle", negative_prompt=None, **options).images,
                       img2img(source, "a blue circle", **options).images)


def test_an_image_list_of_mixed_sizes_or_none_is_one_line_saying_so(pipe):
    img2img = ImageToImagePipeline(pipe.model)
    big, small = Image.new("RGB", (32, 32)), Image.new("RGB", (16, 16))
    with pytest.raises(UsageError, match=r"^the image list holds images of different sizes, 32×32, 16×16 "
                                         r"\(width×height\); give images of one size$"):
        img2img([big, small], "a blue star", num_inference_steps=2)
    with pytest.raises(UsageError, match="^the image is an empty list; give a PIL image, a non-empty list"):
        img2img([], "a blue star", num_inference_steps=2)


def test_return_dict_false_is_diffusers_tuple(pipe):
    images, nsfw = pipe("a red circle", num_inference_steps=2, generator=3, output_type="pt", return_dict=False)
    assert nsfw is None
    assert torch.equal(images, pipe("a red circle", num_inference_steps=2, generator=3, output_type="pt").images)
    img2img = ImageToImagePipeline(pipe.model)
    out = img2img(Image.new("RGB", (32, 32)), "a blue star", num_inference_steps=2, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 2 and isinstance(out[0][0], Image.Image) and out[1] is None
    with pytest.raises(UsageError, match="^return_dict='no'; give True"):
        pipe("a red circle", num_inference_steps=2, return_dict="no")


def test_output_type_latent_is_z0_before_the_decoder(pipe):
    """z_0 as diffusers returns it: what D reads after its 1/scaling_factor, so decoding it gives the image."""
    latents = pipe("a red circle", num_inference_steps=2, generator=3, num_images_per_prompt=2,
                   output_type="latent").images
    f = pipe.model.autoencoder.downsample_factor
    size = pipe.model.config.image_size
    assert latents.shape == (2, pipe.model.config.unet.out_channels, size // f, size // f)
    pt = pipe("a red circle", num_inference_steps=2, generator=3, num_images_per_prompt=2, output_type="pt").images
    torch.testing.assert_close(((pipe.decode(latents) + 1) / 2).clamp(0, 1), pt, rtol=0, atol=1e-6)
    img2img = ImageToImagePipeline(pipe.model)
    options = dict(strength=0.5, num_inference_steps=2, generator=2)
    z = img2img(Image.new("RGB", (32, 32)), "a blue star", output_type="latent", **options).images
    pt = img2img(Image.new("RGB", (32, 32)), "a blue star", output_type="pt", **options).images
    torch.testing.assert_close(((img2img.decode(z) + 1) / 2).clamp(0, 1), pt, rtol=0, atol=1e-6)


def z_T_shape(pipe, batch: int = 1) -> tuple[int, ...]:
    f = pipe.model.autoencoder.downsample_factor
    return (batch, pipe.model.config.unet.out_channels, pipe.model.config.image_size // f,
            pipe.model.config.image_size // f)


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_latents_is_z_T_as_diffusers_takes_it(pipe, sampler):
    """latents=torch.randn(…) starts the sampling there with no scaling (diffusers multiplies by the scheduler's
    init_noise_sigma, σ-space Euler's √(1 + σ_max²); ldmkit's samplers hold z_t at unit variance): the image of the
    same noise drawn from a seed."""
    shape = z_T_shape(pipe, 2)
    z_T = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    given = pipe("a red circle", latents=z_T, num_inference_steps=3, num_images_per_prompt=2, sampler=sampler,
                 output_type="pt").images
    drawn = pipe("a red circle", generator=5, num_inference_steps=3, num_images_per_prompt=2, sampler=sampler,
                 output_type="pt").images
    torch.testing.assert_close(given, drawn, rtol=0, atol=1e-6)
    with pytest.raises(UsageError, match=r"^latents of shape \(1, .*\); give z_T as a float tensor of shape "
                                         + re.escape(str(shape))):
        pipe("a red circle", latents=z_T[:1], num_images_per_prompt=2, num_inference_steps=2)
    with pytest.raises(UsageError, match="binding_candidates = 4 picks z_T among several starting noises"):
        pipe("a red circle above a blue square", latents=z_T[:1], binding=1.0, binding_candidates=4,
             num_inference_steps=2)


def test_callback_on_step_end_sees_and_replaces_the_latents(pipe):
    from ldmkit.diffusion import sampler_timesteps

    seen = []

    def record(p, i, t, kwargs):
        seen.append((p, i, int(t), tuple(kwargs["latents"].shape)))
        return kwargs

    for sampler, options in [("ddim", {}), ("euler-a", {}), ("ddim", {"cache_interval": 2}), ("plms", {}),
                             ("dpmpp-2m", {}), ("unipc", {})]:
        plain = pipe("a red circle", num_inference_steps=4, generator=3, sampler=sampler, output_type="pt",
                     **options).images
        seen.clear()
        stepped = pipe("a red circle", num_inference_steps=4, generator=3, sampler=sampler, output_type="pt",
                       callback_on_step_end=record, **options).images
        assert torch.equal(stepped, plain), sampler  # running it step by step draws the same image
        grid = pipe.grid_options(sampler)
        assert seen == [(pipe, i, t, z_T_shape(pipe)) for i, t in
                        enumerate(sampler_timesteps(sampler, pipe.model.schedule, 4, **grid))]

    def zero_at_last(p, i, t, kwargs):  # the returned "latents" replace them, as in diffusers
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 3 else {}

    for sampler in ("ddim", "plms", "dpmpp-2m", "unipc"):
        assert torch.equal(pipe("a red circle", num_inference_steps=4, output_type="latent", sampler=sampler,
                                callback_on_step_end=zero_at_last).images, torch.zeros(z_T_shape(pipe))), sampler
    steps = []
    pipe("a red circle", num_inference_steps=2, callback_on_step_end=lambda p, i, t, k: k,
         callback_on_step_end_tensor_inputs=[], callback=lambda i, n: steps.append((i, n)))
    assert steps == [(0, 2), (1, 2)]  # ldmkit's callback(i, n) beside it
    for bad, message in [(dict(callback_on_step_end=lambda i, t: None), "must take four arguments"),
                         (dict(callback_on_step_end=record, callback_on_step_end_tensor_inputs=["prompt_embeds"]),
                          r"callback_on_step_end_tensor_inputs = \['prompt_embeds'\]; give a list of names from: "
                          "'latents'"),
                         (dict(callback_on_step_end=lambda p, i, t, k: None), "returned NoneType; it must return a dict"),
                         (dict(callback_on_step_end=lambda p, i, t, k: None, sampler="unipc"),
                          "returned NoneType; it must return a dict")]:
        with pytest.raises(UsageError, match=message):
            pipe("a red circle", num_inference_steps=2, **bad)


def test_a_list_of_generators_draws_each_image_from_its_own(pipe):
    """diffusers' generator=[g_0, g_1, …]: image i's z_T from g_i, so each image is the one its generator draws
    alone."""
    one = [pipe("a red circle", num_inference_steps=2, generator=seed, output_type="pt").images[0] for seed in (4, 9)]
    both = pipe("a red circle", num_inference_steps=2, num_images_per_prompt=2, output_type="pt",
                generator=[torch.Generator().manual_seed(4), torch.Generator().manual_seed(9)]).images
    torch.testing.assert_close(both, torch.stack(one), rtol=0, atol=1e-6)
    with pytest.raises(UsageError, match="^generator is a list of 1 torch.Generators for 2 images"):
        pipe("a red circle", num_inference_steps=2, num_images_per_prompt=2, generator=[torch.Generator()])
    with pytest.raises(UsageError, match="^generator is a list: the euler-a sampler draws noise at every step"):
        pipe("a red circle", num_inference_steps=2, sampler="euler-a", generator=[torch.Generator()])
    with pytest.raises(UsageError, match="^generator is a list holding 3"):
        pipe("a red circle", num_inference_steps=2, generator=[3])
    img2img = ImageToImagePipeline(pipe.model)
    source = Image.new("RGB", (32, 32), "red")
    alone = img2img(source, "a blue star", num_inference_steps=2, generator=4, output_type="pt").images
    listed = img2img(source, "a blue star", num_inference_steps=2, generator=[torch.Generator().manual_seed(4)],
                     output_type="pt").images
    assert torch.equal(listed, alone)


@pytest.mark.parametrize("preset", ["tiny-class", "tiny-inpaint"])
def test_class_and_inpainting_pipelines_take_a_list_of_generators(tmp_path_factory, preset):
    """generator=[g_0, g_1]: image i is the one g_i draws alone, as in text-to-image (inpainting from the image
    noised part-way too: the noise it is noised with is g_i's)."""
    from ldmkit.pipelines import ClassConditionalPipeline

    folder = build_tiny_model(tmp_path_factory.getbasetemp() / f"calling-{preset}", preset)
    if preset == "tiny-class":
        pipe = ClassConditionalPipeline.from_folder(folder)
        inputs, options = (pipe.classes[0],), {}
    else:
        pipe = InpaintingPipeline.from_folder(folder)
        image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
        inputs, options = (image, Image.new("L", (32, 32), 255)), {"strength": 0.75}

    def draw(generator, n=1):
        return pipe(*inputs, num_inference_steps=4, generator=generator, num_images_per_prompt=n,
                    output_type="pt", **options).images

    both = draw([torch.Generator().manual_seed(4), torch.Generator().manual_seed(9)], n=2)
    torch.testing.assert_close(both, torch.cat([draw(4), draw(9)]), rtol=0, atol=1e-5)  # a batch of 2 rounds apart
    assert (both[0] - both[1]).abs().max() > 0.01  # two generators, two images
