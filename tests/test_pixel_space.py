"""Pixel-space diffusion (``autoencoder.kind: identity``, f = 1): a tiny pixel model trained for a few steps
by `ldmkit train` with no --autoencoder; its folder holds no autoencoder file, round-trips through save/load,
and samples through every entry point (generate CLI, `load_pipeline`, `ldmkit eval generate`, the server);
an --autoencoder given to a pixel preset is refused in one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.autoencoder import IdentityAutoencoder, build_autoencoder
from ldmkit.cli import main
from ldmkit.config import AutoencoderConfig, load_preset
from ldmkit.errors import ConfigError
from ldmkit.model import LatentDiffusion

# The tiny preset with the identity first stage: 32x32x3 images, the tiny UNet on 3 channels.
PIXEL_TINY = {
    "data": {"source": "shapes", "image_size": 32, "num_samples": 200},
    "autoencoder": {"kind": "identity", "in_channels": 3, "latent_channels": 3, "channel_mults": [1]},
    "text": {"vocab_size": 128, "max_length": 24, "width": 32, "layers": 1, "heads": 2},
    "unet": {"in_channels": 3, "out_channels": 3, "model_channels": 32, "channel_mults": [1, 2],
             "num_res_blocks": 1, "attention_levels": [1], "head_dim": 16, "context_dim": 32},
    "train": {"steps": 3, "batch_size": 4, "lr": 1.0e-3, "warmup_steps": 0, "ema_decay": 0.9, "log_every": 1,
              "sample_every": 1000, "checkpoint_every": 1000, "sample_steps": 2, "tensorboard": False},
}
MODEL_FILES = {"config.yaml", "unet.safetensors", "text_encoder.safetensors", "tokenizer.json"}


@pytest.fixture(scope="module")
def pixel_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pixel-config") / "pixel.yaml"
    path.write_text(yaml.safe_dump(PIXEL_TINY))
    return path


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory, pixel_config) -> Path:
    """`ldmkit train` on the tiny pixel config for 3 steps, with no --autoencoder."""
    out = tmp_path_factory.mktemp("pixel") / "model"
    assert main(["train", "--config", str(pixel_config), "--out", str(out), "--no-progress"]) == 0
    return out


def test_identity_autoencoder_is_the_identity_without_weights():
    ae = build_autoencoder(AutoencoderConfig(kind="identity", latent_channels=3, channel_mults=(1,)))
    assert isinstance(ae, IdentityAutoencoder)
    assert (ae.downsample_factor, ae.latent_channels, ae.scale_factor.item()) == (1, 3, 1.0)
    assert ae.state_dict() == {}
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(ae.decode(ae.encode(x)), x)
    with pytest.raises(ConfigError, match="latent_channels"):
        build_autoencoder(AutoencoderConfig(kind="identity", latent_channels=4))


def test_shapes64_pixel_preset_is_shapes64_on_images():
    pixel, latent = load_preset("shapes64-pixel"), load_preset("shapes64")
    assert pixel.autoencoder.kind == "identity" and pixel.autoencoder.downsample_factor == 1
    assert (pixel.unet.in_channels, pixel.unet.out_channels) == (3, 3)
    assert (pixel.text, pixel.diffusion, pixel.train) == (latent.text, latent.diffusion, latent.train)
    assert pixel.unet.context_dim == latent.unet.context_dim


def test_the_pixel_folder_has_no_autoencoder_file_and_round_trips(pixel_model, tmp_path):
    assert {p.name for p in pixel_model.iterdir()} >= MODEL_FILES
    assert not (pixel_model / "autoencoder.safetensors").exists()
    model = LatentDiffusion.load(pixel_model)
    assert isinstance(model.autoencoder, IdentityAutoencoder) and model.latent_factor == 2
    model.save(tmp_path / "copy")
    assert not (tmp_path / "copy" / "autoencoder.safetensors").exists()
    again = LatentDiffusion.load(tmp_path / "copy")
    assert again.config == model.config
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_latents_are_the_images(pixel_model):
    """z_0 = x and x = D(z_0) (clamped): the sampler's output is the image."""
    model = LatentDiffusion.load(pixel_model)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(model.encode_images(x), x)
    assert torch.equal(model.decode_latents(x * 3), (x * 3).clamp(-1, 1))


def test_generate_cli_and_python_api_draw_the_same_image(pixel_model, tmp_path):
    out = tmp_path / "red.png"
    argv = ["generate", "a red circle", "--model", str(pixel_model), "--out", str(out), "--steps", "2",
            "--seed", "3", "--no-progress"]
    assert main(argv) == 0
    pipe = load_pipeline(pixel_model)
    image = pipe("a red circle", num_inference_steps=2, generator=3).images[0]
    assert image.size == (32, 32)
    assert Image.open(out).convert("RGB").tobytes() == image.tobytes()


def test_eval_generate_runs_on_the_pixel_model(pixel_model, capsys):
    assert main(["eval", "generate", "--model", str(pixel_model), "--num-images", "4", "--steps", "2",
                 "--batch-size", "4", "--device", "cpu", "--no-progress"]) == 0
    assert "prompt accuracy" in capsys.readouterr().out


def test_eval_autoencoder_of_a_pixel_model_says_there_is_none(pixel_model, capsys):
    assert main(["eval", "autoencoder", "--model", str(pixel_model), "--num-images", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pixel-space model" in err[0] and "eval generate" in err[0]


def test_convert_refuses_a_pixel_model_in_one_line(pixel_model, tmp_path, capsys):
    assert main(["convert", str(pixel_model), "--to", "diffusers", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pixel-space model" in err[0]
    assert not (tmp_path / "d").exists()


def test_the_server_serves_the_pixel_model(pixel_model):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from ldmkit.serve import create_app

    pipe = load_pipeline(pixel_model)
    with TestClient(create_app(pipe, model_name="pixel")) as client:
        r = client.post("/v1/generate", json={"prompt": "a blue square", "steps": 2, "seed": 5, "width": 48})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1


def test_autoencoder_for_a_pixel_preset_is_refused_in_one_line(tmp_path, pixel_config, capsys):
    """In a real process: exit code 2, one stderr line, before any work (no --out folder made)."""
    out = tmp_path / "never"
    proc = subprocess.run(
        [sys.executable, "-m", "ldmkit.cli", "train", "--preset", "shapes64-pixel", "--autoencoder", str(tmp_path),
         "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "takes no autoencoder" in lines[0] and "--autoencoder" in lines[0], lines
    assert not out.exists()
    # the same from a config file, in-process; and the latent presets still need one
    assert main(["train", "--config", str(pixel_config), "--autoencoder", str(tmp_path), "--out", str(out)]) == 2
    assert main(["train", "--preset", "tiny", "--out", str(out)]) == 2
    assert main(["train-autoencoder", "--preset", "shapes64-pixel", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "takes no autoencoder" in err[0]
    assert "needs --autoencoder" in err[1] and "no autoencoder to train" in err[2]
    assert not out.exists()
