"""End to end: `ldmkit serve` in a subprocess with two models (a text model and a super-resolution one), the
page in headless Chromium (Playwright), a prompt typed, Generate clicked, and a rendered image found in the
gallery; then the other model and its mode chosen, an image uploaded and its upscaled image found.

Skipped, with the reason, where Playwright for Python or Debian's Chromium (/usr/bin/chromium) is
missing; CI installs both (`apt-get install -y chromium`, and the serve test extra).
"""

from __future__ import annotations

import os
import queue
import shlex
import subprocess
import sys
import threading
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
    yield url, out
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_page_generates_and_shows_an_image(server, tmp_path):
    url, out = server
    assert url.startswith("http://127.0.0.1:"), "the server must bind loopback unless told otherwise"
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            failed, errors = [], []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            # The form takes its choices from GET /v1/ldmkit/models: the first model served and its first mode.
            page.wait_for_function("document.querySelectorAll('#width option').length > 0")
            # the sizes offered start at the smallest the model draws with any other side (8x8 is too small)
            assert page.locator("#width option").all_inner_texts()[:2] == ["16", "24"]
            assert page.locator("#model_id option").all_inner_texts() == ["serve-tiny-model", "sr"]
            assert page.locator("#mode option").all_inner_texts() == ["text to image", "image to image"]
            assert page.locator("#image").is_hidden() and page.locator("#prompt").is_visible()
            assert page.locator("#sampler option").all_inner_texts() == ["ddim", "ddpm", "euler", "dpmpp-2m", "euler-a"]

            page.fill("#prompt", "a red circle on the left")
            page.fill("#steps", "8")
            page.fill("#seed", "42")
            page.fill("#num_images", "2")
            page.fill("#binding", "0.2")
            page.select_option("#width", "48")
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
        finally:
            browser.close()
    assert len(list(out.glob("*.png"))) == 2  # the server also kept them, under generated names


def test_page_switches_to_the_sr_model_and_upscales_an_uploaded_image(server, sr_model, tmp_path):
    """The model and mode choice: the super-resolution model's form asks for an image instead of a prompt,
    sends it with the job, and shows the upscaled image with a Download named as the command writes it and
    the `ldmkit upscale` command, which names the model and the uploaded file and writes the same image."""
    url, _ = server
    upload = tmp_path / "small input.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(upload)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
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
        finally:
            browser.close()
    argv = shlex.split(command)
    assert argv[:2] == ["ldmkit", "upscale"] and "--model=sr" not in argv and f"--model={sr_model}" in argv
    assert argv[-2:] == ["--", "small input.png"]
    from ldmkit.cli import main

    argv = [f"--out={tmp_path}/out.png" if a.startswith("--out=") else str(upload) if a == "small input.png" else a
            for a in argv[1:]]
    assert main([argv[0], "--no-progress", *argv[1:]]) == 0
    (tmp_path / "served.png").write_bytes(bytes(png))
    assert Image.open(tmp_path / "out.png").tobytes() == Image.open(tmp_path / "served.png").tobytes()
