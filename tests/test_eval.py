"""Evaluation: metrics on known cases, the shapes judge on held-out renders, the two commands and
their errors."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from ldmkit.cli import main
from ldmkit.eval.attributes import AttributePredictor, relation_between
from ldmkit.eval.features import InceptionV3Features, ShapesFeatures, extract
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.inception import FIDInceptionV3
from ldmkit.eval.metrics import (
    feature_statistics, fid, fid_sample_warning, frechet_distance, inception_score, kid, mmd2_unbiased, psnr, ssim,
)
from ldmkit.eval.prompt_accuracy import prompt_accuracy, score_prompt, two_object_failure
from ldmkit.eval.report import failures_line
from ldmkit.data import Scene, ShapeObject, parse_prompt
from ldmkit.storage import CheckpointError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run many small ops; on a shared CPU a second torch thread makes each of them
    wait at a barrier (measured: 8× slower under load). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) * scale + shift


# --------------------------------------------------------------------------------------------------
# metrics


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    x = gaussian(2000, 16, 0)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    values = [fid(x, x + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > values[1] > 0
    # A mean shift s in all d dimensions adds exactly d·s² (the covariances are unchanged).
    assert values[2] == pytest.approx(16 * 1.0**2, rel=1e-9)


def test_frechet_distance_matches_the_sqrtm_formula():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mu1, s1 = feature_statistics(gaussian(300, 12, 1))
    mu2, s2 = feature_statistics(gaussian(300, 12, 2, shift=0.3, scale=1.5))
    covmean = scipy_linalg.sqrtm(s1 @ s2).real  # pytorch-fid's formula
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    x, y = gaussian(600, 32, 3), gaussian(600, 32, 4)
    same = kid(x, y, num_subsets=20, subset_size=300)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert kid(x, gaussian(600, 32, 5, shift=1.0), num_subsets=20, subset_size=300).mean > 0.1
    # Unbiased: can go below zero, which a biased (diagonal-including) estimate never does.
    values = [mmd2_unbiased(gaussian(50, 8, 10 + k), gaussian(50, 8, 60 + k))
              for k in range(20)]
    assert min(values) < 0 < max(values)


def test_inception_score_limits():
    k = 10
    sure = torch.full((100, k), -30.0)
    sure[torch.arange(100), torch.arange(100) % k] = 30.0  # confident and balanced
    assert inception_score(sure).mean == pytest.approx(k, rel=1e-6)
    assert inception_score(torch.zeros(100, k)).mean == pytest.approx(1.0)


def test_psnr_matches_its_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 1.6 - 0.8
    sigma = 0.05
    signs = torch.randint(0, 2, x.shape, generator=g) * 2 - 1
    y = x + sigma * signs  # |x − y| = σ everywhere: MSE = σ² exactly
    expected = 10 * math.log10(2.0**2 / sigma**2)  # R = 2 for images in [-1, 1]
    assert torch.allclose(psnr(x, y), torch.full((4,), expected, dtype=torch.float64), atol=1e-6)
    noisy = x + sigma * torch.randn(x.shape, generator=g)  # Gaussian noise: E[MSE] = σ²
    assert psnr(x, noisy).mean().item() == pytest.approx(expected, abs=0.1)


def test_ssim_agrees_with_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    x = heldout_shapes(3, 48).images
    y = (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ours = ssim(x, y)
    for i in range(3):
        ref = metrics.structural_similarity(
            x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy(), channel_axis=2, data_range=2.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(float(ref), abs=1e-5)
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)


def test_fid_warning_says_how_many_images_are_needed():
    message = fid_sample_warning(100, 256, 1024, "shapes-cnn")
    assert "FID (shapes-cnn)" in message and "more than 256" in message and "1024" in message
    assert "1024" in fid_sample_warning(500, 256, 1024, "shapes-cnn")
    assert fid_sample_warning(2000, 256, 1024, "shapes-cnn") is None


# --------------------------------------------------------------------------------------------------
# the shapes judge and prompt accuracy


@pytest.fixture(scope="module")
def shapes_features():
    return ShapesFeatures()


def test_judge_reads_held_out_renders_right(shapes_features):
    """The ≥ 99 % all-right bar, on 500 held-out renders at 64×64 (fixed seed)."""
    heldout = heldout_shapes(500, 64)
    accuracy = prompt_accuracy(heldout.captions, AttributePredictor(shapes_features.module)(heldout.images))
    table = accuracy.to_dict()
    assert table["unparsed prompts"] == 0
    assert table["all"]["prompts"] == 500
    assert table["one object"]["prompts"] > 150 and table["two objects"]["prompts"] > 150
    assert table["all"]["all"] >= 0.99, table


def test_prompt_scoring_marks_each_stated_attribute():
    prompt = parse_prompt("a small red circle above a blue star")
    truth = Scene((ShapeObject("circle", "red", "small", "top"), ShapeObject("star", "blue", "large", "bottom")), "above")
    full = score_prompt(prompt, truth)
    assert full.all_right and all(all(v) for v in full.marks.values())
    assert "position" not in full.marks  # a two-object prompt states no positions
    # Told the other way round, the same image still matches.
    assert score_prompt(parse_prompt("a blue star below a red circle"), truth).all_right
    wrong_shape = Scene((ShapeObject("square", "red", "small", "top"), truth.objects[1]), "above")
    marks = score_prompt(prompt, wrong_shape).marks
    assert marks["shape"] == [False, True] and marks["color"] == [True, True] and marks["relation"] == [True]
    lost = score_prompt(prompt, Scene((truth.objects[0],)))
    assert not lost.all_right and lost.marks["objects"] == [False] and lost.marks["relation"] == [False]
    nothing = score_prompt(parse_prompt("a green cross"), None)
    assert not nothing.all_right and nothing.marks["shape"] == [False]
    assert relation_between((0.2, 0.5), (0.8, 0.6)) == "left of"
    assert relation_between((0.5, 0.8), (0.45, 0.2)) == "below"


def test_two_object_failures_say_why_the_image_is_wrong():
    prompt = parse_prompt("a red circle above a blue square")
    red_circle, blue_square = ShapeObject("circle", "red", "large", "top"), ShapeObject("square", "blue", "small", "bottom")
    cases = {
        None: Scene((red_circle, blue_square), "above"),
        "number of objects": Scene((red_circle,)),
        "relation": Scene((blue_square, red_circle), "left of"),
        "attributes swapped": Scene((ShapeObject("circle", "blue", "large", "top"),
                                     ShapeObject("square", "red", "small", "bottom")), "above"),
        "attribute missing": Scene((red_circle, ShapeObject("square", "green", "small", "bottom")), "above"),
    }
    for why, image in cases.items():
        assert two_object_failure(prompt, image) == why, why
    assert two_object_failure(prompt, None) == "number of objects"
    # Two squares asked for, a square and a circle shown: one square is missing, not swapped.
    squares = parse_prompt("a red square above a blue square")
    assert two_object_failure(squares, Scene((ShapeObject("square", "red"), ShapeObject("circle", "blue")), "above")) \
        == "attribute missing"
    assert two_object_failure(parse_prompt("a red circle"), None) is None  # one object: not this breakdown
    counts = prompt_accuracy(["a red circle above a blue square"] * 2 + ["a red circle"],
                             [cases["relation"], cases["relation"], None]).to_dict()["two-object failures"]
    assert counts == {"number of objects": 0, "relation": 2, "attributes swapped": 0, "attribute missing": 0}
    assert failures_line({"two-object failures": counts}) == (
        "two-object prompts not all right (2): number of objects 0 (0%), relation 2 (100%), "
        "attributes swapped 0 (0%), attribute missing 0 (0%)")
    assert failures_line({"two-object failures": dict.fromkeys(counts, 0)}) == ""


def test_shapes_features_shapes_and_sizes(shapes_features):
    images = heldout_shapes(4, 32).images  # a 32×32 model's size: resized to 64 inside
    features, logits = extract(shapes_features, images)
    assert features.shape == (4, 256) and logits.shape == (4, 48)
    assert torch.allclose(logits.exp().sum(1), torch.ones(4), atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Inception-v3 from a local file


def test_inception_loads_a_file_in_the_pytorch_fid_layout(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FIDInceptionV3().state_dict().items() if "num_batches_tracked" not in k}
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.ones(s) if k.endswith("running_var") else 0.05 * torch.randn(s, generator=g))
             for k, s in shapes.items()}
    assert "Mixed_7c.branch_pool.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    path = tmp_path / "pt_inception-random.pth"
    torch.save(state, path)
    net = InceptionV3Features(path)
    assert torch.equal(net.module.fc.weight, state["fc.weight"])
    net.input_size = 75  # the smallest input Inception-v3 takes: keeps this test fast
    features, logits = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)

    del state["fc.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing"):
        InceptionV3Features(tmp_path / "broken.pth")


# --------------------------------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An untrained autoencoder folder and an untrained text-to-image model folder (tiny preset) whose
    frozen autoencoder is that one."""
    from ldmkit.autoencoder import build_autoencoder
    from ldmkit.autoencoder.folder import load_autoencoder, save_autoencoder
    from ldmkit.config import ModelConfig, load_preset
    from ldmkit.model import LatentDiffusion
    from ldmkit.text import PromptTokenizer

    root = tmp_path_factory.mktemp("eval")
    preset = load_preset("tiny")
    torch.manual_seed(0)
    save_autoencoder(build_autoencoder(preset.autoencoder), root / "ae")
    config = ModelConfig(autoencoder=preset.autoencoder, text=preset.text, unet=preset.unet,
                         diffusion=preset.diffusion, image_size=preset.data.image_size)
    tokenizer = PromptTokenizer.train(heldout_shapes(200, 8).captions, preset.text.vocab_size, preset.text.max_length)
    LatentDiffusion(config, tokenizer, load_autoencoder(root / "ae")).save(root / "ldm")
    return root / "ae", root / "ldm"


def test_eval_autoencoder_writes_table_and_json(folders, tmp_path, capsys):
    ae, _ = folders
    out = tmp_path / "ae.json"
    assert main(["eval", "autoencoder", "--model", str(ae), "--num-images", "40", "--image-size", "32",
                 "--json", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "R-FID (shapes-cnn)" in captured.out and "PSNR" in captured.out
    assert "warning: FID (shapes-cnn) from 40 images" in captured.err and "more than 256" in captured.err
    result = json.loads(out.read_text())
    for label in ("PSNR (dB)", "SSIM", "R-FID (shapes-cnn)", "R-IS (shapes-cnn)"):
        assert math.isfinite(result["metrics"][label]["value"]), label
    assert result["metrics"]["R-FID (shapes-cnn)"]["network"] == "shapes-cnn"
    assert result["metrics"]["SSIM"]["std"] is not None
    assert result["prompt_accuracy"]["all"]["prompts"] == 40  # the captions, read off the reconstructions


def test_eval_generate_writes_table_and_json(folders, tmp_path, capsys):
    _, ldm = folders
    out = tmp_path / "gen.json"
    assert main(["eval", "generate", "--model", str(ldm), "--num-images", "6", "--steps", "2", "--batch-size", "3",
                 "--json", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "FID (shapes-cnn)" in captured.out and "two objects" in captured.out
    result = json.loads(out.read_text())
    assert {"FID (shapes-cnn)", "KID (shapes-cnn)", "IS (shapes-cnn)"} <= set(result["metrics"])
    assert result["prompt_accuracy"]["all"]["prompts"] == 6
    assert result["settings"]["sampler"] == "ddim" and result["settings"]["steps"] == 2
    assert any("more than 256" in w for w in result["warnings"])


def test_eval_autoencoder_of_a_text_to_image_model_measures_its_frozen_autoencoder(folders, tmp_path):
    reports = []
    for folder in folders:
        out = tmp_path / f"{folder.name}.json"
        assert main(["eval", "autoencoder", "--model", str(folder), "--num-images", "16", "--image-size", "32",
                     "--json", str(out), "--no-progress"]) == 0
        reports.append(json.loads(out.read_text())["metrics"])
    assert reports[0]["PSNR (dB)"] == reports[1]["PSNR (dB)"]
    assert reports[0]["R-FID (shapes-cnn)"] == reports[1]["R-FID (shapes-cnn)"]


def test_autoencoder_folder_given_to_eval_generate_is_one_line_error(folders, capsys):
    assert main(["eval", "generate", "--model", str(folders[0]), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a text-to-image folder" in err


def test_missing_inception_weights_is_one_line_error(folders, tmp_path, capsys):
    assert main(["eval", "autoencoder", "--model", str(folders[0]), "--inception-weights",
                 str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Inception weights file not found" in err


def test_unknown_sampler_and_missing_folder_are_one_line_errors(folders, tmp_path, capsys):
    assert main(["eval", "generate", "--model", str(folders[1]), "--sampler", "plms"]) == 2
    assert "unknown sampler" in capsys.readouterr().err
    assert main(["eval", "autoencoder", "--model", str(tmp_path / "none")]) == 2
    assert "model folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# the benchmark scripts, at toy sizes


def _script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_generation_benchmark_writes_table_and_grid(folders, tmp_path):
    _, ldm = folders
    results, grid = tmp_path / "GEN.md", tmp_path / "grid.png"
    _script("generation").main(["--model", str(ldm), "--out", str(tmp_path / "run"), "--num-images", "4",
                                "--samplers", "ddim:2", "euler:1", "--sweep-sampler", "ddim:1", "--sweep-guidance", "1",
                                "--results", str(results), "--grid", str(grid), "--no-progress"])
    table = results.read_text()
    assert "| ddim | 2 | 4 | 4 |" in table and "| euler | 1 | 4 | 4 |" in table and "| ddim | 1 | 1 | 4 |" in table
    assert "python benchmarks/generation.py --model" in table
    assert grid.is_file() and len(json.loads((tmp_path / "run" / "results.json").read_text())) == 3


def test_unseen_words_benchmark_writes_both_models_tables_and_grids(folders, tmp_path):
    _, ldm = folders
    results = tmp_path / "out" / "UNSEEN.md"
    _script("unseen_words").main([str(ldm), str(ldm), "--names", "a", "b", "--num-images", "1", "--steps", "1",
                                  "--results", str(results), "--grid-dir", str(tmp_path / "grids")])
    text = results.read_text()
    for name in ("a", "b"):
        assert f"| {name} (transformer) | unseen words |" in text and f"| {name} | a crimson disc |" in text
        assert f"![{name}, seen words](../grids/{name}_seen_words.png)" in text
        assert (tmp_path / "grids" / f"{name}_unseen_words.png").is_file()
    assert f"{ldm} {ldm} --names a b --num-images 1" in text  # the command that made it


def test_two_objects_benchmark_measures_each_row_once(folders, tmp_path, monkeypatch):
    _, ldm = folders
    results = tmp_path / "TWO.md"
    argv = ["--row", f"a={ldm}@4", "--row", f"b={ldm}@1.5@0.3", "--row", f"c={ldm}@1.5@0.3@1", "--num-images", "8",
            "--out", str(tmp_path / "runs"),
            "--results", str(results), "--note", "Untrained."]
    two_objects = _script("two_objects")
    two_objects.main(argv)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == \
        ["a-g4.json", "b-g1.5-b0.3-c2.json", "c-g1.5-b0.3-c1.json"]
    text = results.read_text()
    assert f"| a (`{ldm}`) | 4 | – | 1 | " in text and f"| b (`{ldm}`) | 1.5 | 0.3 | best of 2 | " in text
    assert f"| c (`{ldm}`) | 1.5 | 0.3 | 1 | " in text and "\nUntrained.\n" in text
    assert "--row a=" in text  # the command that made it
    # Run again, it re-renders from the saved reports and generates nothing.
    monkeypatch.setattr(two_objects, "evaluate_generation", lambda *a, **k: pytest.fail("measured again"))
    results.unlink()
    two_objects.main(argv)
    assert results.read_text() == text
    with pytest.raises(SystemExit, match="another measurement"):
        two_objects.main([*argv[:2], "--num-images", "16", "--out", str(tmp_path / "runs")])
    for bad in ("runs/ldm", "a=runs/ldm@4@x", "a=runs/ldm@4@-1", "a=runs/ldm@4@1@0", "a=runs/ldm@4@1@1.5",
                "a=runs/ldm@4@1@2@3"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"NAME=MODEL_FOLDER@GUIDANCE\[@BINDING\[@CANDIDATES\]\]"):
            two_objects.parse_row(bad)


def test_generation_benchmark_compares_dpmpp_20_with_ddim_250():
    def row(sampler, steps, fid, guidance=4.0):
        metrics = {"FID (shapes-cnn)": {"value": fid}, "KID (shapes-cnn)": {"value": fid / 100},
                   "FID floor, real vs real (shapes-cnn)": {"value": 50.0}}
        return {"sampler": sampler, "steps": steps, "guidance": guidance, "settings": {"images": 256}, "metrics": metrics}

    quality_per_step = _script("generation").quality_per_step
    line = quality_per_step([row("ddim", 250, 200.0), row("dpmpp-2m", 20, 210.0), row("dpmpp-2m", 20, 90.0, 1.0)])[-1]
    assert "FID 210.0 against ddim at 250 steps' 200.0 (+5.0%)" in line and "12.5× fewer" in line
    assert quality_per_step([row("ddim", 50, 200.0), row("dpmpp-2m", 20, 210.0)]) == []


def test_autoencoder_zoo_benchmark_writes_table(tmp_path):
    table = tmp_path / "ZOO.md"
    with pytest.warns(UserWarning, match="from 8 images"):
        _script("autoencoder_zoo").main(["--steps", "1", "--only", "vq-f8-c4-z64", "--num-images", "8", "--width", "8",
                                         "--out", str(tmp_path / "zoo"), "--table", str(table), "--no-progress"])
    text = table.read_text()
    assert "| VQ | 8 | 64 | 4 |" in text and "python benchmarks/autoencoder_zoo.py --steps 1" in text


def test_shapes64_results_write_the_file_and_the_readme_block(folders, tmp_path):
    _, ldm = folders
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- shapes64-results:start -->\nold\n<!-- shapes64-results:end -->\nrest\n")
    results, grid = tmp_path / "SHAPES64.md", tmp_path / "grid.png"
    _script("shapes64_results").main(["--model", str(ldm), "--runs", str(tmp_path / "none"), "--num-images", "6",
                                      "--steps", "2", "--binding", "0.3", "--results", str(results),
                                      "--grid", str(grid), "--readme", str(readme)])
    text = results.read_text()
    assert "| two objects |" in text and "with binding guidance λ = 0.3 and the best of 2 starting noises" in text
    assert "training, LDM: not timed here" in text and grid.is_file()
    shapes64_results = _script("shapes64_results")
    results.write_text("- training, autoencoder: 10 steps in 1 min of wall time\n- training, LDM: not timed here\n")
    kept = "- training, autoencoder: 10 steps in 1 min of wall time" + shapes64_results.KEPT
    assert shapes64_results.training_lines(tmp_path / "none", results) == [
        kept, f"- training, LDM: not timed here (no {tmp_path / 'none' / 'model' / 'log.csv'})"]
    results.write_text(kept + "\n")  # kept again, marked once
    assert shapes64_results.training_lines(tmp_path / "none", results)[0] == kept
    block = readme.read_text()
    assert block.startswith("intro\n") and block.endswith("rest\n") and "old" not in block
    assert "](docs/binding.md)" in block and "](benchmarks/grid.png)" in block
