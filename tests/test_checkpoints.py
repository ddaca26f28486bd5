"""Crash safety: SIGKILL and resume gives an uninterrupted run's weights; damaged checkpoints are
passed over; a NaN loss stops the run and keeps the last good checkpoint; the newest K are kept;
the logs of a resumed run read as one run."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import ldmkit.train.diffusion as diffusion_module
from ldmkit.cli import main
from ldmkit.config import load_preset, save_yaml
from ldmkit.storage import CheckpointError
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.checkpoint import checkpoint_path, list_checkpoints, load_state, read_checkpoint
from ldmkit.train.diffusion import train_diffusion


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread here and in the subprocess: bitwise comparisons need equal thread counts
    (reductions split differently), and on a busy 2-core machine one thread is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_preset(**train):
    """tiny, with fewer shapes to train the tokenizer on, no TensorBoard, and ``train`` overrides."""
    p = load_preset("tiny")
    return dataclasses.replace(
        p,
        data=dataclasses.replace(p.data, num_samples=256),
        autoencoder_train=dataclasses.replace(p.autoencoder_train, tensorboard=False, **train),
        train=dataclasses.replace(p.train, tensorboard=False, **train),
    )


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "ae"
    return train_autoencoder(small_preset(), out, steps=3, progress=False)


def assert_same_state(a: dict, b: dict) -> None:
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if "ema" in a:
        for k in a["ema"]["shadow"]:
            assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k
    for i, s in a["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
        assert torch.equal(s["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(autoencoder, tmp_path):
    steps, every = 16, 2
    preset = small_preset(checkpoint_every=every, log_every=1, sample_every=1000)
    config = tmp_path / "config.yaml"
    save_yaml(preset, config)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ldmkit.cli", "train", "--config", str(config), "--autoencoder", str(autoencoder),
           "--out", str(out), "--steps", str(steps), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        first = checkpoint_path(out, every)
        deadline = time.time() + 240
        while not first.with_name(first.name + ".sha256").exists():  # the checksum is written last
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = list_checkpoints(out)[-1][0]
    assert killed_at < steps, "the run finished before it was killed"

    assert main(["train", "--config", str(config), "--autoencoder", str(autoencoder), "--out", str(out),
                 "--steps", str(steps), "--resume", "auto", "--no-progress"]) == 0
    train_diffusion(preset, autoencoder, tmp_path / "whole", steps=steps, progress=False)

    resumed, whole = load_state(out), load_state(tmp_path / "whole")
    assert resumed["step"] == whole["step"] == steps
    assert_same_state(resumed, whole)
    logged = [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert logged == list(range(1, steps + 1)), "rows written after the checkpoint and lost must not repeat"


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    preset = small_preset(checkpoint_every=2)
    out = tmp_path / "ae"
    train_autoencoder(preset, out, steps=6, progress=False)
    assert [s for s, _ in list_checkpoints(out)] == [2, 4, 6]
    newest = checkpoint_path(out, 6)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    with pytest.warns(UserWarning, match=r"skipping checkpoint step_0000006\.pt.*falling back"):
        train_autoencoder(preset, out, steps=8, resume="auto", progress=False)
    train_autoencoder(preset, tmp_path / "whole", steps=8, progress=False)
    assert_same_state(load_state(out), load_state(tmp_path / "whole"))
    assert (out / "checkpoints" / "step_0000006.pt.discarded").exists()


@pytest.mark.slow
def test_damage_is_detected_with_and_without_the_checksum(tmp_path, autoencoder):
    path = list_checkpoints(autoencoder)[-1][1]
    good = path.read_bytes()
    read_checkpoint(path, "autoencoder")
    with pytest.raises(CheckpointError, match="diffusion"):
        read_checkpoint(path, "diffusion")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # inside a tensor: torch.load alone would not notice
    copy = tmp_path / path.name
    copy.write_bytes(bytes(flipped))
    (tmp_path / (path.name + ".sha256")).write_bytes(path.with_name(path.name + ".sha256").read_bytes())
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(copy)
    copy.write_bytes(good[:1000])  # truncated, no checksum file: the zip reader notices
    (tmp_path / (path.name + ".sha256")).unlink()
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(copy)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(autoencoder, tmp_path, monkeypatch, capsys):
    real_loss = diffusion_module.diffusion_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 5 else loss  # step index 5 goes wrong

    monkeypatch.setattr(diffusion_module, "diffusion_loss", poisoned)
    config = tmp_path / "config.yaml"
    save_yaml(small_preset(checkpoint_every=2), config)
    out = tmp_path / "ldm"
    code = main(["train", "--config", str(config), "--autoencoder", str(autoencoder), "--out", str(out),
                 "--steps", "10", "--no-progress"])
    assert code != 0
    assert "loss became nan at step 5" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    state = load_state(out)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.slow
def test_keeps_the_newest_k_and_refuses_to_mix_runs(autoencoder, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    save_yaml(small_preset(), config)
    out = tmp_path / "ldm"
    args = ["train", "--config", str(config), "--autoencoder", str(autoencoder), "--out", str(out), "--no-progress"]
    assert main(args + ["--steps", "5", "--checkpoint-every", "1", "--keep-checkpoints", "2"]) == 0
    assert [s for s, _ in list_checkpoints(out)] == [4, 5]
    assert not list((out / "checkpoints").glob(".*tmp"))

    assert main(args + ["--steps", "6"]) == 2  # a fresh start over a run's checkpoints
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(args + ["--steps", "6", "--resume", str(checkpoint_path(out, 4))]) == 0  # an explicit one
    assert load_state(out)["step"] == 6
    assert (out / "checkpoints" / "step_0000005.pt.discarded").exists()


@pytest.mark.slow
def test_resume_auto_starts_fresh_when_there_is_nothing_yet(autoencoder, tmp_path):
    out = train_diffusion(small_preset(), autoencoder, tmp_path / "ldm", steps=2, resume="auto", progress=False)
    assert load_state(out)["step"] == 2
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_state(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_diffusion(small_preset(), autoencoder, tmp_path / "x", steps=2, resume=tmp_path / "empty",
                        progress=False)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train_diffusion(small_preset(), autoencoder, tmp_path / "x", steps=2, resume=tmp_path / "no.pt",
                        progress=False)


def test_logs_drop_rows_past_the_resumed_step_and_tensorboard_is_optional(tmp_path, monkeypatch, capsys):
    import ldmkit.train.logs as logs

    log = logs.RunLog(tmp_path, ["loss", "lr"], start_step=0, enabled=True, tensorboard=True)
    for step in range(1, 6):
        log.write(step, {"loss": 1.0 / step, "lr": 0.1})
    log.close()
    if importlib.util.find_spec("tensorboard") is not None:  # an optional dependency
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard event file"
    log = logs.RunLog(tmp_path, ["loss", "lr"], start_step=3, enabled=True, tensorboard=False)
    log.write(4, {"loss": 0.2, "lr": 0.1})
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"] and rows[-1]["loss"] == "0.2"

    capsys.readouterr()  # forget the note the first log printed where tensorboard is not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    monkeypatch.setattr(logs, "_tensorboard_note_shown", False)
    for _ in range(2):
        assert logs.RunLog(tmp_path / "x", ["loss"], 0, enabled=True, tensorboard=True).tb is None
    assert capsys.readouterr().err.count("pip install tensorboard") == 1


def test_written_files_get_the_umask_mode_not_the_temporary_files_0600(tmp_path):
    import ldmkit.storage

    with ldmkit.storage.atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"image")
    # what open(path, "w") would give: 0644 under the usual umask 022, so other users can read outputs
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~ldmkit.storage._UMASK


def test_a_checkpoint_without_a_newer_setting_resumes_at_its_default(tmp_path):
    """A run checkpointed before a setting existed (train.colour_word_dropout) trained as its default does:
    it resumes under that default, and not under another value."""
    from ldmkit.config import load_preset
    from ldmkit.errors import CheckpointError
    from ldmkit.train.checkpoint import _settings, check_same_settings

    preset = load_preset("tiny")
    older = _settings(preset, "diffusion")
    del older["train"]["colour_word_dropout"]
    check_same_settings({"preset": older}, preset, "diffusion", tmp_path / "step_0000001.pt")
    other = dataclasses.replace(preset, train=dataclasses.replace(preset.train, colour_word_dropout=0.5))
    with pytest.raises(CheckpointError, match="train.colour_word_dropout 0.0 → 0.5"):
        check_same_settings({"preset": older}, other, "diffusion", tmp_path / "step_0000001.pt")


def test_resuming_with_another_autoencoder_is_refused(autoencoder, tmp_path):
    """The UNet learnt the latents of one frozen autoencoder: another one (other weights, or another
    architecture) on resume is a one-line refusal, not a silently mixed or unloadable model."""
    from safetensors.torch import load_file

    from ldmkit.storage import save_weights

    preset = small_preset(checkpoint_every=1, sample_every=1000)
    train_diffusion(preset, autoencoder, tmp_path / "ldm", steps=1, progress=False)
    other = tmp_path / "other_ae"
    shutil.copytree(autoencoder, other)
    weights = next(other.glob("*.safetensors"))
    tensors = load_file(str(weights))
    save_weights({k: v + 0.01 if v.is_floating_point() else v for k, v in tensors.items()}, weights)
    with pytest.raises(CheckpointError, match="holds other weights than the autoencoder the checkpoint's UNet"):
        train_diffusion(preset, other, tmp_path / "ldm", steps=2, resume="auto", progress=False)
    train_diffusion(preset, autoencoder, tmp_path / "ldm", steps=2, resume="auto", progress=False)  # its own: fine


def _model_files(folder):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("a finished model's config\n")
    (folder / "unet.safetensors").write_bytes(b"its weights")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("command", [["train-autoencoder"], ["train", "--autoencoder", "ae"],
                                     ["distill", "--teacher", "teacher"]])
def test_training_refuses_an_out_that_holds_files_but_no_checkpoints(command, tmp_path, capsys):
    import argparse

    from ldmkit.cli.train import check_run_folder

    out = tmp_path / "model"  # e.g. a finished run whose checkpoints/ was deleted
    before = _model_files(out)
    for resume in ([], ["--resume"]):
        assert main([*command, "--preset", "tiny", "--out", str(out), "--no-progress", *resume]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--out {out} is not empty" in err and "no checkpoints" in err and "\n" not in err, err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    started = tmp_path / "started"  # a run stopped before its first checkpoint: --resume starts it over
    (started / "samples").mkdir(parents=True)
    (started / "log.csv").write_text("step,time,loss,lr\n")
    assert main([*command, "--preset", "tiny", "--out", str(started), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    check_run_folder(argparse.Namespace(out=str(started), resume="auto"))
    with_checkpoints = tmp_path / "run"  # a run of its own: the fresh start is refused later, --resume continues
    torch.save({}, tmp_path / "x.pt")
    (with_checkpoints / "checkpoints").mkdir(parents=True)
    (with_checkpoints / "config.yaml").write_text("")
    shutil.copy(tmp_path / "x.pt", checkpoint_path(with_checkpoints, 3))
    check_run_folder(argparse.Namespace(out=str(with_checkpoints), resume="auto"))
    check_run_folder(argparse.Namespace(out=str(tmp_path / "new"), resume=None))


def test_a_negative_seed_is_refused_as_generate_refuses_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-autoencoder", "--preset", "tiny", "--out", str(tmp_path / "run"), "--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed: must be 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_data_with_nothing_readable_is_refused_before_the_run_folder_is_made(tmp_path):
    from ldmkit.data.shards import ShardSample, write_shards
    from ldmkit.errors import DataError

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"not a png")
    (junk / "a.txt").write_text("a red circle")
    shards = tmp_path / "shards"
    write_shards([ShardSample("00000000", b"not a png", "png", "a red circle")], shards, 1)
    for source, message in ((junk, "none of the 1 images"), (shards, "no readable samples")):
        preset = small_preset()
        preset = dataclasses.replace(preset, data=dataclasses.replace(preset.data, source=str(source)))
        out = tmp_path / f"run_{source.name}"
        with pytest.warns(UserWarning) if source is junk else contextlib.nullcontext():
            with pytest.raises(DataError, match=message):
                train_autoencoder(preset, out, steps=1, progress=False)
        assert not out.exists()


def test_loading_a_training_checkpoint_as_a_model_names_the_run_folder(tmp_path):
    from ldmkit.model import LatentDiffusion
    from ldmkit.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    path = save_checkpoint(run, {"kind": "diffusion", "step": 20, "model": {"w": torch.zeros(1)}}, keep=1)
    with pytest.raises(CheckpointError, match=f"is a training checkpoint .* step 20.*its run folder {run} holds "
                                              "the model `ldmkit train` wrote"):
        LatentDiffusion.load(path)


@pytest.mark.slow
def test_a_text_model_on_images_without_captions_is_warned_of(autoencoder, tmp_path):
    from PIL import Image

    folder = tmp_path / "uncaptioned"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(folder / f"{i}.png")
    preset = small_preset()
    preset = dataclasses.replace(preset, data=dataclasses.replace(preset.data, source=str(folder)))
    with pytest.warns(UserWarning, match="none of the 4 images .* has a caption"):
        train_diffusion(preset, autoencoder, tmp_path / "ldm", steps=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the autoencoder trains on images alone: nothing to say
        train_autoencoder(preset, tmp_path / "ae", steps=1, progress=False)
