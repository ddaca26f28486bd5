"""End to end: `ldmkit serve` in a subprocess (test_serve_browser's server), the page in headless Chromium,
the Edit tab filled in, Edit clicked, and each pair found in the gallery with source and edit side by side.

Skipped, with the reason, where Playwright for Python or Debian's Chromium (/usr/bin/chromium) is missing.
"""

from __future__ import annotations

from test_serve_browser import chromium_page, server, sr_model  # noqa: F401  (fixtures; skips as it does)
from test_serve import tiny_model  # noqa: F401  (the session fixture the server serves)

LOADED = "[...document.querySelectorAll('#gallery .edit-card img')].filter(i => i.complete && i.naturalWidth > 0).length"


def test_page_edits_and_shows_source_and_edit_side_by_side(server, tmp_path):  # noqa: F811
    url, out = server
    with chromium_page() as page:
        failed = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(url)
        page.wait_for_selector("#edit-form[data-ready]", state="attached")  # GET /v1/edit/info answered
        assert page.locator("#edit-form").is_hidden()
        page.click("#tab-edit")
        assert page.locator("#form").is_hidden() and page.locator("#edit-form").is_visible()
        assert page.get_attribute("#edit_num_images", "max") == "4"

        page.fill("#source_prompt", "a red circle on the left")
        page.fill("#target_prompt", "a blue circle on the left")
        page.select_option("#edit_mode", "replace")
        page.fill("#blend_words", "circle, blue")
        page.fill("#cross_replace", "0.6")
        page.fill("#self_replace", "0.2")
        page.fill("#edit_steps", "6")
        page.fill("#edit_seed", "7")
        page.fill("#edit_num_images", "2")
        page.click("#edit")

        page.wait_for_function(f"{LOADED} == 4", timeout=60_000)
        cards = page.locator("#gallery .edit-card")
        assert cards.count() == 2
        for k in range(2):
            card = cards.nth(k)
            # source on the left, edit on the right, each the model's 32×32
            boxes = [card.locator(f"img.{cls}").bounding_box() for cls in ("source", "edited")]
            assert boxes[0]["x"] < boxes[1]["x"] and abs(boxes[0]["y"] - boxes[1]["y"]) < 1
            sizes = card.locator("img").evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            assert sizes == [[32, 32], [32, 32]]
            assert card.locator(".prompt").inner_text() == "a red circle on the left → a blue circle on the left"
            caption = card.locator(".settings").inner_text()
            parts = ("seed 7", f"pair {k + 1} of 2", "replace", "6 steps", "cross 0.6 · self 0.2",
                     "blend “circle blue” at 0.3")
            assert all(part in caption for part in parts), caption
            command = card.locator(".command").text_content()
            assert "ldmkit edit" in command and "'--blend=circle blue'" in command and "--seed=7" in command
        downloads = page.eval_on_selector_all("#gallery .edit-card a[download]", "as => as.map(a => a.download)")
        assert sorted(downloads) == ["edit_0.png", "edit_1.png", "source_0.png", "source_1.png"]
        labels = page.eval_on_selector_all("#gallery .edit-card a[download]",
                                           "as => as.map(a => a.getAttribute('aria-label'))")
        assert len(set(labels)) == 4 and all("seed 7" in label for label in labels), labels
        assert page.locator("#error").is_hidden()
        assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [6, 6]
        page.screenshot(path=str(tmp_path / "edit-page.png"), full_page=True)

        # "Use settings" puts an edit back in the form.
        page.fill("#edit_seed", "")
        cards.nth(0).locator(".reuse").click()
        assert page.input_value("#edit_seed") == "7" and page.input_value("#blend_words") == "circle blue"

        # …also from another model: the edit's model comes back with the edit's steps, not its default 25
        # (the model's edit info, asked for as it comes back, arrives after the settings are written).
        page.select_option("#model_id", "sr")
        page.wait_for_selector("#edit-form:not([data-ready])", state="attached")  # sr cannot edit
        page.fill("#edit_steps", "9")
        cards.nth(0).locator(".reuse").click()
        page.wait_for_selector("#edit-form[data-ready]", state="attached")  # the text model's info is in
        assert page.input_value("#model_id") == "serve-tiny-model"
        assert page.input_value("#edit_steps") == "6" and page.input_value("#edit_seed") == "7"

        # A server-side refusal is shown on the page: a target prompt that adds a word cannot be a replace.
        page.fill("#target_prompt", "a big blue circle on the left")
        page.click("#edit")
        page.wait_for_selector("#error:not([hidden])")
        error = page.inner_text("#error")
        assert error.startswith("target_prompt:") and "mode refine" in error, error
        assert page.locator("#gallery .edit-card").count() == 2
        page.reload()  # the pairs come back, from the server's job
        page.wait_for_function(f"{LOADED} == 4")
        assert page.locator("#gallery .edit-card .prompt").all_inner_texts() == [
            "a red circle on the left → a blue circle on the left"] * 2
        assert not failed, failed
    saved = sorted(p.name.split("_", 1)[1] for p in out.glob("*_*.png"))
    assert saved == ["edit_0.png", "edit_1.png", "source_0.png", "source_1.png"]  # also kept by the server
