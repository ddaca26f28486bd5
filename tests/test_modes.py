"""Conditions beyond text on the tiny presets: class labels, super-resolution, inpainting and
uncropping, colorization, and image-to-image (SDEdit) with a text model.

Each model trains for a few steps only: the tests check shapes, masks, refusals and exact identities,
not image quality (that is benchmarks/modes.py's job)."""

from __future__ import annotations

import dataclasses

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
from ldmkit.config import DiffusionConfig
from ldmkit.model import LatentDiffusion
from ldmkit.pipelines import (
    ClassConditionalPipeline, ColorizationPipeline, ImageToImagePipeline, InpaintingPipeline,
    SuperResolutionPipeline, TextToImagePipeline,
)
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.diffusion import train_diffusion

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
    with pytest.raises(ValueError, match=r"in_channels \(4\).*\+ the 3 channels of the 'sr' condition"):
        train_diffusion(preset, models["ae"], tmp_path / "bad", steps=1, progress=False)


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
    assert start_index(10, 0.0) == 10 and start_index(10, 0.6) == 4 and start_index(10, 1.0) == 0
    for name in ("ddim", "ddpm", "euler", "dpmpp-2m"):
        assert torch.equal(sample_from(name, denoise, z_0, noise, schedule, 10, 0.0), z_0)
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
    with pytest.raises(ValueError, match="must have 3 channels.*4 channels"):
        pipe.generate_tensors(torch.zeros(1, 4, 8, 8), steps=2)
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
    # tiny: f = 4 and two UNet levels, so 8 divides every allowed size, but an 8×8 image would leave the
    # UNet's lowest level 1×1, one value per GroupNorm group (PyTorch's own error says "when training")
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    capsys.readouterr()
    assert main(["colorize", str(tmp_path / "small.png"), "--model", str(models["colorize"]),
                 "--out", str(tmp_path / "c.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "too small" in err and "8x16 and 16x8" in err and len(err.splitlines()) == 1
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
def test_img2img_strength_zero_returns_the_autoencoded_input(models, image, tmp_path):
    pipe = ImageToImagePipeline.from_folder(models["text"])
    model = pipe.model
    same = pipe.generate_tensors(image, "a blue star", strength=0.0, steps=4)
    assert torch.equal(same, model.decode_latents(model.encode_images(image)).float())
    full = pipe.generate_tensors(image, "a blue star", strength=1.0, steps=4)
    half = pipe.generate_tensors(image, "a blue star", strength=0.5, steps=4)
    assert full.shape == half.shape == image.shape
    assert (half - same).abs().mean() < (full - same).abs().mean() + 0.5  # finite, and nearer the input
    with pytest.raises(ValueError, match="strength = 1.5"):
        pipe.generate_tensors(image, "a blue star", strength=1.5)
    with pytest.raises(ValueError, match="needs a 'text' model"):
        ImageToImagePipeline.from_folder(models["sr"])
    # the text pipeline still refuses nothing it used to accept, and image models are refused
    assert isinstance(TextToImagePipeline.from_folder(models["text"]), TextToImagePipeline)
    src = tmp_path / "in.png"
    Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(src)
    assert main(["img2img", str(src), "a blue star", "--strength", "0.6", "--model", str(models["text"]), "--out",
                 str(tmp_path / "o.png"), "--steps", "3", "--no-progress"]) == 0
    assert main(["img2img", str(src), "a blue star", "--strength", "0", "--model", str(models["text"])]) == 2
