"""LoRA adapters (`ldmkit.nn.lora`), their files (`ldmkit.convert.lora`) and textual-inversion embeddings
(`ldmkit.text.inversion`) on a tiny random model: a fresh adapter is the identity, merging keeps the output,
files round-trip in both layouts, and files that do not fit are refused in one line with the model unchanged."""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldmkit.cli import build_parser, main
from ldmkit.convert import lora as lora_files
from ldmkit.errors import UsageError
from ldmkit.model import LatentDiffusion
from ldmkit.nn import lora
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.text import inversion
from tests.tiny_models import build_attentive_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_attentive_tiny_model(tmp_path_factory.mktemp("lora") / "model")


def unet_inputs(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config.unet
    z = torch.randn(2, cfg.in_channels, 8, 8, generator=g)
    context = torch.randn(2, 5, cfg.context_dim, generator=g)
    return z, torch.tensor([10, 700]), context


@torch.no_grad()
def unet_out(model, seed: int = 0):
    return model.unet(*unet_inputs(model, seed))


def randomize(model, adapter: str = "default", seed: int = 1) -> None:
    """Non-zero B everywhere, so that an adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            if adapter in layer.lora_B:
                layer.lora_B[adapter].copy_(torch.randn(layer.lora_B[adapter].shape, generator=g) * 0.1)


def with_lora(tiny, rank: int = 4, alpha: float = 8.0):
    model = LatentDiffusion.load(tiny)
    lora.inject(model, lora_files.training_targets(model), rank, alpha)
    return model


def test_fresh_adapter_is_the_identity_and_targets_the_attention_projections(tiny):
    model = LatentDiffusion.load(tiny)
    before = unet_out(model)
    targets = lora_files.training_targets(model)
    assert targets and all(t.rsplit(".", 1)[-1] in lora.ATTENTION_PROJECTIONS for t in targets)
    assert {re.search(r"attn(\d)\.to_", t)[1] for t in targets} == {"1", "2"}  # self- and cross-attention
    lora.inject(model, targets, 4, 4)
    assert torch.equal(unet_out(model), before)
    params = lora.adapter_parameters(model)
    assert len(params) == 2 * len(targets) and sum(p.numel() for p in params) < 0.2 * sum(
        p.numel() for p in model.unet.parameters())
    # the wrapped layers keep their weights' names: the model's own state dict is unchanged
    assert set(LatentDiffusion.load(tiny).unet.state_dict()) <= set(model.unet.state_dict())


def test_merge_gives_the_unmerged_output_and_remove_restores_the_model(tiny):
    base = unet_out(LatentDiffusion.load(tiny))
    model = with_lora(tiny)
    randomize(model)
    adapted = unet_out(model)
    assert (adapted - base).abs().max() > 1e-3
    lora.set_scale(model, "default", 0.0)
    assert torch.allclose(unet_out(model), base, atol=1e-6)
    lora.set_scale(model, "default", 1.0)
    # the attention maps see the adapters too
    layer = next(m for m in model.unet.modules() if hasattr(m, "to_q") and hasattr(m, "weights"))
    x = torch.randn(1, 6, layer.to_q.in_features)
    probs = layer.weights(x)
    merged = copy.deepcopy(model)
    assert lora.merge(merged) == len(lora_files.training_targets(merged))
    assert not lora.lora_layers(merged)
    assert torch.allclose(unet_out(merged), adapted, atol=1e-5)
    layer_merged = next(m for m in merged.unet.modules() if hasattr(m, "to_q") and hasattr(m, "weights"))
    assert torch.allclose(layer_merged.weights(x), probs, atol=1e-6)
    lora.remove(model)
    assert not lora.lora_layers(model) and torch.equal(unet_out(model), base)


@pytest.mark.parametrize("layout", lora_files.LAYOUTS)
def test_save_and_load_round_trip(tiny, tmp_path, layout):
    model = with_lora(tiny, rank=4, alpha=2.0)
    randomize(model)
    path = lora_files.save_lora(model, tmp_path / "a.safetensors", layout=layout)
    keys = list(load_file(str(path)))
    if layout == "diffusers":
        assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
        assert any(".attn2.to_out.0.lora_A" in k for k in keys)  # diffusers' names, from the conversion rules
    else:
        assert all(k.startswith("lora_unet_") for k in keys) and any(k.endswith(".alpha") for k in keys)
    file = lora_files.read_lora(path)
    assert file.ranks == {4} and file.metadata["ldmkit.alpha"] == "2"
    fresh = LatentDiffusion.load(tiny)
    name = lora_files.load_lora(fresh, path, scale=0.5)
    assert name == "a"
    lora.set_scale(model, "default", 0.5)
    assert torch.allclose(unet_out(fresh), unet_out(model), atol=1e-6)
    # a second file adds a second adapter; the two add up
    second = lora_files.load_lora(fresh, path, scale=0.5)
    lora.set_scale(model, "default", 1.0)
    assert second == "a_2" and torch.allclose(unet_out(fresh), unet_out(model), atol=1e-5)


def test_files_that_do_not_fit_are_refused_and_leave_the_model_unchanged(tiny, tmp_path):
    model = with_lora(tiny, rank=4)
    randomize(model)
    good = load_file(str(lora_files.save_lora(model, tmp_path / "good.safetensors")))
    key = next(k for k in good if k.endswith("lora_B.weight"))
    cases = {
        "rank mismatch": {**good, key: torch.zeros(good[key].shape[0], 3)},
        "another architecture": {**good, key.replace("unet.", "unet.extra_blocks.", 1): good[key],
                                 key.replace("lora_B", "lora_A").replace("unet.", "unet.extra_blocks.", 1): good[key]},
        "layer shapes differ": {**good, key: torch.zeros(good[key].shape[0] + 1, 4)},
        "without both": {k: v for k, v in good.items() if k != key},
        "not LoRA": {**good, "unet.x.dora_scale": torch.ones(3)},
    }
    fresh = LatentDiffusion.load(tiny)
    before = unet_out(fresh)
    for what, tensors in cases.items():
        path = tmp_path / f"{what.replace(' ', '_')}.safetensors"
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path))
        with pytest.raises(UsageError) as e:
            lora_files.load_lora(fresh, path)
        assert "\n" not in str(e.value)
        assert not lora.lora_layers(fresh) and torch.equal(unet_out(fresh), before), what
    meta = tmp_path / "meta.safetensors"
    save_file({k: v.contiguous() for k, v in good.items()}, str(meta), metadata={"ldmkit.rank": "8"})
    with pytest.raises(UsageError, match="rank mismatch"):
        lora_files.read_lora(meta)


def test_textual_inversion_token_round_trip_and_refusals(tiny, tmp_path):
    model = LatentDiffusion.load(tiny)
    prompt = ["a red circle on the left"]
    base = model.encode_prompts(prompt)
    vectors = torch.randn(2, model.config.text.width)
    inversion.add_token(model, "<blob>", vectors)
    ids, _ = model.tokenizer(["a <blob> circle"])
    new = ids[0][ids[0] >= model.tokenizer.vocab_size - 2].tolist()
    assert len(new) == 2  # "<blob>" reads as its two tokens
    assert torch.equal(model.encode_prompts(prompt), base)  # other prompts are unchanged
    written = inversion.save_embedding(tmp_path, "<blob>", vectors)
    assert [p.name for p in written] == ["learned_embeds.safetensors", "blob.safetensors"]
    assert set(load_file(str(written[1]))) == {"emb_params"}
    other = LatentDiffusion.load(tiny)
    assert inversion.load_embedding(other, written[0]) == "<blob>"
    assert torch.allclose(other.encode_prompts(["a <blob> circle"]), model.encode_prompts(["a <blob> circle"]))
    a1111 = tmp_path / "a1111.pt"  # A1111's pickled layout, read with weights_only=True
    torch.save({"string_to_param": {"*": vectors}, "name": "blob2", "step": 10}, a1111)
    assert inversion.read_embedding(a1111)[0] == "blob2"
    with pytest.raises(UsageError, match="already in the model's vocabulary"):
        inversion.add_token(other, "<blob>", vectors)
    with pytest.raises(UsageError, match="already in the model's vocabulary"):
        inversion.check_new_token(other, "circle")
    with pytest.raises(UsageError, match="wide"):
        inversion.add_token(other, "<wide>", torch.randn(1, 7))


def test_pipeline_api_and_generate_cli_take_loras_and_embeddings(tiny, tmp_path, capsys):
    model = with_lora(tiny)
    randomize(model)
    path = lora_files.save_lora(model, tmp_path / "style.safetensors")
    pipe = load_pipeline(tiny)
    base = pipe.generate_tensors("a red circle", steps=2, seed=0)
    assert pipe.load_lora_weights(path, 0.7) == "style"
    adapted = pipe.generate_tensors("a red circle", steps=2, seed=0)
    assert not torch.equal(adapted, base)
    pipe.set_adapters("style", 0.0)
    assert torch.allclose(pipe.generate_tensors("a red circle", steps=2, seed=0), base, atol=1e-5)
    pipe.set_adapters(["style"], [0.7])
    pipe.fuse_lora()
    assert torch.allclose(pipe.generate_tensors("a red circle", steps=2, seed=0), adapted, atol=1e-4)

    out = tmp_path / "out.png"
    assert main(["generate", "a red circle", "--model", str(tiny), "--steps", "2", "--out", str(out), "--no-progress",
                 "--lora", f"{path}:0.7", "--lora", str(path)]) == 0
    assert out.is_file()
    bad = tmp_path / "bad.safetensors"
    save_file({"unet.nowhere.lora_A.weight": torch.zeros(2, 3), "unet.nowhere.lora_B.weight": torch.zeros(3, 2)},
              str(bad))
    capsys.readouterr()
    for option in (["--lora", str(bad)], ["--lora", str(tmp_path / "missing.safetensors")],
                   ["--embedding", str(bad)]):
        target = tmp_path / "never.png"
        assert main(["generate", "a red circle", "--model", str(tiny), "--steps", "2", "--out", str(target),
                     "--no-progress", *option]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ldmkit generate: error:") and "\n" not in err and not target.exists()


def test_set_adapters_checks_everything_before_changing_anything(tiny, tmp_path):
    """Adapter names and weights are checked first: a refused call leaves every strength as it was. A weight is a
    finite real number (a NumPy scalar too, as diffusers takes it); a string, NaN, inf or a list of another length
    is a one-line `UsageError`, and so is a NaN or infinite load_lora_weights scale (nothing is loaded)."""
    import numpy as np

    model = with_lora(tiny)
    randomize(model)
    path = lora_files.save_lora(model, tmp_path / "style.safetensors")
    pipe = load_pipeline(tiny)
    pipe.load_lora_weights(path, 0.7)

    def scales() -> set[float]:
        return {layer.scale["style"] for layer in lora.lora_layers(pipe.model).values()}

    assert scales() == {0.7}
    refusals = [
        ((["style", "nope"], [0.0, 0.5]), r"no LoRA adapter named 'nope'; loaded: style"),
        ((["style"], [1.0, 2.0]), r"2 adapter_weights for 1 adapter_names; give one weight per name"),
        (("style", "0.5"), r"adapter_weights = '0.5'; an adapter's strength must be a finite real number"),
        (("style", float("nan")), r"adapter_weights = nan; an adapter's strength must be a finite real number"),
        ((["style"], [float("inf")]), r"adapter_weights = inf; an adapter's strength must be a finite real number"),
        (("style", True), r"adapter_weights = True; "),
    ]
    for args, message in refusals:
        with pytest.raises(UsageError, match="^" + message):
            pipe.set_adapters(*args)
        assert scales() == {0.7}, args
    pipe.set_adapters("style", np.float32(0.5))
    assert scales() == {0.5}
    pipe.set_adapters(["style"], [np.float64(-0.25)])
    assert scales() == {-0.25}
    for scale in (float("nan"), float("inf"), "1"):
        with pytest.raises(UsageError, match=r"^scale = .*; an adapter's strength must be a finite real number"):
            pipe.load_lora_weights(path, scale, adapter_name="other")
    assert lora.adapter_names(pipe.model) == ["style"]


def test_convert_merges_loras_into_a_model_folder(tiny, tmp_path, capsys):
    model = with_lora(tiny)
    randomize(model)
    path = lora_files.save_lora(model, tmp_path / "style.safetensors")
    lora.set_scale(model, "default", 0.5)
    out = tmp_path / "merged"
    assert main(["convert", str(tiny), "--to", "ldmkit", "--out", str(out), "--merge-lora", f"{path}:0.5"]) == 0
    assert "1 LoRA(s) merged" in capsys.readouterr().out
    merged = LatentDiffusion.load(out)
    assert not lora.lora_layers(merged)
    assert torch.allclose(unet_out(merged), unet_out(model), atol=1e-5)
    assert main(["convert", str(tiny), "--to", "ldmkit", "--out", str(tmp_path / "no"), "--merge-lora",
                 str(tmp_path / "missing.safetensors")]) == 2
    assert not (tmp_path / "no").exists()


def test_other_spellings_of_the_same_lora_load_alike(tiny, tmp_path):
    """kohya names in the original LDM layout (as sd-scripts writes SDXL's), diffusers' older attention-processor
    keys and peft's keys without the ``unet.`` prefix: the same adapter, the same output."""
    model = with_lora(tiny, rank=4, alpha=4.0)
    randomize(model)
    expected = unet_out(model)
    state = lora_files.lora_state(model)
    # kohya names of each layer; the last one per layer (what this dict keeps) is the original-layout one
    names = {v: k for k, v in lora_files.module_names(model).items() if k.startswith("lora_unet_")}
    variants = {
        "original": {f"{names[p]}.{part}": t for p, (a, b, alpha) in state.items()
                     for part, t in (("lora_down.weight", a), ("lora_up.weight", b), ("alpha", torch.tensor(alpha)))},
        "processor": {},
        "no_prefix": {},
    }
    assert any("input_blocks" in k for k in variants["original"])
    for p, (a, b, _) in state.items():
        name = lora_files.file_name(model, p).removeprefix("unet.")
        variants["no_prefix"] |= {f"{name}.lora_A.weight": a, f"{name}.lora_B.weight": b}
        module, _, proj = name.rpartition(".")
        if proj == "0":  # to_out.0
            module, proj = module.rpartition(".")[0], "to_out"
        variants["processor"] |= {f"unet.{module}.processor.{proj}_lora.down.weight": a,
                                  f"unet.{module}.processor.{proj}_lora.up.weight": b}
    for what, tensors in variants.items():
        path = tmp_path / f"{what}.safetensors"
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path))
        fresh = LatentDiffusion.load(tiny)
        lora_files.load_lora(fresh, path)
        assert torch.allclose(unet_out(fresh), expected, atol=1e-6), what


def test_served_adapters_appear_in_the_command_that_reproduces_an_image():
    pytest.importorskip("fastapi")
    from ldmkit.serve.app import reproduce_command
    from ldmkit.serve.schemas import Settings

    settings = Settings(prompt="a red hexagon", negative_prompt="", steps=25, guidance=4.0, binding=0.0,
                        sampler="ddim", seed=7, num_images=1, width=64, height=64)
    command = reproduce_command(settings, "model", ("--lora=hex.safetensors:0.5", "--embedding=e.safetensors"))
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.lora == ["hex.safetensors:0.5"] and args.embedding == ["e.safetensors"]
    serve = build_parser().parse_args(["serve", "--lora", "a.safetensors", "--lora", "b.safetensors:2"])
    assert serve.lora == ["a.safetensors", "b.safetensors:2"]


def with_conv_lora(tiny, rank: int = 3, alpha: float = 6.0):
    model = LatentDiffusion.load(tiny)
    lora.inject(model, lora_files.training_targets(model, targets="attention+conv"), rank, alpha)
    return model


def merged_by_hand(tiny, state: dict, scale: float = 1.0):
    """The base model with W ← W + s (α/r) B A written out per layer (A's kernel contracted with B over the rank),
    not through `ldmkit.nn.lora`: what a conv LoRA must compute."""
    model = LatentDiffusion.load(tiny)
    with torch.no_grad():
        for path, (a, b, alpha) in state.items():
            weight = model.get_submodule(path).weight
            delta = torch.einsum("or,r...->o...", b.reshape(b.shape[0], -1), a) * scale * alpha / a.shape[0]
            weight.add_(delta.reshape(weight.shape))
    return model


def test_conv_lora_targets_the_resblock_convolutions_and_merges_exactly(tiny):
    model = LatentDiffusion.load(tiny)
    base = unet_out(model)
    attention = lora_files.training_targets(model)
    targets = lora_files.training_targets(model, targets="attention+conv")
    convs = [t for t in targets if t not in attention]
    assert convs and all(re.search(r"\.res\.conv[12]$|\.res2\.conv[12]$", t) for t in convs), convs
    assert all(model.get_submodule(t).kernel_size == (3, 3) for t in convs)
    lora.inject(model, targets, 3, 6.0)
    assert torch.equal(unet_out(model), base)  # B = 0: a fresh conv adapter changes nothing
    randomize(model)
    adapted = unet_out(model)
    assert (adapted - base).abs().max() > 1e-3
    layer = model.get_submodule(convs[0])
    a, b = layer.adapter_weights("default")
    assert a.shape == (3, layer.in_channels, 3, 3) and b.shape == (layer.out_channels, 3, 1, 1)
    # B ⋆ (A ⋆ x) is the convolution with the rank-3 kernel B A: the hand-merged model computes the same
    assert torch.allclose(unet_out(merged_by_hand(tiny, lora_files.lora_state(model))), adapted, atol=1e-5)
    merged = copy.deepcopy(model)
    assert lora.merge(merged) == len(targets) and not lora.lora_layers(merged)
    assert torch.allclose(unet_out(merged), adapted, atol=1e-5)
    with pytest.raises(UsageError, match="--lora-targets"):
        lora_files.training_targets(model, targets="everything")


@pytest.mark.parametrize("layout", lora_files.LAYOUTS)
def test_conv_lora_files_round_trip_exactly(tiny, tmp_path, layout):
    model = with_conv_lora(tiny)
    randomize(model)
    path = lora_files.save_lora(model, tmp_path / "conv.safetensors", layout=layout)
    tensors = load_file(str(path))
    kernels = {tuple(t.shape[2:]) for k, t in tensors.items() if k.endswith((".lora_A.weight", ".lora_down.weight"))
               and t.ndim == 4}
    assert kernels == {(3, 3)}  # the ResBlocks' A: 3×3 kernels (the tiny model has no 1×1 projections)
    assert all(t.shape[2:] == (1, 1) for k, t in tensors.items()
               if k.endswith((".lora_B.weight", ".lora_up.weight")) and t.ndim == 4)
    fresh = LatentDiffusion.load(tiny)
    lora_files.load_lora(fresh, path, adapter="default")
    ours, theirs = lora_files.lora_state(model), lora_files.lora_state(fresh)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[p][0], theirs[p][0]) and torch.equal(ours[p][1], theirs[p][1])
               and ours[p][2] == theirs[p][2] for p in ours)
    assert torch.equal(unet_out(fresh), unet_out(model))
    lora.merge(fresh)
    assert torch.allclose(unet_out(fresh), unet_out(model), atol=1e-5)


def test_kohya_locon_keys_load(tiny, tmp_path):
    """A LoCon file as kohya-ss / LyCORIS write it — ``lora_down`` a 3×3 kernel, ``lora_up`` 1×1, a scalar alpha —
    in diffusers' module names and in the original LDM's (``input_blocks_1_0_in_layers_2``), with the stride-2
    downsampling convolution and ``conv_in`` too: the same output as the adapters merged by hand."""
    model = LatentDiffusion.load(tiny)
    extra = [p for p in ("unet.conv_in", "unet.encoder.0.downsample.conv") if p in dict(model.named_modules())]
    assert len(extra) == 2
    targets = lora_files.training_targets(model, targets="attention+conv") + extra
    lora.inject(model, targets, 2, 3.0)
    randomize(model, seed=5)
    state = lora_files.lora_state(model)
    expected = unet_out(merged_by_hand(tiny, state, scale=0.7))
    kohya = {}
    for k, v in lora_files.module_names(model).items():
        if k.startswith("lora_unet_") and v in state:
            kohya.setdefault(v, []).append(k)
    for spelling in (0, -1):  # diffusers' module names, then the original LDM's
        names = {p: ks[spelling] for p, ks in kohya.items()}
        assert any("resnets_0_conv1" in n or "in_layers_2" in n for n in names.values())
        tensors = {}
        for p, (a, b, alpha) in state.items():
            tensors |= {f"{names[p]}.lora_down.weight": a.contiguous(), f"{names[p]}.lora_up.weight": b.contiguous(),
                        f"{names[p]}.alpha": torch.tensor(alpha)}
        path = tmp_path / f"locon{spelling}.safetensors"
        save_file(tensors, str(path))
        fresh = LatentDiffusion.load(tiny)
        lora_files.load_lora(fresh, path, scale=0.7)
        assert torch.allclose(unet_out(fresh), expected, atol=1e-5), spelling


def test_conv_lora_files_that_do_not_fit_are_refused(tiny, tmp_path):
    model = with_conv_lora(tiny, rank=4)
    randomize(model)
    good = load_file(str(lora_files.save_lora(model, tmp_path / "good.safetensors")))
    down = next(k for k, t in good.items() if k.endswith("lora_A.weight") and t.shape[2:] == (3, 3))
    up = down.replace("lora_A", "lora_B")
    a, b = good[down], good[up]
    cases = {
        "rank mismatch": {**good, up: torch.zeros(b.shape[0], 3, 1, 1)},
        "layer shapes differ": {**good, down: torch.zeros(4, a.shape[1], 5, 5)},  # a 5×5 LoCon for a 3×3 layer
        "layer shapes differ ": {**good, down: torch.zeros(4, a.shape[1] + 1, 3, 3)},
        "has A (down)": {**good, up: torch.zeros(b.shape[0], 4, 3, 3)},  # a k×k up: not LoRA as peft/kohya write it
        "not LoRA weights": {**good, down.replace("lora_A", "lora_mid"): torch.zeros(4, 4, 3, 3)},  # LyCORIS Tucker
    }
    fresh = LatentDiffusion.load(tiny)
    before = unet_out(fresh)
    for i, (message, tensors) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.safetensors"
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path))
        with pytest.raises(UsageError, match=re.escape(message.strip())) as e:
            lora_files.load_lora(fresh, path)
        assert "\n" not in str(e.value)
        assert not lora.lora_layers(fresh) and torch.equal(unet_out(fresh), before), message


def test_a_lora_spec_reads_its_scale_and_names_a_bad_one(tmp_path):
    path = tmp_path / "style.safetensors"
    path.write_bytes(b"")
    assert lora_files.parse_lora_spec(f"{path}:0.8") == (str(path), 0.8)
    assert lora_files.parse_lora_spec(str(path)) == (str(path), 1.0)
    weird = tmp_path / "a:b.safetensors"  # a colon in the name, no scale
    weird.write_bytes(b"")
    assert lora_files.parse_lora_spec(str(weird)) == (str(weird), 1.0)
    for bad, words in ((f"{path}:abc", "must be a number"), (f"{path}:nan", "must be a finite number")):
        with pytest.raises(UsageError, match=words):
            lora_files.parse_lora_spec(bad)


def test_a_lora_file_with_bundled_embeddings_teaches_their_words_as_a1111_reads_them(tiny, tmp_path, capsys):
    """A1111's pivotal-tuning LoRAs: ``bundle_emb.NAME.string_to_param.*`` beside the kohya keys loads the adapters
    and the word NAME, which then reads as the same vectors loaded from an embedding file; an SDXL pair or a
    wrong width is refused before the model changes; a merge into a folder leaves the word out, with a warning."""
    model = with_lora(tiny, rank=4)
    randomize(model)
    kohya = load_file(str(lora_files.save_lora(model, tmp_path / "k.safetensors", layout="kohya")))
    width = inversion.token_width(model)
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(3)) * 0.1
    bundled = tmp_path / "pivotal.safetensors"
    save_file({**kohya, "bundle_emb.hexa.string_to_param.*": vectors}, str(bundled))
    assert lora_files.read_lora(bundled).embeddings.keys() == {"hexa"}

    pipe, reference = load_pipeline(tiny, precision="fp32"), load_pipeline(tiny, precision="fp32")
    pipe.load_lora_weights(bundled)
    reference.load_lora_weights(tmp_path / "k.safetensors")
    save_file({"emb_params": vectors}, str(tmp_path / "hexa.safetensors"))
    assert reference.load_textual_inversion(tmp_path / "hexa.safetensors") == "hexa"
    draw = [p("a red hexa", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
              output_type="pt").images for p in (pipe, reference)]
    torch.testing.assert_close(draw[0], draw[1])
    assert "embedding" in pipe.model.taught  # a word no list names: prompts are read as written

    fresh = LatentDiffusion.load(tiny)
    before = unet_out(fresh)
    for name, extra, message in (("sdxl", {"bundle_emb.hexa.clip_l": vectors, "bundle_emb.hexa.clip_g": vectors.clone()},
                                  "SDXL embedding"),
                                 ("wide", {"bundle_emb.hexa.emb_params": torch.zeros(1, width + 1)}, "-wide vectors"),
                                 ("known", {"bundle_emb.red.emb_params": vectors}, "already in the model's vocabulary")):
        path = tmp_path / f"{name}.safetensors"
        save_file({**kohya, **extra}, str(path))
        with pytest.raises(UsageError, match=message) as e:
            lora_files.load_lora(fresh, path)
        assert "\n" not in str(e.value)
        assert not lora.lora_layers(fresh) and torch.equal(unet_out(fresh), before), name

    assert main(["convert", str(tiny), "--to", "ldmkit", "--out", str(tmp_path / "merged"),
                 "--merge-lora", str(bundled)]) == 0
    err = capsys.readouterr().err
    assert "ldmkit convert: warning: " in err and "bundles the embedding(s) hexa" in err
    merged = LatentDiffusion.load(tmp_path / "merged")
    assert "hexa" not in merged.tokenizer._tok.get_vocab(with_added_tokens=True)
