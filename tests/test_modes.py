"""Conditions beyond text on the tiny presets: class labels, super-resolution, inpainting and
uncropping, colorization, and image-to-image (SDEdit) with a text model.

Each model trains for a few steps only: the tests check shapes, masks, refusals and exact identities,
not image quality (that is benchmarks/modes.py's job)."""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ldmkit.cli import main
from ldmkit.condition import class_labels, downsample, grayscale, mean_fill, random_masks, resize_to, uncrop_mask
from ldmkit.config import ModelConfig, load_preset, save_yaml
from ldmkit.data import SHAPES, Scene, ShapeObject, shapes_sample
from ldmkit.data.images import image_to_tensor
from ldmkit.diffusion import make_schedule, sample, sample_from, start_index
from ldmkit.errors import ConfigError, UsageError
from ldmkit.config import DiffusionConfig
from ldmkit.model import LatentDiffusion
from ldmkit.pipelines import (
    ClassConditionalPipeline, ColorizationPipeline, ImageToImagePipeline, InpaintingPipeline,
    SuperResolutionPipeline, TextToImagePipeline,
)
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.diffusion import train_diffusion
from tests.tiny_models import build_tiny_model

MODES = ("class", "sr", "inpaint", "colorize")
SIZE = 32  # the tiny presets' image size


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One tiny autoencoder, and a model of every kind trained on it for a few steps."""
    root = tmp_path_factory.mktemp("modes")
    ae = train_autoencoder(load_preset("tiny"), root / "ae", steps=4, progress=False)
    folders = {"ae": ae, "text": train_diffusion(load_preset("tiny"), ae, root / "text", steps=3, progress=False)}
    for mode in MODES:
        folders[mode] = train_diffusion(load_preset(f"tiny-{mode}"), ae, root / mode, steps=3, progress=False)
    return folders


@pytest.fixture(scope="module")
def image():
    return image_to_tensor(shapes_sample(7, 3, SIZE)[0])[None]  # 1×3×32×32


# --------------------------------------------------------------------------------------------------
# configuration


def test_model_folder_without_condition_loads_as_text_model(tmp_path):
    save_yaml(ModelConfig(), tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del data["condition"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    from ldmkit.storage import load_config

    assert load_config(ModelConfig, tmp_path).condition.kind == "text"


@pytest.mark.parametrize("base", ["tiny", "shapes64"])
@pytest.mark.parametrize("mode", MODES)
def test_mode_presets_give_the_unet_room_for_the_condition(base, mode):
    preset = load_preset(f"{base}-{mode}")
    assert preset.condition.kind == mode
    c = preset.autoencoder.latent_channels
    assert preset.unet.in_channels == c + preset.condition.concat_channels(c)
    assert preset.unet.in_channels == {"class": c, "sr": c + 3, "inpaint": 2 * c + 1, "colorize": 2 * c}[mode]


@pytest.mark.slow
def test_unet_in_channels_that_do_not_fit_the_condition_are_refused(models, tmp_path):
    preset = load_preset("tiny-sr")
    preset = dataclasses.replace(preset, unet=dataclasses.replace(preset.unet, in_channels=4))
    with pytest.raises(ConfigError, match=r"^unet.in_channels = 4; must equal the autoencoder's latent channels "
                                          r"\(4\) \+ the 3 channels of the 'sr' condition = 7$"):
        train_diffusion(preset, models["ae"], tmp_path / "bad", steps=1, progress=False)
    text = load_preset("tiny")  # a text config whose UNet takes 2c + 1 is no "Stable Diffusion inpainting model"
    text = dataclasses.replace(text, unet=dataclasses.replace(text.unet, in_channels=9))
    with pytest.raises(ConfigError, match=r"^unet.in_channels = 9; must equal the autoencoder's latent channels "
                                          r"\(4\) = 4$"):
        train_diffusion(text, models["ae"], tmp_path / "bad-text", steps=1, progress=False)


# --------------------------------------------------------------------------------------------------
# masks and samplers


def test_random_masks_are_binary_seeded_and_varied():
    a = random_masks(60, 32, 32, torch.Generator().manual_seed(0))
    b = random_masks(60, 32, 32, torch.Generator().manual_seed(0))
    assert a.shape == (60, 1, 32, 32) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    cover = a.mean(dim=(1, 2, 3))
    assert (cover > 0).all() and (cover < 1).all()
    assert cover.std() > 0.05  # boxes, strokes and side strips, not one kind


def test_uncrop_moves_the_view_and_masks_the_uncovered_strip(image):
    canvas, mask = uncrop_mask(image, "left", 0.5)
    assert mask.shape == (1, 1, SIZE, SIZE)
    assert mask[..., :16].eq(1).all() and mask[..., 16:].eq(0).all()
    assert torch.equal(canvas[..., 16:], image[..., :16])  # the left half moved right
    _, top = uncrop_mask(image, "top", 0.25)
    assert top[..., :8, :].eq(1).all() and top[..., 8:, :].eq(0).all()
    with pytest.raises(ValueError, match="allowed: left, right, top, bottom"):
        uncrop_mask(image, "middle", 0.5)


def test_sampling_from_strength():
    schedule = make_schedule(DiffusionConfig())
    z_0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    denoise = lambda z, t: 0.1 * z  # noqa: E731
    # of n steps the last int(s·n) run, diffusers' and A1111's rule (round(s·n) ran 18 of 25 at 0.7, 2 of 3 at 0.5)
    assert start_index(10, 0.6) == 4 and start_index(10, 1.0) == 0 and start_index(25, 0.7) == 8
    assert start_index(3, 0.5) == 2 and start_index(25, 0.04) == 24 and start_index(49, 1 / 49 + 1e-12) == 48
    for strength in (0.0, -0.5, 1.5, float("nan"), "0.5", True):
        with pytest.raises(UsageError, match=r"^strength = .*; must be a number in \(0, 1\]"):
            start_index(10, strength)
    # a strength with which no step runs is refused, naming the smallest that runs one
    for steps, strength, smallest in ((25, 0.01, "0.04"), (3, 0.3, "0.334"), (7, 0.1, "0.143"),
                                      (1000, 0.0009, "0.001")):
        with pytest.raises(UsageError, match=f"runs none of the {steps} steps.* is {smallest}, or give more steps$"):
            start_index(steps, strength)
        start_index(steps, float(smallest))  # and that one runs a step
    for name in ("ddim", "ddpm", "euler", "dpmpp-2m"):
        with pytest.raises(UsageError, match="strength = 0.0"):
            sample_from(name, denoise, z_0, noise, schedule, 10, 0.0)
        half = sample_from(name, denoise, z_0, noise, schedule, 10, 0.5, generator=torch.Generator().manual_seed(2))
        assert half.shape == z_0.shape and torch.isfinite(half).all()
    # start = 0 is the plain sampler
    z_T = noise
    assert torch.equal(sample("ddim", denoise, z_T, schedule, 5), sample("ddim", denoise, z_T, schedule, 5, start=0))


# --------------------------------------------------------------------------------------------------
# class-conditional


def test_class_labels_come_from_the_scene_or_the_folder():
    scenes = [Scene((ShapeObject("star", "red", "small", "left"),)), Scene((ShapeObject("circle", "blue"),))]
    assert class_labels({"scene": scenes}, SHAPES, 6).tolist() == [3, 0]
    assert class_labels({"class_name": ["dogs", "", "cats"]}, ("cats", "dogs"), 2).tolist() == [1, 2, 0]


def test_classes_come_from_shapes_or_the_folder_names():
    from types import SimpleNamespace

    from ldmkit.condition import data_classes
    from ldmkit.config import ConditionConfig, DataConfig
    from ldmkit.data import DataError, build_dataset

    kind = ConditionConfig(kind="class")
    assert data_classes(kind, DataConfig(max_objects=1), build_dataset(DataConfig(max_objects=1))) == SHAPES
    with pytest.raises(DataError, match="max_objects: 1"):
        data_classes(kind, DataConfig(max_objects=2), build_dataset(DataConfig(max_objects=2)))
    folder = SimpleNamespace(classes=("cats", "dogs"))
    assert data_classes(kind, DataConfig(source="/some/folder"), folder) == ("cats", "dogs")
    with pytest.raises(DataError, match="one subfolder per class"):
        data_classes(kind, DataConfig(source="/some/folder"), SimpleNamespace(classes=()))
    assert data_classes(ConditionConfig(kind="class", classes=("a", "b")), DataConfig(), None) == ("a", "b")


@pytest.mark.slow
def test_class_model_generates_and_refuses_unknown_classes(models, tmp_path):
    model = LatentDiffusion.load(models["class"])
    assert model.text_encoder is None and model.config.condition.classes == SHAPES
    assert model.encode_classes(["circle", "star"]).shape == (2, 1, model.config.unet.context_dim)
    pipe = ClassConditionalPipeline(model)
    images = pipe.generate_tensors(["circle", "star"], steps=2, num_images=2, guidance=3.0)
    assert images.shape == (4, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="unknown class 'hexagon'; this model's classes: circle, square"):
        pipe("hexagon", steps=2)
    with pytest.raises(ValueError, match="needs a 'class' model"):
        ClassConditionalPipeline.from_folder(models["text"])

    out = tmp_path / "c.png"
    assert main(["generate", "--class", "star", "--model", str(models["class"]), "--out", str(out), "--steps", "2",
                 "--no-progress"]) == 0
    assert Image.open(out).size == (SIZE, SIZE)
    assert main(["generate", "--class", "hexagon", "--model", str(models["class"]), "--out", str(out)]) == 2
    assert main(["generate", "a red star", "--model", str(models["class"]), "--out", str(out)]) == 2
    assert main(["generate", "--class", "star", "--model", str(models["text"]), "--out", str(out)]) == 2
    for binding in (["--binding", "0.3"], ["--binding-candidates", "3"]):  # they bind a prompt's words
        assert main(["generate", "--class", "star", "--model", str(models["class"]), "--out", str(out), *binding]) == 2


@pytest.mark.slow
def test_class_model_resumes(models, tmp_path):
    preset = load_preset("tiny-class")
    out = train_diffusion(preset, models["ae"], tmp_path / "c", steps=2, progress=False)
    train_diffusion(preset, models["ae"], out, steps=3, resume=True, progress=False)
    assert LatentDiffusion.load(out).config.condition.classes == SHAPES


# --------------------------------------------------------------------------------------------------
# image conditions


@pytest.mark.slow
def test_condition_shapes(models, image):
    for mode, channels, source in (("sr", 3, image[..., ::4, ::4]), ("inpaint", 5, image), ("colorize", 4, image)):
        model = LatentDiffusion.load(models[mode])
        mask = torch.zeros(1, 1, SIZE, SIZE) if mode == "inpaint" else None
        c = model.image_condition(source, (8, 8), mask)
        assert c.shape == (1, channels, 8, 8), mode
        assert model.unet.cfg.in_channels == 4 + channels


@pytest.mark.slow
def test_super_resolution(models, image, tmp_path, capsys):
    pipe = SuperResolutionPipeline.from_folder(models["sr"])
    low = image[..., ::4, ::4]  # 8×8
    assert pipe.generate_tensors(low, steps=2).shape == (1, 3, SIZE, SIZE)
    for call in (pipe.generate_tensors, pipe):  # [-1, 1] and [0, 1]: the message claims no range
        with pytest.raises(UsageError, match=r"^the low-resolution image must have 3 channels \(RGB: B×3×H×W or "
                                             r"3×H×W\); got shape \(1, 4, 8, 8\) \(4 channels\)$"):
            call(torch.zeros(1, 4, 8, 8), steps=2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "low.png")
    out = tmp_path / "up.png"
    assert main(["upscale", str(tmp_path / "low.png"), "--model", str(models["sr"]), "--out", str(out),
                 "--steps", "2", "--no-progress"]) == 0
    assert Image.open(out).size == (SIZE, SIZE)
    assert main(["upscale", str(tmp_path / "low.png"), "--model", str(models["inpaint"]), "--out", str(out)]) == 2
    assert "needs a 'sr' model" in capsys.readouterr().err


@pytest.mark.slow
def test_inpainting_keeps_the_known_pixels(models, image, tmp_path):
    pipe = InpaintingPipeline.from_folder(models["inpaint"])
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 8:24, 4:20] = 1
    out = pipe.generate_tensors(image, mask, "a red circle", steps=2)
    keep = mask.expand_as(image) == 0
    assert torch.equal(out[keep], image[keep])  # blended back exactly
    raw = pipe.generate_tensors(image, mask, steps=2, blend=False)
    assert not torch.equal(raw[keep], image[keep])  # the decoder alone would not keep them
    with pytest.raises(ValueError, match="the mask is 30×30 pixels but the image is 32×32"):
        pipe.generate_tensors(image, torch.zeros(1, 1, 30, 30), steps=2)
    with pytest.raises(ValueError, match="the mask must have 1 channel"):
        pipe.generate_tensors(image, torch.zeros(1, 3, SIZE, SIZE), steps=2)

    # through files: the PNG written keeps every pixel outside the white part of the mask
    src = tmp_path / "in.png"
    Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(src)
    mask_png = tmp_path / "mask.png"
    Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).save(mask_png)
    out_png = tmp_path / "out.png"
    assert main(["inpaint", str(src), "--mask", str(mask_png), "--model", str(models["inpaint"]), "--out",
                 str(out_png), "--steps", "2", "--no-progress", "a red circle"]) == 0
    a, b = np.asarray(Image.open(src)), np.asarray(Image.open(out_png))
    assert (a[mask[0, 0].numpy() == 0] == b[mask[0, 0].numpy() == 0]).all()
    Image.new("L", (16, 16)).save(tmp_path / "small.png")
    assert main(["inpaint", str(src), "--mask", str(tmp_path / "small.png"), "--model", str(models["inpaint"])]) == 2

    unc = tmp_path / "unc.png"
    assert main(["uncrop", str(src), "--side", "right", "--amount", "0.25", "--model", str(models["inpaint"]),
                 "--out", str(unc), "--steps", "2", "--no-progress"]) == 0
    assert (np.asarray(Image.open(unc))[:, :24] == a[:, 8:]).all()  # the view moved right by 8 px
    assert main(["uncrop", str(src), "--side", "right", "--amount", "1", "--model", str(models["inpaint"])]) == 2


@pytest.mark.slow
def test_colorization_sees_only_the_grey_levels(models, image, tmp_path):
    pipe = ColorizationPipeline.from_folder(models["colorize"])
    out = pipe.generate_tensors(image, steps=2, seed=3)
    assert out.shape == image.shape
    swapped = image[:, [2, 1, 0]]  # other colours, other grey levels
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    same_grey = (image * luma).sum(1, keepdim=True).expand_as(image)  # a grey image of the same luma
    assert torch.allclose(pipe.generate_tensors(same_grey, steps=2, seed=3), out, atol=1e-5)
    assert not torch.allclose(pipe.generate_tensors(swapped, steps=2, seed=3), out, atol=1e-5)
    src = tmp_path / "in.png"
    Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).convert("L").save(src)
    assert main(["colorize", str(src), "--model", str(models["colorize"]), "--out", str(tmp_path / "c.png"),
                 "--steps", "2", "--no-progress"]) == 0
    assert Image.open(tmp_path / "c.png").mode == "RGB"


@pytest.mark.slow
def test_an_image_too_small_for_the_unet_is_refused_in_one_line(models, tmp_path, capsys):
    # tiny: f = 4 and two UNet levels, so an image no larger than 8×8 would leave the UNet's lowest level
    # 1×1, one value per GroupNorm group (PyTorch's own error says "when training")
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    capsys.readouterr()
    assert main(["colorize", str(tmp_path / "small.png"), "--model", str(models["colorize"]),
                 "--out", str(tmp_path / "c.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "too small" in err and "4x12 and 12x4" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.png").exists()
    Image.new("L", (16, 8)).save(tmp_path / "wide.png")
    assert main(["colorize", str(tmp_path / "wide.png"), "--model", str(models["colorize"]),
                 "--out", str(tmp_path / "c.png"), "--steps", "2", "--no-progress"]) == 0
    assert Image.open(tmp_path / "c.png").size == (16, 8)


@pytest.mark.slow
def test_image_modes_start_from_their_input_noised_to_T(models, image, monkeypatch, tmp_path):
    # z_T ~ q(z_T | E(x̃)), x̃ the input's guess at the output; --noise-start / start_from_input=False: N(0, I)
    import ldmkit.pipelines.base as base

    starts = []
    real = base.sample_from

    def spy(name, denoise, z_0, noise, schedule, steps, strength, **kw):
        starts.append((z_0, strength))
        return real(name, denoise, z_0, noise, schedule, steps, strength, **kw)

    monkeypatch.setattr(base, "sample_from", spy)
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 8:24, 4:20] = 1
    low = downsample(image, 4)
    cases = (
        (SuperResolutionPipeline, "sr", (low,), resize_to(low, SIZE, SIZE).clamp(-1, 1)),
        (ColorizationPipeline, "colorize", (image,), grayscale(image)),
        (InpaintingPipeline, "inpaint", (image, mask), mean_fill(image, mask)),
    )
    for cls, mode, inputs, guess in cases:
        pipe = cls.from_folder(models[mode])
        informed = pipe.generate_tensors(*inputs, steps=2, seed=5)
        z_0, strength = starts.pop()
        assert strength == 1.0 and torch.equal(z_0, pipe.model.encode_images(guess)), mode
        noise_start = pipe.generate_tensors(*inputs, steps=2, seed=5, start_from_input=False)
        assert not starts and not torch.allclose(informed, noise_start), mode
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "low.png")
    for flag in ([], ["--noise-start"]):
        assert main(["upscale", str(tmp_path / "low.png"), "--model", str(models["sr"]), "--out",
                     str(tmp_path / "up.png"), "--steps", "2", "--no-progress", *flag]) == 0
        assert len(starts) == (0 if flag else 1)
        starts.clear()


@pytest.mark.slow
def test_img2img_strength(models, image, tmp_path):
    pipe = ImageToImagePipeline.from_folder(models["text"])
    model = pipe.model
    full = pipe.generate_tensors(image, "a blue star", strength=1.0, steps=4)
    half = pipe.generate_tensors(image, "a blue star", strength=0.5, steps=4)
    same = model.decode_latents(model.encode_images(image)).float()
    assert full.shape == half.shape == image.shape
    assert (half - same).abs().mean() < (full - same).abs().mean() + 0.5  # finite, and nearer the input
    for strength in (0.0, 1.5):  # 0 ran no step and returned D(E(x)); it is refused, as --strength 0 is
        with pytest.raises(ValueError, match=f"strength = {strength}"):
            pipe.generate_tensors(image, "a blue star", strength=strength)
    with pytest.raises(ValueError, match="needs a 'text' model"):
        ImageToImagePipeline.from_folder(models["sr"])
    # the text pipeline still refuses nothing it used to accept, and image models are refused
    assert isinstance(TextToImagePipeline.from_folder(models["text"]), TextToImagePipeline)
    src = tmp_path / "in.png"
    Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(src)
    assert main(["img2img", str(src), "a blue star", "--strength", "0.6", "--model", str(models["text"]), "--out",
                 str(tmp_path / "o.png"), "--steps", "3", "--no-progress"]) == 0
    assert main(["img2img", str(src), "a blue star", "--strength", "0", "--model", str(models["text"])]) == 2


# --------------------------------------------------------------------------------------------------
# diffusers' calling convention on the image pipelines (random-weight tiny models: no training)


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    """A random-weight tiny model of each kind (`build_tiny_model`)."""
    root = tmp_path_factory.getbasetemp()
    return {kind: build_tiny_model(root / f"modes-random-{kind}", "tiny" if kind == "text" else f"tiny-{kind}")
            for kind in ("text", "class", "sr", "inpaint", "colorize")}


def _unit(image: torch.Tensor) -> torch.Tensor:
    """ldmkit's [-1, 1] image as diffusers' [0, 1] tensor."""
    return (image + 1) / 2


def test_image_tensors_are_read_in_zero_one_as_diffusers_reads_them(random_models, image):
    """A "pt" output given back as image= is the same image: __call__ reads tensors in [0, 1], as diffusers does
    (one with values below 0 as [-1, 1], with diffusers' FutureWarning); generate_tensors keeps [-1, 1]."""
    colorize = ColorizationPipeline.from_folder(random_models["colorize"])
    inpaint = InpaintingPipeline.from_folder(random_models["inpaint"])
    first = colorize(image=_unit(image), num_inference_steps=2, generator=0, output_type="pt").images
    assert first.min() >= 0 and first.max() <= 1
    nothing = torch.zeros(1, 1, SIZE, SIZE)  # repaint nothing: the output is the input
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a [0, 1] tensor warns about nothing
        again = inpaint(first, nothing, num_inference_steps=2, generator=0, output_type="pt").images
    torch.testing.assert_close(again, first, rtol=0, atol=1e-6)
    # the same image as a PIL image, a [0, 1] tensor, a [0, 1] array and (deprecated) a [-1, 1] tensor or array
    pil = Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    read = _unit(image_to_tensor(pil)[None])
    options = dict(num_inference_steps=2, generator=1, output_type="pt")
    ours = colorize(pil, **options).images
    torch.testing.assert_close(colorize(read, **options).images, ours, rtol=0, atol=1e-5)
    torch.testing.assert_close(colorize(read[0].permute(1, 2, 0).numpy(), **options).images, ours, rtol=0, atol=1e-5)
    for signed in (read * 2 - 1, (read * 2 - 1)[0].permute(1, 2, 0).numpy()):
        with pytest.warns(FutureWarning, match=r"below 0, so it is read as in \[-1, 1\]"):
            torch.testing.assert_close(colorize(signed, **options).images, ours, rtol=0, atol=1e-5)
    # ldmkit's tensor API stays in [-1, 1] both ways
    torch.testing.assert_close(colorize.generate_tensors(image_to_tensor(pil)[None], steps=2, seed=1),
                               ours * 2 - 1, rtol=0, atol=2e-5)


def test_image_pipelines_take_num_images_per_prompt(random_models, image):
    """num_images_per_prompt images per input image, an input's images together; the first is the single call's."""
    low = image[..., ::4, ::4]
    img2img = ImageToImagePipeline.from_folder(random_models["text"])
    calls = [
        (img2img, (_unit(image), "a blue star"), dict(strength=0.5)),
        (SuperResolutionPipeline.from_folder(random_models["sr"]), (_unit(low),), {}),
        (ColorizationPipeline.from_folder(random_models["colorize"]), (_unit(image),), {}),
        (InpaintingPipeline.from_folder(random_models["inpaint"]), (_unit(image), torch.ones(1, 1, SIZE, SIZE)), {}),
    ]
    for pipe, inputs, extra in calls:
        options = dict(num_inference_steps=2, generator=3, output_type="pt", **extra)
        one = pipe(*inputs, **options).images
        three = pipe(*inputs, num_images_per_prompt=3, **options).images
        assert three.shape == (3, *one.shape[1:]), type(pipe).__name__
        torch.testing.assert_close(three[:1], one, rtol=0, atol=1e-5)
        assert (three[1] - three[0]).abs().max() > 1e-4, type(pipe).__name__  # each its own noise
        with pytest.raises(UsageError, match="num_images_per_prompt = 0; must be an integer ≥ 1"):
            pipe(*inputs, num_images_per_prompt=0, **options)
    # two inputs with a prompt each: an input's images come together, the first input's first
    pair = torch.cat([_unit(image), _unit(image).flip(-1)])
    both = img2img(pair, ["a blue star", "a red circle"], strength=0.5, num_images_per_prompt=2,
                   num_inference_steps=2, generator=3, output_type="pt").images
    first = img2img(pair[:1], "a blue star", strength=0.5, num_images_per_prompt=2, num_inference_steps=2,
                    generator=3, output_type="pt").images
    assert both.shape[0] == 4
    torch.testing.assert_close(both[:2], first, rtol=0, atol=1e-5)
    # the same images through ldmkit's tensor API, in [-1, 1]
    torch.testing.assert_close(img2img.generate_tensors(pair * 2 - 1, ["a blue star", "a red circle"], strength=0.5,
                                                        steps=2, seed=3, num_images=2), both * 2 - 1,
                               rtol=0, atol=2e-5)


def test_img2img_runs_int_strength_times_steps_as_diffusers(random_models, image, tmp_path, capsys, monkeypatch):
    """Of n steps the last int(s·n) run (diffusers' and A1111's rule); a strength with which none runs, or one that
    is not a number in (0, 1], is refused in one line before any work, in Python and on the command line."""
    pipe = ImageToImagePipeline.from_folder(random_models["text"])
    for strength, steps, runs in ((0.7, 5, 3), (0.5, 3, 1), (0.6, 25, 15), (1.0, 4, 4)):  # round(): 4, 2, 15, 4
        seen = []
        pipe(image=_unit(image), prompt="a blue star", strength=strength, num_inference_steps=steps,
             callback=lambda i, n: seen.append(n))
        assert seen == [runs] * runs, (strength, steps)

    def no_work(*args, **kwargs):
        raise AssertionError("the image was encoded before the strength was checked")

    monkeypatch.setattr(pipe.model, "encode_images", no_work)
    with pytest.raises(UsageError, match="^strength = '0.5'; must be a number in \\(0, 1\\]"):
        pipe(_unit(image), "a blue star", strength="0.5")
    with pytest.raises(UsageError, match="runs none of the 25 steps.*the smallest strength that runs one at 25 "
                                         "steps is 0.04"):
        pipe(_unit(image), "a blue star", strength=0.01)
    with pytest.raises(UsageError, match="runs none of the 4 steps.* is 0.25"):
        pipe(_unit(image), "a blue star", strength=0.2, num_inference_steps=4)
    monkeypatch.undo()
    src = tmp_path / "in.png"
    Image.new("RGB", (SIZE, SIZE), (0, 0, 200)).save(src)
    capsys.readouterr()
    assert main(["img2img", str(src), "a blue star", "--strength", "0.01", "--model", str(random_models["text"]),
                 "--out", str(tmp_path / "o.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the smallest strength that runs one at 25 steps is 0.04" in err, err
    assert not (tmp_path / "o.png").exists()


def test_inpainting_takes_diffusers_names_and_strength(random_models, image, monkeypatch):
    """pipe(prompt, image=…, mask_image=…), as diffusers (mask= still works, deprecated); strength < 1 starts,
    as diffusers' inpainting does, from the input itself noised part-way and runs int(s·n) steps."""
    import ldmkit.pipelines.base as base

    pipe = InpaintingPipeline.from_folder(random_models["inpaint"])
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 8:24, 4:20] = 1
    options = dict(num_inference_steps=4, generator=2, output_type="pt")
    ours = pipe(_unit(image), mask, "a red circle", **options).images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theirs = pipe("a red circle", image=_unit(image), mask_image=mask, **options).images
    assert torch.equal(theirs, ours)
    with pytest.warns(DeprecationWarning, match="mask= is deprecated: give diffusers' name mask_image="):
        assert torch.equal(pipe("a red circle", image=_unit(image), mask=mask, **options).images, ours)
    with pytest.raises(TypeError, match="both mask= and mask_image= given; give mask_image= only"):
        pipe(_unit(image), mask=mask, mask_image=mask)

    starts, real = [], base.sample_from

    def spy(name, denoise, z_0, noise, schedule, steps, strength, **kw):
        starts.append((z_0, strength))
        return real(name, denoise, z_0, noise, schedule, steps, strength, **kw)

    monkeypatch.setattr(base, "sample_from", spy)
    seen = []
    partial = pipe(_unit(image), mask, strength=0.5, callback=lambda i, n: seen.append(n), **options).images
    (z_0, strength), = starts
    assert strength == 0.5 and torch.equal(z_0, pipe.model.encode_images(image)) and seen == [2, 2]
    keep = mask.expand_as(partial) == 0
    torch.testing.assert_close(partial[keep], _unit(image)[keep], rtol=0, atol=1e-6)  # still blended back
    assert not torch.allclose(partial, ours)
    with pytest.raises(UsageError, match="start_from_input=False .* needs strength 1"):
        pipe(_unit(image), mask, strength=0.5, start_from_input=False, **options)
    with pytest.raises(UsageError, match="runs none of the 4 steps"):
        pipe(_unit(image), mask, strength=0.1, **options)


def test_sizes_are_named_width_by_height_and_as_given(random_models, tmp_path, capsys):
    """Sides must be multiples of the autoencoder's factor (4), not of the latent factor (8): the UNet takes odd
    latents (each level upsampled to its skip's size), as diffusers' takes multiples of 8 for SD's 64."""
    model = LatentDiffusion.load(random_models["text"])
    with pytest.raises(UsageError, match=r"^image size 30x32 is not allowed: height and width must be positive "
                                         r"multiples of 4 \(the autoencoder's factor f=4\)$"):
        model.check_image_size(32, 30)  # height 32, width 30
    model.check_image_size(32, 28)
    assert TextToImagePipeline(model)("a red circle", height=20, width=28, num_inference_steps=1).images[0].size \
        == (28, 20)
    sr = SuperResolutionPipeline.from_folder(random_models["sr"])
    with pytest.raises(UsageError, match=r"^image size 2x2 \(×4: 8x8, the output\) is too small .* the smallest "
                                         "sizes allowed are 1x3 and 3x1"):
        sr(torch.rand(1, 3, 2, 2), num_inference_steps=1)
    assert sr(torch.rand(1, 3, 2, 3), num_inference_steps=1).images[0].size == (12, 8)
    assert sr(torch.rand(1, 3, 5, 3), num_inference_steps=1).images[0].size == (12, 20)
    Image.new("RGB", (2, 2)).save(tmp_path / "small.png")
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "small.png"), "--model", str(random_models["sr"]), "--out",
                 str(tmp_path / "up.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image size 2x2 (×4: 8x8, the output)" in err, err


def test_generate_class_passes_prediction_on_and_refuses_as_written(random_models, tmp_path, capsys):
    model = str(random_models["class"])
    drawn = {}
    for flags in ([], ["--prediction", "epsilon"], ["--prediction", "v"]):
        out = tmp_path / f"c{len(drawn)}.png"
        assert main(["generate", "--class", "circle", "--model", model, "--out", str(out), "--steps", "2",
                     "--no-progress", *flags]) == 0
        drawn[tuple(flags)] = np.asarray(Image.open(out))
    assert np.array_equal(drawn[()], drawn[("--prediction", "epsilon")])
    assert not np.array_equal(drawn[()], drawn[("--prediction", "v")])  # v read as v, not silently ignored
    capsys.readouterr()
    assert main(["generate", "--class", "circle", "--model", model, "--out", str(tmp_path / "w.png"),
                 "--as-written"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--as-written applies to text models only" in err, err
    assert not (tmp_path / "w.png").exists()


def test_a_text_model_whose_unet_takes_more_than_the_latent_is_refused_at_load(random_models, tmp_path, capsys):
    """A UNet with 2c + 1 input channels is Stable Diffusion's inpainting layout; any other count that is not the
    latent's (+ the condition's) is refused too: each would fail mid-sampling."""
    from ldmkit.pipelines.by_kind import load_any_pipeline
    from ldmkit.storage import CheckpointError

    base_model = LatentDiffusion.load(random_models["text"])
    folders = {}
    for channels in (9, 5):
        config = dataclasses.replace(base_model.config,
                                     unet=dataclasses.replace(base_model.config.unet, in_channels=channels))
        folders[channels] = tmp_path / f"unet-{channels}"
        LatentDiffusion(config, base_model.tokenizer).save(folders[channels])
    inpainting = f"{folders[9]} is a Stable Diffusion inpainting model (its UNet takes 9 input channels"
    for load in (LatentDiffusion.load, load_any_pipeline, TextToImagePipeline.from_folder,
                 InpaintingPipeline.from_folder):
        with pytest.raises(CheckpointError, match=re.escape(inpainting) + ".*which ldmkit does not run"):
            load(folders[9])
    with pytest.raises(CheckpointError, match=re.escape(f"{folders[5]}: its UNet takes 5 input channels, but the UNet "
                                                        "of a 'text' model takes 4 (the latent's 4 alone)")):
        LatentDiffusion.load(folders[5])
    src = tmp_path / "in.png"
    Image.new("RGB", (SIZE, SIZE)).save(src)
    for argv in (["generate", "a red circle"], ["img2img", str(src), "a red circle"],
                 ["inpaint", str(src), "--mask", str(src)]):
        capsys.readouterr()
        assert main([*argv, "--model", str(folders[9]), "--out", str(tmp_path / "o.png"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a Stable Diffusion inpainting model" in err, err
    # and a model of an image kind whose config does not fit its condition
    config = LatentDiffusion.load(random_models["sr"]).config
    bad = dataclasses.replace(config, unet=dataclasses.replace(config.unet, in_channels=4))
    (tmp_path / "sr").mkdir()
    save_yaml(bad, tmp_path / "sr" / "config.yaml")
    with pytest.raises(CheckpointError, match=r"takes 4 input channels, but the UNet of a 'sr' model takes 7 \(the "
                                              r"latent's 4 \+ 3 of the condition\)"):
        LatentDiffusion.load(tmp_path / "sr")


def test_pil_inputs_are_read_as_the_command_line_reads_files(random_models, image, tmp_path):
    """A PIL image with an EXIF orientation is read upright, and a 16-bit grey PIL mask by its scaled grey levels, as
    `ldmkit img2img`/`inpaint` read files (`load_image`, `to_8bit`): the same image from a file and from Python."""
    from ldmkit.images import load_image

    pil = Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).resize((48, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48 wide, 32 high; upright (rotated 90°) 32 wide, 48 high
    pil.save(tmp_path / "exif6.png", exif=exif)
    img2img = ImageToImagePipeline.from_folder(random_models["text"])
    options = dict(strength=0.5, num_inference_steps=2, generator=0, output_type="np")
    ours = img2img("a red circle", image=Image.open(tmp_path / "exif6.png"), **options).images
    assert ours.shape == (1, 48, 32, 3)
    assert np.array_equal(ours, img2img("a red circle", image=load_image(tmp_path / "exif6.png"), **options).images)
    inpaint = InpaintingPipeline.from_folder(random_models["inpaint"])
    grey = np.zeros((SIZE, SIZE), np.uint16)
    grey[:, SIZE // 2:] = 65535  # repaint the right half
    mask16 = Image.fromarray(grey)
    assert mask16.mode.startswith("I;16")
    expected = torch.zeros(1, 1, SIZE, SIZE)
    expected[..., SIZE // 2:] = 1
    assert torch.equal(inpaint.mask(mask16, image), expected)  # convert("L") clipped: every pixel white


@pytest.mark.parametrize("command", ["img2img", "upscale", "colorize"])
def test_image_commands_take_generates_load_options(random_models, tmp_path, capsys, command):
    """--precision, --prediction and --no-ema load the model as `ldmkit generate`'s do: the written image is the
    pipeline's under them, and --no-ema on a folder without training weights is one line, exit 2, nothing written."""
    kind = {"img2img": "text", "upscale": "sr", "colorize": "colorize"}[command]
    cls = {"img2img": ImageToImagePipeline, "upscale": SuperResolutionPipeline, "colorize": ColorizationPipeline}[command]
    side = SIZE // 4 if command == "upscale" else SIZE
    src = tmp_path / "in.png"
    Image.new("RGB", (side, side), (0, 0, 200)).save(src)
    prompt = ["a blue star"] if command == "img2img" else []
    run = ["--model", str(random_models[kind]), "--steps", "2", "--seed", "3", "--no-progress"]
    assert main([command, str(src), *prompt, *run, "--precision", "bf16", "--prediction", "v",
                 "--out", str(tmp_path / "o.png")]) == 0
    pipe = cls.from_folder(random_models[kind], precision="bf16", prediction="v")
    assert (pipe.precision, pipe.model.config.diffusion.prediction) == ("bf16", "v")
    source = Image.open(src).convert("RGB")
    expected = (pipe(source, "a blue star", num_inference_steps=2, generator=3) if command == "img2img"
                else pipe(source, num_inference_steps=2, generator=3)).images[0]
    assert Image.open(tmp_path / "o.png").convert("RGB").tobytes() == expected.convert("RGB").tobytes()
    capsys.readouterr()
    assert main([command, str(src), *prompt, *run, "--no-ema", "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--no-ema" in err and "no training weights" in err, err
    assert not (tmp_path / "n.png").exists()


def test_a_class_or_an_uncrop_amount_of_the_wrong_type_is_one_line_naming_what_is_allowed(random_models, image):
    """A class that is not a name (an int, None, an empty list) and an uncrop amount that is not a number are
    `UsageError`s saying what is allowed, before any work, not errors from inside the model."""
    pipe = ClassConditionalPipeline.from_folder(random_models["class"])
    for bad in (3, None, [], ["circle", 2]):
        with pytest.raises(UsageError, match=r"^class_name = .*; give a class name or a non-empty list of them "
                                             r"\(this model's: circle, square"):
            pipe(bad, num_inference_steps=1)
    inpaint = InpaintingPipeline.from_folder(random_models["inpaint"])
    for amount in ("0.5", None, True, 2, float("nan")):
        with pytest.raises(UsageError, match=r"^amount = .*; must be a number between 0 and 1"):
            inpaint.uncrop(_unit(image), side="left", amount=amount, num_inference_steps=1)
