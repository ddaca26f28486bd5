"""Several models in one server (issue 22, item 3): five tiny random-weight models of four kinds served
together over loopback, each route family (ldmkit's jobs, Prompt-to-Prompt edits, AUTOMATIC1111 through
`webuiapi`, OpenAI through `openai`) running the model it names, on one queue; unknown models refused in
each family's error shape; A1111's server-wide checkpoint switched by POST options; and `ldmkit serve
--model NAME=DIR` refusing a bad argument in one line before it listens.

Every image is compared with the one its model's own pipeline draws from the same settings, so a request
run on the wrong model fails (the two text models have different weights: `build_attentive_tiny_model`).
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import socket
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
webuiapi = pytest.importorskip("webuiapi", reason="the test extra's webuiapi is not installed")
openai = pytest.importorskip("openai", reason="the test extra's openai is not installed")
requests = pytest.importorskip("requests")
from fastapi.testclient import TestClient  # noqa: E402

from ldmkit.cli import build_parser, main  # noqa: E402
from ldmkit.cli.serve import load_models, model_specs  # noqa: E402
from ldmkit.errors import UsageError  # noqa: E402
from ldmkit.pipelines import ImageToImagePipeline  # noqa: E402
from ldmkit.pipelines.by_kind import load_any_pipeline  # noqa: E402
from ldmkit.serve import create_app  # noqa: E402
from ldmkit.serve.served import served_model  # noqa: E402
from test_serve import FakePipeline, wait_for  # noqa: E402
from tests.serve_live import live_server  # noqa: E402
from tests.tiny_models import CLASSES, build_attentive_tiny_model, build_tiny_model  # noqa: E402

PROMPT = "a red circle on the left"
# name → (folder under pytest's base temp, preset); the folders other serve tests build are shared.
MODELS = {"txt": ("serve-tiny-model", "tiny"), "txt2": ("serve-tiny-attentive", "tiny"),
          "sr": ("serve-tiny-sr", "tiny-sr"), "cls": ("serve-tiny-class", "tiny-class"),
          "inp": ("serve-tiny-inpaint", "tiny-inpaint")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    out = {name: build_tiny_model(base / folder, preset) for name, (folder, preset) in MODELS.items() if name != "txt2"}
    out["txt2"] = build_attentive_tiny_model(base / MODELS["txt2"][0])
    return out


@pytest.fixture(scope="module")
def pipes(folders):
    return {name: load_any_pipeline(folder) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def base(folders, pipes):
    """The five models served together, "txt" first (the default); yields the server's base URL."""
    models = [served_model(name, pipes[name], command_model=str(folders[name])) for name in MODELS]
    with live_server(models=models) as port:
        yield f"http://127.0.0.1:{port}"


def b64png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def rgb(images) -> list[bytes]:
    return [image.convert("RGB").tobytes() for image in images]


def noise(size: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def draw(base: str, body: dict) -> dict:
    r = requests.post(f"{base}/v1/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def run_command(command: str, folder, inputs: dict) -> None:
    """Run a reported `ldmkit` command in ``folder`` (its ``out/``), with ``inputs`` (images, or a file's bytes)
    written there under the names the command reads."""
    folder.mkdir(parents=True)
    for name, image in inputs.items():
        (folder / name).write_bytes(image) if isinstance(image, bytes) else image.save(folder / name)
    argv = [a.replace("--out=out/", f"--out={folder}/") for a in shlex.split(command)[1:]]
    argv = [str(folder / a) if a in inputs else a.replace("--mask=", f"--mask={folder}/") for a in argv]
    assert main([argv[0], "--no-progress", *argv[1:]]) == 0


# --------------------------------------------------------------------------------------------------
# the model list of each family


def test_every_family_lists_every_model(base):
    models = requests.get(f"{base}/v1/ldmkit/models", timeout=10).json()["models"]
    assert [(m["id"], m["kind"], m["default"]) for m in models] == [
        ("txt", "text", True), ("txt2", "text", False), ("sr", "sr", False), ("cls", "class", False),
        ("inp", "inpaint", False)]
    by_id = {m["id"]: m for m in models}
    assert by_id["txt"]["modes"] == ["generate", "img2img"] and by_id["txt"]["can_edit"]
    assert by_id["sr"]["modes"] == ["upscale"] and by_id["sr"]["sr_factor"] == 4 and not by_id["sr"]["can_edit"]
    assert by_id["sr"]["required"] == {"upscale": ["image"]} and "binding" not in by_id["sr"]["accepts"]["upscale"]
    assert by_id["cls"]["modes"] == ["class"] and by_id["cls"]["classes"] == list(CLASSES)
    assert by_id["inp"]["required"] == {"inpaint": ["image", "mask"]}
    assert [m["id"] for m in requests.get(f"{base}/v1/models", timeout=10).json()["data"]] == list(MODELS)
    assert [m["title"] for m in requests.get(f"{base}/sdapi/v1/sd-models", timeout=10).json()] == list(MODELS)


# --------------------------------------------------------------------------------------------------
# ldmkit's own routes


def test_a_job_runs_on_the_model_it_names_and_on_the_first_without_one(base, pipes):
    first = draw(base, {"prompt": PROMPT, "steps": 3, "seed": 5})
    other = draw(base, {"model": "txt2", "prompt": PROMPT, "steps": 3, "seed": 5})
    assert (first["settings"]["model"], other["settings"]["model"]) == ("txt", "txt2")
    for result, name in ((first, "txt"), (other, "txt2")):
        direct = pipes[name](PROMPT, num_inference_steps=3, generator=5, guidance_scale=4.0)
        assert rgb([decoded(result["images"][0]["png_base64"])]) == rgb(direct), name
    assert first["images"][0]["png_base64"] != other["images"][0]["png_base64"]
    assert "--model=" in first["images"][0]["command"] and "serve-tiny-attentive" in other["images"][0]["command"]


def test_each_mode_runs_its_model_and_its_command_writes_the_same_image(base, pipes, folders, tmp_path):
    small = noise(8, 1)
    result = draw(base, {"model": "sr", "image": b64png(small), "image_name": "low res.png", "steps": 3, "seed": 4})
    settings, image = result["settings"], result["images"][0]
    assert (settings["mode"], settings["width"], settings["height"], settings["guidance"]) == ("upscale", 32, 32, 1.0)
    served = decoded(image["png_base64"])
    direct = pipes["sr"](small, num_inference_steps=3, guidance_scale=1.0, generator=4)
    assert rgb([served]) == rgb(direct)
    # The command names the model's folder and the uploaded file, and writes the image the route drew.
    argv = shlex.split(image["command"])
    assert argv[:2] == ["ldmkit", "upscale"] and f"--model={folders['sr']}" in argv
    assert argv[-2:] == ["--", "low res.png"] and image["filename"] == "4_000.png"
    run_command(image["command"], tmp_path / "sr", {"low res.png": small})
    assert Image.open(tmp_path / "sr" / "4_000.png").convert("RGB").tobytes() == served.tobytes()

    classes = draw(base, {"model": "cls", "class_name": "square", "steps": 2, "seed": 6, "num_images": 2})
    served = [decoded(i["png_base64"]) for i in classes["images"]]
    direct = pipes["cls"]("square", num_inference_steps=2, guidance_scale=4.0, generator=6, num_images_per_prompt=2)
    assert rgb(served) == rgb(direct)
    assert "--class=square" in shlex.split(classes["images"][0]["command"])
    run_command(classes["images"][0]["command"], tmp_path / "cls", {})
    assert rgb(Image.open(tmp_path / "cls" / f"6_00{k}.png") for k in range(2)) == rgb(served)

    source, mask = noise(32, 2), Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    inpainted = draw(base, {"model": "inp", "image": b64png(source), "mask": b64png(mask), "prompt": "a blue square",
                            "steps": 2, "seed": 3})
    served = decoded(inpainted["images"][0]["png_base64"])
    direct = pipes["inp"](source, mask, "a blue square", num_inference_steps=2, guidance_scale=1.0, generator=3)
    assert rgb([served]) == rgb(direct)
    assert "--mask=mask.png" in shlex.split(inpainted["images"][0]["command"])
    run_command(inpainted["images"][0]["command"], tmp_path / "inp", {"image.png": source, "mask.png": mask})
    assert Image.open(tmp_path / "inp" / "3_000.png").convert("RGB").tobytes() == served.tobytes()


def file_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def awkward_file(name: str) -> bytes:
    """A file that PIL's plain ``convert("RGB")`` reads otherwise than `ldmkit.images.load_image`: transparent
    pixels whose colour is black (RGBA, LA), a 16-bit grey PNG, a JPEG stored 48×32 with EXIF orientation 6
    (upright 32×48), and a 16-bit grey mask whose left half is 30000 (keep: 117 in 8 bits) and right half
    40000 (repaint: 156; PIL's convert clips both to 255)."""
    rng = np.random.default_rng(7)
    if name == "rgba.png":
        pixels = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
        pixels[:, :16] = 0
        return file_bytes(Image.fromarray(pixels, "RGBA"))
    if name == "la.png":
        pixels = rng.integers(0, 256, (32, 32, 2), dtype=np.uint8)
        pixels[:16] = 0
        return file_bytes(Image.fromarray(pixels, "LA"))
    if name == "grey16.png":
        return file_bytes(Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)))
    if name == "mask16.png":
        levels = np.full((32, 32), 40000, dtype=np.uint16)
        levels[:, :16] = 30000
        return file_bytes(Image.fromarray(levels))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    return file_bytes(noise(48, 7).crop((0, 0, 48, 32)), "JPEG", exif=exif, quality=95)


@pytest.mark.parametrize("name", ["rgba.png", "la.png", "grey16.png", "exif6.jpg"])
def test_an_uploaded_image_is_read_as_the_cli_reads_its_file(base, tmp_path, name):
    """/v1/generate and A1111's img2img draw from an upload what the reported command draws from the file:
    transparency over white, 16 bits scaled to 8, EXIF orientation applied."""
    data = base64.b64encode(awkward_file(name)).decode()
    result = draw(base, {"mode": "img2img", "image": data, "image_name": name, "prompt": PROMPT, "steps": 2,
                         "seed": 3})
    served = decoded(result["images"][0]["png_base64"])
    assert served.size == ((32, 48) if name == "exif6.jpg" else (32, 32))
    run_command(result["images"][0]["command"], tmp_path / "cli", {name: awkward_file(name)})
    assert Image.open(tmp_path / "cli" / "3_000.png").convert("RGB").tobytes() == served.tobytes()
    r = requests.post(f"{base}/sdapi/v1/img2img", json={
        "init_images": [data], "prompt": PROMPT, "steps": 2, "seed": 3, "cfg_scale": 4, "denoising_strength": 0.6,
        "sampler_name": "DDIM", "override_settings": {"sd_model_checkpoint": "txt"}}, timeout=60)
    assert r.status_code == 200, r.text
    assert decoded(r.json()["images"][0]).tobytes() == served.tobytes()


def test_an_uploaded_mask_is_read_as_ldmkit_inpaint_reads_its_file(base, tmp_path):
    image, mask = awkward_file("rgba.png"), awkward_file("mask16.png")
    result = draw(base, {"model": "inp", "image": base64.b64encode(image).decode(), "prompt": "a blue square",
                         "mask": base64.b64encode(mask).decode(), "steps": 2, "seed": 4})
    served = np.asarray(decoded(result["images"][0]["png_base64"]))
    run_command(result["images"][0]["command"], tmp_path / "cli", {"image.png": image, "mask.png": mask})
    assert (np.asarray(Image.open(tmp_path / "cli" / "4_000.png").convert("RGB")) == served).all()
    assert (served[:, :16] == 255).all()  # the kept left half: transparent, so white, as the CLI reads it


def bomb_png() -> bytes:
    """A 1×1 PNG whose header says 20000×20000: more pixels than PIL opens (its DecompressionBombError)."""
    data = bytearray(file_bytes(Image.new("RGB", (1, 1))))
    header = struct.pack(">II", 20000, 20000) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def test_an_image_too_large_for_pil_to_open_is_each_apis_4xx(base):
    data = base64.b64encode(bomb_png()).decode()
    r = requests.post(f"{base}/v1/generate", json={"mode": "img2img", "image": data, "prompt": PROMPT}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image"], r.text
    assert "at most" in r.json()["detail"][0]["msg"]
    r = requests.post(f"{base}/sdapi/v1/img2img", json={"init_images": [data], "prompt": PROMPT}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"], r.text
    r = requests.post(f"{base}/v1/images/edits", files={"image": ("i.png", bomb_png())},
                      data={"prompt": PROMPT, "model": "inp"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
    assert r.json()["error"]["code"] == "invalid_image"


def test_jobs_of_several_models_follow_and_serve_their_images(base):
    """/v1/jobs: queue on a named model and mode, follow it, fetch its PNG; an image over the plain 64 KiB
    body limit is taken, since the server has models that start from an image."""
    big = noise(128, 3)  # ~65 KB as PNG, ~87 KB in base64
    r = requests.post(f"{base}/v1/jobs", json={"model": "txt2", "mode": "img2img", "image": b64png(big),
                                               "prompt": "a green triangle", "strength": 0.5, "steps": 2, "seed": 1},
                      timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for _ in range(600):
        job = requests.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] not in ("queued", "running"):
            break
        threading.Event().wait(0.05)
    assert job["status"] == "done", job
    assert (job["settings"]["model"], job["settings"]["mode"], job["settings"]["strength"]) == ("txt2", "img2img", 0.5)
    assert "ldmkit img2img" in job["images"][0]["command"] and "--strength=0.5" in job["images"][0]["command"]
    png = requests.get(f"{base}{job['images'][0]['url']}", timeout=10)
    assert Image.open(io.BytesIO(png.content)).size == (128, 128)


@pytest.mark.parametrize("route", ["/v1/generate", "/v1/jobs", "/v1/edit", "/v1/edit/jobs"])
def test_an_unknown_model_is_a_422_naming_the_field_and_the_models(base, route):
    body = {"source_prompt": PROMPT, "target_prompt": PROMPT} if "edit" in route else {"prompt": PROMPT}
    r = requests.post(f"{base}{route}", json={**body, "model": "sdxl"}, timeout=10)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "model"] and "'sdxl'" in error["msg"]
    assert all(f"'{name}'" in error["msg"] for name in MODELS)
    r = requests.get(f"{base}/v1/edit/info", params={"model": "sdxl"}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "model"]


@pytest.mark.parametrize("body, fields", [
    ({"model": "sr", "prompt": PROMPT, "binding": 0.3}, ["binding", "image"]),  # not a field of upscale; no image
    ({"model": "sr", "mode": "generate", "prompt": PROMPT}, ["mode"]),           # not a mode of sr
    ({"model": "cls", "class_name": "hexagon"}, ["class_name"]),                 # not one of its classes
    ({"model": "cls", "prompt": PROMPT}, ["class_name", "prompt"]),
    ({"model": "inp", "image": "AAAA", "mask": "not base64!"}, ["image", "mask"]),
    ({"model": "sr", "image": "__BIG__"}, ["image"]),                            # 40 px × 4: over the largest side
    ({"mode": "img2img", "prompt": PROMPT}, ["image"]),
    # sizes each model's pipeline would refuse: 8x8 leaves the tiny UNets' lowest level 1x1
    ({"model": "cls", "class_name": "circle", "width": 8, "height": 8}, ["height", "width"]),
    ({"model": "inp", "image": "__8PX__", "mask": "__8PX__"}, ["image", "mask"]),
    ({"model": "sr", "image": "__2PX__"}, ["image"]),                            # 2 px × 4: 8x8
    ({"model": "sr", "image": "data:"}, ["image"]),                              # the page's 0-byte file
])
def test_what_a_mode_cannot_take_is_a_422_naming_each_field(base, body, fields):
    sides = {"__BIG__": 40, "__8PX__": 8, "__2PX__": 2}
    body = {k: b64png(noise(sides[v], 0)) if v in sides else v for k, v in body.items()}
    r = requests.post(f"{base}/v1/generate", json=body, timeout=10)
    assert r.status_code == 422, r.text
    assert sorted(e["loc"][-1] for e in r.json()["detail"]) == fields


def test_edits_run_on_the_model_they_name(base, folders):
    body = {"source_prompt": PROMPT, "target_prompt": "a blue circle on the left", "steps": 2, "seed": 1}
    r = requests.post(f"{base}/v1/edit", json={**body, "model": "txt2"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["model"] == "txt2" and f"--model={folders['txt2']}" in r.json()["command"]
    default = requests.post(f"{base}/v1/edit", json=body, timeout=60).json()
    assert default["settings"]["model"] == "txt"
    assert default["pairs"][0]["edit"]["png_base64"] != r.json()["pairs"][0]["edit"]["png_base64"]
    refused = requests.post(f"{base}/v1/edit", json={**body, "model": "sr"}, timeout=10)
    assert refused.status_code == 501 and "text model" in refused.json()["detail"]
    assert requests.get(f"{base}/v1/edit/info", params={"model": "sr"}, timeout=10).json()["available"] is False


# --------------------------------------------------------------------------------------------------
# AUTOMATIC1111


def test_a1111_options_switch_the_model_txt2img_uses_and_override_settings_one_request(base, pipes):
    api = webuiapi.WebUIApi(baseurl=f"{base}/sdapi/v1")
    options = dict(prompt=PROMPT, seed=7, steps=3, cfg_scale=4, sampler_name="DDIM", eta=0)
    try:
        assert api.get_options()["sd_model_checkpoint"] == "txt"
        first = api.txt2img(**options)
        assert first.info["sd_model_name"] == "txt"
        assert first.image.convert("RGB").tobytes() == rgb(pipes["txt"](PROMPT, num_inference_steps=3, generator=7,
                                                                          sampler="ddim"))[0]

        api.set_options({"sd_model_checkpoint": "txt2"})
        assert api.get_options()["sd_model_checkpoint"] == "txt2"
        switched = api.txt2img(**options)
        assert switched.info["sd_model_name"] == "txt2" and "Model: txt2" in switched.info["infotexts"][0]
        assert switched.info["ldmkit"]["settings"]["model"] == "txt2"
        assert switched.image.convert("RGB").tobytes() == rgb(pipes["txt2"](PROMPT, num_inference_steps=3,
                                                                             generator=7, sampler="ddim"))[0]
        assert switched.image.tobytes() != first.image.tobytes()

        # override_settings: that request alone; the server's current model stays
        once = api.txt2img(**options, override_settings={"sd_model_checkpoint": "txt"})
        assert once.info["sd_model_name"] == "txt" and once.image.tobytes() == first.image.tobytes()
        assert "override_settings" not in once.info["not_honoured"]
        assert api.get_options()["sd_model_checkpoint"] == "txt2"

        # img2img with a mask on the inpainting model, chosen for that request
        source, mask = noise(32, 5), Image.new("L", (32, 32), 0)
        mask.paste(255, (16, 0, 32, 32))
        inpainted = api.img2img(images=[source], mask_image=mask, prompt="a red circle", seed=2, steps=2,
                                cfg_scale=1, sampler_name="DDIM", override_settings={"sd_model_checkpoint": "inp"})
        assert inpainted.info["ldmkit"]["mode"] == "inpaint" and inpainted.info["sd_model_name"] == "inp"

        # a model that cannot draw from text
        api.set_options({"sd_model_checkpoint": "sr"})
        with pytest.raises(RuntimeError) as e:
            api.txt2img(**options)
        assert e.value.args[0] == 501 and "'sr'" in e.value.args[1]
    finally:
        api.set_options({"sd_model_checkpoint": "txt"})
    assert api.get_options()["sd_model_checkpoint"] == "txt"


def test_a1111_unknown_checkpoint_gets_a1111s_error_shape_and_changes_nothing(base):
    r = requests.post(f"{base}/sdapi/v1/options", json={"sd_model_checkpoint": "sdxl.safetensors"}, timeout=10)
    assert r.status_code == 422
    error = r.json()
    assert set(error) == {"error", "detail", "body", "errors"} and error["error"] == "RuntimeError"
    assert error["errors"].startswith("model 'sdxl.safetensors' not found") and "'txt2'" in error["errors"]
    assert requests.get(f"{base}/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"] == "txt"
    r = requests.post(f"{base}/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 2,
                                                        "override_settings": {"sd_model_checkpoint": "nope"}},
                      timeout=10)
    assert r.status_code == 422 and set(r.json()) == {"error", "detail", "body", "errors"}
    assert "'nope' not found" in r.json()["detail"]


@pytest.mark.parametrize("model", ["sr", "cls"])
def test_a1111_img2img_on_a_model_that_cannot_is_501_before_the_image_is_checked(base, model):
    """A super-resolution model answers as a class model does, whatever the image's size (an 8×8 image is
    too small for the tiny models' img2img, but no img2img runs here)."""
    for side in (8, 32):
        r = requests.post(f"{base}/sdapi/v1/img2img", json={
            "init_images": [b64png(noise(side, 0))], "prompt": PROMPT,
            "override_settings": {"sd_model_checkpoint": model}}, timeout=10)
        assert r.status_code == 501 and set(r.json()) == {"error", "detail", "body", "errors"}, r.text
        assert f"model '{model}'" in r.json()["detail"] and "cannot draw from an image" in r.json()["detail"]


def test_a1111_inpainting_starts_from_the_image_noised_to_denoising_strength(base, pipes):
    """An inpainting model served on its own takes A1111's denoising_strength as diffusers' inpainting strength;
    `ldmkit inpaint` has no --strength, so its job reports no command rather than one that draws another image."""
    source, mask = noise(32, 4), Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 16, 32, 32))
    r = requests.post(f"{base}/sdapi/v1/img2img", json={
        "init_images": [b64png(source)], "mask": b64png(mask), "prompt": "a blue square", "steps": 4, "seed": 6,
        "cfg_scale": 1, "sampler_name": "DDIM", "denoising_strength": 0.5,
        "override_settings": {"sd_model_checkpoint": "inp"}}, timeout=60)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["ldmkit"]["mode"] == "inpaint" and info["ldmkit"]["settings"]["strength"] == 0.5
    direct = pipes["inp"](source, mask, "a blue square", num_inference_steps=4, guidance_scale=1.0, generator=6,
                          strength=0.5)
    assert decoded(r.json()["images"][0]).tobytes() == rgb(direct)[0]
    job = requests.get(f"{base}/v1/jobs/{info['ldmkit']['job']}", timeout=10).json()
    assert job["images"][0]["command"] is None and info["ldmkit"]["command"] is None, job


def test_a1111_img2img_reports_the_command_that_redraws_it(base, folders, tmp_path):
    """The A1111 img2img answer's info carries the `ldmkit inpaint` / `ldmkit img2img` call that writes the same
    image from the init image saved as image.png (and the mask as mask.png), the prompt read in A1111's syntax."""
    source, mask = noise(32, 5), Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 16, 32, 32))
    bodies = {"inp": {"mask": b64png(mask), "denoising_strength": 1.0, "cfg_scale": 1},
              "txt2": {"denoising_strength": 0.75, "cfg_scale": 4}}
    for model, extra in bodies.items():
        r = requests.post(f"{base}/sdapi/v1/img2img", json={
            "init_images": [b64png(source)], "prompt": "a (blue:1.4) square", "steps": 4, "seed": 6,
            "sampler_name": "DDIM", "eta": 0, "override_settings": {"sd_model_checkpoint": model}, **extra}, timeout=60)
        assert r.status_code == 200, r.text
        command = json.loads(r.json()["info"])["ldmkit"]["command"]
        assert f"ldmkit {'inpaint' if model == 'inp' else 'img2img'} " in command
        assert "--prompt-syntax=a1111" in shlex.split(command), command
        run_command(command, tmp_path / model, {"image.png": source, **({"mask.png": mask} if model == "inp" else {})})
        written = Image.open(tmp_path / model / "6_000.png").convert("RGB").tobytes()
        assert written == decoded(r.json()["images"][0]).tobytes(), model


# --------------------------------------------------------------------------------------------------
# OpenAI


def test_openai_routes_use_their_model_field(base, pipes):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    default = client.images.generate(prompt=PROMPT, size="32x32", response_format="b64_json")
    other = client.images.generate(prompt=PROMPT, model="txt2", size="32x32", response_format="b64_json")
    for result, name in ((default, "txt"), (other, "txt2")):
        s = result.model_extra["ldmkit"]["settings"]
        assert s["model"] == name
        direct = pipes[name](PROMPT, num_inference_steps=s["steps"], guidance_scale=s["guidance"], generator=s["seed"],
                             sampler=s["sampler"])
        assert rgb([decoded(result.data[0].b64_json)]) == rgb(direct), name

    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt=PROMPT, model="dall-e-3")
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"
    assert all(f"'{name}'" in e.value.body["message"] for name in MODELS)
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt=PROMPT, model="sr")
    assert e.value.body["code"] == "model_not_supported" and "'txt', 'txt2'" in e.value.body["message"]

    source = Image.new("RGBA", (32, 32), (0, 200, 0, 255))
    source.paste((0, 0, 0, 0), (0, 0, 32, 16))  # transparent top half: repaint it
    buf = io.BytesIO()
    source.save(buf, format="PNG")
    edited = client.images.edit(image=("in.png", buf.getvalue(), "image/png"), prompt="a red circle", model="inp",
                                response_format="b64_json")
    assert edited.model_extra["ldmkit"]["settings"]["model"] == "inp"
    with pytest.raises(openai.BadRequestError) as e:  # the default model, a text model, cannot edit
        client.images.edit(image=("in.png", buf.getvalue(), "image/png"), prompt="a red circle")
    assert "not an inpainting model" in e.value.body["message"] and "'inp'" in e.value.body["message"]


def test_an_openai_edit_is_the_inpaint_of_v1_generate_and_the_pipeline_from_its_seed(base, pipes):
    """/v1/images/edits draws with ldmkit inpaint's guidance 1, so its reported seed gives the same image from
    /v1/generate and from the pipeline; an opaque RGBA mask (as editors save one) repaints where it is white."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    source, mask = noise(32, 8), Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 32, 16))
    edited = client.images.edit(image=("in.png", file_bytes(source), "image/png"), prompt="a blue square",
                                mask=("mask.png", file_bytes(mask.convert("RGBA")), "image/png"), model="inp",
                                response_format="b64_json")
    s = edited.model_extra["ldmkit"]["settings"]
    assert s["guidance"] == 1.0
    served = decoded(edited.data[0].b64_json)
    again = draw(base, {"model": "inp", "image": b64png(source), "mask": b64png(mask), "prompt": "a blue square",
                        "steps": s["steps"], "seed": s["seed"]})
    assert decoded(again["images"][0]["png_base64"]).tobytes() == served.tobytes()
    direct = pipes["inp"](source, mask, "a blue square", num_inference_steps=s["steps"], generator=s["seed"])
    assert rgb(direct) == [served.tobytes()]
    out, src = np.asarray(served), np.asarray(source)
    assert (out[16:] == src[16:]).all() and (out[:16] != src[:16]).any()


# --------------------------------------------------------------------------------------------------
# one queue


def test_one_queue_and_its_limit_serve_every_model():
    first, second = FakePipeline(), FakePipeline()
    first.gate.clear()  # the worker holds the first job mid-way
    models = [served_model(name, pipe, limits=FakePipeline.limits) for name, pipe in (("a", first), ("b", second))]
    with TestClient(create_app(models=models, max_queue=1)) as client:
        client.post("/v1/jobs", json={"model": "a", "prompt": "x", "steps": 2})
        assert first.running.wait(5)
        waiting = client.post("/v1/jobs", json={"model": "b", "prompt": "y", "steps": 2})
        assert waiting.status_code == 202 and waiting.json()["queue_position"] == 1
        for name in ("a", "b"):
            assert client.post("/v1/jobs", json={"model": name, "prompt": "z"}).status_code == 503
        first.gate.set()
        done = wait_for(client, waiting.json()["id"], lambda job: job["status"] == "done")
        assert done["settings"]["model"] == "b"
    assert (first.calls, second.calls) == (1, 1)


# --------------------------------------------------------------------------------------------------
# the command


def test_model_arguments_name_the_models(folders, tmp_path):
    assert model_specs(None) == [("shapes64-grounded", None)]  # the default model, by its name
    assert model_specs([str(folders["txt"]), f"up={folders['sr']}", "shapes64-lcm"]) == [
        ("serve-tiny-model", str(folders["txt"])), ("up", str(folders["sr"])), ("shapes64-lcm", "shapes64-lcm")]
    weights = tmp_path / "sd-v1.safetensors"
    weights.write_bytes(b"")
    assert model_specs([str(weights)]) == [("sd-v1", str(weights))]  # a file: its name without the suffix


@pytest.mark.parametrize("args, says", [
    (["--model", "a=/no/such/folder"], "no model file or folder at '/no/such/folder'"),
    (["--model", "a=TXT", "--model", "a=SR"], "the name 'a' is given twice"),
    (["--model", "TXT", "--model", "serve-tiny-model=SR"], "the name 'serve-tiny-model' is given twice"),
    (["--model", "bad name=TXT"], "the name 'bad name' is not a model name"),
    (["--model", "=TXT"], "the name '' is not a model name"),
    (["--model", "SPACED"], "its name 'my model' is not a model name"),
])
def test_a_bad_model_argument_is_one_line_and_exit_2_before_listening(folders, tmp_path, capsys, args, says):
    spaced = tmp_path / "my model"
    spaced.mkdir()
    paths = {"TXT": str(folders["txt"]), "SR": str(folders["sr"]), "SPACED": str(spaced)}
    args = [next((a.replace(k, v) for k, v in paths.items() if k in a), a) for a in args]
    with socket.socket() as busy:  # checked before the port: a busy port is not what is reported
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", *args, "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ldmkit serve: error: --model") and "\n" not in err and says in err, err
    assert "cannot listen" not in err


def served_by_command(*args: str) -> list:
    """The models `ldmkit serve ARGS` serves, loaded as the command loads them (on the CPU)."""
    parsed = build_parser().parse_args(["serve", *args, "--device", "cpu"])
    return load_models(parsed, model_specs(parsed.model))


def test_load_options_apply_to_the_model_named_and_its_commands_repeat_them(folders, tmp_path):
    """--prediction, --precision (and --no-ema) as `ldmkit generate`'s: NAME=VALUE for the model served as NAME,
    bare for every model; each model's image is its pipeline's under those options, and its reported command,
    which repeats them, writes it again; so do the image commands'."""
    txt = str(folders["txt"])
    models = served_by_command("--model", f"a={txt}", "--model", f"b={txt}", "--prediction", "a=v",
                               "--precision", "b=bf16")
    a, b = (model.pipelines["generate"] for model in models)
    assert (a.model.config.diffusion.prediction, a.precision) == ("v", "fp32")
    assert (b.model.config.diffusion.prediction, b.precision) == ("epsilon", "bf16")
    assert models[0].load_options == ("--prediction=v",) and models[1].load_options == ("--precision=bf16",)
    with TestClient(create_app(models=models)) as client:
        for model, direct in (("a", load_any_pipeline(txt, prediction="v")),
                              ("b", load_any_pipeline(txt, precision="bf16"))):
            body = {"model": model, "prompt": PROMPT, "steps": 2, "seed": 3}
            r = client.post("/v1/generate", json=body)
            assert r.status_code == 200, r.text
            image = r.json()["images"][0]
            expected = direct(PROMPT, num_inference_steps=2, generator=3)
            assert decoded(image["png_base64"]).tobytes() == rgb(expected)[0], model
            assert models[model == "b"].load_options[0] in shlex.split(image["command"])
            run_command(image["command"], tmp_path / model, {})
            assert Image.open(tmp_path / model / "3_000.png").convert("RGB").tobytes() == rgb(expected)[0], model
            source = noise(32, 1)
            r = client.post("/v1/generate", json={**body, "mode": "img2img", "image": b64png(source)})
            assert r.status_code == 200, r.text
            image = r.json()["images"][0]
            assert models[model == "b"].load_options[0] in shlex.split(image["command"])
            run_command(image["command"], tmp_path / f"{model}-img2img", {"image.png": source})
            written = Image.open(tmp_path / f"{model}-img2img" / "3_000.png").convert("RGB")
            assert written.tobytes() == decoded(image["png_base64"]).tobytes(), model
        edit = client.post("/v1/edit", json={"model": "b", "source_prompt": PROMPT, "target_prompt": PROMPT,
                                             "steps": 2, "seed": 1})
        assert edit.status_code == 200 and "--precision=bf16" in shlex.split(edit.json()["command"]), edit.text
    both = served_by_command("--model", f"a={txt}", "--model", f"b={txt}", "--prediction", "v",
                             "--prediction", "b=epsilon")
    assert [m.pipelines["generate"].model.config.diffusion.prediction for m in both] == ["v", "epsilon"]


@pytest.mark.parametrize("args, says", [
    (["--prediction", "c=v"], "--prediction c=v: no model is served as 'c'; served: a, b"),
    (["--prediction", "a=x"], "--prediction a=x: 'x' is not one of epsilon, v"),
    (["--prediction", "v", "--prediction", "epsilon"], "every model is given --prediction twice"),
    (["--precision", "a=fp16"], "'fp16' is not one of fp32, bf16, auto"),
    (["--no-ema", "c"], "--no-ema c: no model is served as 'c'"),
])
def test_a_bad_load_option_is_one_line_and_exit_2_before_listening(folders, capsys, args, says):
    txt = str(folders["txt"])
    with socket.socket() as busy:  # checked before the port: a busy port is not what is reported
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--model", f"a={txt}", "--model", f"b={txt}", *args,
                     "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ldmkit serve: error: {args[-2]}") and "\n" not in err and says in err, err


def test_no_ema_serves_a_files_training_weights_and_its_command_says_so(tmp_path_factory, tmp_path, capsys):
    """--no-ema NAME takes that Stable Diffusion file's training weights (the other model keeps the EMA copy), and
    the command reported for its images carries --no-ema; an ldmkit folder, which has no training weights,
    refuses it in one line."""
    pytest.importorskip("diffusers")
    from test_sd_parity import build

    sd_file = str(build("v1", tmp_path_factory)["original"])
    models = served_by_command("--model", f"ema={sd_file}", "--model", f"train={sd_file}", "--no-ema", "train")
    assert [m.load_options for m in models] == [(), ("--no-ema",)]
    body = {"prompt": "a cat", "steps": 2, "seed": 5, "width": 32, "height": 32}
    with TestClient(create_app(models=models)) as client:
        images = {name: client.post("/v1/generate", json={**body, "model": name}).json()["images"][0]
                  for name in ("ema", "train")}
    for name, ema in (("ema", True), ("train", False)):
        expected = load_any_pipeline(sd_file, ema=ema)("a cat", num_inference_steps=2, generator=5, width=32,
                                                       height=32)
        assert decoded(images[name]["png_base64"]).tobytes() == rgb(expected)[0], name
    assert images["ema"]["png_base64"] != images["train"]["png_base64"]
    run_command(images["train"]["command"], tmp_path / "train", {})
    assert Image.open(tmp_path / "train" / "5_000.png").convert("RGB").tobytes() == \
        decoded(images["train"]["png_base64"]).tobytes()
    capsys.readouterr()  # what building the file printed
    assert main(["serve", "--model", str(build_tiny_model(tmp_path / "tiny")), "--no-ema", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ldmkit serve: error:") and "\n" not in err and "training weights" in err, err


def test_usage_error_for_no_model_or_a_name_twice_in_create_app():
    with pytest.raises(UsageError):
        create_app(models=[])
    pipe = FakePipeline()
    with pytest.raises(UsageError, match="named 'a'"):
        create_app(models=[served_model("a", pipe, limits=FakePipeline.limits)] * 2)
    with pytest.raises(UsageError):
        create_app(pipe, models=[served_model("a", pipe, limits=FakePipeline.limits)])


def test_a1111_override_settings_not_restored_afterwards_switches_the_current_model():
    """override_settings_restore_afterwards: false keeps the request's checkpoint for later requests, as A1111
    keeps the override (and as POST /sdapi/v1/options switches it); true, its default, restores it; a request
    refused before its job switches nothing."""
    models = [served_model(name, FakePipeline(), limits=FakePipeline.limits) for name in ("a", "b", "c")]
    with TestClient(create_app(models=models)) as client:
        def txt2img(**body):
            r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, **body})
            assert r.status_code == 200, r.text
            return json.loads(r.json()["info"])

        current = lambda: client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]  # noqa: E731
        once = txt2img(override_settings={"sd_model_checkpoint": "b"}, override_settings_restore_afterwards=True)
        assert once["sd_model_name"] == "b" and current() == "a"
        kept = txt2img(override_settings={"sd_model_checkpoint": "b"}, override_settings_restore_afterwards=False)
        assert kept["sd_model_name"] == "b" and kept["not_honoured"] == {} and current() == "b"
        assert txt2img()["sd_model_name"] == "b"
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "sampler_name": "nope",
                                                   "override_settings": {"sd_model_checkpoint": "c"},
                                                   "override_settings_restore_afterwards": False})
        assert r.status_code == 422 and current() == "b"
        assert txt2img(override_settings_restore_afterwards=False)["sd_model_name"] == "b" and current() == "b"
    assert [pipe.calls for pipe in (m.pipelines["generate"] for m in models)] == [0, 4, 0]


def test_an_image_jobs_settings_post_back_to_v1_generate_and_draw_the_same_image(base, pipes):
    """The settings a /v1 image job reports (its size, num_images 1, mask_name, strength, karras, …) are taken
    back by /v1/generate with the inputs, as the generate mode's are, and draw the same image; karras runs where
    the mode's pipeline takes it (img2img, inpaint: A1111's img2img reports karras true); a value the job could
    not have is refused naming the field, since it would change nothing but mislead."""
    source, small, mask = noise(32, 11), noise(8, 12), Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    inputs = {"img2img": {"model": "txt", "mode": "img2img", "image": b64png(source), "prompt": PROMPT,
                          "karras": True, "sampler": "dpmpp-2m"},
              "upscale": {"model": "sr", "image": b64png(small)},
              "inpaint": {"model": "inp", "image": b64png(source), "mask": b64png(mask), "karras": True}}
    for mode, body in inputs.items():
        first = draw(base, {**body, "steps": 4, "seed": 9})
        settings = first["settings"]
        assert settings["mode"] == mode and settings["karras"] == (mode != "upscale"), settings
        again = draw(base, {**settings, **{k: v for k, v in body.items() if k in ("image", "mask")}})
        assert again["settings"] == settings, mode
        assert again["images"][0]["png_base64"] == first["images"][0]["png_base64"], mode
        if mode == "img2img":
            direct = ImageToImagePipeline(pipes["txt"].model)(source, PROMPT, strength=settings["strength"],
                                                              num_inference_steps=4, generator=9,
                                                              sampler="dpmpp-2m", karras=True)
            assert decoded(first["images"][0]["png_base64"]).tobytes() == rgb(direct)[0]
    misleading = [({**inputs["img2img"], "width": 64}, "width"), ({**inputs["img2img"], "num_images": 2}, "num_images"),
                  ({**inputs["img2img"], "mask_name": "mask.png"}, "mask_name"),
                  ({**inputs["upscale"], "karras": True}, "karras"), ({**inputs["upscale"], "height": 8}, "height"),
                  ({**inputs["inpaint"], "strength": 0.5}, "strength"),
                  ({**inputs["inpaint"], "negative_prompt": "blurry"}, "negative_prompt")]
    for body, field in misleading:
        r = requests.post(f"{base}/v1/generate", json=body, timeout=10)
        assert r.status_code == 422 and [e["loc"][-1] for e in r.json()["detail"]] == [field], r.text
        assert "leave it out or send" in r.json()["detail"][0]["msg"], r.text
