"""text.colour_lexicon: colour names found, read by their colour, and (replace) replaced without moving any token."""

from __future__ import annotations

import dataclasses

import numpy as np

import pytest
import torch

from ldmkit.config import ConfigError, ModelConfig, load_preset
from ldmkit.model import LatentDiffusion
from ldmkit.text import PromptTokenizer
from ldmkit.text.colour_words import (
    FEATURES, SCALE, colour_difference, colour_features, find_colour_names, lexicon, named_colours, neutral_word,
    neutralise, projection,
)


def names(prompt: str) -> list[str]:
    return [found.name for found in find_colour_names(prompt)]


def test_lexicon_holds_survey_and_css_names():
    colours = lexicon()
    assert len(colours) > 1000
    assert colours["red"] == pytest.approx((229 / 255, 0, 0))  # the survey's red, not CSS's #ff0000
    assert "navy blue" in colours and "cornflowerblue" in colours  # a survey name, a CSS-only name


def test_names_longest_first_and_only_across_spaces():
    assert names("a small navy blue square above a lemon tile") == ["navy blue", "lemon"]
    assert names("red, blue and green") == ["red", "blue", "green"]  # a comma ends a name
    assert names("a grassy disc on a snowy hill") == ["grass", "snow"]  # the adjective in -y
    assert names("a tiny box above the circle") == []
    assert [f.span for f in find_colour_names("a Scarlet star")] == [(2, 9)]


def minilm_tokenizer():
    from ldmkit.text.minilm import WordPieceTokenizer

    return WordPieceTokenizer.from_package(24)


def test_neutralise_keeps_every_other_token_in_place():
    tokenizer = minilm_tokenizer()
    prompt = "a lavender star of cyan colour to the left of a robin's egg blue box"
    colours = named_colours(prompt, tokenizer)
    text = neutralise(prompt, colours, neutral_word(tokenizer))
    before, n = tokenizer.tokens(prompt)
    after, m = tokenizer.tokens(text)
    assert n == m
    named = {i for _, positions, _ in colours for i in positions}
    name_tokens = {"lavender", "cy", "##an", "robin", "'", "s", "egg", "blue"}
    assert named == {i for i, tok in enumerate(before[:n]) if tok in name_tokens}
    assert all(after[i] == "colour" for i in named)
    assert all(after[i] == before[i] for i in range(len(before)) if i not in named)


def test_near_colours_get_near_features():
    colours = lexicon()
    red, scarlet, navy = (colour_features(colours[w]) for w in ("red", "scarlet", "navy"))
    assert red.shape == (FEATURES,)
    assert (red - scarlet).norm() < (red - navy).norm() / 2
    r = projection(384)
    assert torch.allclose(r.T @ r, torch.eye(FEATURES), atol=1e-5)
    assert torch.equal(r, projection.__wrapped__(384))  # a function of the width alone


def tiny_models(tokenizer, modes=("off", "add", "replace")):
    preset = load_preset("tiny")
    torch.manual_seed(0)
    models = [LatentDiffusion(ModelConfig(autoencoder=preset.autoencoder, unet=preset.unet, diffusion=preset.diffusion,
                                          text=dataclasses.replace(preset.text, colour_lexicon=mode),
                                          image_size=preset.data.image_size), tokenizer) for mode in modes]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    return models


def colour_term(name: str, width: int) -> torch.Tensor:
    return SCALE * projection(width) @ colour_features(lexicon()[name])


def test_add_mode_adds_the_colour_to_the_names_tokens_only():
    tokenizer = PromptTokenizer.train(["a red circle on the left of a blue square, a colour"] * 20, 256, 24)
    plain, added, _ = tiny_models(tokenizer)
    prompts = ["a red square", "a square on the left", ""]
    with torch.no_grad():
        a, b = plain.encode_prompts(prompts), added.encode_prompts(prompts)
    tokens = tokenizer.token_indices("a red square", [(2, 5)])
    assert torch.allclose(b[0, tokens], a[0, tokens] + colour_term("red", a.shape[-1]), atol=1e-5)
    others = [i for i in range(a.shape[1]) if i not in tokens]
    assert torch.equal(b[0, others], a[0, others]) and torch.equal(b[1:], a[1:])


def test_replace_mode_reads_colour_names_by_colour_alone():
    tokenizer = PromptTokenizer.train(["a red circle on the left of a blue square, a colour"] * 20, 256, 24)
    plain, _, coloured = tiny_models(tokenizer)
    prompts = ["a red square", "a blue square", "a square on the left", ""]
    with torch.no_grad():
        a, b = plain.encode_prompts(prompts), coloured.encode_prompts(prompts)
    # no colour name: the same context, bit for bit
    assert torch.equal(a[2:], b[2:])
    # the colour name's tokens differ by colour; every other token reads the same neutral text
    colour_tokens = tokenizer.token_indices("a red square", [(2, 5)])
    others = [i for i in range(b.shape[1]) if i not in colour_tokens]
    assert torch.equal(b[0, others], b[1, others])
    with torch.no_grad():
        neutral = plain.encode_prompts(["a colour square"])[0, colour_tokens]
    for row, name in ((0, "red"), (1, "blue")):
        assert torch.allclose(b[row, colour_tokens], neutral + colour_term(name, b.shape[-1]), atol=1e-5)


def test_replace_noun_mode_also_puts_each_colour_on_its_own_noun():
    tokenizer = PromptTokenizer.train(["a red circle on the left of a blue square, a colour star in"] * 20, 256, 24)
    _, _, replaced, noun = tiny_models(tokenizer, ("off", "add", "replace", "replace-noun"))
    prompts = ["a red circle left of a blue square", "a star in red", "a square on the left"]
    with torch.no_grad():
        a, b = replaced.encode_prompts(prompts), noun.encode_prompts(prompts)
    width = a.shape[-1]
    circle = tokenizer.token_indices(prompts[0], [(6, 12)])
    square = tokenizer.token_indices(prompts[0], [(28, 34)])
    assert torch.allclose(b[0, circle], a[0, circle] + colour_term("red", width), atol=1e-5)
    assert torch.allclose(b[0, square], a[0, square] + colour_term("blue", width), atol=1e-5)
    others = [i for i in range(a.shape[1]) if i not in circle + square]
    assert torch.equal(b[0, others], a[0, others])  # the colour words themselves as in replace mode
    star = tokenizer.token_indices(prompts[1], [(2, 6)])  # a colour after its noun ("in red") binds to it too
    assert torch.allclose(b[1, star], a[1, star] + colour_term("red", width), atol=1e-5)
    assert torch.equal(a[2], b[2])  # no colour name: nothing added


def test_tokenizer_without_a_neutral_word_is_a_config_error():
    tokenizer = PromptTokenizer.train(["a red circle on the left of a blue square"] * 20, 64, 24)
    with pytest.raises(ConfigError, match="colour_lexicon needs a tokenizer"):
        neutral_word(tokenizer)


def test_colour_word_dropout_hides_names_from_the_encoder_in_the_rows_drawn():
    from ldmkit.train.diffusion import draw_step

    tokenizer = PromptTokenizer.train(["a red circle on the left of a blue square, a colour"] * 20, 256, 24)
    _, added, replaced = tiny_models(tokenizer)
    prompts = ["a red square", "a blue circle"]
    with torch.no_grad():
        mixed = added.encode_prompts(prompts, neutral_colours=[True, False])
        assert torch.equal(mixed[0], replaced.encode_prompts(prompts)[0])
        assert torch.equal(mixed[1], added.encode_prompts(prompts)[1])
    # drawn after every other number of the step: the other draws stay what they were
    plain = draw_step(torch.Generator().manual_seed(3), 64, (4, 8, 8), 1000, 0.1, True)
    drawn = draw_step(torch.Generator().manual_seed(3), 64, (4, 8, 8), 1000, 0.1, True, colour_dropout=0.5)
    assert plain.neutral_colours is None and 16 < int(drawn.neutral_colours.sum()) < 48
    assert torch.equal(plain.t, drawn.t) and torch.equal(plain.noise, drawn.noise)


@pytest.mark.parametrize("share, mode", [(0.5, "off"), (0.5, "replace"), (1.5, "add")])
def test_colour_word_dropout_needs_an_add_model(share, mode):
    from ldmkit.train.diffusion import check_colour_word_dropout

    with pytest.raises(ConfigError, match="colour_word_dropout"):
        check_colour_word_dropout(share, mode)
    check_colour_word_dropout(0.0, mode)
    check_colour_word_dropout(0.5, "add")


def test_a_bare_off_in_yaml_reads_as_the_off_mode(tmp_path):
    """YAML 1.1 reads `colour_lexicon: off` as False; the config takes it as the mode it names."""
    from ldmkit.config import load_yaml
    from ldmkit.config.model import TextEncoderConfig

    path = tmp_path / "text.yaml"
    path.write_text("kind: minilm\nwidth: 384\ncolour_lexicon: off\n")
    assert load_yaml(TextEncoderConfig, path).colour_lexicon == "off"
    path.write_text("colour_lexicon: yes\n")
    with pytest.raises(ConfigError, match="allowed: off, add, replace, replace-noun"):
        load_yaml(TextEncoderConfig, path)


def test_ciede2000_matches_the_published_test_pairs_and_scikit_image():
    skimage = pytest.importorskip("skimage.color")
    # pairs of Sharma, Wu and Dalal's table of CIEDE2000 test data (ΔE₀₀ to 4 places)
    published = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
                 ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
                 ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0),
                 ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
                 ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082)]
    for lab1, lab2, expected in published:
        assert colour_difference(lab1, lab2) == pytest.approx(expected, abs=1e-4)
        assert colour_difference(lab2, lab1) == pytest.approx(expected, abs=1e-4)  # symmetric
    rng = np.random.default_rng(0)
    for _ in range(200):
        lab1, lab2 = rng.uniform([0, -100, -100], [100, 100, 100], (2, 3))
        for k_l in (1.0, 2.0):
            assert colour_difference(tuple(lab1), tuple(lab2), k_l) == pytest.approx(
                float(skimage.deltaE_ciede2000(lab1, lab2, kL=k_l)), abs=1e-9)
    # k_L = 2 counts a difference in lightness alone half
    assert colour_difference((40, 0, 0), (60, 0, 0), 2.0) == pytest.approx(colour_difference((40, 0, 0), (60, 0, 0)) / 2)
