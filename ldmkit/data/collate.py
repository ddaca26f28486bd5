"""Batching dataset items."""

from __future__ import annotations

import torch


def collate(batch: list[dict]) -> dict:
    """Items -> a batch with the same keys: tensors stacked ("images" to B×3×H×W, a latent cache's
    "mean" and "std" to B×c×h×w), every other value a list.

    Captions (str), scenes (`Scene`) and class names (str) stay Python lists of length B, which
    the default PyTorch collate cannot do for scenes.
    """
    if not batch:
        raise ValueError("collate needs at least one item")
    out = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
