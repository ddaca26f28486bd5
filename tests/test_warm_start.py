"""Fine-tuning from a trained model (`ldmkit train --init MODEL`): what carries over, what starts at zero,
and the refusals."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ldmkit.cli import main
from ldmkit.config import load_preset
from ldmkit.model import LatentDiffusion
from ldmkit.storage import CheckpointError
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.diffusion import train_diffusion
from ldmkit.train.warm_start import warm_start


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    ae = train_autoencoder(load_preset("tiny"), root / "ae", steps=3, progress=False)
    text = train_diffusion(load_preset("tiny"), ae, root / "text", steps=3, progress=False)
    return {"ae": ae, "text": text, "root": root}


def v_with_coordinates():
    """tiny switched to v-prediction, zero terminal SNR and coordinate channels: the shapes64-v changes."""
    p = load_preset("tiny")
    return dataclasses.replace(
        p, diffusion=dataclasses.replace(p.diffusion, prediction="v", zero_terminal_snr=True),
        unet=dataclasses.replace(p.unet, coordinate_channels=True))


def fresh(preset, source: LatentDiffusion) -> LatentDiffusion:
    from ldmkit.config import ModelConfig

    config = ModelConfig(autoencoder=source.config.autoencoder, text=preset.text, unet=preset.unet,
                         diffusion=preset.diffusion, image_size=preset.data.image_size, condition=preset.condition)
    torch.manual_seed(1)
    model = LatentDiffusion(config, source.tokenizer)
    model.autoencoder.load_state_dict(source.autoencoder.state_dict())
    return model


@pytest.mark.slow
def test_new_input_channels_start_at_zero_so_the_network_computes_what_it_did(trained):
    source = LatentDiffusion.load(trained["text"])
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    context = source.encode_prompts(["a red circle", "a blue square on the left"])
    for preset in (v_with_coordinates(), load_preset("tiny-sr")):
        model = fresh(preset, source)
        warm_start(model, source)
        extra = model.unet.cfg.in_channels + 2 * model.unet.cfg.coordinate_channels - 4
        assert torch.equal(model.unet.conv_in.weight[:, :4], source.unet.conv_in.weight)
        assert not model.unet.conv_in.weight[:, 4:].any() and extra > 0
        assert torch.equal(model.encode_prompts(["a red circle", "a blue square on the left"]), context)
        z_in = torch.cat([z, torch.randn(2, model.unet.cfg.in_channels - 4, 8, 8)], dim=1)  # any condition
        with torch.no_grad():
            assert torch.allclose(model.unet(z_in, t, context), source.unet(z, t, context), atol=1e-6)


@pytest.mark.slow
def test_init_trains_from_the_model_with_its_vocabulary(trained, tmp_path):
    out = train_diffusion(v_with_coordinates(), trained["ae"], tmp_path / "v", steps=2, progress=False,
                          init=trained["text"])
    tuned, source = LatentDiffusion.load(out), LatentDiffusion.load(trained["text"])
    assert tuned.tokenizer._tok.get_vocab() == source.tokenizer._tok.get_vocab()
    assert tuned.config.diffusion.prediction == "v" and tuned.config.unet.coordinate_channels
    # two steps move the weights a little from the source's, not back to a random start
    a, b = tuned.unet.conv_out.weight, source.unet.conv_out.weight
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.05 * b.abs().max()


@pytest.mark.slow
def test_a_model_that_does_not_fit_is_refused(trained, tmp_path, capsys):
    source = LatentDiffusion.load(trained["text"])
    wider = load_preset("tiny")
    wider = dataclasses.replace(wider, unet=dataclasses.replace(wider.unet, model_channels=48))
    with pytest.raises(CheckpointError, match=r"unet: wrong shapes: time_embed.0.weight is \(128, 32\) there, \(192, 48\) here"):
        warm_start(fresh(wider, source), source)
    capsys.readouterr()
    assert main(["train", "--preset", "tiny-class", "--autoencoder", str(trained["ae"]), "--init",
                 str(trained["text"]), "--out", str(tmp_path / "c"), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'text' model" in err and "same prompt model" in err and len(err.splitlines()) == 1
    other = train_autoencoder(load_preset("tiny"), tmp_path / "ae2", steps=1, progress=False)
    assert main(["train", "--preset", "tiny", "--autoencoder", str(other), "--init", str(trained["text"]),
                 "--out", str(tmp_path / "t"), "--steps", "1", "--no-progress"]) == 2
    assert "another autoencoder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fine_tune_of_a_minilm_model_resumes_with_its_vocabulary(trained, tmp_path):
    from ldmkit.text.minilm import WordPieceTokenizer

    tiny = load_preset("tiny")
    preset = dataclasses.replace(
        tiny, text=dataclasses.replace(tiny.text, kind="minilm", width=384),
        unet=dataclasses.replace(tiny.unet, context_dim=384),
        train=dataclasses.replace(tiny.train, checkpoint_every=2))
    base = train_diffusion(preset, trained["ae"], tmp_path / "base", steps=2, progress=False)
    tuned = train_diffusion(preset, trained["ae"], tmp_path / "tuned", steps=2, progress=False, init=base)
    for run in (base, tuned):  # a run from scratch and a fine-tune, each read back from its checkpoint
        resumed = train_diffusion(preset, trained["ae"], run, steps=4, resume=True, progress=False)
        tokenizer = LatentDiffusion.load(resumed).tokenizer
        assert isinstance(tokenizer, WordPieceTokenizer)
        assert tokenizer.tokens("a cyan circle")[0][:5] == ["[CLS]", "a", "cy", "##an", "circle"]  # BERT's words
