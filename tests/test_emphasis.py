"""A1111's prompt emphasis syntax: how a prompt is parsed, weighted, cut into chunks, and drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.errors import UsageError
from ldmkit.text.clip import ClipTokenizer
from ldmkit.text.emphasis import parse, segments, uses_syntax
from ldmkit.text.weighted import emphasis_contexts, prompt_pieces
from tests.tiny_models import build_attentive_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_attentive_tiny_model(tmp_path_factory.getbasetemp() / "emphasis-tiny-model")


@pytest.fixture(scope="module")
def pipe(folder):
    return load_pipeline(folder)


@pytest.mark.parametrize("prompt,expected", [
    ("a (cat:1.3) on a mat", [("a ", 1.0), ("cat", 1.3), (" on a mat", 1.0)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("[cat]", [("cat", 1 / 1.1)]),
    ("a (red [cat]:1.5)", [("a ", 1.0), ("red ", 1.5), ("cat", 1.5 / 1.1)]),
    ("(cat:-1) dog", [("cat", -1.0), (" dog", 1.0)]),
    (r"a \(cat\) \[dog\]", [("a (cat) [dog]", 1.0)]),
    ("(unclosed", [("unclosed", 1.1)]),
    ("closed) style: photo", [("closed) style: photo", 1.0)]),
    ("a cat BREAK a dog", [("a cat", 1.0), ("BREAK", None), ("a dog", 1.0)]),
])
def test_segments_read_the_syntax_as_a1111_does(prompt, expected):
    got = segments(prompt)
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_parse_gives_plain_text_per_chunk_with_the_weighted_spans():
    parsed = parse("a (red:1.5) circle BREAK [a blue square] BREAK")
    assert parsed.chunks == ("a red circle", "a blue square")  # a BREAK at the end starts no chunk
    assert parsed.weights[0] == (((2, 5), 1.5),)
    assert parsed.weights[1][0][0] == (0, 13)
    assert parse("a red circle").plain and not uses_syntax("a red circle")
    assert uses_syntax("a (red) circle") and uses_syntax(r"a \(red\)") and uses_syntax("a BREAK b")
    assert not uses_syntax("a circle: red, round")


def test_a_long_prompt_is_cut_into_pieces_that_fit_the_clip_tokenizer_whole():
    tokenizer = ClipTokenizer.from_clip_package()
    prompt = ", ".join(f"word{i} (detail:1.2)" for i in range(40))
    pieces = prompt_pieces(prompt, tokenizer)
    assert len(pieces) > 1
    for text, spans in pieces:
        tokens, real = tokenizer.tokens(text)
        assert real <= tokenizer.max_length and tokens[real - 1] == "<|endoftext|>"  # nothing cut off
        assert spans and all(text[s:e] and text[s:e] in "detail" and w == 1.2 for (s, e), w in spans)
    assert " ".join(text for text, _ in pieces).replace(" ", "") == parse(prompt).text.replace(" ", "")


def test_contexts_weigh_the_emphasised_tokens_and_keep_plain_prompts_exact(pipe):
    model = pipe.model
    encode, tokenizer = model.encode_prompts, model.tokenizer
    length = tokenizer.max_length
    with torch.no_grad():
        plain = model.encode_prompts(["a red circle"])
        got = emphasis_contexts(["a red circle", "a (red:2) circle", "a red circle BREAK a blue square"], encode,
                                tokenizer)
        assert got.shape == (3, 2 * length, plain.shape[-1])
        assert torch.equal(got[0, :length], plain[0])  # a plain prompt that fits: the plain context exactly
        empty = model.encode_prompts([""])[0]
        assert torch.equal(got[0, length:], empty) and torch.equal(got[1, length:], empty)  # padded chunks
        assert torch.equal(got[2, length:], model.encode_prompts(["a blue square"])[0])
        red = tokenizer.token_indices("a red circle", [(2, 5)])
        others = [i for i in range(length) if i not in red]
        ratio = got[1, red] / plain[0, red]
        rest = got[1, others] / plain[0, others]
        scale = plain[0].mean() / (plain[0] * torch.where(torch.isin(torch.arange(length), torch.tensor(red)),
                                                          2.0, 1.0)[:, None]).mean()
        torch.testing.assert_close(ratio, torch.full_like(ratio, 2 * float(scale)))  # w · mean(c)/mean(c ⊙ w)
        torch.testing.assert_close(rest[plain[0, others] != 0], torch.full_like(rest[plain[0, others] != 0],
                                                                                float(scale)))


def test_the_pipeline_reads_a1111_syntax_only_when_asked(pipe):
    def image(prompt, **options):
        return np.asarray(pipe(prompt, num_inference_steps=2, generator=0, **options).images[0], dtype=float)

    plain = image("a red circle")
    assert np.array_equal(image("a red circle", prompt_syntax="a1111"), plain)
    assert not np.array_equal(image("a (red:1.8) circle", prompt_syntax="a1111"), plain)
    long = " ".join(["a red circle above a blue square"] * 8)  # several chunks, with a negative prompt of one
    assert image(long, prompt_syntax="a1111", negative_prompt="green").shape == plain.shape
    with pytest.raises(UsageError, match="prompt_syntax"):
        image("a red circle", prompt_syntax="compel")
    with pytest.raises(UsageError, match="one chunk"):
        image("a red circle BREAK a blue square", prompt_syntax="a1111", binding=0.2)


def test_generate_reads_a1111_syntax_with_prompt_syntax_and_says_when_it_does_not(folder, tmp_path, capsys):
    from ldmkit.cli import main

    base = ["generate", "a (red:1.8) circle", "--model", str(folder), "--steps", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "plain.png")]) == 0
    assert "--prompt-syntax a1111" in capsys.readouterr().err  # read as written, and said
    assert main([*base, "--prompt-syntax", "a1111", "--out", str(tmp_path / "a1111.png")]) == 0
    assert "--prompt-syntax a1111" not in capsys.readouterr().err
    plain, weighted = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "a1111"))
    assert not np.array_equal(plain, weighted)


def test_img2img_reads_a1111_syntax_when_asked(folder, tmp_path):
    from ldmkit.cli import main

    Image.new("RGB", (32, 32), (250, 250, 250)).save(tmp_path / "in.png")
    base = ["img2img", str(tmp_path / "in.png"), "a (red:1.8) circle", "--model", str(folder), "--steps", "4",
            "--strength", "0.75", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*base, "--prompt-syntax", "a1111", "--out", str(tmp_path / "a1111.png")]) == 0
    plain, weighted = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "a1111"))
    assert not np.array_equal(plain, weighted)


@pytest.mark.parametrize("preset", ["tiny-inpaint", "tiny-sr", "tiny-colorize"])
def test_image_conditioned_pipelines_read_a1111_syntax_when_asked(tmp_path_factory, preset):
    """Inpainting (and uncropping), super-resolution and colorization take prompt_syntax as text-to-image does: the
    weights change the image, and a prompt without the syntax draws the same image either way."""
    from ldmkit.pipelines import ColorizationPipeline, InpaintingPipeline, SuperResolutionPipeline

    cls = {"tiny-inpaint": InpaintingPipeline, "tiny-sr": SuperResolutionPipeline,
           "tiny-colorize": ColorizationPipeline}[preset]
    pipe = cls.from_folder(build_attentive_tiny_model(tmp_path_factory.getbasetemp() / f"emphasis-{preset}", preset))
    side = 8 if preset == "tiny-sr" else 32
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
    inputs = (image, Image.new("L", (32, 32), 255)) if preset == "tiny-inpaint" else (image,)

    def draw(prompt, syntax):
        return pipe(*inputs, prompt=prompt, num_inference_steps=2, guidance_scale=3.0, generator=1,
                    output_type="pt", prompt_syntax=syntax).images

    assert not torch.equal(draw("a (red:1.8) circle", "plain"), draw("a (red:1.8) circle", "a1111"))
    assert torch.equal(draw("a red circle", "plain"), draw("a red circle", "a1111"))
    if preset == "tiny-inpaint":
        uncropped = [pipe.uncrop(image, "right", 0.5, "a (red:1.8) circle", steps=2, guidance=3.0, seed=1,
                                 output_type="pt", prompt_syntax=syntax).images for syntax in ("plain", "a1111")]
        assert not torch.equal(*uncropped)
    with pytest.raises(UsageError, match="prompt_syntax"):
        draw("a red circle", "comfy")
