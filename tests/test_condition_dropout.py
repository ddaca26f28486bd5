"""Condition dropout: the null prompt "" replaces captions at the configured rate, and it is what
the sampler's unconditional branch uses."""

import torch

from ldmkit.config import load_preset
from ldmkit.train.diffusion import caption_keep_mask


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """The captions as a training step sees them (`batch_condition`): "" where the keep mask is False."""
    keep = caption_keep_mask(len(captions), p, generator)
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


def test_dropout_produces_null_context_at_configured_rate():
    captions = [f"a red circle number {i}" for i in range(20_000)]
    for p in (0.0, 0.1, 0.5):
        dropped = drop_captions(captions, p, torch.Generator().manual_seed(0))
        rate = sum(c == "" for c in dropped) / len(captions)
        assert abs(rate - p) < 0.01, (p, rate)
        assert all(d in ("", c) for d, c in zip(dropped, captions))


def test_dropout_is_seeded():
    captions = ["a blue star"] * 100
    a = drop_captions(captions, 0.3, torch.Generator().manual_seed(5))
    b = drop_captions(captions, 0.3, torch.Generator().manual_seed(5))
    assert a == b


def test_presets_train_with_ten_percent_dropout():
    assert load_preset("shapes64").train.cond_drop_prob == 0.1
