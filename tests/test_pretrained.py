"""The model shipped inside the package: intact, small enough, and generating without --model."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ldmkit import load_pipeline
from ldmkit.cli import main
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.pretrained import (
    CHECKSUMS, OPTIONAL_FILES, OTHER_FILES, SHAPES64, SHIPPED, WEIGHT_FILES, pack, recorded_checksums, resolve_model,
    verify,
)
from tests.tiny_models import build_tiny_model

MAX_SHIPPED_BYTES = 25 * 10**6
GROUNDED_STAGES = ["shapes64-grounded-b128", "shapes64-grounded-polish", "shapes64-grounded-polish"]  # its 3 stages


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_match_their_recorded_checksums(name):
    assert set(recorded_checksums(SHIPPED[name])) == set(WEIGHT_FILES + OTHER_FILES + OPTIONAL_FILES)
    assert verify(SHIPPED[name]) == [], f"a file of {name} differs from SHA256SUMS (re-run `make {name}` or restore it)"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_are_installed_with_the_package(name):
    """`pip install .` copies only the package data pyproject.toml lists: a shipped folder left out is missing there."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert f"pretrained/{name}/*" in pyproject["tool"]["setuptools"]["package-data"]["ldmkit"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_fits_the_size_budget(name):
    total = sum(p.stat().st_size for p in SHIPPED[name].iterdir() if p.is_file())
    assert total <= MAX_SHIPPED_BYTES, f"{name} is {total / 1e6:.1f} MB"


def test_model_names_resolve_to_shipped_folders_unless_a_path_of_that_name_exists(tmp_path, monkeypatch):
    assert resolve_model(None) == SHIPPED["shapes64-grounded"]  # the default: the model that binds two objects
    assert resolve_model("shapes64-lcm") == SHIPPED["shapes64-lcm"]
    assert resolve_model("runs/some/model") == "runs/some/model"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes64-lcm").mkdir()  # a user's own folder of that name wins
    assert resolve_model("shapes64-lcm") == "shapes64-lcm"


# each scale chosen on validation captions (experiments/STUDENT_SETTINGS.md, STUDENT_SETTINGS_GROUNDED.md)
@pytest.mark.parametrize("name, guidance", [("shapes64-lcm", 3.5), ("shapes64-grounded-lcm", 2.0)])
def test_the_shipped_students_sample_in_their_own_few_steps_at_their_own_guidance(name, guidance):
    pipe = load_pipeline(name)
    assert pipe.sampling_defaults(None, None) == ("lcm", 4)
    assert pipe.default_guidance == guidance
    steps = []
    images = pipe("a red circle", seed=0, callback=lambda i, n: steps.append(n))
    assert images[0].size == (64, 64) and steps == [4, 4, 4, 4]


@pytest.mark.parametrize("name", ["shapes64-grounded", "shapes64-grounded-lcm"])
def test_the_shipped_grounded_models_give_each_of_two_objects_its_own_attributes(name):
    """What `shapes64-grounded` and its student are shipped for (experiments/GROUNDED_CPU.md: 96% of held-out
    two-object prompts all right, the default model 38%; benchmarks/TIME_TO_QUALITY_GROUNDED.md): colour, size and
    shape words land on their own object, without guidance, each model at its own steps and scale."""
    pipe = load_pipeline(name)
    prompts = [p for p in ("a red circle above a blue square", "a small yellow star left of a large green triangle",
                           "a large purple diamond below a small white cross") for _ in range(4)]
    images = pipe.generate_tensors(prompts, seed=0)
    accuracy = prompt_accuracy(prompts, AttributePredictor()(images)).to_dict()
    assert accuracy["two objects"]["prompts"] == 12
    assert accuracy["two objects"]["all"] >= 9 / 12, accuracy


def test_generate_uses_the_shipped_model_without_model_flag(tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["generate", "a red circle above a blue square", "--out", str(out), "--steps", "3",
                 "--no-progress"]) == 0
    assert Image.open(out).size == (64, 64)
    pipe = load_pipeline()  # the Python API's default is the same model
    assert pipe.model.config.image_size == 64 and pipe.model.unet.training is False
    grounded = load_pipeline("shapes64-grounded")  # the default: the model that binds each object's words to it
    assert all(torch.equal(a, b) for a, b in zip(pipe.model.unet.state_dict().values(),
                                                   grounded.model.unet.state_dict().values()))


def test_pack_halves_large_tensors_and_loads_back_close(tmp_path):
    model_dir = build_tiny_model(tmp_path / "model")
    packed = pack(model_dir, tmp_path / "packed")
    assert verify(packed) == []
    for name in WEIGHT_FILES:
        before, after = load_file(str(model_dir / name)), load_file(str(packed / name))
        assert before.keys() == after.keys()
        for key, value in after.items():
            if value.numel() >= 1024 and value.is_floating_point():
                assert value.dtype == torch.float16, key
            torch.testing.assert_close(value.float(), before[key].float(), atol=1e-3, rtol=1e-3)
    original, shipped = load_pipeline(model_dir), load_pipeline(packed)
    a = original.generate_tensors(["a red circle"], steps=2, guidance=2.0, seed=0)
    b = shipped.generate_tensors(["a red circle"], steps=2, guidance=2.0, seed=0)
    assert (a - b).abs().max() < 0.05


def test_verify_names_a_corrupted_file(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(SHAPES64, copy)
    data = bytearray((copy / "unet.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "unet.safetensors").write_bytes(bytes(data))
    assert verify(copy) == ["unet.safetensors"]
    assert (copy / CHECKSUMS).is_file()


def test_pack_refuses_an_incomplete_folder(tmp_path):
    from ldmkit.storage import CheckpointError

    with pytest.raises(CheckpointError, match="missing"):
        pack(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name, presets", [("shapes64", ["shapes64-varied"]),
                                           ("shapes64-grounded", GROUNDED_STAGES),
                                           ("shapes64-grounded-lcm", GROUNDED_STAGES)])  # a student: its teacher's
def test_shipped_known_words_are_the_training_words_of_their_presets(tmp_path, capsys, name, presets):
    from ldmkit.pretrained.__main__ import main as pretrained

    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED[name], copy)
    (copy / "known_words.json").unlink()
    assert pretrained(["known-words", *[a for p in presets for a in ("--preset", p)], str(copy)]) == 0
    assert (copy / "known_words.json").read_bytes() == (SHIPPED[name] / "known_words.json").read_bytes()
    assert verify(copy) == []


def test_pack_keeps_a_models_known_words(tmp_path):
    from ldmkit.model import LatentDiffusion
    from ldmkit.text.known_words import KnownWords

    model = LatentDiffusion.load(build_tiny_model(tmp_path / "model"))
    model.known_words = KnownWords.from_captions(["a red circle"])
    model.save(tmp_path / "words")
    packed = pack(tmp_path / "words", tmp_path / "packed")
    assert "known_words.json" in recorded_checksums(packed) and verify(packed) == []
    assert load_pipeline(packed).model.known_words.objects == {"red": 1, "circle": 1, "red circle": 1}


def test_commands_that_read_a_model_take_a_shipped_name(tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "shapes64-lcm", "--to", "ldmkit", "--out", str(out)]) == 0
    assert (out / "config.yaml").is_file() and "read shapes64-lcm" in capsys.readouterr().out
