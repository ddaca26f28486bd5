"""Stable Diffusion parity: tiny random-weight SD-1-like and SD-2-like models built in diffusers and
transformers, saved as a diffusers folder and as an original single file, loaded by ldmkit, must give
diffusers' outputs: UNet, autoencoder encode/decode and text encoder within 1e-4 (fp32), a full guided
DDIM sampling loop within 1e-3 of diffusers' own StableDiffusionPipeline.

The original single file is written with ldmkit's key rules, so it is first checked against diffusers'
own single-file converters (``diffusers.loaders.single_file_utils``): they must turn it back into the
reference state dicts exactly. The file gets what real SD files carry besides the model: an EMA copy
under ``model_ema.*`` (SD 1), schedule buffers, CLIP's ``position_ids``, OpenCLIP's unused last block,
``text_projection`` and ``logit_scale`` (SD 2).

The builders here are shared with tests/test_convert.py.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'ldmkit[sd]')")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'ldmkit[sd]')")
if importlib.util.find_spec("clip") is None:
    pytest.skip("clip-anytorch (the CLIP vocabulary) is not installed (pip install 'ldmkit[sd]')", allow_module_level=True)

from safetensors.torch import save_file  # noqa: E402

from ldmkit.convert import read_checkpoint  # noqa: E402
from ldmkit.model import load_model  # noqa: E402
from ldmkit.convert.original import to_original  # noqa: E402
from ldmkit.convert.unet import ema_key  # noqa: E402
from ldmkit.diffusion import make_schedule  # noqa: E402
from ldmkit.pipelines.text_to_image import TextToImagePipeline  # noqa: E402
from ldmkit.text.clip import END_ID, ClipTokenizer  # noqa: E402

TOL = 1e-4
IMAGE = 32  # tiny models: 32x32 images, f = 4, 8x8 latents

VERSIONS = {
    # SD 1.x-like: 8 heads per level, 1x1-conv projections, CLIP (quick GELU) padded with <|endoftext|>
    "v1": dict(
        unet=dict(block_out_channels=(32, 64, 64), attention_head_dim=8, use_linear_projection=False,
                  cross_attention_dim=32),
        text=dict(hidden_size=32, intermediate_size=128, num_attention_heads=1, hidden_act="quick_gelu"),
        pad_id=END_ID, prediction="epsilon",
    ),
    # SD 2.x-like: heads of 64 channels, Linear projections, OpenCLIP (GELU) padded with 0, v-prediction
    "v2": dict(
        unet=dict(block_out_channels=(64, 128), attention_head_dim=[1, 2], use_linear_projection=True,
                  cross_attention_dim=64, upcast_attention=True,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        text=dict(hidden_size=64, intermediate_size=256, num_attention_heads=1, hidden_act="gelu"),
        pad_id=0, prediction="v_prediction",
    ),
}


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (diffusers zero-initialises some layers, which would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def build_reference(version: str, folder: Path) -> dict:
    """Tiny diffusers/transformers models of ``version``, saved by diffusers as a pipeline folder."""
    spec = VERSIONS[version]
    torch.manual_seed(0)
    levels = dict(
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=IMAGE // 4, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32,
        **{**levels, **spec["unet"]},
    ).eval()
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64, 64), layers_per_block=2, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=IMAGE,
    ).eval()
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(vocab_size=49408, num_hidden_layers=2, max_position_embeddings=77, **spec["text"])
    ).eval()
    for i, module in enumerate((unet, vae, text)):
        _perturb(module, i)
    ClipTokenizer.from_clip_package(pad_id=spec["pad_id"]).save_vocab_files(folder / "vocab")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder / "vocab"))
    scheduler = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=spec["prediction"],
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(folder / "diffusers"))
    return {"unet": unet, "vae": vae, "text": text, "tokenizer": tokenizer, "pipe": pipe,
            "folder": folder / "diffusers"}


def original_state_dict(version: str, ref: dict) -> dict[str, torch.Tensor]:
    """The reference model in the original single-file layout, with the extras real SD files carry."""
    ckpt = read_checkpoint(ref["folder"])
    sd = dict(to_original(ckpt))
    del sd["scale_factor"]  # SD files have none: 0.18215 is in their YAML config
    schedule = make_schedule(ckpt.config.diffusion)
    sd["betas"], sd["alphas_cumprod"] = schedule.betas.clone(), schedule.alphas_cumprod.clone()
    g = torch.Generator().manual_seed(7)
    if version == "v1":
        # the EMA copy holds the reference weights; model.diffusion_model.* are other ("training") weights
        for key in [k for k in sd if k.startswith("model.diffusion_model.")]:
            sd[ema_key(key)] = sd[key]
            sd[key] = sd[key] + torch.randn(sd[key].shape, generator=g) * 0.05
        sd["model_ema.decay"], sd["model_ema.num_updates"] = torch.tensor(0.9999), torch.tensor(1000, dtype=torch.int32)
        sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    else:
        # SD 2 runs all but the last OpenCLIP block; the file has it anyway, and the CLIP head
        p = "cond_stage_model.model."
        for key in [k for k in sd if k.startswith(p + "transformer.resblocks.0.")]:
            sd[key.replace("resblocks.0.", "resblocks.2.")] = torch.randn(sd[key].shape, generator=g)
        width = sd[p + "token_embedding.weight"].shape[1]
        sd[p + "text_projection"] = torch.randn(width, width, generator=g)
        sd[p + "logit_scale"] = torch.tensor(4.6)
    return {k: v.contiguous() for k, v in sd.items()}


_BUILT: dict[str, dict] = {}  # one build per version per test session (tests/test_convert.py shares it)


def build(version: str, tmp_path_factory) -> dict:
    """The reference models of ``version``, their diffusers folder and original single file."""
    if version not in _BUILT:
        folder = tmp_path_factory.mktemp(version)
        ref = build_reference(version, folder)
        # an SD 2 file's name says whether it is a 768-v model (see ldmkit.convert.infer.prediction_for)
        ref["original"] = folder / ("tiny-sd1.safetensors" if version == "v1" else "tiny-sd2-768-v.safetensors")
        save_file(original_state_dict(version, ref), str(ref["original"]))
        _BUILT[version] = ref
    return _BUILT[version]


@pytest.fixture(scope="module", params=["v1", "v2"])
def ref(request, tmp_path_factory):
    return build(request.param, tmp_path_factory)


def ldmkit_model(ref: dict, fmt: str, ema: bool = True):
    """The ldmkit model of ``ref`` read from ``fmt`` ("original" or "diffusers"), loaded once per module."""
    cache = ref.setdefault("models", {})
    if (fmt, ema) not in cache:
        cache[fmt, ema] = load_model(ref["original"] if fmt == "original" else ref["folder"], ema=ema)
    return cache[fmt, ema]


def inputs(ref: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    width = ref["text"].config.hidden_size
    return dict(
        z=torch.randn(2, 4, IMAGE // 4, IMAGE // 4, generator=g),
        t=torch.tensor([17, 901]),
        context=torch.randn(2, 77, width, generator=g),
        images=torch.rand(2, 3, IMAGE, IMAGE, generator=g) * 2 - 1,
    )


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol, f"max |difference| {err:.2e} > {tol:.0e}"


# --------------------------------------------------------------------------------------------------


def test_original_layout_matches_diffusers_single_file_converters(ref):
    """diffusers' own converters read the original file ldmkit's rules wrote back into the reference weights."""
    from diffusers.loaders import single_file_utils as sfu

    from safetensors.torch import load_file

    sd = load_file(str(ref["original"]))
    unet = sfu.convert_ldm_unet_checkpoint(sd, dict(ref["unet"].config), extract_ema="model_ema.decay" in sd)
    vae = sfu.convert_ldm_vae_checkpoint(sd, dict(ref["vae"].config))
    if "cond_stage_model.model.token_embedding.weight" in sd:
        text = sfu.convert_open_clip_checkpoint(ref["text"], sd)
    else:
        text = sfu.convert_ldm_clip_checkpoint(sd)
    text = {k.removeprefix("text_model."): v for k, v in text.items()}  # transformers 5 names
    for converted, module in ((unet, ref["unet"]), (vae, ref["vae"]), (text, ref["text"])):
        expected = module.state_dict()
        assert set(expected) <= set(converted), sorted(set(expected) - set(converted))[:5]
        for key, value in expected.items():
            assert torch.equal(converted[key], value), key


@pytest.mark.parametrize("fmt", ["original", "diffusers"])
def test_models_match_diffusers(ref, fmt):
    model = ldmkit_model(ref, fmt)
    x = inputs(ref)
    with torch.no_grad():
        assert_close(model.unet(x["z"], x["t"], x["context"]), ref["unet"](x["z"], x["t"], x["context"]).sample)
        assert_close(model.autoencoder.encode(x["images"]), ref["vae"].encode(x["images"]).latent_dist.mean)
        assert_close(model.autoencoder.decode(x["z"]), ref["vae"].decode(x["z"]).sample)
        # no "!": diffusers' SD 2 tokenizer turns a "!" in the prompt into its pad token (id 0), where
        # OpenCLIP, which SD 2 was trained with, and ldmkit give "!</w>" (256); see tests/test_convert.py
        prompts = ["a photo of a red circle, on the left. 2 cats", ""]
        ids, _ = model.tokenizer(prompts)
        expected_ids = ref["tokenizer"](prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        assert torch.equal(ids, expected_ids.input_ids)
        assert_close(model.encode_prompts(prompts), ref["text"](ids).last_hidden_state)
    assert model.autoencoder.scale_factor.item() == pytest.approx(0.18215)
    assert model.config.diffusion.prediction == ("v" if ref["text"].config.hidden_act == "gelu" else "epsilon")


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_ddim_sampling_matches_diffusers_pipeline(ref, spacing):
    """ldmkit's guided DDIM loop vs diffusers' StableDiffusionPipeline, same seed, steps and guidance.

    ldmkit's default "trailing" timesteps end at ᾱ = 1: diffusers' DDIMScheduler with
    ``timestep_spacing="trailing", set_alpha_to_one=True`` (when the step count divides T). Its
    ``spacing="leading"`` is Stable Diffusion's own scheduler setting ("leading", ``steps_offset=1``,
    ``set_alpha_to_one=False``), as SD's scheduler_config.json holds it.
    """
    model = ldmkit_model(ref, "original")
    pipe = ref["pipe"]
    settings = (dict(timestep_spacing="trailing", set_alpha_to_one=True, steps_offset=0) if spacing == "trailing"
                else dict(timestep_spacing="leading", set_alpha_to_one=False, steps_offset=1))
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config, **settings)
    prompt, steps, guidance, seed = "a blue square above a yellow star", 5, 4.0, 3
    expected = pipe(
        prompt, height=IMAGE, width=IMAGE, num_inference_steps=steps, guidance_scale=guidance, negative_prompt="",
        generator=torch.Generator().manual_seed(seed), output_type="pt",
    ).images
    ours = TextToImagePipeline(model).generate_tensors(
        prompt, steps=steps, guidance=guidance, seed=seed, height=IMAGE, width=IMAGE, sampler="ddim", spacing=spacing
    )
    assert_close((ours + 1) / 2, expected, 1e-3)


def test_the_unet_takes_latents_its_levels_do_not_halve_exactly(ref):
    """A latent side that is not a multiple of the UNet's downsampling (9, 11: halved to 5, 6 and 3, 3) runs as in
    diffusers' UNet, each level upsampled to its skip's size (diffusers' ``upsample_size``)."""
    model = ldmkit_model(ref, "diffusers")
    x = inputs(ref, seed=2)
    z = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close(model.unet(z, x["t"], x["context"]), ref["unet"](z, x["t"], x["context"]).sample)


def test_sizes_that_are_multiples_of_8_but_not_of_the_latent_factor_sample_as_diffusers_does(ref):
    """40×56 (diffusers takes multiples of 8; v1's latent factor is 16: a 10×14 latent halved to 5×7, then 3×4)
    is allowed, and the guided DDIM loop gives diffusers' pipeline's image."""
    model = ldmkit_model(ref, "diffusers")
    pipe = ref["pipe"]
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading",
                                                         set_alpha_to_one=False, steps_offset=1)
    height, width, steps, guidance, seed = 40, 56, 3, 4.0, 1
    expected = pipe("a red circle", height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                    generator=torch.Generator().manual_seed(seed), output_type="pt").images
    ours = TextToImagePipeline(model).generate_tensors("a red circle", steps=steps, guidance=guidance, seed=seed,
                                                       height=height, width=width, sampler="ddim", spacing="leading")
    assert ours.shape == (1, 3, height, width)
    assert_close((ours + 1) / 2, expected, 1e-3)


def test_original_file_uses_ema_weights_unless_told_not_to(ref):
    if "model_ema.decay" not in read_checkpoint(ref["original"]).extras:
        pytest.skip("this file has no EMA copy (like the released SD 2 files)")
    x = inputs(ref, seed=1)
    with torch.no_grad():
        expected = ref["unet"](x["z"], x["t"], x["context"]).sample
        ema = ldmkit_model(ref, "original").unet(x["z"], x["t"], x["context"])
        training = load_model(ref["original"], ema=False).unet(x["z"], x["t"], x["context"])
    assert_close(ema, expected)
    assert (training - expected).abs().max() > 1e-2


def test_inferred_architecture_equals_the_diffusers_config(ref):
    from_file = read_checkpoint(ref["original"]).config
    from_folder = read_checkpoint(ref["folder"]).config
    assert from_file.text == from_folder.text
    assert from_file.autoencoder == from_folder.autoencoder
    assert from_file.diffusion == from_folder.diffusion
    assert from_file.unet == from_folder.unet
    # what the weights cannot say: SD 1 and SD 2 "768-v" files are taken as 512 and 768 px models
    assert from_file.image_size == (768 if from_file.text.kind == "openclip" else 512)
    assert from_folder.image_size == IMAGE


def test_a_stable_diffusion_inpainting_model_converts_but_is_refused_at_load(tmp_path, capsys):
    """diffusers' StableDiffusionInpaintPipeline (a UNet of 9 input channels: the latent, the masked image's latent,
    the mask): `ldmkit convert` converts it and says what it is; loading it to sample is refused in one line, before
    any work, where it used to load as a text model and fail mid-sampling."""
    from ldmkit.cli import main
    from ldmkit.pipelines.by_kind import load_any_pipeline
    from ldmkit.pipelines.text_to_image import load_pipeline
    from ldmkit.storage import CheckpointError

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=IMAGE // 4, in_channels=9, out_channels=4, layers_per_block=1, norm_num_groups=32,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8, cross_attention_dim=32)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=IMAGE)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=49408, num_hidden_layers=1, max_position_embeddings=77, hidden_size=32, intermediate_size=64,
        num_attention_heads=1, hidden_act="quick_gelu"))
    ClipTokenizer.from_clip_package(pad_id=END_ID).save_vocab_files(tmp_path / "vocab")
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    diffusers.StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "vocab")),
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(str(tmp_path / "folder"))
    single = tmp_path / "sd-inpainting.safetensors"  # as SD files come: no ldmkit config in the metadata
    sd = dict(to_original(read_checkpoint(tmp_path / "folder")))
    del sd["scale_factor"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(single))
    assert main(["convert", str(tmp_path / "folder"), "--to", "original", "--out", str(tmp_path / "x.safetensors")]) \
        == 0
    assert "Stable Diffusion 1.x inpainting UNet, 9 input channels (diffusers folder)" in capsys.readouterr().out
    assert main(["convert", str(single), "--to", "ldmkit", "--out", str(tmp_path / "ldmkit")]) == 0
    assert "Stable Diffusion 1.x inpainting UNet, 9 input channels (CLIP text encoder)" in capsys.readouterr().out
    from PIL import Image

    Image.new("RGB", (IMAGE, IMAGE)).save(tmp_path / "in.png")
    for path in (tmp_path / "folder", single, tmp_path / "ldmkit"):
        for load in (load_model, load_pipeline, load_any_pipeline):
            with pytest.raises(CheckpointError, match=f"^{path} is a Stable Diffusion inpainting model .*9 input "
                                                      "channels.*which ldmkit does not run"):
                load(path)
        image = str(tmp_path / "in.png")
        for argv in (["generate", "a red circle"], ["inpaint", image, "--mask", image]):
            capsys.readouterr()
            assert main([*argv, "--model", str(path), "--out", str(tmp_path / "o.png"), "--steps", "1"]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "is a Stable Diffusion inpainting model" in err, err
