"""End to end: `ldmkit serve` in a subprocess, the page in headless Chromium (Playwright), a prompt typed,
Generate clicked, and a rendered image found in the gallery.

Skipped, with the reason, where Playwright for Python or Debian's Chromium (/usr/bin/chromium) is
missing; CI installs both (`apt-get install -y chromium`, and the serve test extra).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):  # noqa: F811
    """`ldmkit serve` on a free loopback port; yields its base URL, stops it afterwards."""
    out = tmp_path_factory.mktemp("serve-out")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ldmkit.cli", "serve", "--model", str(tiny_model), "--port", "0",
         "--output-dir", str(out), "--log-level", "warning"],
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
            failed = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(url)
            # The form takes its choices from GET /v1/ldmkit/models.
            page.wait_for_function("document.querySelectorAll('#width option').length > 0")
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
        finally:
            browser.close()
    assert len(list(out.glob("*.png"))) == 2  # the server also kept them, under generated names
