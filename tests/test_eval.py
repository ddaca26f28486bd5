"""Evaluation: metrics on known cases, the shapes judge on held-out renders, the two commands and
their errors, and the results tables the benchmarks write."""

from __future__ import annotations

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
from ldmkit.eval.report import EvalReport, failures_line
from ldmkit.eval.tables import (
    KEPT, describe_training, markdown_table, prompt_accuracy_table, quality_per_step, training_lines, training_stretches,
)
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
    for i in range(3):  # as papers compute it: the images in [0, 1], R = 1
        ref = metrics.structural_similarity(
            (x[i].permute(1, 2, 0).numpy() + 1) / 2, (y[i].permute(1, 2, 0).numpy() + 1) / 2, channel_axis=2,
            data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(float(ref), abs=1e-5)
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)
    # where zero lies matters to SSIM's luminance term: a uniform brightening of mid-grey images is mild
    grey = torch.rand(2, 3, 24, 24, generator=g) * 0.2 - 0.1
    assert ssim(grey, grey + 0.1).min() > 0.99


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
    assert result["settings"]["guidance"] == 4.0 and set(result["settings"]) == {  # the keys results files have had
        "images", "image_size", "sampler", "steps", "guidance", "eta", "seed", "binding", "heldout_seed", "phrasing",
        "generation_seconds"}
    assert result["title"] == "text-to-image: ddim, 2 steps, guidance 4"
    assert any("more than 256" in w for w in result["warnings"])
    # a kept report reads back as the report that wrote it (benchmarks reuse them)
    report = EvalReport.from_dict(result)
    assert report.to_dict() == result and report["FID (shapes-cnn)"].value == result["metrics"]["FID (shapes-cnn)"]["value"]


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
    assert main(["eval", "generate", "--model", str(folders[1]), "--sampler", "heun"]) == 2
    assert "unknown sampler" in capsys.readouterr().err
    assert main(["eval", "autoencoder", "--model", str(tmp_path / "none")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_eval_generate_refuses_what_the_model_cannot_sample_before_the_reference(folders, monkeypatch, capsys):
    """Options that need the model (steps beyond T, η or binding where the sampler or a consistency student takes
    none) are one line right after the model loads, not after the held-out reference is rendered and featurised."""
    import dataclasses

    from ldmkit.eval import generation
    from ldmkit.pipelines.text_to_image import TextToImagePipeline
    from ldmkit.settings import GenerationSettings
    from ldmkit.errors import UsageError

    def no_reference(*args, **kwargs):
        raise AssertionError("the held-out reference was rendered before the options were checked")

    monkeypatch.setattr(generation, "RealReference", no_reference)
    _, ldm = folders
    assert main(["eval", "generate", "--model", str(ldm), "--num-images", "2", "--steps", "1001"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1001 is more than the model's 1000 timesteps; allowed: 1 … 1000" in err
    pipe = TextToImagePipeline.from_folder(ldm)
    with pytest.raises(UsageError, match="eta = 0.5 applies to the ddim sampler only"):
        generation.evaluate_generation(pipe, 2, GenerationSettings(sampler="euler", eta=0.5))
    student = dataclasses.replace(pipe.model.config, diffusion=dataclasses.replace(pipe.model.config.diffusion,
                                                                                    consistency_steps=2))
    monkeypatch.setattr(pipe.model, "config", student)
    with pytest.raises(UsageError, match="binding guidance needs a model sampled with classifier-free guidance"):
        generation.evaluate_generation(pipe, 2, GenerationSettings(binding=0.2))


def test_eval_generate_as_written_is_recorded_and_the_known_words_come_back(folders, tmp_path, monkeypatch):
    from ldmkit.eval import generation
    from ldmkit.pipelines.text_to_image import TextToImagePipeline
    from ldmkit.settings import GenerationSettings

    _, ldm = folders
    out = tmp_path / "gen.json"
    assert main(["eval", "generate", "--model", str(ldm), "--num-images", "2", "--steps", "1", "--as-written",
                 "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["settings"]["as_written"] is True  # not read as "nothing needed rewriting"
    pipe = TextToImagePipeline.from_folder(ldm)
    known, seen = object(), []
    pipe.model.known_words = known
    generate = generation.generate_for_prompts
    monkeypatch.setattr(generation, "generate_for_prompts",
                        lambda pipe, *a, **k: seen.append(pipe.model.known_words) or generate(pipe, *a, **k))
    report = generation.evaluate_generation(pipe, 2, GenerationSettings(num_inference_steps=1), as_written=True)
    assert report.settings["as_written"] is True and seen == [None] and pipe.model.known_words is known


def test_an_image_size_the_autoencoder_cannot_take_is_a_usage_error_before_any_work(folders, monkeypatch):
    """As a Stable Diffusion file or diffusers folder reaches it: the size is checked once the model is loaded
    (the CLI reads an ldmkit folder's factor from its config before that), before the held-out images are made."""
    from ldmkit.autoencoder.folder import load_autoencoder
    from ldmkit.errors import UsageError
    from ldmkit.eval import autoencoder

    monkeypatch.setattr(autoencoder, "heldout_shapes", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(UsageError, match="^--image-size 30 is not a multiple of the autoencoder's factor f=4$"):
        autoencoder.evaluate_autoencoder(load_autoencoder(folders[0]), num_images=2, image_size=30)


# --------------------------------------------------------------------------------------------------
# results tables (ldmkit.eval.tables), as the benchmarks write them


def test_markdown_table_has_a_header_rule_and_a_line_per_row():
    assert markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"


def test_prompt_accuracy_table_has_a_row_per_group():
    prompts = ["a red circle above a blue square", "a red circle", "a small blue square on the left"]
    shown = [Scene((ShapeObject("circle", "blue"), ShapeObject("square", "red")), "above"), parse_prompt(prompts[1]),
             parse_prompt(prompts[2])]
    lines = prompt_accuracy_table(prompt_accuracy(prompts, shown).to_dict()).splitlines()
    assert lines[0] == "| prompts | count | all right | objects | shape | color | size | position | relation |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| one object | 2 | **100.0%** | 100.0% | 100.0% | 100.0% | 100.0% | 100.0% | – |"
    assert lines[3] == "| two objects | 1 | **0.0%** | 100.0% | 100.0% | 0.0% | – | – | 100.0% |"
    assert lines[4].startswith("| all | 3 | **66.7%** |") and len(lines) == 5


def test_quality_per_step_compares_dpmpp_20_with_ddim_250():
    def row(sampler, steps, fid, guidance=4.0):
        metrics = {"FID (shapes-cnn)": {"value": fid}, "KID (shapes-cnn)": {"value": fid / 100},
                   "FID floor, real vs real (shapes-cnn)": {"value": 50.0}}
        return {"sampler": sampler, "steps": steps, "guidance": guidance, "settings": {"images": 256}, "metrics": metrics}

    line = quality_per_step([row("ddim", 250, 200.0), row("dpmpp-2m", 20, 210.0), row("dpmpp-2m", 20, 90.0, 1.0)])[-1]
    assert "FID 210.0 against ddim at 250 steps' 200.0 (+5.0%)" in line and "12.5× fewer" in line
    assert "At 256 images" in line and "floor 50.0" in line
    assert quality_per_step([row("ddim", 50, 200.0), row("dpmpp-2m", 20, 210.0)]) == []


def _log(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step,time,loss\n" + "".join(f"{step},{t},0.1\n" for step, t in rows))


def test_training_time_is_read_per_stretch_of_a_resumed_run(tmp_path):
    # steps 0-100 at 2 s/step, then the run resumed (its clock restarts) and ran steps 100-200 at 1 s/step
    _log(tmp_path / "log.csv", [(50, 100.0), (100, 200.0), (150, 50.0), (200, 100.0)])
    stretches = training_stretches(tmp_path / "log.csv")
    assert stretches == [{"from": 0, "to": 100, "wall": 200.0, "rate": 2.0},
                         {"from": 100, "to": 200, "wall": 100.0, "rate": 1.0}]
    assert describe_training("LDM", stretches) == (
        "- training, LDM: 200 steps in 5 min of wall time (steps 0–100 at 2.00 s/step; steps 100–200 at "
        "1.00 s/step); 3 min at the fastest stretch's rate")


def test_training_lines_keep_a_stage_whose_log_is_gone(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "SHAPES64.md"
    assert training_lines(runs, results) == [
        f"- training, autoencoder: not timed here (no {runs / 'autoencoder' / 'log.csv'})",
        f"- training, LDM: not timed here (no {runs / 'model' / 'log.csv'})"]
    results.write_text("- training, autoencoder: 10 steps in 1 min of wall time\n- training, LDM: not timed here\n")
    kept = "- training, autoencoder: 10 steps in 1 min of wall time" + KEPT
    _log(runs / "model" / "log.csv", [(60, 60.0)])
    assert training_lines(runs, results) == [kept, describe_training("LDM", training_stretches(runs / "model" / "log.csv"))]
    results.write_text(kept + "\n")  # kept again, marked once
    assert training_lines(runs, results)[0] == kept


def test_training_lines_time_each_stage_of_a_run_trained_in_stages(tmp_path):
    runs = tmp_path / "runs"
    _log(runs / "grounded" / "log.csv", [(100, 200.0)])
    _log(runs / "model" / "log.csv", [(10, 30.0)])
    stages = (("autoencoder", "autoencoder"), ("LDM, grounding", "grounded"), ("LDM, polish", "polish"),
              ("LDM, polish 2", "model"))
    lines = training_lines(runs, tmp_path / "none.md", stages)
    assert lines == [f"- training, autoencoder: not timed here (no {runs / 'autoencoder' / 'log.csv'})",
                     describe_training("LDM, grounding", training_stretches(runs / "grounded" / "log.csv")),
                     f"- training, LDM, polish: not timed here (no {runs / 'polish' / 'log.csv'})",
                     describe_training("LDM, polish 2", training_stretches(runs / "model" / "log.csv"))]
    (tmp_path / "earlier.md").write_text(lines[1] + "\n")  # a stage's line is kept under its own name
    (runs / "grounded" / "log.csv").unlink()
    assert training_lines(runs, tmp_path / "earlier.md", stages)[1] == lines[1] + KEPT
