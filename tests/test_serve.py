"""The HTTP API (ldmkit.serve) through FastAPI's TestClient: success, every validation error, a full
queue, timeouts, cancelling, the output folder and the `ldmkit serve` command's own errors.

Most tests serve `FakePipeline`, which draws solid colours and can be held between steps, so that
queue states are reached on purpose instead of by timing. The tests that check real images serve a
random-weight model on the `tiny` preset: serving does not care what the weights draw, and building
one takes a second where training, even for a few steps, takes tens of seconds on a busy 2-core CPU.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

fastapi = pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from ldmkit import load_pipeline  # noqa: E402
from ldmkit.cli import build_parser, main  # noqa: E402
from ldmkit.errors import UsageError  # noqa: E402
from ldmkit.serve import JobState, Limits, create_app  # noqa: E402
from ldmkit.serve.app import begin_shutdown, closing_server  # noqa: E402
from tests.tiny_models import build_tiny_model  # noqa: E402

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp() / "serve-tiny-model")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model):
    return load_pipeline(tiny_model)


@pytest.fixture(scope="session")
def tiny_client(tiny_pipe):
    with TestClient(create_app(tiny_pipe, model_name="tiny")) as client:
        yield client


class FakePipeline:
    """Called as the server calls `TextToImagePipeline` (``pipe(prompt, settings=…, callback=…)``): solid-colour
    images of the asked size, ``step_s`` seconds a step.

    While ``gate`` is clear each step waits for it, so a test can hold the worker mid-job; ``running``
    is set once the first job has started.
    """

    limits = Limits(latent_factor=8, default_size=32, max_size=128, num_timesteps=1000, lowest_side=8)

    def __init__(self, step_s: float = 0.0):
        self.step_s = step_s
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()
        self.calls = 0

    def __call__(self, prompt, *, settings, callback):
        steps, seed, num_images = settings.num_inference_steps, settings.seed, settings.num_images_per_prompt
        width, height = settings.width, settings.height
        self.calls += 1
        self.running.set()
        for i in range(steps):
            assert self.gate.wait(10), "a test left the gate closed"
            time.sleep(self.step_s)
            callback(i, steps)
        return [Image.new("RGB", (width, height), (seed % 256, k, steps)) for k in range(num_images)]


def fake_client(pipe: FakePipeline, **kwargs) -> TestClient:
    return TestClient(create_app(pipe, limits=FakePipeline.limits, model_name="fake", **kwargs))


def wait_for(client: TestClient, job_id: str, until, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
        time.sleep(0.02)


def decode_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --------------------------------------------------------------------------------------------------
# success with the real pipeline


def test_generate_returns_pngs_of_the_asked_size_that_the_pipeline_reproduces(tiny_client, tiny_pipe):
    body = {"prompt": "a red circle on the left", "steps": 3, "guidance": 3.0, "seed": 11,
            "num_images": 2, "width": 48, "height": 32}
    r = tiny_client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["settings"] == {**body, "negative_prompt": "", "sampler": "ddim", "binding": 0.0,
                                  "cache_interval": 1, "cache_depth": 1, "karras": False, "eta": 0.0, "model": "tiny",
                                  "mode": "generate", "prompt_syntax": "plain"}
    assert [im["index"] for im in result["images"]] == [0, 1]
    assert [im["filename"] for im in result["images"]] == ["11_000.png", "11_001.png"]
    served = [decode_png(base64.b64decode(im["png_base64"])) for im in result["images"]]
    assert [im.size for im in served] == [(48, 32), (48, 32)]
    # The reported settings are exactly what the library needs to draw the same pixels.
    direct = tiny_pipe("a red circle on the left", steps=3, guidance=3.0, seed=11, num_images=2, width=48, height=32)
    assert [im.tobytes() for im in served] == [im.tobytes() for im in direct]
    # …and the same URL-addressed PNG is served by the job API.
    png = tiny_client.get(result["images"][1]["url"])
    assert png.headers["content-type"] == "image/png"
    assert decode_png(png.content).tobytes() == served[1].tobytes()


def test_the_reported_command_writes_the_same_image(tiny_client, tiny_model, tmp_path):
    body = {"prompt": "-a red circle above a blue square", "negative_prompt": "--blue", "steps": 2, "guidance": 2.5,
            "seed": 4, "num_images": 2, "sampler": "euler", "height": 48, "binding": 0.3}
    image = tiny_client.post("/v1/generate", json=body).json()["images"][1]
    argv = shlex.split(image["command"])
    assert argv[:2] == ["ldmkit", "generate"] and argv[-2:] == ["--", "-a red circle above a blue square"]
    assert "--binding=0.3" in argv
    argv = [a.replace("--model=tiny", f"--model={tiny_model}").replace("--out=out/", f"--out={tmp_path}/")
            for a in argv[1:]]
    assert main([*argv[:-2], "--no-progress", *argv[-2:]]) == 0
    written = Image.open(tmp_path / image["filename"])
    assert written.tobytes() == decode_png(base64.b64decode(image["png_base64"])).tobytes()


def test_ddim_eta_runs_and_its_command_carries_it(tiny_client, tiny_pipe, tiny_model, tmp_path):
    """DDIM's η, as ldmkit generate --eta: the job runs with it, reports it, and its command writes the same
    image; for img2img too, whose command (ldmkit img2img) takes --eta as well."""
    body = {"prompt": "a red circle", "steps": 3, "seed": 9, "eta": 0.7}
    result = tiny_client.post("/v1/generate", json=body).json()
    assert result["settings"]["eta"] == 0.7
    expected = tiny_pipe("a red circle", num_inference_steps=3, generator=9, eta=0.7)[0]
    assert decode_png(base64.b64decode(result["images"][0]["png_base64"])).tobytes() == expected.tobytes()
    assert expected.tobytes() != tiny_pipe("a red circle", num_inference_steps=3, generator=9)[0].tobytes()
    source = noise_image(32, 32, seed=2)
    source.save(tmp_path / "in.png")
    img2img = tiny_client.post("/v1/generate", json={**body, "mode": "img2img", "image": png_b64(source),
                                                     "image_name": "in.png"}).json()
    for k, image in enumerate((result["images"][0], img2img["images"][0])):
        assert "--eta=0.7" in shlex.split(image["command"])
        argv = [a.replace("--model=tiny", f"--model={tiny_model}").replace("--out=out/", f"--out={tmp_path}/{k}/")
                for a in shlex.split(image["command"])[1:]]
        argv = [str(tmp_path / a) if a == "in.png" else a for a in argv]
        assert main([argv[0], "--no-progress", *argv[1:]]) == 0
        written = Image.open(tmp_path / str(k) / image["filename"]).convert("RGB")
        assert written.tobytes() == decode_png(base64.b64decode(image["png_base64"])).convert("RGB").tobytes()


@pytest.mark.parametrize("route", ["/v1/generate", "/v1/jobs"])
def test_an_img2img_strength_that_runs_no_step_is_a_422_naming_it_before_a_job(tiny_client, route):
    """int(0.03 · 25) = 0 of the steps would run: refused up front, naming strength and the smallest one that
    runs a step, not by a job the pipeline refuses (whose 422 names only the body)."""
    body = {"mode": "img2img", "prompt": "a", "image": png_b64(noise_image(32, 32)), "strength": 0.03}
    r = tiny_client.post(route, json=body)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "strength"], error
    assert error["msg"].startswith("strength = 0.03 runs none of the 25 steps") and "is 0.04" in error["msg"], error
    r = tiny_client.post(route, json={**body, "strength": 0.04})
    assert r.status_code in (200, 202), r.text


def test_a_request_without_seed_or_size_gets_them_filled_in_and_reported(tiny_client):
    r = tiny_client.post("/v1/generate", json={"prompt": "a blue square", "steps": 2, "sampler": "euler"})
    assert r.status_code == 200, r.text
    settings = r.json()["settings"]
    assert 0 <= settings["seed"] <= 2**32 - 1
    assert (settings["width"], settings["height"]) == (32, 32)
    again = tiny_client.post("/v1/generate", json=settings).json()  # the settings reproduce the image
    assert again["images"][0]["png_base64"] == r.json()["images"][0]["png_base64"]


def test_job_api_reports_progress_per_step_and_serves_images(tiny_client):
    r = tiny_client.post("/v1/jobs", json={"prompt": "a green triangle", "steps": 4, "seed": 3, "sampler": "dpmpp-2m"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "done") and job["total"] == 4
    done = wait_for(tiny_client, job["id"], lambda j: j["status"] == "done")
    assert (done["step"], done["total"], done["queue_position"], done["error"]) == (4, 4, None, None)
    image = decode_png(tiny_client.get(done["images"][0]["url"]).content)
    assert image.size == (32, 32)
    assert tiny_client.get(f"/v1/jobs/{job['id']}/images/1.png").status_code == 404
    assert tiny_client.get("/v1/jobs/no-such-job").status_code == 404


def test_the_real_pipeline_stops_between_steps_at_the_deadline(tiny_pipe):
    with TestClient(create_app(tiny_pipe, timeout=0.5)) as client:
        job = client.post("/v1/jobs", json={"prompt": "a red circle", "steps": 200, "num_images": 8,
                                            "width": 128, "height": 128}).json()
        job = wait_for(client, job["id"], lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "timeout" and 0 < job["step"] < 200, job
        # the worker is free again
        assert client.post("/v1/generate", json={"prompt": "a", "steps": 1}).status_code == 200


def test_models_health_openapi_and_page(tiny_client):
    model = tiny_client.get("/v1/ldmkit/models").json()["models"][0]
    text_fields = ["model", "mode", "prompt", "negative_prompt", "prompt_syntax", "binding", "cache_interval",
                   "cache_depth", "karras", "num_images", "width", "height", "steps", "guidance", "sampler", "eta", "seed"]
    img2img_fields = ["model", "mode", "image", "image_name", "prompt", "negative_prompt", "prompt_syntax", "strength",
                      "karras", "steps", "guidance", "sampler", "eta", "seed"]
    assert model == {"id": "tiny", "kind": "text", "default": True, "modes": ["generate", "img2img"],
                     "accepts": {"generate": text_fields, "img2img": img2img_fields},
                     "required": {"generate": ["prompt"], "img2img": ["image", "prompt"]},
                     "default_guidance": {"generate": 4.0, "img2img": 4.0}, "classes": [],
                     "sr_factor": None, "can_edit": True, "default_size": 32, "latent_factor": 4, "max_size": 128,
                     "min_size": 12, "lowest_side": 8,  # 8x8 would leave the tiny UNet's lowest level 1x1
                     "samplers": ["ddim", "ddpm", "euler", "dpmpp-2m", "euler-a", "plms", "unipc"], "default_steps": 25,
                     "max_steps": 200, "max_images": 8,
                     "max_prompt_chars": 500, "max_guidance": 30.0, "max_cache_depth": 1}
    health = tiny_client.get("/healthz").json()
    assert health["status"] == "ok" and health["max_queue"] == 8
    paths = tiny_client.get("/openapi.json").json()["paths"]
    assert {"/v1/generate", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/ldmkit/models", "/healthz"} <= set(paths)
    page = tiny_client.get("/")
    assert page.status_code == 200 and 'id="prompt"' in page.text and 'id="gallery"' in page.text
    assert tiny_client.get("/static/app.js").status_code == 200


def test_a_consistency_student_accepts_only_the_fields_it_takes(tiny_model, tmp_path):
    """A student of `ldmkit distill` refuses a negative prompt, binding guidance and feature reuse: the model
    list leaves them out of what it accepts (the page shows only those), and a job of the rest runs."""
    from ldmkit.train.distill import distill
    from test_distill import tiny_distill_preset

    student = tmp_path / "lcm"
    distill(tiny_distill_preset(), tiny_model, student, student_steps=3, progress=False)
    with TestClient(create_app(load_pipeline(student), model_name="lcm")) as client:
        model = client.get("/v1/ldmkit/models").json()["models"][0]
        assert model["modes"] == ["generate"] and model["samplers"] == ["lcm"] and model["default_steps"] == 3
        assert model["accepts"]["generate"] == ["model", "mode", "prompt", "prompt_syntax", "karras", "num_images",
                                                "width", "height", "steps", "guidance", "sampler", "seed"]
        body = {"prompt": "a red circle", "prompt_syntax": "a1111", "karras": False, "num_images": 1, "width": 32,
                "height": 32, "steps": 3, "guidance": 4.0, "sampler": "lcm", "seed": 1}
        assert set(body) | {"model", "mode"} == set(model["accepts"]["generate"])
        r = client.post("/v1/generate", json=body)
        assert r.status_code == 200, r.text


# --------------------------------------------------------------------------------------------------
# validation: every invalid request is a 4xx naming the field


VALID = {"prompt": "a red circle"}
INVALID = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": " \n\t "}, "prompt"),  # only whitespace: no more a prompt than ""
    ({"prompt": "x" * 501}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"negative_prompt": "x" * 501}, "negative_prompt"),
    ({"steps": 0}, "steps"),
    ({"steps": 201}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"steps": "10"}, "steps"),
    ({"steps": True}, "steps"),
    ({"guidance": -0.5}, "guidance"),
    ({"guidance": 30.5}, "guidance"),
    ({"guidance": "high"}, "guidance"),
    ({"binding": -1.0}, "binding"),
    ({"binding": 6.0}, "binding"),
    ({"sampler": "heun"}, "sampler"),
    ({"eta": 1.5}, "eta"),         # DDIM's η is defined on [0, 1]
    ({"eta": -0.1}, "eta"),
    ({"eta": 0.5, "sampler": "euler"}, "eta"),  # η is DDIM's alone, as ldmkit generate --eta refuses it
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": 9}, "num_images"),
    ({"width": 36}, "width"),      # not a multiple of the latent factor 8
    ({"height": 12}, "height"),
    ({"width": 136}, "width"),     # a multiple, but over the cap (4 × 32)
    ({"height": 0}, "height"),
    ({"width": 8, "height": 8}, "width"),  # each side allowed, but together the stand-in's lowest level is 1x1
    ({"step": 50}, "step"),        # a typo is reported, not ignored
]


@pytest.fixture(scope="module")
def fake_app_client():
    pipe = FakePipeline()
    with fake_client(pipe) as client:
        yield client, pipe


@pytest.mark.parametrize("change, field", INVALID, ids=[f"{f}={str(c[f])[:12]}" if f in c else f for c, f in INVALID])
@pytest.mark.parametrize("route", ["/v1/generate", "/v1/jobs"])
def test_each_invalid_field_is_a_422_naming_it(fake_app_client, route, change, field):
    client, pipe = fake_app_client
    calls = pipe.calls
    r = client.post(route, json={**VALID, **change})
    assert r.status_code == 422, r.text
    fields = [e["loc"][-1] for e in r.json()["detail"]]
    assert field in fields, r.json()
    assert all(e["msg"] for e in r.json()["detail"])
    assert pipe.calls == calls, "an invalid request reached the model"


def test_missing_prompt_and_broken_json_are_422(fake_app_client):
    client, _ = fake_app_client
    r = client.post("/v1/generate", json={"steps": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    r = client.post("/v1/generate", content=b'{"prompt": "a", ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"
    # Python's JSON parser reads NaN; a guidance of NaN must not reach the sampler.
    r = client.post("/v1/generate", content=b'{"prompt": "a", "guidance": NaN}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "guidance"]


def test_steps_beyond_the_schedule_are_refused():
    limits = Limits(latent_factor=8, default_size=32, max_size=128, num_timesteps=50)
    with TestClient(create_app(FakePipeline(), limits=limits)) as client:
        r = client.post("/v1/generate", json={"prompt": "a", "steps": 51})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "steps"]


def test_a_body_over_the_limit_is_413_before_parsing(fake_app_client):
    client, _ = fake_app_client
    big = json.dumps({"prompt": "a", "negative_prompt": "x" * 70_000}).encode()
    r = client.post("/v1/generate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"]

    def chunks():  # no Content-Length: the limit still holds
        for _ in range(40):
            yield b"x" * 4096

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


# --------------------------------------------------------------------------------------------------
# the queue: bounded, 503 when full, deadlines, cancelling


def test_a_full_queue_answers_503_with_retry_after():
    pipe = FakePipeline()
    pipe.gate.clear()  # the worker will hold its first job mid-way
    with fake_client(pipe, max_queue=1) as client:
        running = client.post("/v1/jobs", json={"prompt": "first", "steps": 2}).json()
        assert pipe.running.wait(5)
        waiting = client.post("/v1/jobs", json={"prompt": "second", "steps": 2})
        assert waiting.status_code == 202 and waiting.json()["queue_position"] == 1
        for route in ("/v1/jobs", "/v1/generate"):
            full = client.post(route, json={"prompt": "third", "steps": 2})
            assert full.status_code == 503, full.text
            assert int(full.headers["retry-after"]) >= 1
            assert "queue is full" in full.json()["detail"]
        health = client.get("/healthz").json()
        assert (health["queued"], health["running"]) == (1, True)
        pipe.gate.set()
        for job in (running, waiting.json()):
            assert wait_for(client, job["id"], lambda j: j["status"] == "done")["step"] == 2
        assert client.post("/v1/jobs", json={"prompt": "after", "steps": 1}).status_code == 202


def test_a_job_running_past_its_deadline_is_stopped_with_504():
    pipe = FakePipeline(step_s=0.05)
    with fake_client(pipe, timeout=0.4) as client:
        start = time.monotonic()
        r = client.post("/v1/generate", json={"prompt": "slow", "steps": 200})
        assert r.status_code == 504, r.text
        assert "timeout" in r.json()["detail"]
        assert time.monotonic() - start < 3
        job = wait_for(client, client.post("/v1/jobs", json={"prompt": "slow", "steps": 200}).json()["id"],
                       lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "timeout" and 0 < job["step"] < 200 and "timeout" in job["error"]
        assert job["images"] == []


def test_a_job_waiting_past_its_deadline_times_out_without_running():
    pipe = FakePipeline()
    pipe.gate.clear()
    with fake_client(pipe, timeout=0.3, max_queue=2) as client:
        client.post("/v1/jobs", json={"prompt": "blocker", "steps": 1})
        assert pipe.running.wait(5)
        waiting = client.post("/v1/jobs", json={"prompt": "waits", "steps": 1}).json()
        time.sleep(0.4)
        assert client.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "timeout"
        pipe.gate.set()
    assert pipe.calls == 1


def test_cancel_stops_a_running_job_between_steps_and_removes_a_waiting_one():
    pipe = FakePipeline()
    pipe.gate.clear()
    with fake_client(pipe) as client:
        running = client.post("/v1/jobs", json={"prompt": "a", "steps": 50}).json()
        assert pipe.running.wait(5)
        waiting = client.post("/v1/jobs", json={"prompt": "b", "steps": 50}).json()
        assert client.delete(f"/v1/jobs/{waiting['id']}").json()["status"] == "cancelled"
        client.delete(f"/v1/jobs/{running['id']}")
        pipe.gate.set()
        job = wait_for(client, running["id"], lambda j: j["status"] != "running")
        assert job["status"] == "cancelled" and job["step"] < 50
        assert client.get(f"/v1/jobs/{running['id']}/images/0.png").status_code == 404
        assert client.delete("/v1/jobs/unknown").status_code == 404
    assert pipe.calls == 1


def test_a_failing_model_is_reported_and_the_server_keeps_serving():
    class Broken(FakePipeline):
        def __call__(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    with TestClient(create_app(Broken(), limits=FakePipeline.limits)) as client:
        r = client.post("/v1/generate", json={"prompt": "a"})
        assert r.status_code == 500 and "out of memory" in r.json()["detail"]
        assert client.get("/healthz").json()["status"] == "ok"


# --------------------------------------------------------------------------------------------------
# files: only generated names inside the output folder


def test_output_folder_gets_generated_names_only(tmp_path):
    out = tmp_path / "out"
    with fake_client(FakePipeline(), output_dir=out) as client:
        r = client.post("/v1/generate", json={"prompt": "../../etc/passwd", "num_images": 2, "steps": 1, "seed": 5})
        assert r.status_code == 200
        job_id = r.json()["id"]
    assert sorted(p.name for p in out.iterdir()) == [f"{job_id}.json", f"{job_id}_000.png", f"{job_id}_001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert json.loads((out / f"{job_id}.json").read_text())["prompt"] == "../../etc/passwd"


# --------------------------------------------------------------------------------------------------
# the command


def test_the_printed_address_takes_connections_before_the_server_starts():
    """A client that connects the moment `ldmkit serve` prints its address waits in the backlog: the
    socket listens from the bind, not from uvicorn's start (before, such a client was refused)."""
    from ldmkit.cli.serve import bind

    with bind("127.0.0.1", 0) as sock, socket.socket() as client:
        client.settimeout(5)
        client.connect(sock.getsockname())  # nothing accepts yet: refused unless the socket listens
        accepted, _ = sock.accept()
        accepted.close()


def test_serve_command_reports_a_busy_port_and_a_bad_model_in_one_line(tiny_model, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tiny_model), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ldmkit serve: error:") and "\n" not in err


def test_job_state_names_are_the_api_strings():
    assert [s.value for s in JobState] == ["queued", "running", "done", "failed", "cancelled", "timeout"]


def test_default_size_cap_is_4x_the_trained_size_up_to_1024():
    from types import SimpleNamespace

    def pipe(size, factor=8):
        config = SimpleNamespace(image_size=size, unet=SimpleNamespace(num_res_blocks=2))
        model = SimpleNamespace(config=config, latent_factor=factor, size_multiple=factor,
                                schedule=SimpleNamespace(num_timesteps=1000),
                                unet=SimpleNamespace(too_small=lambda h, w: False))
        return SimpleNamespace(model=model, sampling_defaults=lambda sampler, steps: ("ddim", 25), default_guidance=4.0)

    assert Limits.from_pipeline(pipe(32)).max_size == 128
    assert Limits.from_pipeline(pipe(512)).max_size == 1024
    assert Limits.from_pipeline(pipe(2048)).max_size == 2048
    assert Limits.from_pipeline(pipe(64), max_size=100).max_size == 96  # rounded down to the factor
    with pytest.raises(ValueError, match="below the model's trained size"):
        Limits.from_pipeline(pipe(64), max_size=32)


# --------------------------------------------------------------------------------------------------
# input images, and sizes the model cannot draw


def png_b64(image: Image.Image, wrap: bool = False) -> str:
    """base64 of ``image`` as a PNG: on one line, or (``wrap``) in lines of 76 characters, as `base64 FILE`
    prints it."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return (base64.encodebytes if wrap else base64.b64encode)(buf.getvalue()).decode()


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=torch.Generator().manual_seed(seed),
                                         dtype=torch.uint8).numpy())


@pytest.mark.parametrize("data", ["data:", "data:image/png;base64", "not base64!"])
@pytest.mark.parametrize("route", ["/v1/generate", "/v1/jobs"])
def test_an_image_that_is_not_base64_is_a_422_naming_it(tiny_client, route, data):
    """"data:" is what the page sends for a file of 0 bytes."""
    r = tiny_client.post(route, json={"mode": "img2img", "prompt": "a", "image": data, "steps": 2})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "image"] and "image is not base64 of an image" in error["msg"], error


def test_base64_in_lines_as_the_base64_command_prints_it_is_the_same_image(tiny_client):
    source = noise_image(32, 32)
    wrapped = png_b64(source, wrap=True)
    assert wrapped.count("\n") > 2
    body = {"mode": "img2img", "prompt": "a red circle", "steps": 2, "seed": 3, "strength": 0.5}
    answers = [tiny_client.post("/v1/generate", json={**body, "image": image})
               for image in (png_b64(source), wrapped, "data:image/png;base64," + wrapped)]
    assert [r.status_code for r in answers] == [200, 200, 200], answers[-1].text
    assert len({r.json()["images"][0]["png_base64"] for r in answers}) == 1


def test_a_size_the_model_cannot_draw_is_a_422_before_it_runs(tiny_client):
    """The tiny UNet's lowest level at 8x8 would be 1x1, one value per GroupNorm group: the pipeline refuses it,
    so the request is refused first, naming both sides and the smallest sizes; 8x16 is drawn."""
    r = tiny_client.post("/v1/generate", json={"prompt": "a", "width": 8, "height": 8, "steps": 1})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert sorted(e["loc"][-1] for e in errors) == ["height", "width"]
    assert all("too small" in e["msg"] and "smallest sizes allowed are 4x12 and 12x4" in e["msg"] for e in errors)
    r = tiny_client.post("/v1/generate", json={"prompt": "a", "width": 8, "height": 16, "steps": 1})
    assert r.status_code == 200, r.text
    assert decode_png(base64.b64decode(r.json()["images"][0]["png_base64"])).size == (8, 16)
    r = tiny_client.post("/v1/jobs", json={"mode": "img2img", "prompt": "a", "image": png_b64(noise_image(8, 8))})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "image"] and "image is 8×8" in error["msg"] and "4x12 and 12x4" in error["msg"]


REFUSAL = "image size 8x8 is too small for this model; the smallest sizes allowed are 4x12 and 12x4"


class RefusingPipeline(FakePipeline):
    """Raises what a pipeline raises for a request it cannot draw: a `UsageError`."""

    def __call__(self, prompt, *, settings, callback):
        raise UsageError(REFUSAL)


def test_a_request_the_pipeline_refuses_is_the_clients_error_in_each_familys_shape(caplog):
    with TestClient(create_app(RefusingPipeline(), limits=FakePipeline.limits, model_name="fake")) as client:
        r = client.post("/v1/generate", json={"prompt": "a", "steps": 2})
        assert r.status_code == 422
        assert r.json() == {"detail": [{"loc": ["body"], "msg": REFUSAL, "type": "value_error"}]}
        job = client.post("/v1/jobs", json={"prompt": "a", "steps": 2}).json()
        job = wait_for(client, job["id"], lambda j: j["status"] not in ("queued", "running"))
        assert (job["status"], job["error"]) == ("failed", REFUSAL)
        r = client.post("/v1/images/generations", json={"prompt": "a"})
        assert r.status_code == 400 and r.json()["error"]["message"] == REFUSAL, r.text
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "a", "steps": 2})
        assert r.status_code == 422 and r.json()["detail"][0]["msg"] == REFUSAL, r.text
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")], "no traceback"


# --------------------------------------------------------------------------------------------------
# shutting down


def test_a_server_shutting_down_answers_waiting_requests_503_in_each_familys_shape_at_once():
    """What Ctrl-C does to `ldmkit serve` (whose uvicorn server is `closing_server`): the running job's request
    and the queued ones get the queue's own answer, long before uvicorn's graceful-shutdown timeout would cancel
    them (a bare 500 each)."""
    import httpx
    import uvicorn

    pipe = FakePipeline()
    pipe.gate.clear()  # the worker holds its first job mid-way
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(pipe, limits=FakePipeline.limits, model_name="fake")
    server = closing_server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=20))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    serving.start()
    answers = {}

    def call(route: str, body: dict) -> None:
        answers[route] = httpx.post(base + route, json=body, timeout=60)

    requests = {"/v1/generate": {"prompt": "running", "steps": 2},
                "/v1/images/generations": {"prompt": "queued"}, "/sdapi/v1/txt2img": {"prompt": "queued", "steps": 2}}
    callers = [threading.Thread(target=call, args=item) for item in requests.items()]
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert serving.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        callers[0].start()
        assert pipe.running.wait(10)
        for caller in callers[1:]:
            caller.start()
        while httpx.get(f"{base}/healthz").json()["queued"] < 2:
            assert time.monotonic() < deadline, "the requests were not queued"
            time.sleep(0.02)
        start = time.monotonic()
        server.should_exit = True
        for caller in callers:
            caller.join(15)
        took = time.monotonic() - start
    finally:
        pipe.gate.set()
        server.should_exit = True
        serving.join(30)
        sock.close()
    assert took < 5, f"waited {took:.1f} s"
    message = "the server is shutting down"
    assert {route: r.status_code for route, r in answers.items()} == dict.fromkeys(requests, 503)
    assert answers["/v1/generate"].json() == {"detail": message}
    assert answers["/v1/images/generations"].json() == {
        "error": {"message": message, "type": "server_error", "param": None, "code": None}}
    assert answers["/sdapi/v1/txt2img"].json() == {"error": "HTTPException", "detail": message, "body": "",
                                                    "errors": message}
    assert pipe.calls == 1


def test_a_job_submitted_once_shutdown_began_is_refused_as_shutting_down_not_as_a_full_queue():
    app = create_app(FakePipeline(), limits=FakePipeline.limits, model_name="fake")
    with TestClient(app) as client:
        begin_shutdown(app)
        for route in ("/v1/jobs", "/v1/generate"):
            r = client.post(route, json={"prompt": "a"})
            assert r.status_code == 503 and r.json() == {"detail": "the server is shutting down"}, r.text
            assert "retry-after" not in r.headers


def test_ctrl_c_answers_the_waiting_request_503_at_once_without_a_traceback(tiny_model):
    """`ldmkit serve` itself: SIGINT while a request waits for its (long) job."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "ldmkit.cli", "serve", "--model", str(tiny_model), "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        assert " at http://" in first, first
        url = first.split(" at ", 1)[1].split()[0]
        answers = []
        body = {"prompt": "a red circle", "steps": 200, "num_images": 8, "width": 128, "height": 128}
        waiting = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}v1/generate", json=body,
                                                                            timeout=60)))
        waiting.start()
        deadline = time.monotonic() + 30
        while not httpx.get(f"{url}healthz").json()["running"]:
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.05)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        waiting.join(30)
        took = time.monotonic() - start
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert answers and answers[0].status_code == 503, answers and answers[0].text
    assert answers[0].json() == {"detail": "the server is shutting down"}
    assert took < 4, f"answered after {took:.1f} s"  # uvicorn's graceful shutdown would wait 5 s, then cancel it
    assert "Traceback" not in output and "CancelledError" not in output, output


def test_a_wait_the_server_cancels_cancels_its_job_too():
    """Where the server does cancel a request that waits (a second Ctrl-C), its job does not run for nobody."""
    import asyncio
    from types import SimpleNamespace

    from ldmkit.serve.handling import wait_done
    from ldmkit.serve.jobs import JobQueue

    queue = JobQueue(lambda settings, on_step: [], timeout=60)  # never started: the job stays queued
    job = queue.submit(SimpleNamespace(steps=2))
    connected = SimpleNamespace(is_disconnected=lambda: asyncio.sleep(0, result=False))

    async def cancel_the_wait():
        waiting = asyncio.create_task(wait_done(queue, job, connected))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(cancel_the_wait())
    assert job.state is JobState.cancelled and queue.load() == (0, False)


# --------------------------------------------------------------------------------------------------
# what an answer could not echo, HEAD, a body sent without its content type, CORS


DEEP = "[" * 960 + "]" * 960  # the JSON parser reads it; an answer echoing it could not be written
UNECHOABLE = [  # (route, body as JSON text (Python's json.dumps writes NaN and Infinity), the field at fault)
    ("/sdapi/v1/txt2img", '{"prompt": "a", "steps": 2, "subseed_strength": NaN}', ["body", "subseed_strength"]),
    ("/sdapi/v1/txt2img", '{"prompt": "a", "steps": 2, "override_settings": {"CLIP_stop_at_last_layers": Infinity}}',
     ["body", "override_settings", "CLIP_stop_at_last_layers"]),
    ("/sdapi/v1/txt2img", '{"prompt": "a", "steps": 2, "styles": ["\\ud800"]}', ["body", "styles", 0]),
    ("/sdapi/v1/txt2img", '{"prompt": "a", "steps": 2, "comments": ' + DEEP + "}", ["body", "comments"]),
    ("/sdapi/v1/img2img", '{"prompt": "a", "steps": 2, "init_images": ["__IMAGE__"], "mask_blur": -Infinity}',
     ["body", "mask_blur"]),
    ("/sdapi/v1/options", '{"sd_model_checkpoint": NaN}', ["body", "sd_model_checkpoint"]),
    ("/v1/images/generations", '{"prompt": "a", "size": "32x32", "quality": NaN}', "quality"),
    ("/v1/images/generations", '{"prompt": "a", "output_compression": Infinity}', "output_compression"),
    ("/v1/images/generations", '{"prompt": "a", "user": ' + DEEP + "}", "user"),
]


@pytest.mark.parametrize("route, body, field", UNECHOABLE, ids=[f"{r}-{str(f)[:40]}" for r, _, f in UNECHOABLE])
def test_a_field_an_answer_could_not_echo_is_a_4xx_naming_it_before_any_job(tmp_path, route, body, field):
    """A NaN, an Infinity, a lone surrogate or nesting ~960 deep in a field the server accepts without reading it
    (and echoes in its answer) is each family's 4xx naming the field, at once: no job runs, no file is written."""
    pipe = FakePipeline()
    body = body.replace("__IMAGE__", png_b64(noise_image(32, 32)))
    with fake_client(pipe, output_dir=tmp_path / "out") as client:
        r = client.post(route, content=body.encode(), headers={"content-type": "application/json"})
        if route.startswith("/v1/images"):
            error = r.json()["error"]
            assert r.status_code == 400 and error["param"] == field and error["message"].startswith(field), r.text
        else:
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == field, r.text
        message = json.dumps(r.json())
        assert "JSON number" in message or "nested more than 32" in message or "surrogate" in message, message
        assert client.get("/healthz").json()["queued"] == 0
    assert pipe.calls == 0 and list((tmp_path / "out").iterdir()) == []


def test_a_body_nested_too_deep_for_the_parser_is_a_400_saying_so_in_each_familys_shape():
    body = b'{"prompt": "a", "steps": 2, "foo": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    pipe = FakePipeline()
    with fake_client(pipe) as client:
        for route in ("/v1/generate", "/sdapi/v1/txt2img", "/v1/images/generations"):
            r = client.post(route, content=body, headers={"content-type": "application/json"})
            answer = r.json()
            message = (answer["error"]["message"] if route.startswith("/v1/images") else answer["detail"])
            assert r.status_code == 400 and "too deep for the JSON parser" in message, (route, r.text)
    assert pipe.calls == 0


def test_fields_an_answer_can_echo_are_still_taken_and_listed():
    nested = {"controlnet": {"args": [{"enabled": True, "weight": 0.5, "guidance": [0.0, 1.0]}]}}
    with fake_client(FakePipeline()) as client:
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "a", "steps": 2, "alwayson_scripts": nested,
                                                   "subseed_strength": 0.5})
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["not_honoured"] == {"alwayson_scripts": nested, "subseed_strength": 0.5}
        r = client.post("/v1/images/generations", json={"prompt": "a", "quality": "hd", "response_format": "b64_json"})
        assert r.status_code == 200 and r.json()["ldmkit"]["not_honoured"] == {"quality": "hd"}, r.text


def test_head_answers_as_get_without_a_body():
    with fake_client(FakePipeline()) as client:
        job = client.post("/v1/generate", json={"prompt": "a", "steps": 1}).json()["id"]
        openai_url = client.post("/v1/images/generations", json={"prompt": "a"}).json()["data"][0]["url"]
        for path in ("/", "/healthz", "/v1/models", "/v1/ldmkit/models", f"/v1/jobs/{job}/images/0.png",
                     openai_url.removeprefix("http://testserver"), "/static/app.js", "/openapi.json"):
            get, head = client.get(path), client.head(path)
            assert (head.status_code, head.content) == (200, b""), (path, head.status_code)
            assert head.headers["content-type"] == get.headers["content-type"], path
            assert head.headers["content-length"] == str(len(get.content)), path
        assert client.head(f"/v1/jobs/{job}/images/5.png").status_code == 404
        r = client.head("/v1/generate")  # a POST route: as GET, 405 naming POST
        assert r.status_code == 405 and r.headers["allow"] == "POST"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain; charset=utf-8"])
def test_a_json_body_sent_as_another_type_is_told_to_send_it_as_json_in_each_familys_shape(content_type):
    """curl -d sends a JSON body as a form: the answer says which Content-Type is expected, not that the body
    is no object."""
    says = "the body must be JSON sent with Content-Type: application/json"
    pipe = FakePipeline()
    with fake_client(pipe) as client:
        body = b'{"prompt": "a", "steps": 2}'
        for route in ("/v1/generate", "/v1/jobs", "/sdapi/v1/txt2img", "/sdapi/v1/options", "/v1/edit"):
            r = client.post(route, content=body, headers={"content-type": content_type})
            assert r.status_code == 422, (route, r.text)
            assert r.json()["detail"][0]["loc"] == ["body"] and r.json()["detail"][0]["msg"].startswith(says), r.text
        r = client.post("/v1/images/generations", content=body, headers={"content-type": content_type})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(says), r.text
        assert r.json()["error"]["param"] is None
        # still JSON: application/json with a charset, or no Content-Type at all (FastAPI reads it as JSON)
        assert client.post("/v1/generate", content=body, headers={"content-type": "application/json; charset=utf-8"}
                           ).status_code == 200
    assert pipe.calls == 1


def test_cors_is_off_by_default_and_lets_the_origins_given_read_answers():
    origin = {"origin": "http://localhost:3000"}
    preflight = {**origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    with fake_client(FakePipeline()) as client:
        assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
        assert client.options("/v1/generate", headers=preflight).status_code == 405
    with fake_client(FakePipeline(), cors_allow_origins=["http://localhost:3000"],
                     allowed_hosts={"testserver"}) as client:
        r = client.options("/v1/generate", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "POST" in r.headers["access-control-allow-methods"]
        r = client.post("/v1/generate", json={"prompt": "a", "steps": 1}, headers=origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = client.post("/v1/generate", content=b"x" * 70_000, headers=origin)  # BodyLimit's 413 readable too
        assert r.status_code == 413 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = client.get("/healthz", headers={"origin": "http://evil.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        # the Host check still comes first: a rebinding page's Host is refused whatever its origin
        assert client.get("/healthz", headers={**origin, "host": "evil.example"}).status_code == 400


def test_cors_allow_origins_takes_a1111s_comma_separated_origins_and_refuses_a_path(capsys):
    args = build_parser().parse_args(["serve", "--cors-allow-origins", "http://localhost:3000, https://app.example"])
    assert args.cors_allow_origins == ["http://localhost:3000", "https://app.example"]
    assert build_parser().parse_args(["serve"]).cors_allow_origins is None
    for bad in ("http://localhost:3000/", "localhost:3000", ","):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["serve", "--cors-allow-origins", bad])
        assert e.value.code == 2 and "--cors-allow-origins" in capsys.readouterr().err
