"""LoRA files between ldmkit and diffusers/peft on tiny random Stable Diffusion 1- and 2-like models
(tests/test_sd_parity.py builds them): a LoRA that peft puts on diffusers' UNet and CLIP text encoder, saved by
diffusers' ``save_lora_weights``, loads into ldmkit with the same UNet and text-encoder outputs to 1e-4; and
ldmkit's files, in the diffusers/peft and kohya layouts (with LoRA on SD 1's 1×1-convolution projections, and
LoCon on the ResBlocks' 3×3 convolutions, too), load with diffusers' ``load_lora_weights`` and give ldmkit's
outputs to 1e-4; peft's LoRA on the ResBlocks' 3×3 convolutions loads into ldmkit alike; and what
`ldmkit finetune` trains on an SD folder (a UNet + text-encoder LoRA, a textual-inversion embedding) loads into
diffusers with the same outputs."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'ldmkit[test]')")
peft = pytest.importorskip("peft", reason="peft is not installed (pip install 'ldmkit[test]')")
if importlib.util.find_spec("clip") is None:
    pytest.skip("clip-anytorch (the CLIP vocabulary) is not installed", allow_module_level=True)

from ldmkit.convert import lora as lora_files  # noqa: E402
from ldmkit.model import load_model  # noqa: E402
from ldmkit.nn import lora  # noqa: E402
from ldmkit.text.inversion import load_embedding, save_embedding  # noqa: E402
from ldmkit.train.finetune import FinetuneConfig, finetune  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module", params=["v1", "v2"])
def ref(request, tmp_path_factory):
    from test_sd_parity import build  # the module pytest imported (tests/ is on sys.path): one build per session

    return build(request.param, tmp_path_factory)


def fresh_pipe(ref):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(ref["folder"]), safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(ref, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    width = ref["text"].config.hidden_size
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([17, 901]), torch.randn(2, 77, width, generator=g)


PROMPTS = ["a photo of a red circle on the left", ""]


def outputs_diffusers(pipe, ref):
    z, t, context = inputs(ref)
    ids = ref["tokenizer"](PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.unet(z, t, context).sample, pipe.text_encoder(ids).last_hidden_state


def outputs_ldmkit(model, ref):
    z, t, context = inputs(ref)
    with torch.no_grad():
        return model.unet(z, t, context), model.encode_prompts(PROMPTS)


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    err = (a - b).abs().max().item()
    assert err <= TOL, f"max |difference| {err:.2e} > {TOL:.0e}"


@pytest.mark.parametrize("convolutions, patterns", [(False, False), (True, False), (False, True)],
                         ids=["attention", "attention+conv", "rank and alpha patterns"])
def test_peft_lora_saved_by_diffusers_loads_into_ldmkit(ref, tmp_path, convolutions, patterns):
    pipe = fresh_pipe(ref)
    plain_unet, _ = outputs_diffusers(pipe, ref)
    torch.manual_seed(0)
    conv = ["conv1", "conv2"] if convolutions else []  # peft's Conv2d LoRA: A a 3×3 conv, B a 1×1 one
    # peft's per-layer exceptions, matched against the end of a layer's name: an alpha for the UNet's
    # cross-attention values, a rank and an alpha for two of the text encoder's projections
    unet_patterns = {"alpha_pattern": {"attn2.to_v": 1.0}} if patterns else {}
    text_patterns = {"rank_pattern": {"layers.0.self_attn.q_proj": 5},
                     "alpha_pattern": {"layers.0.self_attn.k_proj": 7.0}} if patterns else {}
    unet_config = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                  target_modules=["to_q", "to_k", "to_v", "to_out.0", *conv], **unet_patterns)
    text_config = peft.LoraConfig(r=2, lora_alpha=3, init_lora_weights=False,
                                  target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], **text_patterns)
    pipe.unet.add_adapter(unet_config)
    peft.inject_adapter_in_model(text_config, pipe.text_encoder)  # transformers' add_adapter wants a newer peft
    diffusers.StableDiffusionPipeline.save_lora_weights(
        str(tmp_path), unet_lora_layers=peft.utils.get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=peft.utils.get_peft_model_state_dict(pipe.text_encoder),
        unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=text_config.to_dict(),
    )
    expected_unet, expected_text = outputs_diffusers(pipe, ref)
    assert (expected_unet - plain_unet).abs().max() > 1e-2  # the adapter does something

    model = load_model(ref["folder"])
    path = tmp_path / "pytorch_lora_weights.safetensors"
    file = lora_files.read_lora(path)
    assert file.ranks == ({2, 4, 5} if patterns else {2, 4})
    assert any(a.shape[2:] == (3, 3) for a, _, _ in file.modules.values()) == convolutions
    lora_files.load_lora(model, path)
    ours_unet, ours_text = outputs_ldmkit(model, ref)
    assert_close(ours_unet, expected_unet)
    assert_close(ours_text, expected_text)


@pytest.mark.parametrize("kind", lora_files.TARGETS)
@pytest.mark.parametrize("layout", lora_files.LAYOUTS)
def test_ldmkit_lora_file_loads_into_diffusers(ref, tmp_path, layout, kind):
    model = load_model(ref["folder"])
    plain_unet, _ = outputs_ldmkit(model, ref)
    projections = [f"unet.{p}" for p, m in model.unet.named_modules() if p.endswith(("proj_in", "proj_out"))]
    targets = lora_files.training_targets(model, text_encoder=True, targets=kind) + projections
    lora.inject(model, targets, rank=4, alpha=2.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B["default"].copy_(torch.randn(layer.lora_B["default"].shape, generator=g) * 0.2)
    ours_unet, ours_text = outputs_ldmkit(model, ref)
    assert (ours_unet - plain_unet).abs().max() > 1e-2
    path = lora_files.save_lora(model, tmp_path / f"{layout}.safetensors", layout=layout)
    locon = [k for k in load_file(str(path)) if re.search(r"resnets[._]\d+[._]conv[12][._]lora", k)]
    assert bool(locon) == (kind == "attention+conv")  # diffusers' module names (resnets.N.convK) in both layouts

    pipe = fresh_pipe(ref)
    pipe.load_lora_weights(str(tmp_path), weight_name=path.name)
    expected_unet, expected_text = outputs_diffusers(pipe, ref)
    assert_close(ours_unet, expected_unet)
    assert_close(ours_text, expected_text)


def test_finetuned_lora_and_embedding_of_an_sd_folder_load_into_diffusers(ref, tmp_path):
    """`ldmkit finetune` on a diffusers folder: its LoRA (UNet and CLIP text encoder) and its textual-inversion
    embedding load into diffusers (`load_lora_weights`, `load_textual_inversion`) and give ldmkit's outputs."""
    images = tmp_path / "images"
    images.mkdir()
    for i, rgb in enumerate([(220, 30, 30), (30, 60, 220), (30, 180, 60), (240, 240, 240)]):
        image = Image.new("RGB", (32, 32), (20, 20, 20))
        image.paste(rgb, (4 + 8 * (i % 2), 6, 20 + 8 * (i % 2), 22))
        image.save(images / f"{i}.png")
    cfg = FinetuneConfig(steps=2, batch_size=2, rank=2, text_encoder_lora=True, sample_every=1000, sample_steps=2,
                         prompt="a photo of <blob>", bf16=False)
    [lora_path] = finetune(ref["folder"], images, tmp_path / "lora", cfg, progress=False)
    learned, _ = finetune(ref["folder"], images, tmp_path / "ti", FinetuneConfig(
        method="textual-inversion", token="<blob>", steps=2, batch_size=2, sample_every=1000, sample_steps=2,
        prompt="a photo of <blob>", bf16=False), progress=False)

    model = load_model(ref["folder"])
    lora_files.load_lora(model, lora_path)
    pipe = fresh_pipe(ref)
    pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name)
    for ours, expected in zip(outputs_ldmkit(model, ref), outputs_diffusers(pipe, ref)):
        assert_close(ours, expected)

    model = load_model(ref["folder"])
    assert load_embedding(model, learned) == "<blob>"
    pipe = fresh_pipe(ref)
    pipe.load_textual_inversion(str(learned))
    prompts = ["a photo of <blob> on the left"]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(model.tokenizer(prompts)[0], ids)
    with torch.no_grad():
        assert_close(model.encode_prompts(prompts), pipe.text_encoder(ids).last_hidden_state)


def test_multi_vector_embedding_reads_as_diffusers_expands_it(ref, tmp_path):
    """A 3-vector embedding: diffusers reads "<two>" as "<two> <two>_1 <two>_2", ldmkit as three tokens of its own;
    the text encoder sees the same vectors, so the prompt's context is the same."""
    width = ref["text"].config.hidden_size
    [learned, _] = save_embedding(tmp_path, "<two>", torch.randn(3, width, generator=torch.Generator().manual_seed(3)))
    model = load_model(ref["folder"])
    load_embedding(model, learned)
    pipe = fresh_pipe(ref)
    pipe.load_textual_inversion(str(learned))
    prompt = "a <two> on the left"
    expanded = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    ids = pipe.tokenizer([expanded], padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        assert_close(model.encode_prompts([prompt]), pipe.text_encoder(ids).last_hidden_state)
