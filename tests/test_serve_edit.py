"""The edit API (ldmkit.serve.edit, Prompt-to-Prompt) through FastAPI's TestClient: pairs the pipeline
reproduces, the `ldmkit edit` command reported with them, the job routes, cancelling, deadlines, the shared
queue, every validation error, a model that cannot edit, the Host guard and the output folder.

Edits run on the random-weight `tiny` model of test_serve: serving does not care what the weights draw.
`GatedEdit` wraps the real edit pipeline so that a test can hold the worker between two steps.
"""

from __future__ import annotations

import base64
import json
import shlex
import threading
import time
from types import SimpleNamespace

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from ldmkit.cli import main  # noqa: E402
from ldmkit.diffusion.prompt_to_prompt import MODES  # noqa: E402
from ldmkit.pipelines import PromptToPromptPipeline  # noqa: E402
from ldmkit.serve import Limits, create_app  # noqa: E402
from ldmkit.serve.app import SHIPPED  # noqa: E402
from ldmkit.serve.edit import edit_command, edit_pipeline_for  # noqa: E402
from ldmkit.serve.edit_schemas import EditSettings  # noqa: E402
from test_serve import FakePipeline, decode_png, tiny_model, tiny_pipe  # noqa: E402,F401  (session fixtures)

SOURCE, TARGET = "a red circle on the left", "a blue circle on the left"


class GatedEdit:
    """The real edit pipeline, counting its calls; while ``gate`` is clear each step waits for it, and
    each step takes ``step_s`` seconds more. ``running`` is set once an edit has started."""

    def __init__(self, pipe: PromptToPromptPipeline, step_s: float = 0.0):
        self.pipe, self.model, self.step_s = pipe, pipe.model, step_s
        self.gate, self.running = threading.Event(), threading.Event()
        self.gate.set()
        self.calls = 0

    def __call__(self, *args, callback, **kwargs):
        self.calls += 1
        self.running.set()

        def step(i, n):
            assert self.gate.wait(10), "a test left the gate closed"
            time.sleep(self.step_s)
            callback(i, n)

        return self.pipe(*args, callback=step, **kwargs)


@pytest.fixture(scope="module")
def edit_pipe(tiny_pipe):  # noqa: F811
    return PromptToPromptPipeline(tiny_pipe.model)  # the served model itself, not a copy


@pytest.fixture(scope="module")
def client(tiny_pipe):  # noqa: F811
    with TestClient(create_app(tiny_pipe, model_name="tiny")) as c:
        yield c


def gated_client(tiny_pipe, edit_pipe, step_s: float = 0.0, **kwargs) -> tuple[TestClient, GatedEdit]:  # noqa: F811
    gated = GatedEdit(edit_pipe, step_s)
    return TestClient(create_app(tiny_pipe, model_name="tiny", edit_pipeline=gated, **kwargs)), gated


def wait_for(client: TestClient, job_id: str, until, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/edit/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
        time.sleep(0.02)


def pngs(result: dict) -> list[Image.Image]:
    """The images of a /v1/edit answer as [source 0, edit 0, source 1, …]."""
    return [decode_png(base64.b64decode(pair[side]["png_base64"])) for pair in result["pairs"]
            for side in ("source", "edit")]


# --------------------------------------------------------------------------------------------------
# success


def test_edit_returns_each_pair_as_the_pipeline_draws_it(client, edit_pipe):
    body = {"source_prompt": SOURCE, "target_prompt": TARGET, "steps": 3, "guidance": 3.0, "seed": 11,
            "num_images": 2, "blend_words": ["circle"], "cross_replace": 0.6}
    r = client.post("/v1/edit", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["settings"] == {**body, "mode": "replace", "self_replace": 0.4, "blend_threshold": 0.3,
                                  "model": "tiny"}
    assert [(p["index"], p["source"]["filename"], p["edit"]["filename"]) for p in result["pairs"]] == [
        (0, "source_0.png", "edit_0.png"), (1, "source_1.png", "edit_1.png")]
    served = pngs(result)
    assert [im.size for im in served] == [(32, 32)] * 4
    # The reported settings are exactly what the library needs to draw the same pixels.
    direct = edit_pipe(SOURCE, TARGET, steps=3, guidance=3.0, seed=11, num_images=2, local_blend_words=["circle"],
                       cross_replace_steps=0.6)
    expected = [im for pair in zip(direct.source_images, direct.edited_images) for im in pair]
    assert [im.tobytes() for im in served] == [im.tobytes() for im in expected]
    # …and the same URL-addressed PNG is served by the job API.
    png = client.get(result["pairs"][1]["edit"]["url"])
    assert png.headers["content-type"] == "image/png"
    assert decode_png(png.content).tobytes() == served[3].tobytes()


def test_the_reported_command_writes_the_same_images(client, tiny_model, tmp_path):  # noqa: F811
    body = {"source_prompt": "-a red circle", "target_prompt": "-a red circle on the left", "mode": "refine",
            "cross_replace": 0.5, "self_replace": 0.25, "blend_words": ["left", "circle"], "blend_threshold": 0.2,
            "steps": 2, "guidance": 2.5, "seed": 4, "num_images": 2}
    result = client.post("/v1/edit", json=body).json()
    argv = shlex.split(result["command"])
    assert argv[:3] == ["ldmkit", "edit", "--model=tiny"]
    assert argv[-3:] == ["--", "-a red circle", "-a red circle on the left"]
    assert "--blend=left circle" in argv and "--mode=refine" in argv
    argv = [a.replace("--model=tiny", f"--model={tiny_model}").replace("--out-dir=out/", f"--out-dir={tmp_path}/")
            for a in argv[1:]]
    assert main([*argv[:-3], "--no-progress", *argv[-3:]]) == 0
    names = [pair[side]["filename"] for pair in result["pairs"] for side in ("source", "edit")]
    written = [Image.open(tmp_path / name) for name in names]
    assert [im.tobytes() for im in written] == [im.tobytes() for im in pngs(result)]


def test_the_command_of_the_shipped_model_has_no_model_option_and_no_blend_when_off(tiny_pipe):  # noqa: F811
    settings = EditSettings(source_prompt="a red circle", target_prompt="a red(2) circle", mode="reweight",
                            cross_replace=0.8, self_replace=0.4, blend_words=[], blend_threshold=0.3, steps=25,
                            guidance=4.0, seed=0, num_images=1)
    argv = shlex.split(edit_command(settings, None))
    assert argv == ["ldmkit", "edit", "--out-dir=out/", "--mode=reweight", "--cross-replace=0.8", "--self-replace=0.4",
                    "--steps=25", "--guidance=4.0", "--seed=0", "--num-images=1",
                    "--", "a red circle", "a red(2) circle"]
    with TestClient(create_app(tiny_pipe, model_name=SHIPPED)) as c:
        job = c.post("/v1/edit/jobs", json={"source_prompt": SOURCE, "target_prompt": TARGET, "steps": 1}).json()
    assert job["command"].startswith("ldmkit edit --out-dir=out/ ")


def test_a_seed_left_out_is_filled_in_and_the_settings_reproduce_the_edit(client):
    r = client.post("/v1/edit", json={"source_prompt": SOURCE, "target_prompt": "a red(3) circle on the left",
                                      "mode": "reweight", "steps": 2})
    assert r.status_code == 200, r.text
    settings = r.json()["settings"]
    assert 0 <= settings["seed"] <= 2**32 - 1 and settings["blend_words"] == []
    again = client.post("/v1/edit", json=settings).json()
    assert [p["edit"]["png_base64"] for p in again["pairs"]] == [p["edit"]["png_base64"] for p in r.json()["pairs"]]


def test_edit_jobs_report_progress_and_serve_images_under_the_cli_names(client):
    r = client.post("/v1/edit/jobs", json={"source_prompt": SOURCE, "target_prompt": TARGET, "steps": 4, "seed": 3})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "done") and job["total"] == 4
    assert job["command"].startswith("ldmkit edit --model=tiny --out-dir=out/")
    done = wait_for(client, job["id"], lambda j: j["status"] == "done")
    assert (done["step"], done["total"], done["queue_position"], done["error"]) == (4, 4, None, None)
    pair = done["pairs"][0]
    assert (pair["source"]["filename"], pair["edit"]["filename"]) == ("source.png", "edit.png")
    for image in (pair["source"], pair["edit"]):
        assert decode_png(client.get(image["url"]).content).size == (32, 32)
    base = f"/v1/edit/jobs/{job['id']}"
    for name in ("source_0.png", "0.png", "edit", "..%2Fsource.png"):
        assert client.get(f"{base}/images/{name}").status_code == 404
    # An edit's id is not a generate job's, and the other way round.
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.status_code == 404 and f"/v1/edit/jobs/{job['id']}" in r.json()["detail"]
    generated = client.post("/v1/generate", json={"prompt": "a red circle", "steps": 1}).json()
    assert client.get(f"/v1/edit/jobs/{generated['id']}").status_code == 404
    assert client.delete(f"/v1/edit/jobs/{generated['id']}").status_code == 404
    assert client.get("/v1/edit/jobs/no-such-job").status_code == 404
    assert client.delete("/v1/edit/jobs/no-such-job").status_code == 404


# --------------------------------------------------------------------------------------------------
# the queue: cancelling, deadlines, a full queue


def test_cancel_stops_a_running_edit_between_steps_and_removes_a_waiting_one(tiny_pipe, edit_pipe):  # noqa: F811
    c, gated = gated_client(tiny_pipe, edit_pipe)
    gated.gate.clear()
    with c:
        body = {"source_prompt": SOURCE, "target_prompt": TARGET, "steps": 50}
        running = c.post("/v1/edit/jobs", json=body).json()
        assert gated.running.wait(10)
        waiting = c.post("/v1/edit/jobs", json=body).json()
        assert waiting["queue_position"] == 1
        assert c.delete(f"/v1/edit/jobs/{waiting['id']}").json()["status"] == "cancelled"
        c.delete(f"/v1/edit/jobs/{running['id']}")
        gated.gate.set()
        job = wait_for(c, running["id"], lambda j: j["status"] != "running")
        assert job["status"] == "cancelled" and 0 < job["step"] < 50 and job["pairs"] == []
        assert c.get(f"/v1/edit/jobs/{running['id']}/images/edit.png").status_code == 404
        # the worker is free again
        assert c.post("/v1/edit", json={**body, "steps": 1}).status_code == 200
    assert gated.calls == 2


def test_an_edit_past_its_deadline_is_stopped_with_504(tiny_pipe, edit_pipe):  # noqa: F811
    c, _ = gated_client(tiny_pipe, edit_pipe, step_s=0.05, timeout=0.4)
    with c:
        body = {"source_prompt": SOURCE, "target_prompt": TARGET, "steps": 200}
        r = c.post("/v1/edit", json=body)
        assert r.status_code == 504 and "timeout" in r.json()["detail"]
        job = wait_for(c, c.post("/v1/edit/jobs", json=body).json()["id"],
                       lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "timeout" and 0 < job["step"] < 200 and "timeout" in job["error"]


def test_edits_and_generate_jobs_share_one_bounded_queue(tiny_pipe, edit_pipe):  # noqa: F811
    c, gated = gated_client(tiny_pipe, edit_pipe, max_queue=1)
    gated.gate.clear()
    with c:
        body = {"source_prompt": SOURCE, "target_prompt": TARGET, "steps": 2}
        running = c.post("/v1/edit/jobs", json=body).json()
        assert gated.running.wait(10)
        waiting = c.post("/v1/jobs", json={"prompt": "a red circle", "steps": 1})
        assert waiting.status_code == 202 and waiting.json()["queue_position"] == 1
        for route in ("/v1/edit/jobs", "/v1/edit"):
            full = c.post(route, json=body)
            assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1, full.text
            assert "queue is full" in full.json()["detail"]
        gated.gate.set()
        assert wait_for(c, running["id"], lambda j: j["status"] == "done")["step"] == 2
        assert c.post("/v1/edit/jobs", json=body).status_code == 202


# --------------------------------------------------------------------------------------------------
# validation: every invalid request is a 4xx naming the field, before the model runs


VALID = {"source_prompt": "a red circle", "target_prompt": "a blue circle", "steps": 2}
INVALID = [
    ({"source_prompt": ""}, "source_prompt"),
    ({"source_prompt": "   "}, "source_prompt"),  # only whitespace: no more a prompt than ""
    ({"target_prompt": "\n\t"}, "target_prompt"),
    ({"source_prompt": "x" * 501}, "source_prompt"),
    ({"source_prompt": 5}, "source_prompt"),
    ({"source_prompt": None}, "source_prompt"),
    ({"target_prompt": ""}, "target_prompt"),
    ({"target_prompt": "x" * 501}, "target_prompt"),
    ({"target_prompt": ["a blue circle"]}, "target_prompt"),
    ({"mode": "swap"}, "mode"),
    ({"mode": 1}, "mode"),
    ({"cross_replace": -0.1}, "cross_replace"),
    ({"cross_replace": 1.5}, "cross_replace"),
    ({"cross_replace": "0.8"}, "cross_replace"),
    ({"cross_replace": True}, "cross_replace"),
    ({"self_replace": -0.1}, "self_replace"),
    ({"self_replace": 2}, "self_replace"),
    ({"blend_words": "circle"}, "blend_words"),   # a list of words, not a string
    ({"blend_words": [""]}, 0),
    ({"blend_words": ["two words"]}, 0),
    ({"blend_words": ["red,circle"]}, 0),
    ({"blend_words": [5]}, 0),
    ({"blend_words": ["x" * 51]}, 0),
    ({"blend_words": ["circle"] * 17}, "blend_words"),
    ({"blend_threshold": -0.5}, "blend_threshold"),
    ({"blend_threshold": 1.01}, "blend_threshold"),
    ({"blend_threshold": 1.0}, "blend_threshold"),  # an empty mask: the edit would be the source
    ({"guidance": 0.0}, "guidance"),  # the prompts have no effect
    ({"steps": 0}, "steps"),
    ({"steps": 201}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"steps": "10"}, "steps"),
    ({"steps": True}, "steps"),
    ({"guidance": -0.5}, "guidance"),
    ({"guidance": 30.5}, "guidance"),
    ({"guidance": "high"}, "guidance"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": 5}, "num_images"),   # 5 pairs: 10 images, over the batch limit of 8
    ({"num_images": "2"}, "num_images"),
    ({"width": 32}, "width"),            # edits are the model's size: no width or height
    ({"negative_prompt": "x"}, "negative_prompt"),
    ({"sampler": "ddim"}, "sampler"),
    ({"step": 5}, "step"),               # a typo is reported, not ignored
]
# Checked with the tokenizer: prompts that do not align for the mode, blend words in neither prompt.
UNALIGNED = [
    ({"target_prompt": "a big blue circle"}, ["body", "target_prompt"], "refine"),
    ({"target_prompt": "a blue(2) circle", "mode": "reweight"}, ["body", "target_prompt"], "keeps the source"),
    ({"target_prompt": "a red circle", "mode": "reweight"}, ["body", "target_prompt"], "needs a weight"),
    ({"target_prompt": "green square", "mode": "refine"}, ["body", "target_prompt"], "shares no word"),
    ({"target_prompt": "a blue(2 circle"}, ["body", "target_prompt"], "cannot read the weight"),
    ({"source_prompt": "a red(2) circle"}, ["body", "source_prompt"], "go in the target prompt"),
    ({"source_prompt": "a red) circle"}, ["body", "source_prompt"], "cannot read the weight"),
    ({"blend_words": ["circle", "star"]}, ["body", "blend_words", 1], "'star' is not a word"),
]


@pytest.fixture(scope="module")
def counting_client(tiny_pipe, edit_pipe):  # noqa: F811
    c, gated = gated_client(tiny_pipe, edit_pipe)
    with c:
        yield c, gated


@pytest.mark.parametrize("change, field", INVALID, ids=[f"{next(iter(c))}={str(next(iter(c.values())))[:12]}"
                                                       for c, _ in INVALID])
@pytest.mark.parametrize("route", ["/v1/edit", "/v1/edit/jobs"])
def test_each_invalid_field_is_a_422_naming_it(counting_client, route, change, field):
    client, gated = counting_client
    calls = gated.calls
    r = client.post(route, json={**VALID, **change})
    assert r.status_code == 422, r.text
    fields = [e["loc"][-1] for e in r.json()["detail"]]
    assert field in fields, r.json()
    assert all(e["msg"] and e["loc"][0] == "body" for e in r.json()["detail"])
    assert gated.calls == calls, "an invalid request reached the model"


@pytest.mark.parametrize("change, loc, words", UNALIGNED, ids=[str(c)[:40] for c, _, _ in UNALIGNED])
@pytest.mark.parametrize("route", ["/v1/edit", "/v1/edit/jobs"])
def test_prompts_that_do_not_align_and_unknown_blend_words_are_422s(counting_client, route, change, loc, words):
    client, gated = counting_client
    calls = gated.calls
    r = client.post(route, json={**VALID, **change})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == loc and words in error["msg"], error
    assert "--" not in error["msg"]  # the API's field names, not the CLI's options
    assert gated.calls == calls, "an invalid request reached the model"


def test_missing_prompts_broken_json_nan_and_an_oversized_body(counting_client):
    client, gated = counting_client
    r = client.post("/v1/edit", json={"steps": 3})
    assert r.status_code == 422
    assert sorted(e["loc"][-1] for e in r.json()["detail"]) == ["source_prompt", "target_prompt"]
    r = client.post("/v1/edit", content=b'{"source_prompt": "a", ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"
    for field in ("guidance", "cross_replace", "blend_threshold"):
        body = json.dumps(VALID)[:-1] + f', "{field}": NaN}}'
        r = client.post("/v1/edit/jobs", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.text
    big = json.dumps({**VALID, "source_prompt": "x" * 70_000}).encode()
    r = client.post("/v1/edit", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert gated.calls == 0


def test_steps_beyond_the_schedule_are_refused(tiny_pipe):  # noqa: F811
    limits = Limits(latent_factor=8, default_size=32, max_size=128, num_timesteps=50)
    with TestClient(create_app(tiny_pipe, limits=limits)) as c:
        assert c.get("/v1/edit/info").json()["max_steps"] == 50
        r = c.post("/v1/edit", json={**VALID, "steps": 51})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "steps"]


# --------------------------------------------------------------------------------------------------
# a model that cannot edit, the Host guard, the output folder, the page


def test_a_model_that_cannot_edit_says_why_and_answers_501():
    with TestClient(create_app(FakePipeline(), limits=FakePipeline.limits)) as c:
        info = c.get("/v1/edit/info").json()
        assert info["available"] is False and "text model" in info["reason"]
        r = c.post("/v1/edit/jobs", json=VALID)
        assert r.status_code == 501 and r.json()["detail"] == info["reason"]
        assert c.post("/v1/edit", json={**VALID, "steps": 0}).status_code == 422  # the body is checked first
        assert c.post("/v1/generate", json={"prompt": "a", "steps": 1}).status_code == 200  # generating still works
    tokenizer = object()
    student = SimpleNamespace(model=SimpleNamespace(tokenizer=tokenizer, config=SimpleNamespace(
        condition=SimpleNamespace(kind="text"))), is_student=True)
    pipe, reason = edit_pipeline_for(student)
    assert pipe is None and "consistency student" in reason


def test_the_host_guard_covers_the_edit_routes(tiny_pipe):  # noqa: F811
    with TestClient(create_app(tiny_pipe, allowed_hosts={"127.0.0.1"})) as c:
        assert c.get("/v1/edit/info").status_code == 400  # TestClient's Host is "testserver"
        r = c.post("/v1/edit/jobs", json=VALID, headers={"host": "evil.example"})
        assert r.status_code == 400 and "not served here" in r.json()["detail"]
        assert c.get("/v1/edit/info", headers={"host": "127.0.0.1:7860"}).status_code == 200


def test_output_folder_gets_edit_images_under_generated_names(tiny_pipe, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    with TestClient(create_app(tiny_pipe, output_dir=out)) as c:
        r = c.post("/v1/edit", json={"source_prompt": "../../etc/passwd", "target_prompt": "../../etc/shadow",
                                     "steps": 1, "seed": 5, "num_images": 2})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        one = c.post("/v1/edit", json={**VALID, "steps": 1}).json()["id"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{job_id}.json", f"{job_id}_source_0.png", f"{job_id}_edit_0.png", f"{job_id}_source_1.png",
         f"{job_id}_edit_1.png", f"{one}.json", f"{one}_source.png", f"{one}_edit.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    saved = json.loads((out / f"{job_id}.json").read_text())
    assert saved["source_prompt"] == "../../etc/passwd" and saved["num_images"] == 2
    assert Image.open(out / f"{job_id}_edit_1.png").tobytes() == pngs(r.json())[3].tobytes()


def test_info_openapi_and_page_have_the_edit_mode(client):
    info = client.get("/v1/edit/info").json()
    assert info == {
        "model": "tiny", "available": True, "reason": None, "size": 32, "modes": ["replace", "refine", "reweight"],
        "default_steps": 25, "max_steps": 200, "max_images": 4, "max_blend_words": 16, "max_prompt_chars": 500,
        "max_guidance": 30.0}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/edit", "/v1/edit/info", "/v1/edit/jobs", "/v1/edit/jobs/{job_id}",
            "/v1/edit/jobs/{job_id}/images/{name}"} <= set(paths)
    page = client.get("/").text
    assert list(MODES) == info["modes"]  # the schema's copy of the library's modes
    for element in ('id="edit-form"', 'id="source_prompt"', 'id="target_prompt"', 'id="edit_mode"', 'id="tab-edit"'):
        assert element in page
    assert client.get("/static/edit.js").status_code == 200
