"""End to end: `ldmkit serve` in a subprocess with two models (a text model and a super-resolution one), the
page in headless Chromium (Playwright), a prompt typed, Generate clicked, and a rendered image found in the
gallery; then the other model and its mode chosen, an image uploaded and its upscaled image found. Then the
page on a phone-sized screen, a reload in the middle of a job, a mode whose hidden fields hold values out of
bounds, and the page's own messages.

Skipped, with the reason, where Playwright for Python or Debian's Chromium (/usr/bin/chromium) is
missing; CI installs both (`apt-get install -y chromium`, and the serve test extra).
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to run the "
                f"browser test", allow_module_level=True)
playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is absent (pip install playwright; no browser "
                                  "download needed, the test drives /usr/bin/chromium)")
pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")

from test_serve import tiny_model  # noqa: E402,F401  (the session fixture: one model for both files)
from tests.tiny_models import build_tiny_model  # noqa: E402

LONG_STEPS = 200  # a job the tiny model takes tens of seconds over on a CPU: it is cancelled, never waited for
WIDTH_OPTIONS = "document.querySelectorAll('#width option').length > 0"  # GET /v1/ldmkit/models answered
LOADED = "[...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth > 0).length"


@contextmanager
def chromium_page(**options):
    """A page of headless Debian Chromium (``options``: Playwright's ``new_page``'s, e.g. a viewport), the
    browser closed after the ``with`` block."""
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(**options)
        finally:
            browser.close()


def call(url: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    """The JSON answer of the server at ``url`` to ``method path`` (with a JSON ``body``)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def cancel_all(url: str, job_ids: list[str]) -> None:
    """Cancel the jobs a test left behind, so that the next test's jobs do not wait for them."""
    for job_id in job_ids:
        try:
            call(url, f"/v1/jobs/{job_id}", "DELETE")
        except urllib.error.URLError:
            pass


def posting_a_job(exchange) -> bool:
    """Whether a request (or the response to one) queues a job: POST /v1/jobs."""
    request = getattr(exchange, "request", exchange)
    return request.method == "POST" and request.url.endswith("/v1/jobs")


@pytest.fixture(scope="session")
def sr_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp() / "serve-tiny-sr", "tiny-sr")


@pytest.fixture(scope="module")
def server(tiny_model, sr_model, tmp_path_factory):  # noqa: F811
    """`ldmkit serve` of the tiny text model (the default, named by its folder) and the tiny super-resolution
    model (as "sr") on a free loopback port; yields its base URL and output folder, stops it afterwards."""
    out = tmp_path_factory.mktemp("serve-out")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ldmkit.cli", "serve", "--model", str(tiny_model), "--model", f"sr={sr_model}",
         "--port", "0", "--output-dir", str(out), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    url, seen = None, []
    try:
        while url is None:
            line = lines.get(timeout=60)
            seen.append(line)
            if " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0]
    except queue.Empty:
        proc.kill()
        pytest.fail("the server did not start within 60 s:\n" + "".join(seen))
    for _ in range(100):  # the URL is printed as it binds: wait until it answers
        try:
            call(url, "/healthz")
            break
        except urllib.error.URLError:
            time.sleep(0.1)
    yield url, out
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_page_generates_and_shows_an_image(server, tmp_path):
    url, out = server
    assert url.startswith("http://127.0.0.1:"), "the server must bind loopback unless told otherwise"
    with chromium_page() as page:
        failed, errors = [], []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        # The form takes its choices from GET /v1/ldmkit/models: the first model served and its first mode.
        page.wait_for_function("document.querySelectorAll('#width option').length > 0")
        # the sizes offered start at the smallest the model draws with any other side (8x8 is too small)
        assert page.locator("#width option").all_inner_texts()[:2] == ["12", "16"]
        assert page.locator("#model_id option").all_inner_texts() == ["serve-tiny-model", "sr"]
        assert page.locator("#mode option").all_inner_texts() == ["text to image", "image to image"]
        assert page.locator("#image").is_hidden() and page.locator("#prompt").is_visible()
        assert page.locator("#sampler option").all_inner_texts() == ["ddim", "ddpm", "euler", "dpmpp-2m", "euler-a",
                                                                     "plms", "unipc"]

        page.fill("#prompt", "a red circle on the left")
        page.fill("#steps", "8")
        page.fill("#seed", "42")
        page.fill("#num_images", "2")
        page.fill("#binding", "0.2")
        page.select_option("#width", "48")
        page.select_option("#prompt_syntax", "a1111")
        posted = []
        page.on("request", lambda r: posted.append(r.post_data_json) if r.method == "POST" else None)
        page.click("#generate")

        page.wait_for_function(
            "[...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth > 0).length == 2",
            timeout=60_000)
        sizes = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
        assert sizes == [[48, 32], [48, 32]]
        captions = page.locator("#gallery .settings").all_inner_texts()
        assert all("seed 42" in c and "8 steps" in c and "48×32" in c and "binding 0.2" in c for c in captions), captions
        downloads = page.eval_on_selector_all("#gallery a.download", "as => as.map(a => a.download)")
        assert sorted(downloads) == ["42_000.png", "42_001.png"]
        assert posted and posted[0]["prompt_syntax"] == "a1111", posted  # A1111's emphasis, as chosen
        assert page.locator("#error").is_hidden()
        assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [8, 8]
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        # A server-side refusal is shown on the page: bypass the form's own limits to provoke one.
        page.eval_on_selector("#steps", "s => { s.removeAttribute('max'); s.value = '500'; }")
        page.click("#generate")
        page.wait_for_selector("#error:not([hidden])")
        assert "steps" in page.inner_text("#error")
        assert not failed, failed
        assert not errors, errors
    assert len(list(out.glob("*.png"))) == 2  # the server also kept them, under generated names


def test_page_switches_to_the_sr_model_and_upscales_an_uploaded_image(server, sr_model, tmp_path):
    """The model and mode choice: the super-resolution model's form asks for an image instead of a prompt,
    sends it with the job, and shows the upscaled image with a Download named as the command writes it and
    the `ldmkit upscale` command, which names the model and the uploaded file and writes the same image."""
    url, _ = server
    upload = tmp_path / "small input.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(upload)
    with chromium_page() as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_function("document.querySelectorAll('#model_id option').length == 2")
        page.select_option("#model_id", "sr")
        assert page.locator("#mode option").all_inner_texts() == ["super-resolution"]
        assert page.locator("#image").is_visible() and page.locator("#mask").is_hidden()
        assert page.locator("#binding").is_hidden() and page.locator("#width").is_hidden()
        assert page.input_value("#guidance") == "1"  # the mode's default guidance
        assert "sr" in page.inner_text("#model")
        page.set_input_files("#image", str(upload))
        page.fill("#steps", "3")
        page.fill("#seed", "9")
        page.click("#generate")

        page.wait_for_function(
            "[...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth).length == 1",
            timeout=60_000)
        size = page.eval_on_selector("#gallery img", "i => [i.naturalWidth, i.naturalHeight]")
        assert size == [32, 32]  # 8 px × the model's factor 4
        caption = page.inner_text("#gallery .settings")
        assert "sr · super-resolution" in caption and "seed 9" in caption and "small input.png" in caption
        assert page.get_attribute("#gallery a.download", "download") == "9_000.png"
        command = page.text_content("#gallery .command").split("   #")[0]
        assert page.locator("#error").is_hidden()
        png = page.evaluate("url => fetch(url).then(r => r.arrayBuffer()).then(b => [...new Uint8Array(b)])",
                            page.get_attribute("#gallery img", "src"))
        assert not errors, errors
    argv = shlex.split(command)
    assert argv[:2] == ["ldmkit", "upscale"] and "--model=sr" not in argv and f"--model={sr_model}" in argv
    assert argv[-2:] == ["--", "small input.png"]
    from ldmkit.cli import main

    argv = [f"--out={tmp_path}/out.png" if a.startswith("--out=") else str(upload) if a == "small input.png" else a
            for a in argv[1:]]
    assert main([argv[0], "--no-progress", *argv[1:]]) == 0
    (tmp_path / "served.png").write_bytes(bytes(png))
    assert Image.open(tmp_path / "out.png").tobytes() == Image.open(tmp_path / "served.png").tobytes()


def fits(page, width: int) -> None:
    """The page no wider than a ``width``-px screen, and Cancel within it."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.inner_text("#progress-box")
    box = page.locator("#cancel").bounding_box()
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= width, (box, width)


def test_a_phone_screen_keeps_the_page_and_cancel_within_it_while_a_job_waits_and_runs(server):
    """At 360–414 px the progress bar, its text and Cancel share the width instead of widening the page."""
    url, _ = server
    # jobs ahead of the page's, one after another (the tiny model draws 200 steps in ~1 s on a fast processor: each
    # holds 8 images): the page's job still waits when it is posted
    ahead = {"prompt": "a red circle", "steps": LONG_STEPS, "num_images": 8}
    jobs = [call(url, "/v1/jobs", "POST", ahead)["id"] for _ in range(6)]
    try:
        with chromium_page(viewport={"width": 390, "height": 800}) as page:
            page.goto(url)
            page.wait_for_function(WIDTH_OPTIONS)
            page.fill("#prompt", "a large orange circle below a white square")
            page.fill("#steps", str(LONG_STEPS))
            page.fill("#binding", "0.5")  # slower steps: the job still runs when Cancel is clicked
            with page.expect_response(posting_a_job) as posted:
                page.click("#generate")
            jobs.append(posted.value.json()["id"])
            page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('queued')",
                                   timeout=60_000)
            for width in (390, 360, 414):
                page.set_viewport_size({"width": width, "height": 800})
                fits(page, width)
            for job in jobs[:-1]:  # the page's job runs next
                call(url, f"/v1/jobs/{job}", "DELETE")
            page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('step')",
                                   timeout=60_000)
            for width in (414, 360, 390):
                page.set_viewport_size({"width": width, "height": 800})
                fits(page, width)
            page.click("#cancel")
            page.wait_for_selector("#cancel", state="hidden", timeout=60_000)
            assert call(url, f"/v1/jobs/{jobs[-1]}")["status"] == "cancelled"
            assert page.locator("#error").is_hidden()
    finally:
        cancel_all(url, jobs)


def test_a_reload_follows_the_running_job_again_and_keeps_the_gallery(server):
    """A reload in the middle of a job shows its progress again, with a Cancel that cancels it, and the
    images shown before the reload (the server still has them)."""
    url, _ = server
    jobs = []
    try:
        with chromium_page() as page:
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.wait_for_function(WIDTH_OPTIONS)
            page.fill("#prompt", "a green triangle")
            page.fill("#steps", "2")
            page.fill("#seed", "5")
            page.click("#generate")
            page.wait_for_selector("#gallery .card img", timeout=60_000)
            page.wait_for_function("!document.getElementById('generate').disabled")

            page.fill("#prompt", "a red circle above a blue square")
            page.fill("#steps", str(LONG_STEPS))
            page.fill("#binding", "0.5")  # slower steps: the job still runs after the reload on a fast processor
            with page.expect_response(posting_a_job) as posted:
                page.click("#generate")
            job_id = posted.value.json()["id"]
            jobs.append(job_id)
            page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('step')",
                                   timeout=60_000)
            page.reload()
            page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('step')",
                                   timeout=20_000)  # the job runs on meanwhile
            assert page.locator("#cancel").is_visible() and page.locator("#generate").is_disabled()
            # the image of before, again, and only it
            page.wait_for_function(f"{LOADED} == 1")
            assert page.locator("#gallery .card").count() == 1 and page.locator("#empty").is_hidden()
            assert "seed 5" in page.inner_text("#gallery .settings")
            page.click("#cancel")
            page.wait_for_selector("#cancel", state="hidden", timeout=60_000)
            assert call(url, f"/v1/jobs/{job_id}")["status"] == "cancelled"
            assert page.locator("#error").is_hidden() and page.locator("#generate").is_enabled()
            page.reload()  # nothing to follow now
            page.wait_for_function(WIDTH_OPTIONS)
            page.wait_for_selector("#gallery .card img")
            assert page.locator("#progress-box").is_hidden() and page.locator("#generate").is_enabled()
            assert not errors, errors
    finally:
        cancel_all(url, jobs)


def test_a_hidden_field_out_of_bounds_neither_blocks_generate_nor_is_sent(server, tmp_path):
    """Images = 20 typed in text to image, then image to image chosen: Generate still runs (the hidden field is
    disabled, not a control the browser refuses to submit). Guidance and strength take any value the API does."""
    url, _ = server
    upload = tmp_path / "input.png"
    Image.new("RGB", (32, 32), (40, 200, 40)).save(upload)
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_function(WIDTH_OPTIONS)
        page.fill("#num_images", "20")
        page.select_option("#mode", "img2img")
        assert page.locator("#num_images").is_hidden()
        page.set_input_files("#image", str(upload))
        page.fill("#prompt", "a red circle")
        page.fill("#steps", "4")  # int(0.33 · 4) = 1 step runs (at 2 steps, none would: a 422)
        page.fill("#seed", "3")
        page.fill("#guidance", "4.25")
        page.fill("#strength", "0.33")
        for field in ("guidance", "strength"):
            assert page.eval_on_selector(f"#{field}", "i => i.validity.valid"), field
        with page.expect_request(posting_a_job, timeout=5_000) as sent:
            page.click("#generate")
        body = json.loads(sent.value.post_data)
        assert page.locator("#num_images").is_disabled()  # what let it through
        assert "num_images" not in body and (body["guidance"], body["strength"]) == (4.25, 0.33)
        page.wait_for_selector("#gallery .card img", timeout=60_000)
        caption = page.inner_text("#gallery .settings")
        assert "guidance 4.25" in caption and "strength 0.33" in caption, caption
        assert page.locator("#error").is_hidden()

        page.select_option("#mode", "generate")  # shown again, and the form's to check again
        assert page.locator("#num_images").is_enabled() and page.input_value("#num_images") == "20"
        assert not page.eval_on_selector("#num_images", "i => i.validity.valid")
        # "Use settings" with the Edit tab open goes back to the Generate tab, with the settings
        page.click("#tab-edit")
        page.click("#gallery .card .reuse")
        assert page.locator("#form").is_visible() and page.locator("#edit-form").is_hidden()
        assert page.get_attribute("#tab-generate", "aria-selected") == "true"
        assert page.input_value("#mode") == "img2img" and page.input_value("#strength") == "0.33"


def test_the_pages_own_messages_names_and_icon(server):
    """A full queue's 503 says when to retry once; the progress bar and each Download have their own names;
    the page names its icon (a data: URL), so that a browser's GET /favicon.ico does not answer 404."""
    url, _ = server
    with chromium_page() as page:
        missing = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(url)
        page.wait_for_function(WIDTH_OPTIONS)
        assert page.get_attribute("link[rel=icon]", "href").startswith("data:image/svg+xml,")
        assert page.get_attribute("#progress", "aria-label")

        full = "the queue is full (8 jobs waiting); retry in 2 s"
        for detail, shown in ((full, full), ("busy", "busy (try again in 2 s)")):
            answer = json.dumps({"detail": detail})
            page.route("**/v1/jobs", lambda route, _, answer=answer: route.fulfill(
                status=503, headers={"Retry-After": "2"}, content_type="application/json", body=answer))
            page.fill("#prompt", "a red circle")
            page.click("#generate")
            page.wait_for_selector("#error:not([hidden])")
            assert page.inner_text("#error") == shown
            page.unroute("**/v1/jobs")

        page.fill("#steps", "2")
        page.fill("#num_images", "2")
        page.fill("#seed", "8")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#gallery .card img').length == 2", timeout=60_000)
        labels = page.eval_on_selector_all("#gallery a.download", "as => as.map(a => a.getAttribute('aria-label'))")
        assert len(set(labels)) == 2 and all("seed 8" in label for label in labels), labels
        page.wait_for_timeout(300)  # any request for an icon is answered by now
        assert not missing, missing
