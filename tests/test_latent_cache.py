"""The latent cache against fresh encoding: the stored μ, σ (and those of mirror images), the flip each
training item gets, the loss of a training step, and the refusals (other autoencoder, other data,
an unfinished build, a missing folder)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ldmkit.autoencoder import build_autoencoder
from ldmkit.autoencoder.folder import load_autoencoder, save_autoencoder
from ldmkit.cli import main
from ldmkit.config import DataConfig, load_preset, save_yaml
from ldmkit.data import DataError, ImageFolderDataset, collate, shapes_sample
from ldmkit.data.latent_cache import MANIFEST, LatentCache, build_latent_cache, cached_latents
from ldmkit.train.common import TrainingItems
from ldmkit.train.diffusion import encode_latents, train_diffusion

NUM_IMAGES = 12
SIZE = 32  # the tiny preset


def make_autoencoder(folder: Path, seed: int, kind: str = "kl") -> Path:
    """A random-weight tiny autoencoder with a scale_factor other than 1 (so that s is exercised)."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(load_preset("tiny").autoencoder, kind=kind)
    model = build_autoencoder(cfg)
    model.scale_factor.fill_(0.7)
    save_autoencoder(model, folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two autoencoders, a folder of captioned shapes images, its data config (with flips) and its cache."""
    root = tmp_path_factory.mktemp("cache")
    images = root / "images"
    images.mkdir()
    for i in range(NUM_IMAGES):
        image, caption, _ = shapes_sample(0, i, SIZE, 2)
        image.save(images / f"{i:03d}.png")
        (images / f"{i:03d}.txt").write_text(caption)
    data = DataConfig(source=str(images), image_size=SIZE, hflip=True)
    ae = make_autoencoder(root / "ae", 0)
    other = make_autoencoder(root / "ae_other", 1)
    cache = build_latent_cache(ae, data, root / "latents", batch_size=5, device="cpu", progress=False)
    return root, data, ae, other, cache


def tiny_preset(data: DataConfig):
    preset = load_preset("tiny")
    return dataclasses.replace(preset, data=data, train=dataclasses.replace(preset.train, log_every=1, sample_steps=2))


def test_cached_moments_match_fresh_encoding_of_images_and_mirror_images(setup):
    _, data, ae, _, cache = setup
    autoencoder = load_autoencoder(ae)
    folder = ImageFolderDataset(data.source, SIZE)  # no flips: the plain images
    x = torch.stack([folder[i]["images"] for i in range(NUM_IMAGES)])
    manifest = json.loads((cache / MANIFEST).read_text())
    assert manifest["count"] == NUM_IMAGES and manifest["flips"] == 2 and manifest["dtype"] == "float16"
    mean, std = np.load(cache / "mean.npy"), np.load(cache / "std.npy")
    assert mean.shape == (NUM_IMAGES, 2, 4, SIZE // 4, SIZE // 4)
    with torch.no_grad():
        for slot, images in enumerate((x, x.flip(-1))):
            posterior = autoencoder.posterior(images)
            # float16 storage: relative rounding ≤ 2^-11
            torch.testing.assert_close(torch.from_numpy(mean[:, slot]).float(), posterior.mean, rtol=1e-3, atol=1e-5)
            torch.testing.assert_close(torch.from_numpy(std[:, slot]).float(), posterior.std, rtol=1e-3, atol=1e-5)
    # the mirror image's latent is its own encoding, not the flipped latent
    assert (torch.from_numpy(mean[:, 1]).float() - torch.from_numpy(mean[:, 0]).float().flip(-1)).abs().max() > 1e-2
    assert json.loads((cache / "captions.json").read_text()) == folder.captions


def test_training_items_get_the_same_flips_and_latents_as_from_images(setup):
    """Under the trainer's per-item seeding, each cached item is the posterior of the very image
    (plain or mirrored) the image folder yields at that position."""
    _, data, ae, _, cache = setup
    autoencoder = load_autoencoder(ae)
    from_images = TrainingItems(ImageFolderDataset(data.source, SIZE, hflip=True), seed=3)
    from_cache = TrainingItems(LatentCache(cache), seed=3)
    keys = [(position, position % NUM_IMAGES) for position in range(24)]
    images = collate([from_images[k] for k in keys])
    cached = collate([from_cache[k] for k in keys])
    assert cached["caption"] == images["caption"]
    noise = torch.randn(len(keys), 4, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(0))
    fresh = encode_latents(autoencoder, images["images"], noise)
    z0 = cached_latents(cached, noise, autoencoder.scale_factor, torch.device("cpu"))
    torch.testing.assert_close(z0, fresh, rtol=2e-3, atol=2e-3)
    plain = ImageFolderDataset(data.source, SIZE)
    flipped = [not torch.equal(images["images"][j], plain[i]["images"]) for j, (_, i) in enumerate(keys)]
    assert 0 < sum(flipped) < len(keys), "the check needs both flipped and plain items"


def test_vq_cache_stores_the_pre_quantisation_latent(setup, tmp_path):
    _, data, _, _, _ = setup
    ae = make_autoencoder(tmp_path / "vq", 0, kind="vq")
    plain = dataclasses.replace(data, hflip=False)
    cache = build_latent_cache(ae, plain, tmp_path / "latents", batch_size=8, device="cpu", dtype="float32",
                               progress=False)
    assert not (cache / "std.npy").exists()
    item = LatentCache(cache)[2]
    assert set(item) == {"mean", "caption"}
    autoencoder = load_autoencoder(ae)
    x = ImageFolderDataset(data.source, SIZE)[2]["images"][None]
    torch.testing.assert_close(item["mean"][None], autoencoder.encode(x), rtol=1e-5, atol=1e-6)


def losses(folder: Path) -> list[float]:
    with open(folder / "log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_training_from_the_cache_gives_the_loss_of_training_from_images(setup):
    root, data, ae, _, cache = setup
    from_images = train_diffusion(tiny_preset(data), ae, root / "ldm_images", steps=2, progress=False)
    cached = dataclasses.replace(data, latent_cache=str(cache))
    from_cache = train_diffusion(tiny_preset(cached), ae, root / "ldm_cache", steps=2, progress=False)
    a, b = losses(from_images), losses(from_cache)
    assert len(a) == len(b) == 2
    np.testing.assert_allclose(b[0], a[0], rtol=1e-4)  # measured: 3e-6 (fp16 rounding of μ, σ)
    # after one Adam step, parameters with a ~0 gradient move by ±lr on rounding noise:
    # measured up to 1.7e-4 on a CI machine
    np.testing.assert_allclose(b[1], a[1], rtol=1e-3)
    assert (from_cache / "unet.safetensors").is_file() and (from_cache / "tokenizer.json").is_file()
    assert (from_cache / "tokenizer.json").read_text() == (from_images / "tokenizer.json").read_text()
    # resuming from the cache continues the run
    train_diffusion(tiny_preset(cached), ae, root / "ldm_cache", steps=3, resume=True, progress=False)
    assert len(losses(from_cache)) == 3


def test_cache_of_another_autoencoder_or_other_data_is_refused(setup, tmp_path):
    _, data, _, other, cache = setup
    cached = dataclasses.replace(data, latent_cache=str(cache))
    with pytest.raises(DataError, match="another autoencoder"):
        train_diffusion(tiny_preset(cached), other, tmp_path / "a", steps=1, progress=False)
    _, _, ae, _, _ = setup
    with pytest.raises(DataError, match="data.hflip = True"):
        train_diffusion(tiny_preset(dataclasses.replace(cached, hflip=False)), ae, tmp_path / "b", steps=1,
                        progress=False)
    class_preset = dataclasses.replace(tiny_preset(cached), condition=load_preset("tiny-class").condition)
    with pytest.raises(DataError, match="text-conditioned models only"):
        train_diffusion(class_preset, ae, tmp_path / "c", steps=1, progress=False)


def test_unfinished_cache_is_refused(setup, tmp_path):
    _, data, ae, _, cache = setup
    partial = tmp_path / "partial"
    shutil.copytree(cache, partial)
    (partial / MANIFEST).unlink()
    with pytest.raises(DataError, match="not a complete latent cache"):
        LatentCache(partial)
    truncated = tmp_path / "truncated"
    shutil.copytree(cache, truncated)
    with open(truncated / "std.npy", "r+b") as f:
        f.truncate(200)
    with pytest.raises(DataError, match="std.npy"):
        LatentCache(truncated)
    with pytest.raises(DataError, match="already holds a latent cache"):
        build_latent_cache(ae, data, cache, progress=False)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_builds_a_cache_and_reports_mistakes_in_one_line(setup, tmp_path, capsys):
    root, data, ae, _, _ = setup
    preset = tiny_preset(data)
    config = tmp_path / "config.yaml"
    save_yaml(preset, config)
    out = tmp_path / "latents"
    assert main(["data", "cache", "--autoencoder", str(ae), "--config", str(config), "--out", str(out),
                 "--batch-size", "7", "--no-progress"]) == 0
    assert "data.latent_cache" in capsys.readouterr().out
    assert LatentCache(out).count == NUM_IMAGES
    assert main(["data", "cache", "--autoencoder", str(ae), "--config", str(config), "--out", str(out),
                 "--no-progress"]) == 2
    assert "already holds a latent cache" in one_line_error(capsys)
    assert main(["data", "cache", "--autoencoder", str(ae), "--preset", "tiny-class", "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 2
    assert "text-conditioned models only" in one_line_error(capsys)

    assert main(["data", "cache", "--autoencoder", str(tmp_path / "no_ae"), "--config", str(config), "--out",
                 str(tmp_path / "y"), "--no-progress"]) == 2
    assert "no_ae" in one_line_error(capsys)

    missing = tmp_path / "missing.yaml"
    save_yaml(dataclasses.replace(preset, data=dataclasses.replace(data, latent_cache=str(tmp_path / "nope"))), missing)
    assert main(["train", "--config", str(missing), "--autoencoder", str(ae), "--out", str(tmp_path / "ldm"),
                 "--steps", "1", "--no-progress"]) == 2
    assert "latent cache not found" in one_line_error(capsys)


def test_shards_are_refused(setup, tmp_path, capsys):
    _, _, ae, _, _ = setup
    assert main(["data", "pack", "shapes", "--out", str(tmp_path / "shards"), "--num-samples", "4",
                 "--image-size", str(SIZE)]) == 0
    capsys.readouterr()
    with pytest.raises(DataError, match="stream of shards"):
        build_latent_cache(ae, DataConfig(source=str(tmp_path / "shards"), image_size=SIZE), tmp_path / "c",
                           progress=False)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_build_leaves_the_folder_as_it_was_and_a_rerun_succeeds(setup, tmp_path, monkeypatch,
                                                                               interruption):
    """Ctrl-C (or an error) after the first batch: no partial arrays in --out (absent, or a folder of the user's
    untouched), no temporary folder left beside it; building again then gives the whole cache."""
    import ldmkit.data.latent_cache as latent_cache

    _, data, ae, _, cache = setup
    encode = latent_cache.encode_moments
    calls = []

    def interrupted(autoencoder, images):
        calls.append(len(images))
        if len(calls) > 2:  # the first batch (image and mirror image) went through
            raise interruption("stop")
        return encode(autoencoder, images)

    user = tmp_path / "mine"  # a folder of the user's, with an older unfinished build's array in it
    user.mkdir()
    (user / "notes.txt").write_text("the user's own file")
    (user / "mean.npy").write_bytes(b"cut short")
    for out in (tmp_path / "latents", user):
        calls.clear()
        monkeypatch.setattr(latent_cache, "encode_moments", interrupted)
        with pytest.raises(interruption):
            build_latent_cache(ae, data, out, batch_size=5, device="cpu", progress=False)
        assert len(calls) == 3
        assert sorted(p.name for p in tmp_path.iterdir()) == (["latents", "mine"] if out == user else ["mine"])
        if out == user:
            assert sorted(p.name for p in user.iterdir()) == ["mean.npy", "notes.txt"]
            assert (user / "mean.npy").read_bytes() == b"cut short"
        monkeypatch.setattr(latent_cache, "encode_moments", encode)
        build_latent_cache(ae, data, out, batch_size=5, device="cpu", progress=False)
        rebuilt, reference = LatentCache(out), LatentCache(cache)
        assert rebuilt.count == NUM_IMAGES and rebuilt.captions == reference.captions
        for name in ("mean.npy", "std.npy"):
            assert np.array_equal(np.load(out / name), np.load(cache / name))
    assert (user / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents", "mine"]  # no temporary folder left
