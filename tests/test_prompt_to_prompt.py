"""Prompt-to-Prompt (`ldmkit edit`): the control is a no-op for equal prompts, the edited branch really
attends with the source's maps, local blend keeps the latent outside its mask, every mode runs on a tiny
Stable Diffusion model, and bad input is a one-line error before any work. Quality is measured in
benchmarks/prompt_to_prompt.py, not here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import json
import re

import pytest
import torch
from PIL import Image

from ldmkit.cli import main
from ldmkit.config import ModelConfig, load_preset, load_yaml
from ldmkit.diffusion.inversion import _alphas, ddim_inversion, ddim_step, null_text_optimization
from ldmkit.diffusion.prompt_to_prompt import AttentionController, PromptEditError, align, parse_weights
from ldmkit.errors import UsageError
from ldmkit.model import LatentDiffusion
from ldmkit.nn.attention import Attention
from ldmkit.nn.cross_attention_maps import cross_attention_layers
from ldmkit.pipelines import PromptToPromptPipeline, TextToImagePipeline
from ldmkit.text import PromptTokenizer
from tests.tiny_models import CAPTIONS

MODELS = Path(__file__).parents[1] / "ldmkit" / "configs" / "models"


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Random weights everywhere: a fresh UNet's zero output projections would make it ignore the prompt."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """The `tiny` preset with random weights that all matter."""
    preset = load_preset("tiny")
    config = ModelConfig(autoencoder=preset.autoencoder, text=preset.text, unet=preset.unet,
                         diffusion=preset.diffusion, image_size=preset.data.image_size)
    tokenizer = PromptTokenizer.train(CAPTIONS * 20, preset.text.vocab_size, preset.text.max_length)
    torch.manual_seed(0)
    model = LatentDiffusion(config, tokenizer)
    _perturb(model.unet)
    with torch.no_grad():  # peaked cross-attention, as a trained model's: local blend's mask is then a region
        for layer in cross_attention_layers(model.unet):
            layer.to_q.weight.mul_(6.0)
            layer.to_k.weight.mul_(6.0)
    folder = tmp_path_factory.mktemp("p2p") / "model"
    model.save(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(tiny_folder) -> PromptToPromptPipeline:
    return PromptToPromptPipeline.from_folder(tiny_folder)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random-weight SD-1-like model (CLIP tokenizer and text model, 1×1-conv projections) as a
    diffusers folder, written by ldmkit's converter, whose scheduler samples on Stable Diffusion's grid (leading
    timesteps, steps_offset 1), not DDIM's trailing default."""
    from ldmkit.convert import convert

    base = load_yaml(ModelConfig, MODELS / "sd-v1.yaml")
    config = replace(
        base,
        autoencoder=replace(base.autoencoder, base_channels=32, channel_mults=[1, 2, 2], num_res_blocks=1),
        text=replace(base.text, width=32, layers=1, heads=2, ff_width=64),
        unet=replace(base.unet, model_channels=32, channel_mults=[1, 2], num_res_blocks=1, attention_levels=[0, 1],
                     num_heads=2, context_dim=32),
        image_size=32,
    )
    torch.manual_seed(0)
    model = LatentDiffusion(config)
    _perturb(model.unet)
    folder = tmp_path_factory.mktemp("tiny_sd")
    model.save(folder / "ldmkit")
    convert(folder / "ldmkit", "diffusers", folder / "diffusers")
    scheduler = folder / "diffusers" / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "timestep_spacing": "leading",
                                     "steps_offset": 1, "set_alpha_to_one": False}))
    return folder / "diffusers"


# --------------------------------------------------------------------------------------------------
# the hook in Attention


def test_probs_hook_computes_the_same_attention_and_uses_what_it_returns():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, head_dim=4, context_dim=6)
    x, context = torch.randn(2, 12, 8), torch.randn(2, 5, 6)
    fused = attn(x, context)
    attn.probs_hook = lambda a: a
    assert torch.allclose(attn(x, context), fused, atol=1e-6)
    uniform = torch.full((2, 2, 12, 5), 1 / 5)
    attn.probs_hook = lambda a: uniform
    v = attn.to_v(context).view(2, 5, 2, 4).transpose(1, 2)
    expected = attn.to_out((uniform @ v).transpose(1, 2).reshape(2, 12, 8))
    assert torch.allclose(attn(x, context), expected, atol=1e-6)
    attn.probs_hook = None
    assert torch.equal(attn(x, context), fused)  # the fused path again, bit for bit


# --------------------------------------------------------------------------------------------------
# alignment


def test_alignment_of_each_mode(pipe):
    tok = pipe.model.tokenizer
    # replace: a word swapped for a word of more tokens; every edited token takes a share of the source's
    a = align(tok, "a red circle", "a turquoise circle", "replace")
    assert len(tok.tokens("a turquoise circle")[0][:tok.tokens("a turquoise circle")[1]]) > 5
    real = tok.tokens("a red circle")[1]
    rows = a.mapper.sum(1)  # each source token's weight goes somewhere, whole: each pixel's still sum to 1
    assert torch.allclose(rows[:real], torch.ones(real)) and set(rows[real:].tolist()) <= {0.0, 1.0}
    assert torch.equal(a.alphas, torch.ones_like(a.alphas))
    # refine: the added words attend on their own (α = 0), the kept ones take the source's maps
    r = align(tok, "a red circle", "a small red circle on the left", "refine")
    tokens, real = tok.tokens("a small red circle on the left")
    new = [i for i, t in enumerate(tokens[:real]) if t.strip("▁") in ("small", "on", "the", "left")]
    assert new and all(r.alphas[i] == 0 for i in new)
    assert r.alphas[:real].sum() == real - len(new)
    # reweight: the weighted word's tokens scaled, the rest 1
    w = align(tok, "a red circle", "a red(2.5) circle", "reweight")
    red = [i for i, t in enumerate(tok.tokens("a red circle")[0]) if t.strip("▁") == "red"]
    assert w.weights[red].tolist() == [2.5] and w.weights.sum() == len(w.weights) + 1.5
    assert parse_weights("a red square and a red(x2) circle") == ("a red square and a red circle", [("red", 1, 2.0)])


@pytest.mark.parametrize("source, target, mode, message", [
    ("a red circle", "a small red circle", "replace", r'use mode="refine" \(--mode refine\) to add words'),
    ("a red circle", "a blue circle", "reweight", "reweight keeps the source prompt's words"),
    ("a red circle", "a red circle", "reweight", "reweight needs a weight"),
    ("a red circle", "two blue squares", "refine", "shares no word"),
    ("a red circle", "a red(two) circle", "replace", "cannot read the weight"),
    ("a red(2) circle", "a red circle", "replace", "go in the target prompt"),
])
def test_prompts_that_do_not_align_are_refused(pipe, source, target, mode, message):
    with pytest.raises(PromptEditError, match=message):
        align(pipe.model.tokenizer, source, target, mode)


LONG = "a red circle above a blue square " + "and a small green star " * 6  # past the tiny tokenizer's 24 tokens


@pytest.mark.parametrize("target, mode, blend, word", [
    (LONG + "and a purple cross", "replace", None, "changed word 'yellow'"),  # the text encoder sees neither word
    (LONG + "and a yellow cross on the left", "refine", None, "changed word 'on'"),
    (LONG + "and a yellow(3) cross", "reweight", None, "weighted word 'yellow'"),
    (LONG.replace("red", "purple") + "and a yellow cross", "replace", ["cross"], "blend word 'cross'"),
])
def test_an_edit_past_the_token_limit_is_refused_not_a_no_op(pipe, target, mode, blend, word):
    """A word the tokenizer cuts off never reaches the text encoder: its edit would give back the source."""
    limit = re.escape(f"past the text encoder's limit ({pipe.model.tokenizer.limit()})")
    with pytest.raises(PromptEditError, match=f"^the {word} lies {limit}"):
        pipe.edit_tensors(LONG + "and a yellow cross", target, mode=mode, local_blend_words=blend, steps=1)
    align(pipe.model.tokenizer, LONG + "and a yellow cross", LONG.replace("red", "purple") + "and a yellow cross",
          "replace")  # a swap within the limit is an edit


@pytest.mark.parametrize("options, message", [
    (dict(blend_threshold=1.0, local_blend_words=["circle"]), r"blend_threshold = 1.0; must be in \[0, 1\)"),
    (dict(blend_threshold=2.0, local_blend_words=["circle"]), r"blend_threshold = 2.0; must be in \[0, 1\)"),
    (dict(blend_threshold=-0.1, local_blend_words=["circle"]), r"blend_threshold = -0.1; must be in \[0, 1\)"),
    (dict(guidance_scale=0.0), "guidance_scale = 0.0; an edit needs a guidance scale s > 0"),
])
def test_settings_at_which_the_edit_cannot_act_are_refused(pipe, options, message):
    """At a threshold ≥ 1 the local-blend mask is empty, at guidance 0 classifier-free guidance is the
    unconditional branch alone: either way the edit would silently be the source."""
    with pytest.raises(UsageError, match=f"^{message}"):
        pipe("a red circle", "a blue circle", num_inference_steps=1, **options)
    if "guidance_scale" in options:
        with pytest.raises(UsageError, match=f"^{message}"):
            pipe.invert(Image.new("RGB", (32, 32)), "a red circle", num_inference_steps=1,
                        guidance_scale=options["guidance_scale"])


# --------------------------------------------------------------------------------------------------
# sampling with control


@pytest.mark.parametrize("mode, target, blend", [
    ("replace", "a red circle on the left", None),
    ("refine", "a red circle on the left", None),
    ("reweight", "a red(1) circle on the left", None),
    ("replace", "a red circle on the left", ["circle"]),
])
def test_equal_prompts_give_the_plain_sample(pipe, mode, target, blend):
    prompt = "a red circle on the left"
    plain = TextToImagePipeline(pipe.model).generate_tensors(prompt, steps=4, seed=3, num_images=2)
    source, edited = pipe.edit_tensors(prompt, target, mode=mode, local_blend_words=blend, steps=4, seed=3,
                                       num_images=2)
    assert (source - plain).abs().max() < 1e-5
    assert (edited - plain).abs().max() < 1e-5


def test_given_latents_are_the_starting_noise(pipe):
    seeded = pipe.edit_tensors("a red circle", "a green circle", steps=3, seed=5, num_images=2)
    z_T = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    given = pipe.edit_tensors("a red circle", "a green circle", steps=3, seed=0, num_images=2, latents=z_T)
    assert all(torch.equal(a, b) for a, b in zip(seeded, given))
    with pytest.raises(ValueError, match="latents of shape"):
        pipe.edit_tensors("a red circle", "a green circle", steps=3, num_images=2, latents=z_T[:1])


def test_the_call_takes_diffusers_names_a_generator_and_an_output_type(pipe):
    source, edited = pipe.edit_tensors("a red circle", "a green circle", steps=3, seed=5, num_images=2)
    out = pipe("a red circle", "a green circle", num_inference_steps=3, guidance_scale=4.0,
               generator=torch.Generator().manual_seed(5), num_images_per_prompt=2, output_type="pt")
    assert torch.equal(out.source_images, ((source + 1) / 2).clamp(0, 1))
    assert torch.equal(out.edited_images, ((edited + 1) / 2).clamp(0, 1))
    assert torch.equal(out.images[1], out.edited_images[0]) and len(out.images) == 4  # each source, then its edit
    pil = pipe("a red circle", "a green circle", num_inference_steps=3, generator=5)
    assert len(pil.images) == 2 and all(isinstance(im, Image.Image) for im in pil.images)
    with pytest.raises(TypeError, match="unexpected keyword 'num_steps'"):
        pipe("a red circle", "a green circle", num_steps=3)
    with pytest.raises(UsageError, match="^target_prompt = None; give a string or a non-empty list of strings"):
        pipe("a red circle", None)


def test_the_call_reads_an_image_tensor_in_zero_one_as_the_other_pipelines_do(pipe):
    """image= given to the call as a tensor is read in [0, 1] (diffusers' range, what output_type="pt" returns):
    the same edit as the PIL image; `edit_tensors` keeps ldmkit's [-1, 1]."""
    size = pipe.model.config.image_size
    pil = Image.new("RGB", (size, size), (230, 200, 40))  # bright: every value ≥ 0 in [-1, 1] as well
    unit = torch.tensor([230, 200, 40]).view(1, 3, 1, 1).expand(1, 3, size, size) / 255
    options = dict(num_inference_steps=1, null_text=False, output_type="pt")
    expected = pipe("a yellow square", "a blue square", image=pil, **options)
    out = pipe("a yellow square", "a blue square", image=unit, **options)
    assert torch.equal(out.source_images, expected.source_images)
    assert torch.equal(out.edited_images, expected.edited_images)
    source, _ = pipe.edit_tensors("a yellow square", "a blue square", image=unit * 2 - 1, steps=1, null_text=False)
    assert torch.equal(((source + 1) / 2).clamp(0, 1), expected.source_images)


def test_steps_and_guidance_none_are_the_defaults(pipe):
    """None means the default, as in text-to-image: 25 DDIM steps and guidance 4, for the edit and the inversion."""
    options = dict(seed=3, num_images=1)
    given = pipe.edit_tensors("a red circle", "a blue circle", steps=25, guidance=4.0, **options)
    none = pipe.edit_tensors("a red circle", "a blue circle", steps=None, guidance=None, **options)
    assert all(torch.equal(a, b) for a, b in zip(given, none))
    out = pipe("a red circle", "a blue circle", num_inference_steps=None, guidance_scale=None, generator=3,
               output_type="pt")
    assert torch.equal(out.edited_images, ((given[1] + 1) / 2).clamp(0, 1))
    inversion = pipe.invert(Image.new("RGB", (32, 32)), "a red circle", num_inference_steps=None,
                            guidance_scale=None, null_text=False)
    assert (inversion.steps, inversion.guidance) == (25, 4.0)


def test_invert_takes_diffusers_names_and_a_mismatch_names_the_values(pipe):
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    inversion = pipe.invert(image, "a red circle", num_inference_steps=2, guidance_scale=3.0, null_text=False)
    assert (inversion.steps, inversion.guidance) == (2, 3.0)
    with pytest.warns(DeprecationWarning, match="steps= is deprecated: give diffusers' name num_inference_steps="):
        old = pipe.invert(image, "a red circle", steps=2, guidance_scale=3.0, null_text=False)
    assert torch.equal(old.latents, inversion.latents)
    with pytest.raises(TypeError, match="takes image, prompt by position"):
        pipe.invert(image, "a red circle", 2)
    with pytest.raises(UsageError, match=r"^the inversion was made for num_inference_steps=2, but this edit has "
                                         r"num_inference_steps=3; "):
        pipe("a red circle", "a blue circle", image=inversion, num_inference_steps=3, guidance_scale=3.0)
    with pytest.raises(UsageError, match=r"^the inversion was made for num_inference_steps=2, guidance_scale=3.0, "
                                         r"but this edit has num_inference_steps=4, guidance_scale=4.0; "):
        pipe("a red circle", "a blue circle", image=inversion, num_inference_steps=4)
    with pytest.raises(UsageError, match=r"^num_images_per_prompt = 2 with an image; a real image is edited once"):
        pipe("a red circle", "a blue circle", image=inversion, num_inference_steps=2, guidance_scale=3.0,
             num_images_per_prompt=2)


@pytest.mark.parametrize("output_type", ["pil", "pt", "np"])
def test_the_output_is_the_list_of_its_images(pipe, output_type):
    """As every pipeline's output, an `EditOutput` is also the list of its ``images``: each source, then its edit."""
    out = pipe(["a red circle", "a red square"], ["a blue circle", "a blue square"], num_inference_steps=2,
               output_type=output_type)
    assert len(out) == 4 and len(list(out)) == 4
    pairs = [(out.source_images[k], out.edited_images[k]) for k in range(2)]
    for k, image in enumerate(out):
        expected = pairs[k // 2][k % 2]
        assert image is expected if output_type == "pil" else (image == expected).all()
    assert out[0] is out.images[0] if output_type == "pil" else (out[1] == out.edited_images[0]).all()


class _Recording(AttentionController):
    """Keeps, for every controlled call, (step, cross?, weights in, weights out)."""

    def hook(self, cross: bool):
        inner = super().hook(cross)

        def record(probs):
            out = inner(probs)
            self.calls.append((self.step, cross, probs.clone(), out.clone()))
            return out

        return record


def test_the_edit_attends_with_the_sources_maps(pipe, monkeypatch):
    made = []
    original = pipe.controller

    def recording_controller(*args, **kwargs):
        control = original(*args, **kwargs)
        control.__class__, control.calls = _Recording, []
        made.append(control)
        return control

    monkeypatch.setattr(pipe, "controller", recording_controller)
    steps, n = 5, 2  # cross-attention from the source for steps 0–3, self-attention for steps 0–1
    pipe.edit_tensors(["a red circle", "a green star"], ["a yellow circle", "a green square"], steps=steps, seed=0,
                      cross_replace_steps=0.8, self_replace_steps=0.4)
    control = made[-1]
    assert torch.equal(control.mapper, torch.eye(control.mapper.shape[1]).expand_as(control.mapper))  # one-token words
    assert control.cross_until == 4 and control.self_until == 2
    crosses = selfs = 0
    for step, cross, before, after in control.calls:
        uncond, cond = after[: 2 * n], after[2 * n:]
        assert torch.equal(uncond, before[: 2 * n])  # the unconditional half is never touched
        assert torch.equal(cond[:n], before[2 * n: 3 * n])  # nor the source rows
        replaced = step < (control.cross_until if cross else control.self_until)
        if replaced:
            # one-token words swapped: M = I, so the edit's weights are exactly the source's
            assert torch.equal(cond[n:], before[2 * n: 3 * n])
            assert not cross or not torch.equal(cond[n:], before[3 * n:])  # (the prompts differ)
        else:
            assert torch.equal(cond[n:], before[3 * n:])
        crosses += cross and replaced
        selfs += (not cross) and replaced
    assert crosses and selfs


def test_local_blend_keeps_the_source_outside_the_mask_at_every_step(pipe):
    seen = []
    source, edited = pipe.edit_tensors(
        "a red circle on the left", "a blue circle on the left", local_blend_words=["red", "blue"], steps=5, seed=1,
        blend_threshold=0.85, latents_callback=lambda i, z, mask: seen.append((z.clone(), mask.clone())))
    assert len(seen) == 5
    for z, mask in seen:
        z_source, z_edit = z[:1], z[1:]
        assert mask.shape == (1, 1, *z.shape[-2:]) and set(mask.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal((z_edit - z_source) * (1 - mask), torch.zeros_like(z_edit))
    # a region, not all or nothing
    assert all(0 < mask.sum() < mask.numel() for _, mask in seen)
    assert not torch.equal(source, edited)


def test_null_text_optimization_brings_each_step_closer_to_the_inverted_path(pipe):
    """The contract of null-text inversion, step by step: sampled back with the stored ∅_i, each guided DDIM step
    from z̄_{t_i} lands nearer z*_{t_{i+1}} than the same step with τθ(""). (How close a trained model's
    reconstruction gets is measured in the benchmark: a random model's ε is too wild for a few steps of Adam.)"""
    model = pipe.model
    z_0 = model.encode_images(torch.rand(1, 3, 32, 32) * 2 - 1)
    context, null = model.encode_prompts(["a red circle on the left"]), model.null_context("").detach()
    steps, guidance = 3, 2.0
    path = ddim_inversion(model.unet, z_0, context, model.schedule, steps)
    assert len(path) == steps + 1 and torch.equal(path[-1], z_0)
    nulls = null_text_optimization(model.unet, path, context, null, model.schedule, guidance, inner_steps=30)
    assert nulls.shape == (steps, 1, *null.shape[1:])
    assert not torch.equal(nulls[0], nulls[1]) and not torch.equal(nulls[1], nulls[2])  # one ∅ per step, kept apart
    timesteps, alphas = _alphas(model.schedule, steps, "trailing")

    def step(i: int, z: torch.Tensor, null_i: torch.Tensor) -> torch.Tensor:
        t = torch.full((1,), timesteps[i])
        with torch.no_grad():
            cond, uncond = model.unet(z, t, context), model.unet(z, t, null_i)
        return ddim_step(z, uncond + guidance * (cond - uncond), alphas[i], alphas[i + 1])

    z = path[0]
    for i in range(steps):
        optimised, plain = step(i, z, nulls[i]), step(i, z, null)
        assert (optimised - path[i + 1]).pow(2).mean() < (plain - path[i + 1]).pow(2).mean()
        z = optimised


def test_tiny_stable_diffusion_runs_every_mode(tiny_sd):
    pipe = PromptToPromptPipeline.from_folder(tiny_sd)
    edits = [("replace", "a photo of a cat", "a photo of a dog", None),
             ("refine", "a photo of a cat", "a photo of a fluffy cat on a sofa", None),
             ("reweight", "a photo of a cat", "a photo of a cat(3)", None),
             ("replace", "a photo of a cat", "a photo of a dog", "cat dog")]
    for mode, source, target, blend in edits:
        out = pipe(source, target, mode=mode, local_blend_words=blend, steps=2, seed=0)
        assert len(out.source_images) == len(out.edited_images) == 1
        assert out.edited_images[0].size == (32, 32)
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    out = pipe("a red square", "a blue square", image=image, steps=2)
    assert out.source_images[0].size == (32, 32)
    # equal prompts: the plain sample (CLIP tokens, SD layout), on the grid text-to-image samples this model on by
    # default (its scheduler config's leading spacing), as `ldmkit generate` draws it; another grid if asked for
    assert pipe.model.scheduler_grid["spacing"] == "leading"
    for spacing in (None, "trailing"):
        plain = TextToImagePipeline(pipe.model).generate_tensors("a photo of a cat", steps=2, seed=0, spacing=spacing)
        source, edited = pipe.edit_tensors("a photo of a cat", "a photo of a cat", steps=2, seed=0, spacing=spacing)
        assert (source - plain).abs().max() < 1e-4 and (edited - plain).abs().max() < 1e-4  # (the grids: 0.06)


# --------------------------------------------------------------------------------------------------
# command line


def test_cli_writes_side_by_side_and_folders(tiny_folder, tmp_path, capsys):
    base = ["edit", "a red circle", "a blue circle", "--model", str(tiny_folder), "--steps", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "pair.png"), "--num-images", "2"]) == 0
    with Image.open(tmp_path / "pair.png") as grid:
        assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # two columns (source, edit), a row per image
    assert main([*base, "--out-dir", str(tmp_path / "many"), "--num-images", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["edit_0.png", "edit_1.png", "source_0.png",
                                                                      "source_1.png"]
    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (30, 30, 30)).save(image)
    assert main([*base, "--out-dir", str(tmp_path / "one"), "--image", str(image), "--inversion", "ddim"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["edit.png", "source.png"]
    capsys.readouterr()


def test_cli_out_dir_must_be_new_or_empty_unless_overwrite(tiny_folder, tmp_path, capsys):
    """As `ldmkit generate --out DIR`: a second run into the same folder would mix two runs' images."""
    base = ["edit", "a red circle", "a blue circle", "--model", str(tiny_folder), "--steps", "1", "--no-progress",
            "--out-dir", str(tmp_path / "d")]
    assert main([*base, "--num-images", "2"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    capsys.readouterr()
    assert main([*base, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out-dir {tmp_path / 'd'} is not empty" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before  # untouched
    assert main([*base, "--seed", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["edit.png", "edit_0.png", "edit_1.png",
                                                                   "source.png", "source_0.png", "source_1.png"]


def test_cli_takes_the_load_options_generate_takes(tiny_folder, tmp_path):
    """--prediction and --no-ema as `ldmkit generate` reads them (the server's edit commands carry them): v changes
    what the same seed draws; --no-ema on a folder without training weights is refused in one line."""
    base = ["edit", "a red circle", "a blue circle", "--model", str(tiny_folder), "--steps", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "eps.png"), "--prediction", "epsilon"]) == 0
    assert main([*base, "--out", str(tmp_path / "v.png"), "--prediction", "v"]) == 0
    assert Image.open(tmp_path / "eps.png").tobytes() != Image.open(tmp_path / "v.png").tobytes()
    assert main([*base, "--out", str(tmp_path / "x.png"), "--no-ema"]) == 2
    assert not (tmp_path / "x.png").exists()


def test_cli_errors_are_one_line_before_any_work(tiny_folder, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 20)).save(small)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = ["--out", str(tmp_path / "o.png")]
    cases = [
        (["a red circle", "a small red circle", *out], "(--mode refine) to add words"),
        (["a red circle", "a blue circle", "--blend", "star", *out], "blend word 'star'"),
        (["a red circle", "a blue circle", "--image", str(small), *out], "this model edits 32×32 images"),
        (["a red circle", "a blue circle", "--image", str(tmp_path / "none.png"), *out], "image not found"),
        (["a red circle", "a blue circle", "--out", str(blocker / "o.png")], "is a file"),
        (["a red circle", "a blue circle", "--out", str(tmp_path / "o.jpg")], "give a file name ending in .png"),
        (["a red circle", "a blue circle"], "give exactly one of --out"),
        (["a red circle", "a blue circle", "--image", str(small), "--num-images", "2", *out], "edited once"),
        (["a red circle", "a red circle", "--mode", "reweight", *out], "reweight needs a weight"),
        (["a red circle", "a blue circle", "--guidance", "0", *out], "--guidance = 0.0; an edit needs"),
    ]
    for args, message in cases:
        assert main(["edit", *args, "--model", str(tiny_folder), "--steps", "2", "--no-progress"]) == 2, message
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit, match="2"):  # argparse's refusal: an empty mask would leave the source as it is
        main(["edit", "a red circle", "a blue circle", "--blend", "circle", "--blend-threshold", "1", *out])
    assert "argument --blend-threshold: must be in [0, 1), got 1" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
