"""The prompt tokenizer and the text encoder τθ."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from ldmkit.config import ConfigError, TextEncoderConfig, UNetConfig
from ldmkit.text import PromptTokenizer, TextEncoder, check_text_unet

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
CAPTIONS = [
    f"a {c1} {s1} to the {side} of a {c2} {s2}"
    for (c1, s1), (c2, s2), side in zip(
        itertools.product(COLORS, SHAPES),
        itertools.product(reversed(COLORS), SHAPES),
        itertools.cycle(["left", "right"]),
    )
] + [f"one big {c} {s}." for c in COLORS for s in SHAPES] + ["A Small, Purple Star!"]
VOCAB, MAX_LEN = 128, 12
LONG = "a red circle to the left of a blue square and a green triangle above a yellow star"


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    return PromptTokenizer.train(CAPTIONS, vocab_size=VOCAB, max_length=MAX_LEN)


def fresh(tok: PromptTokenizer, tmp_path) -> PromptTokenizer:
    """A separate instance (own warn-once state) of the same tokenizer."""
    return PromptTokenizer.load(tok.save(tmp_path / "copy.json"))


# --------------------------------------------------------------------------------------------------
# tokenizer


def test_training_respects_vocab_size_and_learns_words(tok):
    assert len(CAPTIONS) >= 24
    assert 4 < tok.vocab_size <= VOCAB
    ids, mask = tok(["a red circle"])
    assert mask.sum() == 5  # <s> ▁a ▁red ▁circle </s>: frequent words became single tokens


def test_output_types_and_start_end_tokens(tok):
    ids, mask = tok(["a red circle", "one big green square."])
    assert ids.shape == mask.shape == (2, MAX_LEN)
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert row[0] == tok.start_id and row[n - 1] == tok.end_id
        assert torch.all(row[n:] == tok.pad_id)
        assert torch.equal(m, torch.arange(MAX_LEN) < n)  # real tokens first, then padding
    assert torch.equal(mask, ids != tok.pad_id)


def test_empty_prompt_is_start_end_only(tok):
    for null in ["", "   "]:
        ids, mask = tok([null])
        assert ids[0, :2].tolist() == [tok.start_id, tok.end_id]
        assert torch.all(ids[0, 2:] == tok.pad_id)
        assert mask[0].tolist() == [True, True] + [False] * (MAX_LEN - 2)


def test_normalisation_lowercases_and_folds_punctuation(tok):
    a, _ = tok(["A RED Circle — ‘left’"])
    b, _ = tok(["a red circle - 'left'"])
    assert torch.equal(a, b)


def test_unknown_words_and_unicode_do_not_crash(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is long enough to be truncated
        ids, mask = tok(["a zebra", "café 日本 😀", "\u200b\t\n"])
    assert ids.shape == (3, MAX_LEN)
    # unknown ascii words fall back to sub-word pieces, never to <unk> or padding
    row = ids[0][mask[0]]
    assert torch.all(row != tok.pad_id) and torch.all(row != tok.unk_id) and len(row) > 4
    # characters outside the alphabet become <unk>, which is a real (unmasked) token
    assert (ids[1][mask[1]] == tok.unk_id).any()
    assert torch.equal(mask, ids != tok.pad_id)


def test_truncation_keeps_end_token_and_warns_once(tok, tmp_path):
    tok = fresh(tok, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = tok([LONG, "a red circle", LONG + " again"])
        tok([LONG])
        tok(LONG)
    assert ids.shape == (3, MAX_LEN)
    assert mask[0].all() and ids[0, -1] == tok.end_id and ids[0, 0] == tok.start_id
    assert ids[2, -1] == tok.end_id
    assert len(caught) == 1 and str(MAX_LEN) in str(caught[0].message)
    assert "\n" not in str(caught[0].message)

    other = fresh(tok, tmp_path)  # a new instance warns on its own first cut
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other([LONG])
    assert len(caught) == 1


def test_save_load_round_trip(tok, tmp_path):
    prompts = ["a red circle", "", LONG, "unknown zebra café", "one big blue triangle."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = tok.save(tmp_path / "tokenizer.json")
        assert path.is_file() and list(tmp_path.iterdir()) == [path]  # one file holds everything
        loaded = PromptTokenizer.load(path)
        from_dir = PromptTokenizer.load(tmp_path)
        for other in (loaded, from_dir):
            assert other.max_length == MAX_LEN and other.vocab_size == tok.vocab_size
            for a, b in zip(tok(prompts), other(prompts)):
                assert torch.equal(a, b)
    assert tok.decode(tok(["a red circle"])[0]) == ["a red circle"]


def test_load_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        PromptTokenizer.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    for content in ['{"version": "1.0", "model": ', "not json at all", "{}"]:
        bad.write_text(content)
        with pytest.raises(ValueError, match="not a valid tokenizer file") as info:
            PromptTokenizer.load(bad)
        assert "\n" not in str(info.value)


def test_train_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="vocab_size"):
        PromptTokenizer.train(CAPTIONS, vocab_size=20, max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        PromptTokenizer.train(CAPTIONS, vocab_size=VOCAB, max_length=1)


# --------------------------------------------------------------------------------------------------
# text encoder


def encoder_cfg(**overrides) -> TextEncoderConfig:
    return TextEncoderConfig(**{**dict(vocab_size=VOCAB, max_length=MAX_LEN, width=32, layers=2, heads=2), **overrides})


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(encoder_cfg()).eval()


def test_encoder_shape(tok, encoder):
    ids, mask = tok(["a red circle", "", "one big green square."])
    assert encoder(ids, mask).shape == (3, MAX_LEN, 32)
    assert encoder(ids[:, :5]).shape == (3, 5, 32)  # shorter sequences are fine
    with pytest.raises(ValueError, match="max_length"):
        encoder(torch.zeros(1, MAX_LEN + 1, dtype=torch.int64))


def test_padding_does_not_affect_real_tokens(tok, encoder):
    ids, mask = tok(["a red circle", ""])
    garbage = ids.clone()
    garbage[~mask] = torch.randint(4, tok.vocab_size, (int((~mask).sum()),))
    a, b = encoder(ids, mask), encoder(garbage, mask)
    torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=1e-6)
    assert not torch.allclose(encoder(ids), encoder(garbage))  # without the mask padding leaks in


def test_different_prompts_give_different_contexts(tok, encoder):
    ids, mask = tok(["a red circle", "a blue circle", ""])
    c = encoder(ids, mask)
    assert not torch.allclose(c[0], c[1]) and not torch.allclose(c[0], c[2])


def test_encoder_gradients_flow(tok):
    torch.manual_seed(0)
    enc = TextEncoder(encoder_cfg())
    ids, mask = tok(["a red circle", "one big green square."])
    context = enc(ids, mask)
    context[mask].pow(2).mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_encoder_under_bf16_autocast(tok, encoder):
    ids, mask = tok(["a red circle"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = encoder(ids, mask)
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c.float(), encoder(ids, mask), rtol=0.1, atol=0.1)


def test_check_text_unet(tok):
    text, unet = encoder_cfg(), UNetConfig(context_dim=32)
    check_text_unet(text, unet, tok)
    with pytest.raises(ConfigError, match="context_dim"):
        check_text_unet(text, UNetConfig(context_dim=64))
    with pytest.raises(ConfigError, match="vocab_size"):
        check_text_unet(encoder_cfg(vocab_size=tok.vocab_size - 1), unet, tok)
    with pytest.raises(ConfigError, match="max_length"):
        check_text_unet(encoder_cfg(max_length=MAX_LEN - 1), unet, tok)
    with pytest.raises(ConfigError, match="heads"):
        TextEncoder(encoder_cfg(heads=3))


def test_zero_padding_leaves_words_and_zeroes_padding():
    """text.zero_padding: the context at padding positions is 0 (so cross-attention reads nothing there),
    the words' vectors are the encoder's own."""
    import dataclasses

    from ldmkit.config import ModelConfig, load_preset
    from ldmkit.model import LatentDiffusion
    from ldmkit.text import PromptTokenizer

    preset = load_preset("tiny")
    tokenizer = PromptTokenizer.train(["a red circle on the left", "a blue square"] * 20, preset.text.vocab_size,
                                      preset.text.max_length)
    configs = [ModelConfig(autoencoder=preset.autoencoder, text=dataclasses.replace(preset.text, zero_padding=z),
                           unet=preset.unet, diffusion=preset.diffusion, image_size=preset.data.image_size)
               for z in (False, True)]
    torch.manual_seed(0)
    plain = LatentDiffusion(configs[0], tokenizer)
    zeroed = LatentDiffusion(configs[1], tokenizer)
    zeroed.load_state_dict(plain.state_dict())
    prompts = ["a red circle", ""]
    _, mask = tokenizer(prompts)
    seen = []
    zeroed.text_encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    with torch.no_grad():
        a, b = plain.encode_prompts(prompts), zeroed.encode_prompts(prompts)
    # the words' vectors are the encoder's own (to float reordering: with padding zeroed, it reads only the
    # positions up to the longest prompt, which no real token's attention reached anyway)
    assert b.shape == a.shape and seen == [int(mask.sum(1).max())] < [mask.shape[1]]
    torch.testing.assert_close(b[mask], a[mask], rtol=1e-5, atol=1e-5)
    assert (b[~mask] == 0).all() and (a[~mask] != 0).any()
