"""The AUTOMATIC1111 routes (/sdapi/v1) driven by the real `webuiapi` client over loopback, against a tiny
random-weight model: txt2img bit-identical to the pipeline, every listed sampler, img2img with a mask
(SDEdit on a text model, inpainting on an inpainting model), options, progress and interrupt, the sampler
that ran named in info, null fields read as A1111 reads them, and bad requests answered with the client's
ordinary error."""

from __future__ import annotations

import base64
import io
import json
import shlex
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
webuiapi = pytest.importorskip("webuiapi", reason="the test extra's webuiapi is not installed")
requests = pytest.importorskip("requests")

from fastapi.testclient import TestClient  # noqa: E402

from ldmkit import load_pipeline  # noqa: E402
from ldmkit.pipelines import ImageToImagePipeline  # noqa: E402
from ldmkit.cli import main  # noqa: E402
from ldmkit.serve import create_app  # noqa: E402
from test_serve import FakePipeline  # noqa: E402
from tests.serve_live import inpaint_pipeline, live_server  # noqa: E402
from tests.tiny_models import build_tiny_model  # noqa: E402

PROMPT = "a red circle on the left"
# A1111's names of the samplers a text model runs, and the ldmkit sampler options each must be under webuiapi,
# which sends eta=1.0 on every call: A1111 gives it to DDIM.
EXPECTED_SAMPLERS = {"DDIM": dict(sampler="ddim", eta=1.0), "DDPM": dict(sampler="ddpm"),
                     "Euler": dict(sampler="euler"),
                     "DPM++ 2M": dict(sampler="dpmpp-2m"), "Euler a": dict(sampler="euler-a"),
                     "DPM++ 2M Karras": dict(sampler="dpmpp-2m", karras=True), "PLMS": dict(sampler="plms"),
                     "UniPC": dict(sampler="unipc")}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.getbasetemp() / "serve-tiny-model")


@pytest.fixture(scope="module")
def tiny_pipe(tiny_folder):
    return load_pipeline(tiny_folder)


@pytest.fixture(scope="module")
def server(tiny_pipe):
    with live_server(tiny_pipe, model_name="tiny") as port:
        yield port


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server)


def drawn_by(command: str, folder, out, name: str) -> bytes:
    """The RGB bytes of image ``name`` that the reported ``command`` writes, run with the served model's folder for
    its name ("tiny") and ``out`` for its output folder."""
    argv = [f"--model={folder}" if a == "--model=tiny" else f"--out={out}" if a == "--out=out/" else a
            for a in shlex.split(command)[1:]]
    assert main([argv[0], "--no-progress", *argv[1:]]) == 0
    return Image.open(out / name).convert("RGB").tobytes()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_txt2img_is_bit_identical_to_ldmkit_generate(api, tiny_pipe):
    result = api.txt2img(prompt=PROMPT, seed=7, steps=10, cfg_scale=4, sampler_name="DDIM", eta=0)
    direct = tiny_pipe(PROMPT, steps=10, guidance=4.0, seed=7, sampler="ddim")
    assert len(result.images) == 1
    assert result.image.tobytes() == direct[0].tobytes()
    assert result.info["seed"] == 7 and result.info["all_seeds"] == [7]
    assert (result.info["width"], result.info["height"]) == (32, 32)  # 512, A1111's default, is too large here
    assert result.info["ldmkit"]["sampler"] == "ddim"
    assert "--seed=7" in result.info["ldmkit"]["command"] and "--sampler=ddim" in result.info["ldmkit"]["command"]
    assert "--eta" not in result.info["ldmkit"]["command"] and result.info["not_honoured"] == {}
    assert result.parameters["prompt"] == PROMPT and result.parameters["seed"] == 7


def test_eta_is_ddims_eta_as_in_a1111_and_its_command_carries_it(api, tiny_pipe, tiny_folder, tmp_path):
    """A1111 gives a request's eta to DDIM (its eta_ddim): webuiapi's eta=1.0, sent on every call, runs DDIM with
    η = 1, and the reported command (--eta=1.0) writes the same image; Euler a runs η = 1 whatever eta says, so
    another eta is listed as not honoured; one DDIM cannot take is a 422 naming eta."""
    result = api.txt2img(prompt=PROMPT, seed=7, steps=4, cfg_scale=4, sampler_name="DDIM")  # webuiapi: eta=1.0
    direct = tiny_pipe(PROMPT, steps=4, guidance=4.0, seed=7, sampler="ddim", eta=1.0)
    assert result.image.tobytes() == direct[0].tobytes()
    assert result.info["not_honoured"] == {} and result.info["ldmkit"]["settings"]["eta"] == 1.0
    assert "Eta DDIM: 1.0" in result.info["infotexts"][0]
    command = result.info["ldmkit"]["command"]
    assert "--eta=1.0" in command
    assert drawn_by(command, tiny_folder, tmp_path, "7_000.png") == result.image.convert("RGB").tobytes()
    half = api.txt2img(prompt=PROMPT, seed=7, steps=4, cfg_scale=4, sampler_name="DDIM", eta=0.5)
    assert half.image.tobytes() == tiny_pipe(PROMPT, steps=4, guidance=4.0, seed=7, sampler="ddim",
                                             eta=0.5)[0].tobytes()
    for sampler, eta, listed in (("Euler a", 1.0, {}), ("Euler a", 0.0, {"eta": 0.0}), ("Euler", 1.0, {})):
        _, info = txt2img(api, prompt=PROMPT, steps=2, seed=1, sampler_name=sampler, eta=eta)
        assert info["not_honoured"] == listed and info["ldmkit"]["settings"]["eta"] == 0.0, (sampler, eta)
    r = requests.post(f"{api.baseurl}/txt2img", json={"prompt": PROMPT, "steps": 2, "sampler_name": "DDIM",
                                                      "eta": 1.5}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "eta"], r.text
    assert "0 … 1" in r.json()["detail"][0]["msg"]


def test_fields_ldmkit_cannot_honour_are_listed_in_info(api):
    result = api.txt2img(prompt=PROMPT, seed=1, steps=2, sampler_name="DDIM", restore_faces=True, tiling=True,
                         eta=0, batch_size=2, n_iter=1)
    assert set(result.info["not_honoured"]) == {"restore_faces", "tiling"}
    assert len(result.images) == 2 and result.info["all_seeds"] == [1, 1]


def test_every_listed_sampler_name_runs_as_its_ldmkit_sampler(api, tiny_pipe):
    listed = [s["name"] for s in api.get_samplers()]
    assert listed[0] == "DDIM" and sorted(listed) == sorted(EXPECTED_SAMPLERS)
    for name in listed:
        result = api.txt2img(prompt="a green triangle", seed=3, steps=3, cfg_scale=2.5, sampler_name=name,
                             width=48, height=32)
        direct = tiny_pipe("a green triangle", steps=3, guidance=2.5, seed=3, width=48, height=32,
                           **EXPECTED_SAMPLERS[name])
        assert result.image.size == (48, 32)
        assert result.image.tobytes() == direct[0].tobytes(), name
        assert result.info["ldmkit"]["sampler"] == EXPECTED_SAMPLERS[name]["sampler"]
        assert ("--karras" in result.info["ldmkit"]["command"]) == ("Karras" in name)


def test_euler_a_and_karras_are_bit_identical_to_ldmkit_generate(api, tiny_pipe, tiny_folder, tmp_path):
    """The reported command, run, writes the route's image; A1111 ≥ 1.9's scheduler "Karras" works beside
    a plain name."""
    for request, options in ((dict(sampler_name="Euler a"), dict(sampler="euler-a")),
                             (dict(sampler_name="DPM++ 2M Karras"), dict(sampler="dpmpp-2m", karras=True)),
                             (dict(sampler_name="Euler", scheduler="Karras"), dict(sampler="euler", karras=True))):
        result = api.txt2img(prompt=PROMPT, seed=5, steps=6, cfg_scale=3, **request)
        direct = tiny_pipe(PROMPT, steps=6, guidance=3.0, seed=5, **options)
        assert result.image.tobytes() == direct[0].tobytes(), request
        assert "scheduler" not in result.info["not_honoured"]
        # the reported command, with the model's folder for its served name and a folder of our own
        out = tmp_path / options["sampler"] / str(options.get("karras", False))
        assert drawn_by(result.info["ldmkit"]["command"], tiny_folder, out, "5_000.png") == \
            result.image.convert("RGB").tobytes()


@pytest.mark.parametrize("sampler", ["DPM2", "Heun"])
def test_a_sampler_it_cannot_run_is_refused_with_the_list(api, sampler):
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt=PROMPT, steps=2, sampler_name=sampler)
    status, text = e.value.args
    assert status == 422 and sampler in text
    assert "DDIM, DDPM, Euler, DPM++ 2M, Euler a, PLMS, UniPC, DPM++ 2M Karras" in text


@pytest.mark.parametrize("change, field", [({"steps": 0}, "steps"), ({"width": 34}, "width"),
                                           ({"height": 1024}, "height"), ({"cfg_scale": 99}, "cfg_scale"),
                                           ({"batch_size": 4, "n_iter": 3}, "n_iter"), ({"seed": 2**32}, "seed")])
def test_a_bad_request_is_a_422_naming_the_field(api, change, field):
    start = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt=PROMPT, sampler_name="DDIM", **change)
    status, text = e.value.args
    assert status == 422 and f'"{field}"' in text
    assert time.monotonic() - start < 10


def test_img2img_with_a_mask_on_a_text_model_changes_only_the_masked_pixels(api):
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    result = api.img2img(images=[source], mask_image=mask, prompt="a blue square", seed=5, steps=6,
                         denoising_strength=0.8, sampler_name="DDIM", cfg_scale=3)
    out, src, inside = pixels(result.image), pixels(source), np.asarray(mask) > 127
    assert out.shape == src.shape
    assert (out[~inside] == src[~inside]).all()
    assert (out[inside] != src[inside]).any()
    assert result.info["ldmkit"]["mode"] == "img2img-masked" and result.info["denoising_strength"] == 0.8
    assert result.parameters["init_images"] is None  # A1111 leaves the images out of the echo
    # webuiapi sends A1111's mask_blur 4; ldmkit takes the mask as sent, unblurred, and says so
    assert result.info["not_honoured"] == {"mask_blur": 4}
    # the same request without a mask changes the whole image (SDEdit), from the same seed
    whole = api.img2img(images=[source], prompt="a blue square", seed=5, steps=6, denoising_strength=0.8,
                        sampler_name="DDIM", cfg_scale=3)
    assert whole.info["ldmkit"]["mode"] == "img2img" and whole.info["not_honoured"] == {}
    assert (pixels(whole.image)[inside] == out[inside]).all()


def test_img2img_reads_strokes_on_a_transparent_layer_as_a1111_does(api):
    """A1111's create_binary_mask: a mask whose alpha channel is not fully opaque repaints where it is opaque,
    whatever its colour (black strokes here); inpainting_mask_invert swaps the two."""
    source = Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    strokes = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    strokes.paste((0, 0, 0, 255), (8, 8, 24, 24))
    inside = np.zeros((32, 32), bool)
    inside[8:24, 8:24] = True
    for invert, repainted in ((0, inside), (1, ~inside)):
        result = api.img2img(images=[source], mask_image=strokes, inpainting_mask_invert=invert, prompt="a",
                             seed=5, steps=2, sampler_name="DDIM", mask_blur=0)
        out, src = pixels(result.image), pixels(source)
        assert (out[~repainted] == src[~repainted]).all() and (out[repainted] != src[repainted]).any(), invert
        assert result.info["ldmkit"]["mode"] == "img2img-masked" and "mask_blur" not in result.info["not_honoured"]


def test_a_mask_that_selects_no_pixel_is_no_mask(api):
    """As an empty mask: img2img over the whole image, with a note saying why."""
    source = b64png(Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    for mask in (Image.new("L", (32, 32), 0), Image.new("RGBA", (32, 32), (255, 255, 255, 0))):
        r = requests.post(f"{api.baseurl}/img2img", json={"init_images": [source], "mask": b64png(mask),
                                                          "prompt": "a", "steps": 2, "seed": 1, "mask_blur": 4},
                          timeout=60)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["ldmkit"]["mode"] == "img2img" and "mask_blur" not in info["not_honoured"], mask.mode
        assert any("selects no pixel" in note for note in info["ldmkit"]["notes"])


def test_img2img_with_a_mask_inpaints_with_an_inpainting_model(tiny_pipe, tmp_path_factory):
    """From the image noised to denoising_strength (webuiapi's 0.7), as A1111 inpaints with an inpainting
    model; at 1 from noise, the inpainting model's own start; the prompt read in A1111's syntax, as txt2img's."""
    inpaint = inpaint_pipeline(tmp_path_factory.getbasetemp() / "serve-tiny-inpaint")
    source = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 255)
    mask.paste(0, (0, 0, 32, 16))  # repaint the bottom half; invert: the top half
    results = {}
    with live_server(tiny_pipe, model_name="tiny", inpaint_pipeline=inpaint) as port:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
        for strength in (0.7, 1.0):
            results[strength] = api.img2img(images=[source], mask_image=mask, inpainting_mask_invert=1,
                                            prompt="a (red:1.5) circle", seed=2, steps=3, sampler_name="DDIM", cfg_scale=1,
                                            eta=0, denoising_strength=strength)
    for strength, result in results.items():
        assert result.info["ldmkit"]["mode"] == "inpaint"
        assert not any("denoising_strength" in note or "as written" in note for note in result.info["ldmkit"]["notes"])
        assert result.info["ldmkit"]["settings"]["prompt_syntax"] == "a1111"
        expected = inpaint(source, Image.eval(mask, lambda v: 255 - v), "a (red:1.5) circle", steps=3, guidance=1.0,
                           seed=2, sampler="ddim", strength=strength, prompt_syntax="a1111")
        assert result.image.tobytes() == expected[0].tobytes(), strength
        assert (pixels(result.image)[16:] == pixels(source)[16:]).all()  # the kept half, pixel for pixel
    assert results[0.7].image.tobytes() != results[1.0].image.tobytes()


@pytest.mark.parametrize("strength, says", [(0.01, "denoising_strength = 0.01 runs none of the 50 steps"),
                                            (0.0, "denoising_strength = 0.0; must be a number in (0, 1]")])
def test_a_denoising_strength_that_runs_no_step_is_a_422_naming_it_before_any_job(api, strength, says):
    """int(0.01 · 50) = 0 steps: refused at once with the smallest strength that runs one (0.02); 0, which in
    A1111 returns the input, is refused too. Nothing is queued: the answer comes before any sampling."""
    source = b64png(Image.new("RGB", (32, 32), (200, 30, 30)))
    start = time.monotonic()
    r = requests.post(f"{api.baseurl}/img2img", json={"init_images": [source], "prompt": "a", "seed": 1,
                                                      "denoising_strength": strength}, timeout=30)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "denoising_strength"] and says in error["msg"], error
    assert strength == 0 or "smallest strength that runs one at 50 steps is 0.02" in error["msg"]
    assert api.get_progress()["state"]["job_count"] == 0 and time.monotonic() - start < 5


def test_img2img_refuses_an_unreadable_or_misfit_image(api):
    with pytest.raises(RuntimeError) as e:
        api.img2img(images=[Image.new("RGB", (30, 30))], prompt="a", steps=2, sampler_name="DDIM")
    assert e.value.args[0] == 422 and "init_images" in e.value.args[1] and "multiple of 4" in e.value.args[1]
    r = requests.post(f"{api.baseurl}/img2img", json={"init_images": ["not base64!"], "prompt": "a"}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"]


def test_models_and_options_name_the_served_model_and_refuse_another(api):
    assert [m["title"] for m in api.get_sd_models()] == ["tiny"]
    assert api.get_options()["sd_model_checkpoint"] == "tiny"
    assert api.set_options({"sd_model_checkpoint": "tiny"}) == {"not_honoured": []}
    r = requests.post(f"{api.baseurl}/options", json={"sd_model_checkpoint": "sdxl.safetensors"}, timeout=10)
    assert r.status_code == 422 and "'tiny'" in r.text and "sdxl.safetensors" in r.text
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt=PROMPT, steps=2, sampler_name="DDIM",
                    override_settings={"sd_model_checkpoint": "sdxl.safetensors"})
    assert e.value.args[0] == 422


def test_progress_follows_a_running_job_and_interrupt_stops_it(api):
    outcome = {}

    def long_job():
        try:
            api.txt2img(prompt=PROMPT, steps=200, batch_size=8, width=128, height=128, sampler_name="DDIM")
        except RuntimeError as e:
            outcome["error"] = e.args

    assert api.get_progress()["progress"] == 0.0
    thread = threading.Thread(target=long_job)
    thread.start()
    deadline = time.monotonic() + 60
    while (progress := api.get_progress())["state"]["sampling_step"] < 1:
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)
    assert progress["state"]["sampling_steps"] == 200 and 0 < progress["progress"] < 1
    api.interrupt()
    thread.join(30)
    assert not thread.is_alive()
    assert outcome["error"][0] == 409 and "interrupted" in outcome["error"][1]
    assert api.get_progress()["state"]["job"] == ""


def b64png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def txt2img(api, **body) -> tuple[dict, dict]:
    """POST txt2img with exactly ``body`` (webuiapi would add its own defaults): (the answer, its info)."""
    r = requests.post(f"{api.baseurl}/txt2img", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json(), json.loads(r.json()["info"])


@pytest.mark.parametrize("request_fields, sampler, karras, named, infotext", [
    ({"sampler_index": "Euler"}, "euler", False, "Euler", "Sampler: Euler, CFG scale"),
    ({"sampler_index": "k_dpmpp_2m_ka"}, "dpmpp-2m", True, "DPM++ 2M Karras", "Sampler: DPM++ 2M Karras, CFG scale"),
    ({"sampler_name": "DPM++ 2M", "scheduler": "Karras"}, "dpmpp-2m", True, "DPM++ 2M Karras",
     "Sampler: DPM++ 2M Karras, CFG scale"),
    ({"sampler_name": "Euler", "scheduler": "Karras"}, "euler", True, "Euler",
     "Sampler: Euler, Schedule type: Karras, CFG scale"),  # A1111 ≥ 1.9's words: it has no "Euler Karras"
    ({}, "ddim", False, "DDIM", "Sampler: DDIM, CFG scale"),
])
def test_info_names_the_sampler_that_ran_in_a1111s_words(api, request_fields, sampler, karras, named, infotext):
    _, info = txt2img(api, prompt=PROMPT, steps=2, seed=1, **request_fields)
    assert (info["ldmkit"]["settings"]["sampler"], info["ldmkit"]["settings"]["karras"]) == (sampler, karras)
    assert info["sampler_name"] == named
    assert infotext in info["infotexts"][0], info["infotexts"][0]


def test_null_fields_take_their_defaults_as_in_a1111(api, tiny_pipe):
    nulls = dict.fromkeys(["negative_prompt", "sampler_name", "sampler_index", "batch_size", "n_iter", "cfg_scale",
                           "width", "height", "override_settings", "seed"])
    answer, info = txt2img(api, prompt=PROMPT, steps=None, **nulls)
    assert (info["steps"], info["cfg_scale"], info["batch_size"], info["sampler_name"]) == (50, 7.0, 1, "DDIM")
    assert 0 <= info["seed"] < 2**32  # null: random, as -1
    answer, info = txt2img(api, prompt=PROMPT, steps=3, seed=4, cfg_scale=None, sampler_name=None)
    direct = tiny_pipe(PROMPT, steps=3, guidance=7.0, seed=4, sampler="ddim")
    assert Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).tobytes() == direct[0].tobytes()


def test_an_empty_mask_is_no_mask(api):
    source = b64png(Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    for mask in ("", None):
        r = requests.post(f"{api.baseurl}/img2img", json={"init_images": [source], "mask": mask, "prompt": "a",
                                                          "steps": 2, "seed": 1}, timeout=60)
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["ldmkit"]["mode"] == "img2img"


def test_a_txt2img_body_carrying_an_image_is_read_and_its_field_listed_as_not_honoured(api):
    control = {"controlnet": {"args": [{"image": "A" * 200_000, "module": "canny"}]}}
    _, info = txt2img(api, prompt=PROMPT, steps=2, seed=1, alwayson_scripts=control)
    assert info["not_honoured"] == {"alwayson_scripts": control}


def test_a_size_the_model_cannot_draw_is_a_422_naming_it(api):
    r = requests.post(f"{api.baseurl}/txt2img", json={"prompt": PROMPT, "steps": 2, "width": 8, "height": 8},
                      timeout=30)
    assert r.status_code == 422, r.text
    assert sorted(e["loc"][-1] for e in r.json()["detail"]) == ["height", "width"]
    assert "4x12 and 12x4" in r.json()["detail"][0]["msg"]
    r = requests.post(f"{api.baseurl}/img2img", json={"init_images": [b64png(Image.new("RGB", (8, 8)))],
                                                      "prompt": PROMPT, "steps": 2}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"], r.text
    for data in ("data:", "data:image/png;base64"):
        r = requests.post(f"{api.baseurl}/img2img", json={"init_images": [data], "prompt": PROMPT}, timeout=30)
        assert r.status_code == 422 and "not base64 of an image" in r.json()["detail"][0]["msg"], r.text


def test_errors_other_than_validation_take_a1111s_shape(api):
    r = requests.post(f"{api.baseurl}/options", data=b'{"x": "' + b"y" * 70_000 + b'"}',
                      headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert set(r.json()) == {"error", "detail", "body", "errors"} and "larger than" in r.json()["detail"]
    r = requests.get(f"{api.baseurl}/no-such-route", timeout=30)
    assert r.status_code == 404 and set(r.json()) == {"error", "detail", "body", "errors"}


def test_send_images_false_answers_no_images_as_a1111_does(api):
    result = api.txt2img(prompt=PROMPT, seed=2, steps=2, sampler_name="DDIM", send_images=False)
    assert result.images == [] and result.info["seed"] == 2 and "send_images" not in result.info["not_honoured"]


def test_long_prompts_are_taken_as_a1111_takes_them_up_to_a_generous_bound(api):
    """A1111 bounds no prompt, and long negative prompts are pasted in routinely: thousands of characters run
    (the tokenizer reads what fits the model); only a body-sized one, past 20 000 characters, is a 422."""
    negative = ", ".join(["lowres", "bad anatomy", "bad hands", "text", "error", "missing fingers"] * 60)
    assert len(negative) > 2000
    answer, info = txt2img(api, prompt=PROMPT + ", masterpiece" * 100, negative_prompt=negative, steps=2, seed=1)
    assert info["negative_prompt"] == negative and len(answer["images"]) == 1
    for field in ("prompt", "negative_prompt"):
        r = requests.post(f"{api.baseurl}/txt2img", json={"prompt": PROMPT, "steps": 2, field: "a" * 20_001},
                          timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.text
        assert "20000" in r.json()["detail"][0]["msg"]


def test_txt2img_reads_a1111s_prompt_syntax_and_its_command_does_too(api, tiny_pipe, tiny_folder, tmp_path):
    """A1111's emphasis ((word:1.5), [word], BREAK) and long prompts are read as A1111 reads them (the pipeline's
    prompt_syntax a1111), and the reported command (--prompt-syntax=a1111) writes the same image; img2img as well."""
    prompt = "a (red:1.5) circle BREAK [on the left]"
    result = api.txt2img(prompt=prompt, seed=3, steps=3, cfg_scale=4, sampler_name="Euler")
    direct = tiny_pipe(prompt, steps=3, guidance=4.0, seed=3, sampler="euler", prompt_syntax="a1111")
    assert result.image.tobytes() == direct[0].tobytes()
    assert result.info["ldmkit"]["settings"]["prompt_syntax"] == "a1111"  # (this tiny model's image ignores prompts)
    command = result.info["ldmkit"]["command"]
    assert "--prompt-syntax=a1111" in command
    assert drawn_by(command, tiny_folder, tmp_path, "3_000.png") == result.image.convert("RGB").tobytes()
    long = ", ".join(["a red circle on the left"] * 30)  # far past the tokenizer's length: read in chunks, not cut
    assert len(api.txt2img(prompt=long, negative_prompt="blue", seed=1, steps=2, sampler_name="Euler").images) == 1
    source = b64png(Image.new("RGB", (32, 32), "white"))
    r = requests.post(f"{api.baseurl}/img2img", json={"init_images": [source], "prompt": prompt, "steps": 4,
                                                      "denoising_strength": 0.5, "seed": 2}, timeout=60)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["ldmkit"]["settings"]["prompt_syntax"] == "a1111"
    direct = ImageToImagePipeline.from_folder(tiny_folder)(Image.new("RGB", (32, 32), "white"), prompt, strength=0.5,
                                                           num_inference_steps=4, generator=2, prompt_syntax="a1111")
    served = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB")
    assert served.tobytes() == direct.images[0].convert("RGB").tobytes()


def test_progress_estimates_the_time_left_from_the_running_jobs_step_rate():
    """eta_relative (A1111: seconds left) is the running job's time so far per step times the steps left, and
    job_timestamp when it started, as A1111 writes it; both 0 / "0" with no job running."""
    pipe = FakePipeline(step_s=0.05)
    with TestClient(create_app(pipe, limits=FakePipeline.limits, model_name="fake")) as client:
        idle = client.get("/sdapi/v1/progress").json()
        assert (idle["eta_relative"], idle["state"]["job_timestamp"]) == (0.0, "0")
        before = time.strftime("%Y%m%d%H%M%S")
        answer = {}
        thread = threading.Thread(target=lambda: answer.update(r=client.post(
            "/sdapi/v1/txt2img", json={"prompt": "a", "steps": 40, "sampler_name": "DDIM"})))
        thread.start()
        deadline = time.monotonic() + 30
        while (progress := client.get("/sdapi/v1/progress").json())["state"]["sampling_step"] < 4:
            assert time.monotonic() < deadline, progress
            time.sleep(0.02)
        step = progress["state"]["sampling_step"]
        # at least the 0.05 s each step sleeps, for each step left (the measured rate includes the sleeps)
        assert 0.05 * (40 - step) * 0.9 <= progress["eta_relative"] < 60, progress
        assert before <= progress["state"]["job_timestamp"] <= time.strftime("%Y%m%d%H%M%S"), progress
        client.post("/sdapi/v1/interrupt")
        thread.join(30)
        assert answer["r"].status_code == 409
