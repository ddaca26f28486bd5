"""Choosing the training dataset from a `DataConfig`, and batching its items."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ldmkit.config import DataConfig


from ldmkit.errors import DataError  # noqa: F401  (re-exported: ldmkit.data.DataError)


def build_dataset(cfg: DataConfig) -> Dataset:
    """The dataset ``cfg.source`` names: `ShapesDataset` ("shapes"), `CocoCaptions` ("coco"), a
    streamed `ShardDataset` (tar shards: a ``.tar`` path, URL or brace pattern, or a folder of
    ``.tar`` files), else an `ImageFolderDataset` of that folder."""
    # Imported here, not at the top, because those modules import DataError from this one.
    from ldmkit.data.coco import CocoCaptions
    from ldmkit.data.imagefolder import ImageFolderDataset
    from ldmkit.data.shapes_dataset import ShapesDataset
    from ldmkit.data.shards import ShardDataset, is_shard_source

    if cfg.source == "shapes":
        if cfg.hflip:
            raise DataError("data.hflip must be false for the shapes dataset: flips make 'left'/'right' captions false")
        return ShapesDataset(cfg.image_size, cfg.num_samples, cfg.seed, cfg.max_objects, cfg.two_object_share,
                             cfg.captions, cfg.grounding)
    if cfg.source == "coco":
        if not cfg.coco_annotations:
            raise DataError("data.source coco needs data.coco_annotations (e.g. annotations/captions_train2017.json)")
        if cfg.grounding and not cfg.coco_instances:
            raise DataError("data.grounding on COCO needs data.coco_instances (e.g. annotations/instances_train2017.json)")
        return CocoCaptions(cfg.coco_annotations, cfg.coco_images or None, cfg.image_size, hflip=cfg.hflip,
                            instances=cfg.coco_instances if cfg.grounding else None)
    if is_shard_source(cfg.source):
        return ShardDataset(cfg.source, cfg.image_size, hflip=cfg.hflip, shuffle_buffer=cfg.shuffle_buffer)
    return ImageFolderDataset(Path(cfg.source).expanduser(), cfg.image_size, hflip=cfg.hflip, grounding=cfg.grounding)


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
