"""Stable Diffusion files as users hand them over: damaged or foreign pickles are refused in one line that says which
case it is; the sampling grid travels through every conversion, so the converted model draws the same image;
``--no-ema`` takes a folder's training weights where it keeps them and is refused where there are none; an
embedding says the token it was loaded as."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
import warnings
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ldmkit.cli import main
from ldmkit.convert import convert, read_checkpoint
from ldmkit.convert.checkpoint import read_tensors
from ldmkit.convert.diffusers_folder import read_diffusers
from ldmkit.convert.folder import read_folder
from ldmkit.errors import CheckpointError, UsageError
from ldmkit.text.inversion import read_embedding
from tests.tiny_models import SD15_SCHEDULER, build_tiny_model

HAVE_SD = all(importlib.util.find_spec(m) for m in ("diffusers", "transformers", "clip"))
needs_sd = pytest.mark.skipif(not HAVE_SD, reason="diffusers, transformers and clip-anytorch are needed (pip install 'ldmkit[sd]')")
SD_IMAGE = dict(steps=3, seed=1, height=32, width=32)


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    from test_sd_parity import build  # the module pytest imported (tests/ is on sys.path): one build per session

    return build("v1", tmp_path_factory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("sd-files") / "tiny")


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------
# damaged and foreign pickles


def damaged_files(folder: Path) -> dict[str, Path]:
    """Files that are not torch.save's, under a .ckpt name: what users download or rename by mistake."""
    torch.save({"state_dict": {"a": torch.zeros(2)}}, folder / "whole.ckpt")
    contents = {
        "text repeated": b"hello world not a pickle" * 10,
        "an HTML page": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "random bytes": random.Random(0).randbytes(100),
        "a plain pickle": pickle.dumps({"a": 1, "b": 2}, protocol=4),
        "a truncated file": (folder / "whole.ckpt").read_bytes()[:300],
    }
    files = {}
    for what, data in contents.items():
        files[what] = folder / f"{what.replace(' ', '_')}.ckpt"
        files[what].write_bytes(data)
    return files


def test_damaged_or_foreign_pickles_are_refused_in_one_line_as_such(tmp_path):
    for what, path in damaged_files(tmp_path).items():
        with pytest.raises(CheckpointError) as e:
            read_tensors(path)
        message = one_line(e)
        assert f"{path} is not a readable checkpoint" in message, what
        assert "damaged or was not written by torch.save" in message and "pickled Python objects" not in message, what
        assert "trust" not in message and "weights_only" not in message, what
        with pytest.raises(UsageError) as e:  # an embedding file: the same reader, its own words
            read_embedding(path.rename(path.with_suffix(".pt")))
        assert "is not a readable embedding file" in one_line(e), what


def test_a_pickle_that_holds_code_is_named_as_such_without_advice_to_unpickle_it(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(2)}, "callback": Path("/")}, evil)  # a class to import
    with pytest.raises(CheckpointError) as e:
        read_tensors(evil)
    message = one_line(e)
    assert "holds pickled Python objects" in message and "pathlib.PosixPath" in message and ".safetensors" in message
    assert "not a readable" not in message and "trust" not in message and "weights_only" not in message
    with pytest.raises(UsageError, match="pathlib.PosixPath.*safetensors version of this embedding file"):
        read_embedding(evil.rename(tmp_path / "evil.pt"))


def test_the_command_line_refuses_a_damaged_ckpt_or_embedding_in_one_line(tiny, tmp_path, capsys):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"hello world not a pickle" * 10)
    (tmp_path / "garbage.pt").write_bytes(garbage.read_bytes())
    runs = [
        (["generate", "a cat", "--model", str(garbage), "--out", str(tmp_path / "a.png")], "readable checkpoint"),
        (["convert", str(garbage), "--to", "ldmkit", "--out", str(tmp_path / "b")], "readable checkpoint"),
        (["generate", "a red circle", "--model", str(tiny), "--embedding", str(tmp_path / "garbage.pt"), "--steps",
          "1", "--out", str(tmp_path / "c.png"), "--no-progress"], "readable embedding file"),
    ]
    for argv, said in runs:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ldmkit {argv[0]}: error:") and "\n" not in err and said in err and "KeyError" in err
    assert not any((tmp_path / name).exists() for name in ("a.png", "b", "c.png"))


# --------------------------------------------------------------------------------------------------
# the sampling grid through conversions


def scheduler_config(folder: Path) -> dict:
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


@needs_sd
def test_the_scheduler_grid_travels_through_every_conversion(v1, tmp_path):
    # the diffusers folder's scheduler config
    leading = {"spacing": "leading", "steps_offset": 1, "scheduler": "DDIMScheduler"}
    convert(v1["folder"], "ldmkit", tmp_path / "ldm")
    assert json.loads((tmp_path / "ldm" / "scheduler.json").read_text()) == {
        "_class_name": "DDIMScheduler", "steps_offset": 1, "timestep_spacing": "leading"}
    assert read_checkpoint(tmp_path / "ldm").scheduler_grid == leading
    convert(tmp_path / "ldm", "original", tmp_path / "m.safetensors")
    assert read_checkpoint(tmp_path / "m.safetensors").scheduler_grid == leading
    convert(tmp_path / "m.safetensors", "diffusers", tmp_path / "sd")
    written = scheduler_config(tmp_path / "sd")
    assert (written["timestep_spacing"], written["steps_offset"], written["set_alpha_to_one"]) == ("leading", 1, False)
    assert written["_class_name"] == "DDIMScheduler"
    assert read_checkpoint(tmp_path / "sd").scheduler_grid == leading

    # Stable Diffusion 1.x's PNDMScheduler (PLMS) travels too, and is written as diffusers runs it
    pndm = tmp_path / "pndm"
    shutil.copytree(v1["folder"], pndm)
    (pndm / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
    index = json.loads((pndm / "model_index.json").read_text())
    (pndm / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "PNDMScheduler"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what ldmkit writes states how it samples: nothing to warn of on reading
        convert(pndm, "ldmkit", tmp_path / "ldm-pndm")
        convert(tmp_path / "ldm-pndm", "original", tmp_path / "pndm.safetensors")
        convert(tmp_path / "pndm.safetensors", "diffusers", tmp_path / "sd-pndm")
        read_checkpoint(tmp_path / "ldm-pndm")
    written = scheduler_config(tmp_path / "sd-pndm")
    assert (written["_class_name"], written["skip_prk_steps"], written["steps_offset"]) == ("PNDMScheduler", True, 1)
    assert read_checkpoint(tmp_path / "sd-pndm").scheduler_grid == {"spacing": None, "steps_offset": 1,
                                                                    "scheduler": "PNDMScheduler"}

    # a single file names no grid: each sampler takes its own, DDIM trailing to ᾱ = 1, and the folder says so
    convert(v1["original"], "diffusers", tmp_path / "own")
    written = scheduler_config(tmp_path / "own")
    assert (written["timestep_spacing"], written["set_alpha_to_one"]) == ("trailing", True)
    convert(v1["original"], "ldmkit", tmp_path / "ldm", ema=False)  # over the folder: no stale scheduler.json
    assert not (tmp_path / "ldm" / "scheduler.json").exists() and read_checkpoint(tmp_path / "ldm").scheduler_grid == {}


def test_a_damaged_scheduler_json_is_one_line(tmp_path):
    from ldmkit.convert.folder import read_scheduler_grid, write_scheduler_grid

    write_scheduler_grid(tmp_path, {"spacing": None, "steps_offset": 1})  # no spacing: each sampler's diffusers one
    assert read_scheduler_grid(tmp_path) == {"spacing": None, "steps_offset": 1}
    for text, said in (('{"timestep_spacing": "even"', "not valid JSON"), ('{"timestep_spacing": "even"}', "'even'"),
                       ("[]", "expected")):
        (tmp_path / "scheduler.json").write_text(text)
        with pytest.raises(CheckpointError) as e:
            read_scheduler_grid(tmp_path)
        assert "scheduler.json" in one_line(e) and said in str(e.value)
    write_scheduler_grid(tmp_path, {})  # each sampler's own grid: no file
    assert not (tmp_path / "scheduler.json").exists() and read_scheduler_grid(tmp_path) == {}


@needs_sd
def test_converted_files_draw_the_image_their_source_draws(v1, tmp_path):
    from ldmkit.pipelines.text_to_image import load_pipeline

    convert(v1["folder"], "original", tmp_path / "m.safetensors")
    source = load_pipeline(v1["folder"]).generate_tensors("a cat", **SD_IMAGE)
    assert torch.equal(load_pipeline(tmp_path / "m.safetensors").generate_tensors("a cat", **SD_IMAGE), source)
    convert(v1["original"], "diffusers", tmp_path / "sd")  # the default sampler on the single file's own grid
    source = load_pipeline(v1["original"]).generate_tensors("a cat", **SD_IMAGE)
    assert torch.equal(load_pipeline(tmp_path / "sd").generate_tensors("a cat", **SD_IMAGE), source)


@needs_sd
def test_a_converted_model_folder_draws_the_image_its_source_draws(v1, tmp_path):
    from ldmkit.pipelines.text_to_image import load_pipeline

    convert(v1["folder"], "ldmkit", tmp_path / "ldm")
    source = load_pipeline(v1["folder"]).generate_tensors("a cat", **SD_IMAGE)
    assert torch.equal(load_pipeline(tmp_path / "ldm").generate_tensors("a cat", **SD_IMAGE), source)


# --------------------------------------------------------------------------------------------------
# --no-ema on folders


def unet(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if k.startswith("unet.")}


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


@needs_sd
def test_a_folder_converted_from_a_file_with_ema_gives_its_training_weights(v1, tmp_path):
    convert(v1["original"], "ldmkit", tmp_path / "ldm")  # the EMA weights, the training ones kept in the extras
    training = read_folder(tmp_path / "ldm", ema=False)
    assert_same(unet(training.weights), unet(read_checkpoint(v1["original"], ema=False).weights))
    ema = read_folder(tmp_path / "ldm").weights
    assert not all(torch.equal(training.weights[k], ema[k]) for k in unet(ema))
    from ldmkit.convert.original import write_original  # still the whole file, bit for bit

    write_original(training, tmp_path / "back.safetensors")
    assert_same(load_file(str(tmp_path / "back.safetensors")), load_file(str(v1["original"])))
    with safe_open(str(tmp_path / "back.safetensors"), "pt") as f:
        assert "ldmkit_config" in f.metadata()


@needs_sd
def test_a_model_without_training_weights_refuses_no_ema_in_one_line(v1, tiny, tmp_path):
    convert(v1["folder"], "ldmkit", tmp_path / "from-diffusers")
    for read, why in ((lambda: read_diffusers(v1["folder"], ema=False), "a diffusers folder holds one set"),
                      (lambda: read_folder(tmp_path / "from-diffusers", ema=False), "converted from a diffusers"),
                      (lambda: read_folder(tiny, ema=False), "EMA weights only")):
        with pytest.raises(CheckpointError) as e:
            read()
        message = one_line(e)
        assert "no training weights" in message and "--no-ema" in message and why in message


@needs_sd
def test_no_ema_on_the_command_line_is_honoured_or_refused_for_folders(v1, tiny, tmp_path, capsys):
    convert(v1["original"], "ldmkit", tmp_path / "ldm")
    draw = ["generate", "a cat", "--steps", "2", "--height", "32", "--width", "32", "--no-progress"]
    assert main([*draw, "--model", str(tmp_path / "ldm"), "--out", str(tmp_path / "ema.png")]) == 0
    assert main([*draw, "--model", str(tmp_path / "ldm"), "--out", str(tmp_path / "training.png"), "--no-ema"]) == 0
    assert main([*draw, "--model", str(v1["original"]), "--out", str(tmp_path / "file.png"), "--no-ema"]) == 0
    images = {n: (tmp_path / f"{n}.png").read_bytes() for n in ("ema", "training", "file")}
    assert images["training"] == images["file"] != images["ema"]
    assert main(["convert", str(tmp_path / "ldm"), "--to", "ldmkit", "--out", str(tmp_path / "t"), "--no-ema"]) == 0
    assert_same(unet(read_checkpoint(tmp_path / "t").weights), unet(read_checkpoint(v1["original"], ema=False).weights))
    capsys.readouterr()
    for model in (v1["folder"], tiny):
        assert main([*draw, "--model", str(model), "--out", str(tmp_path / "x.png"), "--no-ema"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "no training weights" in err and not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------------------------------
# embeddings: the token they were loaded as


def test_an_embedding_whose_token_is_not_its_file_name_says_the_token(tiny, tmp_path, capsys):
    from ldmkit.model import LatentDiffusion

    width = LatentDiffusion.load(tiny).config.text.width
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(0))
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "myemb", "step": 100}
    torch.save(a1111, tmp_path / "myemb.pt")
    torch.save(a1111, tmp_path / "renamed_neg.pt")  # A1111 would trigger it by "renamed_neg"; diffusers by "myemb"
    draw = ["generate", "a red circle", "--model", str(tiny), "--steps", "1", "--no-progress"]
    capsys.readouterr()
    assert main([*draw, "--embedding", str(tmp_path / "renamed_neg.pt"), "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['ldmkit generate: warning: embedding renamed_neg.pt: token "myemb" (the name inside the file, as '
                   'diffusers reads it; A1111 would use the file name "renamed_neg")']
    assert main([*draw, "--embedding", str(tmp_path / "myemb.pt"), "--out", str(tmp_path / "b.png")]) == 0
    assert "embedding" not in capsys.readouterr().err  # its file name is its token: nothing to say
