"""Choosing the training dataset from a `DataConfig`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ldmkit.config import DataConfig
from ldmkit.data.coco import CocoCaptions
from ldmkit.data.collate import collate  # noqa: F401  (re-exported: ldmkit.data.dataset.collate)
from ldmkit.data.imagefolder import ImageFolderDataset
from ldmkit.data.shapes_dataset import ShapesDataset
from ldmkit.data.shards import ShardDataset, is_shard_source
from ldmkit.errors import DataError


def build_dataset(cfg: DataConfig) -> Dataset:
    """The dataset ``cfg.source`` names: `ShapesDataset` ("shapes"), `CocoCaptions` ("coco"), a
    streamed `ShardDataset` (tar shards: a ``.tar`` path, URL or brace pattern, or a folder of
    ``.tar`` files), else an `ImageFolderDataset` of that folder."""
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


def dataset_captions(dataset, limit: int) -> list[str]:
    """Up to ``limit`` captions, without decoding images where the dataset allows it."""
    if hasattr(dataset, "read_captions"):  # a stream of shards reads the text entries only
        return dataset.read_captions(limit)
    n = min(len(dataset), limit)
    if hasattr(dataset, "captions"):  # an image folder knows its captions without decoding images
        return list(dataset.captions[:n])
    return [dataset[i]["caption"] for i in range(n)]


COLOUR_SPREAD = 0.1  # a word names a colour if its objects' colours spread less than this share of all objects'
INSIDE = 0.9  # mask coverage from which a pixel is an object's own (not an edge blended with the background)


def dataset_word_colours(dataset, limit: int) -> dict[str, tuple[float, float, float]]:
    """The colour each caption word names, from the grounding targets of up to ``limit`` items: every object's colour
    is the mean sRGB (in [0, 1]³) of its image's pixels inside its mask, and a word naming objects (three or more)
    whose colours spread, as mean squared distance from their mean, less than `COLOUR_SPREAD` of all objects'
    spread names their mean: "red", "crimson" do; "small", "circle", which name objects of every colour, do not.
    Empty for a dataset whose items carry no grounding targets (a stream of shards is not read)."""
    if hasattr(dataset, "read_captions") or len(dataset) == 0 or dataset[0].get("grounding") is None:
        return {}
    named: dict[str, list[torch.Tensor]] = {}
    colours = []
    for i in range(min(len(dataset), limit)):
        item = dataset[i]
        target = item.get("grounding")
        if target is None:
            continue
        pixels = (item["images"].float().clamp(-1, 1) + 1) / 2
        for mask, spans in zip(target.masks, target.spans):
            inside = mask >= INSIDE
            if not inside.any():
                continue
            colour = pixels[:, inside].mean(1)
            colours.append(colour)
            for a, b in spans:
                named.setdefault(item["caption"][a:b].lower(), []).append(colour)
    if len(colours) < 2:
        return {}
    everything = torch.stack(colours)
    spread = (everything - everything.mean(0)).pow(2).sum(1).mean()
    found = {}
    for word, seen in sorted(named.items()):
        seen = torch.stack(seen)
        if len(seen) >= 3 and (seen - seen.mean(0)).pow(2).sum(1).mean() < COLOUR_SPREAD * spread:
            found[word] = tuple(float(c) for c in seen.mean(0))
    return found
