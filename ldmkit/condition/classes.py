"""Class-conditional generation p(x | y) with y one of K class names.

τθ(y) = E[y] for a learned table E of K + 1 rows, row K being the null class ∅ that classifier-free
guidance samples against (a class is replaced by ∅ at the training's condition-drop rate). The row
reaches the UNet as a context of one token (B×1×d), so cross-attention carries the class and no text
encoder is needed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ldmkit.config import ConditionConfig, DataConfig
from ldmkit.errors import ConfigError, DataError, UsageError


class ClassEmbedding(nn.Module):
    """y (int64 [B], 0 … K, K = ∅) → context [B, 1, d]."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise ConfigError("a class-conditional model needs at least one class")
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(labels)[:, None, :]


def class_index(classes: Sequence[str], name: str) -> int:
    """The index of class ``name``; an unknown name is a ValueError listing the classes."""
    try:
        return list(classes).index(name)
    except ValueError:
        raise UsageError(f"unknown class {name!r}; this model's classes: {', '.join(classes)}") from None


def data_classes(condition: ConditionConfig, data: DataConfig, dataset) -> tuple[str, ...]:
    """The class names a model trains on: ``condition.classes`` when given, else the dataset's own (the
    built-in shapes: the shape types; an image folder: its subfolder names)."""
    if condition.classes:
        return tuple(condition.classes)
    classes = tuple(getattr(dataset, "classes", ()))
    if not classes:
        raise DataError(
            f"{data.source}: no classes found; put the images in one subfolder per class, or list them in "
            "condition.classes"
        )
    return classes


def class_labels(batch: dict, classes: Sequence[str], null_class: int) -> torch.Tensor:
    """int64 [B]: each item's class index, from its scene (shapes: the first object's shape) or its
    ``class_name`` (an image folder's subfolder). An item outside every class (an image directly in
    the folder's root) trains the null class, as an unconditional sample."""
    if "scene" in batch:
        names = [scene.objects[0].shape for scene in batch["scene"]]
    elif "class_name" in batch:
        names = batch["class_name"]
    else:
        raise DataError("class-conditional training needs items with a scene (shapes) or a class_name (a folder)")
    lookup = {name: i for i, name in enumerate(classes)}
    return torch.tensor([lookup.get(name, null_class) for name in names], dtype=torch.int64)
