"""`ldmkit finetune` on a tiny random model and a folder of six captioned images: LoRA, textual inversion and
full fine-tuning write files that generate reads; a run stopped and resumed ends bit-identical to an
uninterrupted one; bad input ends in one line, exit 2, before anything is written."""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ldmkit.cli import main
from ldmkit.convert import lora as lora_files
from ldmkit.data.imagefolder import mirror_caption
from ldmkit.errors import UsageError
from ldmkit.model import LatentDiffusion
from ldmkit.nn import lora
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.train.common import learning_rate
from ldmkit.text import inversion
from ldmkit.train.finetune import FinetuneConfig, finetune, param_groups, prepare
from tests.tiny_models import build_attentive_tiny_model

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}
CONFIG = FinetuneConfig(steps=4, batch_size=2, checkpoint_every=2, sample_every=1000, sample_steps=2, log_every=1,
                        rank=2, bf16=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_attentive_tiny_model(tmp_path_factory.mktemp("finetune") / "model")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, (name, rgb) in enumerate(list(COLORS.items()) * 2):
        image = Image.new("RGB", (40, 40), (255, 255, 255))
        image.paste(rgb, (5 + 10 * (i % 2), 8, 25 + 10 * (i % 2), 28))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a {name} <blob>")
    return folder


def test_lora_run_resumes_exactly_and_its_file_loads(tiny, images, tmp_path):
    whole = tmp_path / "whole"
    [path] = finetune(tiny, images, whole, CONFIG, progress=False)
    assert path == whole / "lora.safetensors"
    assert sorted(p.name for p in (whole / "samples").iterdir()) == ["step_000000.png", "step_000004.png"]
    with open(whole / "log.csv") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["1", "2", "3", "4"]

    part = tmp_path / "part"
    finetune(tiny, images, part, dataclasses.replace(CONFIG, steps=2), progress=False)
    finetune(tiny, images, part, CONFIG, resume=True, progress=False)
    a, b = load_file(str(whole / "lora.safetensors")), load_file(str(part / "lora.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("lora_B.weight") and a[k].abs().max() > 0 for k in a)  # it trained

    from ldmkit.convert.lora import WORDS_KEY, lora_metadata
    from ldmkit.text.known_words import KnownWords

    listed = KnownWords.from_json(lora_metadata(path)[WORDS_KEY], "the LoRA")  # its captions' words, for loading
    assert "red" in listed.objects
    pipe = load_pipeline(tiny)
    base = pipe.generate_tensors("a red <blob>", steps=2, seed=0)
    pipe.load_lora_weights(path)
    assert not torch.equal(pipe.generate_tensors("a red <blob>", steps=2, seed=0), base)


def test_learning_rate_schedules_decay_to_zero_at_the_last_step():
    assert [learning_rate(s, 1.0, 0, "constant", 4) for s in range(4)] == [1.0] * 4
    assert [learning_rate(s, 1.0, 0, "linear", 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    cosine = [learning_rate(s, 1.0, 2, "cosine", 6) for s in range(6)]
    assert cosine[:2] == [0.5, 1.0] and cosine[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine == sorted(cosine[:2]) + sorted(cosine[2:], reverse=True) and 0 < cosine[-1] < 0.15
    with pytest.raises(ValueError, match="allowed: constant, linear, cosine"):
        learning_rate(3, 1.0, 0, "step", 6)


def test_a_decaying_schedule_reaches_the_optimizer_and_the_log(tiny, images, tmp_path):
    out = tmp_path / "linear"
    finetune(tiny, images, out, dataclasses.replace(CONFIG, lr=1e-3, lr_scheduler="linear"), progress=False)
    with open(out / "log.csv") as f:
        assert [float(row["lr"]) for row in csv.DictReader(f)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    out = tmp_path / "warm"  # warm-up over two steps up to η₀, then the decay over the other two
    finetune(tiny, images, out, dataclasses.replace(CONFIG, lr=1e-3, lr_scheduler="linear", warmup_steps=2),
             progress=False)
    with open(out / "log.csv") as f:
        assert [float(row["lr"]) for row in csv.DictReader(f)] == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])


def test_mirror_caption_swaps_left_and_right_only():
    assert mirror_caption("a red hexagon on the left") == "a red hexagon on the right"
    assert mirror_caption("Left of a RIGHT box, right-hand") == "Right of a LEFT box, left-hand"
    assert mirror_caption("leftover bright righteousness") == "leftover bright righteousness"


def test_flip_aug_adds_each_image_mirrored_with_its_caption_mirrored(tiny, tmp_path):
    folder = tmp_path / "sides"
    folder.mkdir()
    for i, (side, x) in enumerate((("left", 2), ("right", 26))):  # each image the other's mirror image
        image = Image.new("RGB", (40, 40), (255, 255, 255))
        image.paste((220, 30, 30), (x, 10, x + 12, 30))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a red <blob> on the {side}")
    plain = prepare(tiny, folder, CONFIG, torch.device("cpu"))
    flipped = prepare(tiny, folder, dataclasses.replace(CONFIG, flip_aug=True), torch.device("cpu"))
    assert plain.captions == ["a red <blob> on the left", "a red <blob> on the right"]
    assert flipped.captions == plain.captions + ["a red <blob> on the right", "a red <blob> on the left"]
    (mean, std), (mirror_mean, mirror_std) = plain.moments, flipped.moments
    assert mirror_mean.shape[0] == mirror_std.shape[0] == 4 and torch.equal(mirror_mean[:2], mean)
    # the mirror image of the square on the left is the image of the square on the right
    torch.testing.assert_close(mirror_mean[2:], mean.flip(0))
    torch.testing.assert_close(mirror_std[2:], std.flip(0))
    assert (folder / "0.txt").read_text() == "a red <blob> on the left"  # the user's captions untouched


def test_textual_inversion_and_full_runs_write_what_generate_reads(tiny, images, tmp_path, capsys):
    out = tmp_path / "ti"
    cfg = dataclasses.replace(CONFIG, method="textual-inversion", token="<blob>", steps=2, num_vectors=2)
    learned, a1111 = finetune(tiny, images, out, cfg, progress=False)
    assert learned.name == "learned_embeds.safetensors" and a1111.name == "blob.safetensors"
    assert load_file(str(learned))["<blob>"].shape == (2, LatentDiffusion.load(tiny).config.text.width)
    assert main(["generate", "a red <blob>", "--model", str(tiny), "--embedding", str(learned), "--steps", "2",
                 "--out", str(tmp_path / "ti.png"), "--no-progress"]) == 0

    full = tmp_path / "full"
    finetune(tiny, images, full, dataclasses.replace(CONFIG, method="full", steps=2), progress=False)
    tuned, base = LatentDiffusion.load(full), LatentDiffusion.load(tiny)
    assert any(not torch.equal(p, q) for p, q in zip(tuned.unet.parameters(), base.unet.parameters()))

    assert main(["finetune", "--model", str(tiny), "--images", str(images), "--out", str(tmp_path / "cli"),
                 "--steps", "2", "--rank", "2", "--sample-every", "1000", "--no-progress"]) == 0
    assert "lora.safetensors" in capsys.readouterr().out
    assert lora_files.read_lora(tmp_path / "cli" / "lora.safetensors").ranks == {2}


def test_pivotal_tuning_trains_the_adapters_and_the_token_and_generate_reads_both(tiny, images, tmp_path):
    """--method lora --token: the adapters and the new word's vectors learn together, the vectors at their own
    rate; generate loads the LoRA and the embedding files together; a run stopped and resumed ends
    bit-identical."""
    cfg = dataclasses.replace(CONFIG, token="<blob>", init_word="red", embedding_lr=2e-2)
    whole = tmp_path / "whole"
    written = finetune(tiny, images, whole, cfg, progress=False)
    assert [p.name for p in written] == ["lora.safetensors", "learned_embeds.safetensors", "blob.safetensors"]
    base = LatentDiffusion.load(tiny)
    start = inversion.initial_vectors(base, "<blob>", "red")
    learned = load_file(str(whole / "learned_embeds.safetensors"))["<blob>"]
    assert learned.shape == start.shape and not torch.allclose(learned, start)
    assert any(v.abs().max() > 0 for k, v in load_file(str(whole / "lora.safetensors")).items() if "up" in k)

    part = tmp_path / "part"
    finetune(tiny, images, part, dataclasses.replace(cfg, steps=2), progress=False)
    finetune(tiny, images, part, cfg, resume=True, progress=False)
    for name in ("lora.safetensors", "learned_embeds.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(part / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    pipes = [load_pipeline(tiny, precision="fp32") for _ in range(2)]
    pipes[0].load_lora_weights(whole / "lora.safetensors")
    pipes[0].load_textual_inversion(whole / "learned_embeds.safetensors")
    pipes[1].load_textual_inversion(whole / "learned_embeds.safetensors")  # the word alone, no adapters
    images_of = [pipe("a red <blob>", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                      output_type="pt").images for pipe in pipes]
    assert not torch.allclose(images_of[0], images_of[1])  # the adapters draw beside the word


def test_the_token_vectors_step_at_their_own_rate(tiny, images, tmp_path):
    """Adam's first step moves every coordinate by its group's rate (m̂/√v̂ = ±1): the token's vectors by
    --embedding-lr, the adapters' B (zero at the start) by --lr."""
    cfg = dataclasses.replace(CONFIG, token="<blob>", embedding_lr=3e-2, lr=1e-3, steps=1)
    groups = param_groups(prepare(tiny, images, cfg, torch.device("cpu")).params, cfg)
    assert [g["lr_ratio"] for g in groups] == [1.0, pytest.approx(30.0)]
    assert [g["lr_ratio"] for g in param_groups(groups[0]["params"], CONFIG)] == [1.0]  # no token: one rate
    finetune(tiny, images, tmp_path / "run", cfg, progress=False)
    start = inversion.initial_vectors(LatentDiffusion.load(tiny), "<blob>")
    step = (load_file(str(tmp_path / "run" / "learned_embeds.safetensors"))["<blob>"] - start).abs().max()
    assert step.item() == pytest.approx(3e-2, rel=1e-3)
    up = max(v.abs().max() for k, v in load_file(str(tmp_path / "run" / "lora.safetensors")).items() if "lora_B" in k)
    assert up.item() == pytest.approx(1e-3, rel=1e-3)


def test_loraplus_steps_the_b_matrices_at_their_multiple_of_the_rate(tiny, images, tmp_path):
    """--loraplus-lr-ratio: the A's in one group at --lr, the B's in another at ratio · --lr (a pivotal run's
    token vectors keep their own); Adam's first step moves each B (zero at the start) by exactly its rate."""
    cfg = dataclasses.replace(CONFIG, loraplus_lr_ratio=4.0, lr=1e-3, steps=1)
    params = prepare(tiny, images, cfg, torch.device("cpu")).params
    a, b = param_groups(params, cfg)
    assert (a["lr_ratio"], b["lr_ratio"]) == (1.0, 4.0) and len(a["params"]) == len(b["params"]) == len(params) // 2
    assert all(p.shape[0] == cfg.rank for p in a["params"]) and all(p.shape[1] == cfg.rank for p in b["params"])
    pivotal = dataclasses.replace(cfg, token="<blob>", embedding_lr=3e-2)
    groups = param_groups(prepare(tiny, images, pivotal, torch.device("cpu")).params, pivotal)
    assert [g["lr_ratio"] for g in groups] == [1.0, 4.0, pytest.approx(30.0)]
    finetune(tiny, images, tmp_path / "run", cfg, progress=False)
    up = max(v.abs().max() for k, v in load_file(str(tmp_path / "run" / "lora.safetensors")).items() if "lora_B" in k)
    assert up.item() == pytest.approx(4e-3, rel=1e-3)


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, images, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    uncaptioned = tmp_path / "uncaptioned"
    uncaptioned.mkdir()
    Image.new("RGB", (32, 32)).save(uncaptioned / "a.png")
    base = ["finetune", "--model", str(tiny), "--no-progress", "--steps", "2"]
    cases = {
        "no images in": ["--images", str(empty)],
        "has no caption": ["--images", str(uncaptioned)],
        "already in the model's vocabulary": ["--images", str(images), "--method", "textual-inversion",
                                              "--token", "red"],
        "does not contain the token": ["--images", str(images), "--method", "textual-inversion", "--token", "<zz>"],
        "needs --token": ["--images", str(images), "--method", "textual-inversion"],
        "--rank applies to --method lora": ["--images", str(images), "--method", "full", "--rank", "4"],
        "--lora-targets and --save-dtype apply to --method lora only": [
            "--images", str(images), "--method", "full", "--lora-targets", "attention+conv"],
        "--prior-loss-weight weighs the prior images": ["--images", str(images), "--prior-loss-weight", "2"],
        "--timestep-bias-scope new biases the new images' t apart": ["--images", str(images), "--timestep-bias",
                                                                    "earlier", "--timestep-bias-scope", "new"],
        "--timestep-bias-multiplier must be > 0": ["--images", str(images), "--timestep-bias", "earlier",
                                                   "--timestep-bias-multiplier", "0"],
    }
    for message, options in cases.items():
        out = tmp_path / "never"
        assert main([*base, "--out", str(out), *options]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("ldmkit finetune: error:") and message in err and "\n" not in err, err
        assert not out.exists(), message

    run = tmp_path / "run"
    assert main([*base, "--images", str(images), "--out", str(run), "--rank", "2", "--checkpoint-every", "1",
                 "--sample-every", "1000"]) == 0
    capsys.readouterr()
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    fewer = tmp_path / "fewer"  # the same kind of images, not the same set
    fewer.mkdir()
    for name in ("0.png", "0.txt", "1.png", "1.txt"):
        (fewer / name).write_bytes((images / name).read_bytes())
    for options, message in ((["--rank", "4", "--resume"], "rank 2 → 4"), (["--rank", "2"], "not empty"),
                             (["--rank", "2", "--images", str(fewer), "--resume"], "holds other images or captions"),
                             (["--rank", "2", "--model", f"{tiny}/.", "--resume", "--images", str(fewer)],
                              "holds other images or captions"),  # the same model however written: only images
                             (["--rank", "2", "--lora-targets", "attention+conv", "--resume"],
                              "lora_targets 'attention' → 'attention+conv'"),
                             (["--rank", "2", "--caption-dropout-rate", "0", "--resume"], "cond_drop_prob 0.1 → 0.0"),
                             (["--rank", "2", "--lr-scheduler", "cosine", "--resume"],
                              "lr_scheduler 'constant' → 'cosine'"),
                             (["--rank", "2", "--flip-aug", "--resume"], "flip_aug False → True"),
                             (["--rank", "2", "--lr-warmup-steps", "2", "--resume"], "warmup_steps 0 → 2")):
        assert main([*base, "--images", str(images), "--out", str(run), *options]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before


@pytest.mark.parametrize("prior_loss,weight", [("images", 1.0), ("model", 1.0), ("images", 2.5)])
def test_prior_preservation_draws_its_images_once_and_resumes_exactly(tiny, images, tmp_path, prior_loss, weight):
    cfg = dataclasses.replace(CONFIG, prior_images=3, prior_prompts=("a red circle", "a blue square"), steps=3,
                              checkpoint_every=1, prior_loss=prior_loss, prior_loss_weight=weight)
    whole, part = tmp_path / "whole", tmp_path / "part"
    finetune(tiny, images, whole, cfg, progress=False)
    assert sorted(p.name for p in (whole / "prior").iterdir()) == [
        "00000.png", "00000.txt", "00001.png", "00001.txt", "00002.png", "00002.txt"]
    assert (whole / "prior" / "00002.txt").read_text() == "a red circle"
    finetune(tiny, images, part, dataclasses.replace(cfg, steps=1), progress=False)
    finetune(tiny, images, part, cfg, resume=True, progress=False)
    a, b = load_file(str(whole / "lora.safetensors")), load_file(str(part / "lora.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UsageError, match="--prior-prompt"):
        finetune(tiny, images, tmp_path / "x", dataclasses.replace(cfg, prior_prompts=()), progress=False)
    assert not (tmp_path / "x").exists()


def _with_attention_lora(tiny):
    model = LatentDiffusion.load(tiny)
    lora.inject(model, lora_files.training_targets(model), 2, 2.0)
    return model


def test_conv_lora_run_writes_locon_that_generate_and_convert_take(tiny, images, tmp_path, capsys):
    """--lora-targets attention+conv: the file has the ResBlocks' 3×3 LoCon A (float16 with --save-dtype), and
    generate --lora and convert --merge-lora take it."""
    out = tmp_path / "conv"
    assert main(["finetune", "--model", str(tiny), "--images", str(images), "--out", str(out), "--steps", "2",
                 "--rank", "2", "--sample-every", "1000", "--no-progress", "--lora-targets", "attention+conv",
                 "--save-dtype", "float16"]) == 0
    path = out / "lora.safetensors"
    tensors = load_file(str(path))
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert any(".resnets." in k and t.shape[2:] == (3, 3) for k, t in tensors.items())
    assert any(k.endswith("lora_B.weight") and ".resnets." in k and t.abs().max() > 0 for k, t in tensors.items())
    attention_only = load_file(str(lora_files.save_lora(
        _with_attention_lora(tiny), tmp_path / "attention.safetensors")))
    assert {k for k in tensors if ".resnets." not in k} == set(attention_only)
    assert main(["generate", "a red <blob>", "--model", str(tiny), "--lora", f"{path}:0.5", "--steps", "2",
                 "--out", str(tmp_path / "conv.png"), "--no-progress"]) == 0
    merged = tmp_path / "merged"
    assert main(["convert", str(tiny), "--to", "ldmkit", "--out", str(merged), "--merge-lora", str(path)]) == 0
    assert "1 LoRA(s) merged" in capsys.readouterr().out
    pipe = load_pipeline(tiny)
    pipe.load_lora_weights(path)
    expected = pipe.generate_tensors("a red <blob>", steps=2, seed=0)
    assert torch.allclose(load_pipeline(merged).generate_tensors("a red <blob>", steps=2, seed=0), expected,
                          atol=1e-4)


def test_a_checkpoint_without_newer_settings_resumes_with_their_defaults(tmp_path):
    """A run checkpointed before --lora-targets existed trained the attention projections: it resumes as such,
    and not as a conv LoRA."""
    from ldmkit.config import to_dict
    from ldmkit.errors import CheckpointError
    from ldmkit.train.finetune import check_resumable

    older = {k: v for k, v in to_dict(CONFIG).items() if k not in ("lora_targets", "save_dtype")}
    state = {"settings": older, "base_model": str(tmp_path)}
    check_resumable(state, CONFIG, tmp_path)
    with pytest.raises(CheckpointError, match="lora_targets 'attention' → 'attention\\+conv'"):
        check_resumable(state, dataclasses.replace(CONFIG, lora_targets="attention+conv"), tmp_path)


def test_prior_images_fill_half_of_every_batch_in_a_resumable_order():
    """DreamBooth's split: half of each batch is prior images whatever their number, and a run resumed at step k
    reads the batches the whole run reads from step k on."""
    from ldmkit.train.prior import batch_order

    cfg = dataclasses.replace(CONFIG, batch_size=8, prior_images=48, prior_prompts=("a red square",))
    whole = list(batch_order(16, 48, 8, 0, 0, 12))
    assert len(whole) == 12
    for items in whole:
        indices = [i for _, i in items]
        assert sum(i < 16 for i in indices) == 4 and all(16 <= i < 64 for i in indices[4:])
    assert {i for items in whole[:4] for _, i in items[:4]} == set(range(16))  # every new image before repeats
    assert list(batch_order(16, 48, 8, 0, 5, 12)) == whole[5:]
    plain = list(batch_order(16, 0, 8, 0, 0, 3))
    assert all(i < 16 for items in plain for _, i in items)
    with pytest.raises(UsageError, match="--batch-size"):
        finetune("unused", "unused", "unused", dataclasses.replace(cfg, batch_size=1))


def test_the_model_prior_is_zero_until_the_adapters_change_what_the_model_predicts(tiny):
    """--prior-loss model: the prior half's ‖ε_θ' − ε_θ‖², θ the LoRA switched off, is 0 for fresh adapters (B = 0),
    so the loss is half the new rows' plain loss; positive once they differ; the adapters' scales stay as they
    were, and only the adapters train."""
    from ldmkit.diffusion.schedule import q_sample
    from ldmkit.train.prior import frozen_prediction, split_loss

    torch.manual_seed(0)
    model = LatentDiffusion.load(tiny)
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model.unet, lora.attention_projections(model.unet), 4, 4.0, "default")
    with torch.no_grad():
        z_0 = model.encode_images(torch.rand(3, 3, model.config.image_size, model.config.image_size) * 2 - 1)
    t, noise = torch.tensor([500, 10, 900]), torch.randn_like(z_0)
    context = model.encode_prompts(["a red hexagon", "a red circle", "a blue square"])

    def new_row_loss():
        z_t = q_sample(model.schedule, z_0[:1], t[:1], noise[:1])
        return (model.unet(z_t, t[:1], context[:1]).float() - noise[:1]).pow(2).mean()

    z_t = q_sample(model.schedule, z_0, t, noise)
    with torch.no_grad():  # fresh adapters: the frozen model's prediction is the adapted one, bit for bit
        assert torch.equal(frozen_prediction(model.unet, "default", z_t, t, context), model.unet(z_t, t, context))
    fresh = split_loss(model.unet, "default", z_0, t, noise, context, model.schedule, "epsilon", 1)
    torch.testing.assert_close(fresh, 0.5 * new_row_loss())
    with torch.no_grad():
        for layer in lora.lora_layers(model.unet).values():
            layer.lora_B["default"].normal_(std=0.1)
    changed = split_loss(model.unet, "default", z_0, t, noise, context, model.schedule, "epsilon", 1)
    with torch.no_grad():
        assert changed > 0.5 * new_row_loss() + 1e-6
        # λ = --prior-loss-weight scales the prior half alone: L(λ) = ½ L_new + ½ λ L_prior
        prior_half = changed - 0.5 * new_row_loss()
        heavier = split_loss(model.unet, "default", z_0, t, noise, context, model.schedule, "epsilon", 1, 3.0)
        torch.testing.assert_close(heavier, 0.5 * new_row_loss() + 3.0 * prior_half)
    assert all(layer.scale["default"] == 1.0 for layer in lora.lora_layers(model.unet).values())
    changed.backward()
    trained = lora.adapter_parameters(model.unet)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert all(p.grad is None for p in model.unet.parameters() if all(p is not q for q in trained))
    with pytest.raises(UsageError, match="--prior-loss model"):
        finetune("unused", "unused", "unused", dataclasses.replace(CONFIG, prior_loss="model"))


def test_timestep_bias_weights_the_chosen_end():
    from ldmkit.train.finetune import biased_timesteps

    draws = {bias: biased_timesteps(torch.Generator().manual_seed(0), 40_000, 1000, bias, 3.0, 0.25)
             for bias in ("earlier", "later", "none")}
    # p(t in the biased quarter) = 3 · 0.25 / (3 · 0.25 + 0.75) = 1/2
    assert abs((draws["earlier"] < 250).float().mean().item() - 0.5) < 0.02
    assert abs((draws["later"] >= 750).float().mean().item() - 0.5) < 0.02
    assert abs((draws["none"] < 250).float().mean().item() - 0.25) < 0.02
    assert draws["earlier"].min() >= 0 and draws["later"].max() <= 999


def test_the_timestep_bias_can_leave_the_prior_images_uniform(tiny, images, tmp_path, monkeypatch):
    """--timestep-bias-scope new: the new rows' t are drawn with the bias, the prior rows' t as a run without it
    draws them; all (the default) biases every row."""
    from ldmkit.train import prior

    seen = []

    def recording_split_loss(unet, adapter, z_0, t, *rest):  # the step's t, then the loss as before
        seen.append(t.clone())
        return prior.split_loss(unet, adapter, z_0, t, *rest)

    monkeypatch.setattr("ldmkit.train.finetune.split_loss", recording_split_loss)
    cfg = dataclasses.replace(CONFIG, prior_images=2, prior_prompts=("a red circle",), prior_loss="model",
                              batch_size=4, steps=2, timestep_bias="earlier", timestep_bias_multiplier=1000.0)
    runs = {}
    for scope, bias in (("all", "earlier"), ("new", "earlier"), ("all", "none")):
        seen.clear()
        finetune(tiny, images, tmp_path / f"{scope}-{bias}", dataclasses.replace(
            cfg, timestep_bias=bias, timestep_bias_scope=scope), progress=False)
        runs[scope, bias] = torch.stack(seen)
    num_timesteps = LatentDiffusion.load(tiny).config.diffusion.num_timesteps
    quarter = num_timesteps // 4
    assert (runs["all", "earlier"] < quarter).all()  # × 1000 on the first quarter: every row there
    assert (runs["new", "earlier"][:, :2] < quarter).all()
    assert torch.equal(runs["new", "earlier"][:, 2:], runs["all", "none"][:, 2:])
    with pytest.raises(UsageError, match="--timestep-bias-scope"):
        finetune("unused", "unused", "unused", dataclasses.replace(CONFIG, timestep_bias_scope="prior"))



def test_an_unreadable_image_is_left_out_of_the_training_set_and_its_digest(tiny, images, tmp_path):
    from ldmkit.train.finetune import images_digest

    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "9.png").symlink_to(tmp_path / "nowhere.png")  # a dangling link: listed, never readable
    (folder / "9.txt").write_text("a red <blob>")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        prep = prepare(tiny, folder, CONFIG, torch.device("cpu"))
    readable = sorted(p for p in folder.glob("*.png") if p.name != "9.png")
    assert len(prep.captions) == len(prep.moments[0]) == len(readable) == 6
    assert prep.images_sha256 == images_digest(readable, [(p.with_suffix(".txt")).read_text() for p in readable])
    (folder / "0.txt").write_text("a blue <blob>")  # a changed folder is still told apart on resume
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert prepare(tiny, folder, CONFIG, torch.device("cpu")).images_sha256 != prep.images_sha256


def test_lr_and_alpha_0_and_a_token_the_method_cannot_train_are_refused(tiny, images, tmp_path, capsys):
    base = ["finetune", "--model", str(tiny), "--images", str(images), "--no-progress", "--steps", "1"]
    for options, message in ((["--lr", "0"], "--lr 0.0 trains nothing"),
                             (["--alpha", "0"], "--alpha 0.0 scales the LoRA"),
                             (["--method", "full", "--token", "<q>"], "--token applies to --method textual-inversion"),
                             (["--embedding-lr", "1e-3"], "--embedding-lr is the rate of a LoRA run's --token"),
                             (["--token", "<blob>", "--embedding-lr", "0"], "--embedding-lr 0.0 trains nothing"),
                             (["--init-word", "red"], "they need --token"),
                             (["--loraplus-lr-ratio", "0"], "--loraplus-lr-ratio 0.0: give a number above 0"),
                             (["--method", "full", "--loraplus-lr-ratio", "16"], "it needs --method lora")):
        out = tmp_path / "never"
        assert main([*base, "--out", str(out), *options]) == 2, options
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # the seed check `ldmkit generate` makes
        main([*base, "--out", str(tmp_path / "never"), "--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed: must be 0" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--lr 0"):
        finetune(tiny, images, tmp_path / "api", dataclasses.replace(CONFIG, lr=0.0), progress=False)
    assert not (tmp_path / "api").exists()


def test_resume_compares_the_learning_rate_and_alpha_used_not_how_they_were_given(tiny, images, tmp_path):
    from ldmkit.config import to_dict
    from ldmkit.errors import CheckpointError
    from ldmkit.train.finetune import DEFAULT_LR, check_resumable

    run = tmp_path / "run"
    finetune(tiny, images, run, dataclasses.replace(CONFIG, steps=2), progress=False)  # --lr, --alpha left out
    written_out = dataclasses.replace(CONFIG, lr=DEFAULT_LR["lora"], alpha=float(CONFIG.rank))
    finetune(tiny, images, run, written_out, resume=True, progress=False)  # the same values, given
    older = {"settings": {**to_dict(CONFIG), "lr": 0.0, "alpha": 0.0}, "base_model": str(tiny)}  # 0 meant default
    check_resumable(older, written_out, tiny)
    check_resumable(older, CONFIG, tiny)
    with pytest.raises(CheckpointError, match="lr 0.0005 → 0.001"):
        check_resumable(older, dataclasses.replace(CONFIG, lr=1e-3), tiny)
