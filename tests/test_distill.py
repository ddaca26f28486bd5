"""`ldmkit distill` (latent consistency distillation) and its student: the guidance input starts at
zero, the consistency function's boundary, the lcm sampler's one pass per step, resuming exactly,
and the student through every entry point (Python, generate, eval, serve) with its errors."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import yaml

from ldmkit.cli import main
from ldmkit.config import DiffusionConfig, UNetConfig, load_preset, to_dict
from ldmkit.diffusion import make_schedule
from ldmkit.diffusion.consistency import boundary_coefficients, consistency_output
from ldmkit.errors import UsageError
from ldmkit.storage import CheckpointError
from ldmkit.nn.unet import UNet
from ldmkit.pipelines.prompt_to_prompt import PromptToPromptPipeline
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.train.checkpoint import load_state
from ldmkit.train.distill import distill
from tests.tiny_models import build_tiny_model

STEPS = 4


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "model")


def tiny_distill_preset():
    preset = load_preset("tiny")
    return dataclasses.replace(preset, distill=dataclasses.replace(
        preset.distill, steps=STEPS, batch_size=4, checkpoint_every=2, sample_every=1000, log_every=1,
        tensorboard=False, warmup_steps=0, lr=1e-3))


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "lcm"
    distill(tiny_distill_preset(), teacher, out, student_steps=3, progress=False)
    return out


def test_student_unet_starts_as_the_teacher_for_every_guidance_scale():
    cfg = UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                     attention_levels=(1,), head_dim=16, context_dim=24)
    torch.manual_seed(0)
    teacher = UNet(cfg).eval()
    student = UNet(dataclasses.replace(cfg, guidance_embedding=True)).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert missing == ["guidance_embed.weight"] and not unexpected
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 24, generator=g)
    t = torch.tensor([900, 30])
    with torch.no_grad():
        expected = teacher(z, t, c)
        for s in (1.0, 4.0, torch.tensor([2.0, 7.5])):
            assert torch.equal(student(z, t, c, guidance=s), expected)
        with pytest.raises(ValueError, match="pass guidance"):
            student(z, t, c)
        with pytest.raises(ValueError, match="no guidance input"):
            teacher(z, t, c, guidance=4.0)


def test_consistency_function_is_the_identity_at_t_0_and_the_x0_estimate_later():
    schedule = make_schedule(DiffusionConfig())
    c_skip, c_out = boundary_coefficients(torch.tensor([0, 1, 500]))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[1] < 3e-3 and c_skip[2] < 1e-7
    z, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    assert torch.equal(consistency_output(z, eps, torch.tensor([0, 0, 0]), schedule), z)
    t = torch.tensor([500, 500, 500])
    a = schedule.alphas_cumprod[500]
    z0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
    torch.testing.assert_close(consistency_output(z, eps, t, schedule), z0, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_distillation_resumes_exactly_like_an_uninterrupted_run(teacher, student, tmp_path):
    preset = tiny_distill_preset()
    distill(preset, teacher, tmp_path / "two", steps=2, student_steps=3, progress=False)
    distill(preset, teacher, tmp_path / "two", steps=STEPS, student_steps=3, resume=True, progress=False)
    a, b = load_state(student, "distill"), load_state(tmp_path / "two", "distill")
    assert a["step"] == b["step"] == STEPS
    for key in ("model", "target"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    other = shutil.copytree(teacher, tmp_path / "other-teacher")
    with pytest.raises(CheckpointError, match="distilled from --teacher"):
        distill(preset, other, tmp_path / "two", steps=STEPS + 1, resume=True, progress=False)
    # the log has one row per step, once each, across the interruption
    rows = (tmp_path / "two" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, STEPS + 1))


def test_an_ema_student_is_saved_as_the_average_and_resumes_exactly(teacher, student, tmp_path, capsys):
    """distill.ema_decay > 0: the folder's UNet is the slow EMA of θ (neither θ nor the target θ⁻), and an
    interrupted run ends with the same EMA as an uninterrupted one."""
    from safetensors.torch import load_file

    preset = tiny_distill_preset()
    preset = dataclasses.replace(preset, distill=dataclasses.replace(preset.distill, ema_decay=0.9))
    distill(preset, teacher, tmp_path / "one", student_steps=3, progress=False)
    distill(preset, teacher, tmp_path / "two", steps=2, student_steps=3, progress=False)
    distill(preset, teacher, tmp_path / "two", steps=STEPS, student_steps=3, resume=True, progress=False)
    a, b = load_state(tmp_path / "one", "distill"), load_state(tmp_path / "two", "distill")
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == STEPS
    assert all(torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]) for k in a["ema"]["shadow"])
    saved = load_file(tmp_path / "one" / "unet.safetensors")
    shadow, target = a["ema"]["shadow"], a["target"]
    assert all(torch.equal(saved[k].float(), shadow[k]) for k in saved)
    assert any(not torch.equal(saved[k], target[k]) for k in saved)
    # the same run without the EMA saves its target, and a checkpoint without an EMA does not resume with one
    assert "ema" not in load_state(student, "distill")
    with pytest.raises(CheckpointError, match=r"distill.ema_decay 0.0 → 0.9"):
        distill(preset, teacher, shutil.copytree(student, tmp_path / "plain"), steps=STEPS + 1, resume=True,
                progress=False)
    with pytest.raises(SystemExit) as exit_:
        main(["distill", "--preset", "tiny", "--teacher", str(teacher), "--ema-decay", "1.5",
              "--out", str(tmp_path / "x"), "--no-progress"])
    assert exit_.value.code == 2
    assert "--ema-decay" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_student_folder_holds_the_target_weights_and_its_own_config(student):
    config = yaml.safe_load((student / "config.yaml").read_text())
    assert config["unet"]["guidance_embedding"] is True and config["diffusion"]["consistency_steps"] == 3
    target = load_state(student, "distill")["target"]
    from safetensors.torch import load_file

    saved = load_file(student / "unet.safetensors")
    assert set(saved) == set(target) and all(torch.equal(saved[k], target[k]) for k in target)


def test_python_api_samples_the_student_with_lcm_one_pass_per_step(student):
    pipe = load_pipeline(student)
    assert pipe.sampling_defaults(None, None) == ("lcm", 3)
    calls = []
    pipe.model.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    steps = []
    images = pipe("a red circle", guidance=4.0, seed=0, num_images=2, callback=lambda i, n: steps.append((i, n)))
    assert len(images) == 2 and images[0].size == (32, 32)
    assert steps == [(0, 3), (1, 3), (2, 3)]
    assert calls == [2, 2, 2]  # one conditional pass of the batch per step: no unconditional half
    again = pipe("a red circle", guidance=4.0, seed=0, num_images=2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    other = pipe("a red circle", guidance=1.5, seed=0, num_images=2, steps=2)
    assert len(other) == 2


def test_student_refuses_what_it_cannot_do_and_teachers_refuse_lcm(student, teacher):
    pipe = load_pipeline(student)
    for kwargs, words in (({"sampler": "ddim"}, "lcm sampler only"), ({"cache_interval": 2}, "cache_interval"),
                          ({"negative_prompt": "blue"}, "negative prompt"), ({"negative_prompt": ["", "blue"]},
                                                                              "negative prompt"),
                          ({"binding": 0.3}, "binding")):
        with pytest.raises(UsageError, match=words):
            pipe(["a red circle above a blue square", "a blue circle"], **kwargs)
    with pytest.raises(UsageError, match="Prompt-to-Prompt samples with DDIM .* edit with its teacher"):
        PromptToPromptPipeline(pipe.model)("a red circle", "a blue circle")
    with pytest.raises(UsageError, match="consistency student made by `ldmkit distill`"):
        load_pipeline(teacher)("a red circle", sampler="lcm", steps=2)


def test_cli_generate_and_eval_run_the_student_by_default(student, tmp_path, capsys):
    assert main(["generate", "a red circle", "--model", str(student), "--out", str(tmp_path / "a.png"),
                 "--no-progress"]) == 0
    assert (tmp_path / "a.png").is_file()
    assert main(["generate", "a red circle", "--model", str(student), "--out", str(tmp_path / "b.png"),
                 "--sampler", "ddim", "--no-progress"]) == 2
    assert "lcm sampler only" in capsys.readouterr().err
    # the image commands and the attention figure take the student's own sampler and steps when none is given
    assert main(["img2img", str(tmp_path / "a.png"), "a blue circle", "--model", str(student), "--out",
                 str(tmp_path / "c.png"), "--no-progress"]) == 0
    assert main(["attention", "a red circle", "--model", str(student), "--out", str(tmp_path / "d.png"),
                 "--no-progress"]) == 0
    assert (tmp_path / "c.png").is_file() and (tmp_path / "d.png").is_file()
    assert main(["edit", "a red circle", "a blue circle", "--model", str(student), "--out",
                 str(tmp_path / "e.png"), "--no-progress"]) == 2
    assert "edit with its teacher" in capsys.readouterr().err and not (tmp_path / "e.png").exists()
    report = tmp_path / "eval.json"
    assert main(["eval", "generate", "--model", str(student), "--num-images", "4", "--batch-size", "4",
                 "--json", str(report), "--no-progress"]) == 0
    import json

    settings = json.loads(report.read_text())["settings"]
    assert settings["sampler"] == "lcm" and settings["steps"] == 3


def test_distilling_on_from_a_student_starts_from_its_weights(teacher, student, tmp_path, capsys):
    preset = tiny_distill_preset()
    out = distill(preset, teacher, tmp_path / "on", steps=1, progress=False, init=student)
    before, after = load_pipeline(student).model, load_pipeline(out).model
    assert after.config.diffusion.consistency_steps == 3  # the student's own default, not the preset's
    origin = load_pipeline(teacher).model.unet.state_dict()

    def distance(a, b):
        return sum((a[k].float() - b[k].float()).abs().sum().item() for k in origin)

    now, was = after.unet.state_dict(), before.unet.state_dict()
    assert 0 < distance(now, was) < distance(now, origin) / 2  # one step on from the student, not the teacher
    # --seed: another data order and other noise than the student's own run, recorded in the checkpoint
    assert main(["distill", "--preset", "tiny", "--teacher", str(teacher), "--init", str(student), "--seed", "3",
                 "--steps", "1", "--out", str(tmp_path / "seeded"), "--no-progress"]) == 0
    assert load_state(tmp_path / "seeded", "distill")["preset"]["distill"]["seed"] == 3
    assert main(["distill", "--preset", "tiny", "--teacher", str(teacher), "--init", str(teacher),
                 "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "is not a consistency student" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_distill_cli_refuses_a_student_as_teacher_and_bad_settings(student, tmp_path, capsys):
    assert main(["distill", "--preset", "tiny", "--teacher", str(student), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert "already a consistency student" in capsys.readouterr().err
    config = to_dict(tiny_distill_preset())
    config["distill"]["guidance_max"] = 0.5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["distill", "--config", str(path), "--teacher", str(student), "--out", str(tmp_path / "y"),
                 "--no-progress"]) == 2
    assert "distill.guidance_max" in capsys.readouterr().err


def test_a_decaying_learning_rate_reaches_zero_at_the_last_step_and_is_part_of_the_run(teacher, tmp_path, capsys):
    """--lr-scheduler cosine: η = η₀ · ½(1 + cos π step/steps) after the (here empty) warm-up, as log.csv records;
    a run resumed under another schedule is refused, and a schedule that does not exist exits 2."""
    config = to_dict(tiny_distill_preset())
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "cosine"
    assert main(["distill", "--config", str(path), "--teacher", str(teacher), "--out", str(out), "--lr", "2e-3",
                 "--lr-scheduler", "cosine", "--no-progress"]) == 0
    rows = [r.split(",") for r in (out / "log.csv").read_text().splitlines()[1:]]
    expected = [2e-3 * 0.5 * (1 + np.cos(np.pi * step / STEPS)) for step in range(STEPS)]
    np.testing.assert_allclose([float(r[3]) for r in rows], expected, rtol=1e-6)
    capsys.readouterr()
    assert main(["distill", "--config", str(path), "--teacher", str(teacher), "--out", str(out), "--lr", "2e-3",
                 "--steps", str(STEPS + 2), "--resume", "--no-progress"]) == 2
    assert "lr_scheduler" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["distill", "--config", str(path), "--teacher", str(teacher), "--out", str(tmp_path / "x"),
              "--lr-scheduler", "step", "--no-progress"])
    assert exit_.value.code == 2
    assert "--lr-scheduler" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_serve_offers_the_student_its_own_sampler_and_steps(student):
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from ldmkit.serve import create_app

    with TestClient(create_app(load_pipeline(student), model_name="student")) as client:
        info = client.get("/v1/ldmkit/models").json()["models"][0]
        assert info["samplers"] == ["lcm"] and info["default_steps"] == 3
        answer = client.post("/v1/generate", json={"prompt": "a red circle", "seed": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["settings"]["sampler"] == "lcm" and answer.json()["settings"]["steps"] == 3
        refused = client.post("/v1/generate", json={"prompt": "a red circle", "sampler": "ddim"})
        assert refused.status_code == 422 and "lcm" in refused.text


def test_a_students_own_guidance_scale_is_what_every_entry_point_samples_at(teacher, tmp_path, capsys):
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from ldmkit.serve import create_app

    out = tmp_path / "own"
    assert main(["distill", "--preset", "tiny", "--teacher", str(teacher), "--student-guidance", "2.5", "--steps", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["diffusion"]["consistency_guidance"] == 2.5
    pipe = load_pipeline(out)
    assert pipe.default_guidance == 2.5 and load_pipeline(teacher).default_guidance == 4.0
    seen = []
    pipe.model.unet.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("guidance")),
                                              with_kwargs=True)
    pipe("a red circle", seed=0)
    pipe("a red circle", guidance=6.0, seed=0)
    n = pipe.sampling_defaults(None, None)[1]
    assert seen == [2.5] * n + [6.0] * n  # no guidance given: the student's own, at each of its steps
    report = tmp_path / "eval.json"
    assert main(["eval", "generate", "--model", str(out), "--num-images", "2", "--batch-size", "2",
                 "--json", str(report), "--no-progress"]) == 0
    import json

    assert json.loads(report.read_text())["settings"]["guidance"] == 2.5
    with TestClient(create_app(pipe, model_name="student")) as client:
        info = client.get("/v1/ldmkit/models").json()["models"][0]
        assert info["default_guidance"]["generate"] == 2.5
        answer = client.post("/v1/generate", json={"prompt": "a red circle", "seed": 1})
        assert answer.status_code == 200 and answer.json()["settings"]["guidance"] == 2.5
    # distilling on from it keeps its own scale unless another is given
    on = distill(tiny_distill_preset(), teacher, tmp_path / "on", steps=1, progress=False, init=out)
    assert load_pipeline(on).default_guidance == 2.5
    # a scale out of bounds: one line, exit 2, nothing written
    with pytest.raises(SystemExit) as exit_:
        main(["distill", "--preset", "tiny", "--teacher", str(teacher), "--student-guidance", "-1",
              "--out", str(tmp_path / "x"), "--no-progress"])
    assert exit_.value.code == 2
    assert "--student-guidance" in capsys.readouterr().err and not (tmp_path / "x").exists()
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["diffusion"]["consistency_guidance"] = -1.0
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["generate", "a red circle", "--model", str(out), "--out", str(tmp_path / "y.png"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "consistency_guidance = -1.0" in err and len(err.splitlines()) == 1 and not (tmp_path / "y.png").exists()
