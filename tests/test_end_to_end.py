"""The whole system on the `tiny` preset: train both stages, resume, generate, and refuse bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.cli import main
from ldmkit.config import load_preset
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.checkpoint import load_state
from ldmkit.train.diffusion import train_diffusion

STEPS = 40


def losses(folder: Path) -> list[float]:
    with open(folder / "log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An autoencoder and an LDM trained on `tiny` for a few dozen steps each."""
    root = tmp_path_factory.mktemp("tiny")
    preset = load_preset("tiny")
    ae = train_autoencoder(preset, root / "ae", steps=STEPS, progress=False)
    ldm = train_diffusion(preset, ae, root / "ldm", steps=STEPS, progress=False)
    return preset, ae, ldm


@pytest.mark.slow
def test_training_lowers_both_losses(trained):
    _, ae, ldm = trained
    for folder in (ae, ldm):
        values = losses(folder)
        assert len(values) >= 3
        assert np.mean(values[-2:]) < values[0], f"{folder.name} loss did not fall: {values}"


@pytest.mark.slow
def test_checkpoint_folders_are_complete(trained):
    _, ae, ldm = trained
    assert {"config.yaml", "autoencoder.safetensors", "checkpoints"} <= {p.name for p in ae.iterdir()}
    names = {p.name for p in ldm.iterdir()}
    assert {"config.yaml", "autoencoder.safetensors", "unet.safetensors", "text_encoder.safetensors",
            "tokenizer.json", "known_words.json", "checkpoints"} <= names
    assert list((ldm / "samples").glob("step_*.png")), "no sample grid written"
    assert load_state(ldm)["step"] == STEPS
    scale = load_pipeline(ldm).model.autoencoder.scale_factor.item()
    assert scale > 0 and scale != 1.0, "scale_factor was not measured"


@pytest.mark.slow
def test_generate_cli_writes_png_of_right_size(trained, tmp_path):
    preset, _, ldm = trained
    out = tmp_path / "out.png"
    assert main(["generate", "a red circle", "--model", str(ldm), "--out", str(out), "--steps", "3",
                 "--no-progress"]) == 0
    assert Image.open(out).size == (preset.data.image_size, preset.data.image_size)
    grid = tmp_path / "grid.png"
    assert main(["generate", "a red circle", "--model", str(ldm), "--out", str(grid), "--steps", "2",
                 "--num-images", "4", "--sampler", "ddpm", "--no-progress"]) == 0
    assert Image.open(grid).size[0] > preset.data.image_size
    folder = tmp_path / "many"
    assert main(["generate", "a blue star", "--model", str(ldm), "--out", str(folder), "--steps", "2",
                 "--num-images", "2", "--no-progress"]) == 0
    assert len(list(folder.glob("*.png"))) == 2


@pytest.mark.slow
def test_seeded_generation_is_bit_identical(trained):
    _, _, ldm = trained
    pipe = load_pipeline(ldm)
    a = pipe("a green square above a red star", steps=4, guidance=3.0, seed=7, num_images=2)
    b = load_pipeline(ldm)("a green square above a red star", steps=4, guidance=3.0, seed=7, num_images=2)
    c = pipe("a green square above a red star", steps=4, guidance=3.0, seed=8, num_images=2)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


@pytest.mark.slow
def test_resume_continues_from_saved_step(trained, tmp_path):
    preset, ae, _ = trained
    out = tmp_path / "ldm"
    train_diffusion(preset, ae, out, steps=5, progress=False)
    assert load_state(out)["step"] == 5
    assert main(["train", "--preset", "tiny", "--autoencoder", str(ae), "--out", str(out), "--steps", "8",
                 "--resume", "--no-progress"]) == 0
    assert load_state(out)["step"] == 8
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert steps[-1] == 8 and steps == sorted(steps)


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(trained, tmp_path):
    """Stopping after k steps and resuming gives the same weights as one run (CPU, fixed seed)."""
    preset, ae, _ = trained
    train_diffusion(preset, ae, tmp_path / "one", steps=6, progress=False)
    train_diffusion(preset, ae, tmp_path / "two", steps=3, progress=False)
    train_diffusion(preset, ae, tmp_path / "two", steps=6, resume=True, progress=False)
    a, b = load_state(tmp_path / "one")["model"], load_state(tmp_path / "two")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ldmkit.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert lines, "no error message"
    message = lines[-1].lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {message!r}"


@pytest.mark.slow
def test_size_not_divisible_by_factor_is_refused(trained, tmp_path):
    _, _, ldm = trained
    r = run_cli("generate", "a red circle", "--model", str(ldm), "--out", str(tmp_path / "x.png"),
                "--height", "30", "--width", "32")
    assert_one_line_error(r, "30", "multiple")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_missing_and_corrupt_checkpoints_are_refused(trained, tmp_path):
    _, _, ldm = trained
    r = run_cli("generate", "a red circle", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(r, "not found")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ldm.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "unet.safetensors").write_bytes(b"\x00garbage" * 10)
    r = run_cli("generate", "a red circle", "--model", str(broken), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(r, "unet.safetensors")
    (broken / "unet.safetensors").write_bytes((ldm / "unet.safetensors").read_bytes()[:1000])
    r = run_cli("generate", "a red circle", "--model", str(broken), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(r, "unet.safetensors")
    r = run_cli("train", "--preset", "tiny", "--autoencoder", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert_one_line_error(r, "not found")


@pytest.mark.slow
@pytest.mark.parametrize("steps", ["0", "-3", "two"])
def test_bad_step_counts_are_refused(trained, tmp_path, steps):
    _, _, ldm = trained
    r = run_cli("generate", "a red circle", "--model", str(ldm), "--out", str(tmp_path / "x.png"), "--steps", steps)
    assert_one_line_error(r, "steps")
    r = run_cli("train-autoencoder", "--preset", "tiny", "--out", str(tmp_path / "ae"), "--steps", steps)
    assert_one_line_error(r, "steps")


@pytest.mark.slow
def test_unknown_preset_and_sampler_are_refused(trained, tmp_path):
    _, _, ldm = trained
    r = run_cli("train-autoencoder", "--preset", "enormous", "--out", str(tmp_path / "ae"))
    assert_one_line_error(r, "enormous", "tiny")
    r = run_cli("generate", "a red circle", "--model", str(ldm), "--out", str(tmp_path / "x.png"),
                "--sampler", "magic")
    assert_one_line_error(r, "magic", "ddim")


@pytest.mark.slow
def test_unreadable_image_in_user_folder_is_skipped(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"picture number {i}")
    (folder / "bad.png").write_bytes(b"not a png at all")
    (folder / "bad.txt").write_text("a broken picture")
    config = tmp_path / "config.yaml"
    config.write_text(
        (Path(__file__).parents[1] / "ldmkit" / "configs" / "tiny.yaml").read_text().replace(
            "source: shapes", f"source: {folder}"
        )
    )
    r = run_cli("train-autoencoder", "--config", str(config), "--out", str(tmp_path / "ae"), "--steps", "4",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "bad.png" in r.stderr and "skipped" in (r.stderr + r.stdout).lower()


@pytest.mark.parametrize("preset_name", ["tiny", "tiny-sr"])
def test_a_folder_of_fewer_images_than_the_preview_grid_trains(tmp_path, preset_name):
    """4 captioned images (3 for an image condition, fewer than its row of 4 inputs): training runs, saves the model
    and draws its preview grid from the images there are (it used to index image 4..7 of them)."""
    import dataclasses

    from ldmkit.autoencoder import build_autoencoder
    from ldmkit.autoencoder.folder import save_autoencoder
    from ldmkit.data import shapes_sample

    preset = load_preset(preset_name)
    folder = tmp_path / "images"
    folder.mkdir()
    count = 4 if preset_name == "tiny" else 3
    for i in range(count):
        image, caption, _ = shapes_sample(0, i, preset.data.image_size, 2)
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    torch.manual_seed(0)
    save_autoencoder(build_autoencoder(preset.autoencoder), tmp_path / "ae")
    preset = dataclasses.replace(
        preset, data=dataclasses.replace(preset.data, source=str(folder)),
        train=dataclasses.replace(preset.train, sample_every=2, sample_steps=2, tensorboard=False))
    out = train_diffusion(preset, tmp_path / "ae", tmp_path / "ldm", steps=2, device="cpu", progress=False)
    assert (out / "unet.safetensors").is_file()
    assert (out / "samples" / "step_000002.png").is_file()


def test_python_m_ldmkit_is_the_ldmkit_command():
    result = subprocess.run([sys.executable, "-m", "ldmkit", "generate", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "usage: ldmkit generate" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "ldmkit", "generate", "a", "--out", "x.png", "--steps", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
