"""MS-COCO captions, the lecture's text-to-image benchmark format: an annotations JSON and an image folder.

``captions_train2017.json`` holds ``{"images": [{"id": 9, "file_name": "000000000009.jpg", …}],
"annotations": [{"image_id": 9, "id": 1, "caption": "A plate of food…"}, …]}``: about five captions
per image. The standard layout is ``coco/annotations/captions_train2017.json`` beside the image
folder ``coco/train2017/``, which is where the images are looked for unless given. With the instances
file (``data.coco_instances``: ``instances_train2017.json``) and ``data.grounding``, an item carries the
masks of the categories its caption names (`ldmkit.data.grounding`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ldmkit.data.grounding import Grounding, mask_tensor, polygon_mask
from ldmkit.data.imagefolder import first_readable
from ldmkit.errors import DataError


def default_image_folder(annotations: Path) -> Path:
    """``coco/train2017`` for ``coco/annotations/captions_train2017.json`` (the split from the file name)."""
    match = re.match(r"captions_(\w+)\.json$", annotations.name)
    if not match:
        raise DataError(f"cannot tell the image folder of {annotations}; set data.coco_images")
    return annotations.parent.parent / match.group(1)


def read_annotations(path: Path) -> tuple[list[str], list[str]]:
    """(file name, caption) of every caption in a COCO captions file, sorted by file name then
    annotation id, so the item order does not depend on the order inside the JSON. A record that is not
    one (`caption_record`) is a DataError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO annotations not found: {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list)):
        raise DataError(f'{path} is not a COCO captions file: expected "images" and "annotations" lists')
    try:
        files = {image["id"]: image["file_name"] for image in data["images"]}
    except (KeyError, TypeError) as e:
        raise DataError(f'{path}: an "images" record without an "id" and a "file_name" ({type(e).__name__}: '
                        f'{e})') from None
    records = [caption_record(path, a, files) for a in data["annotations"]]
    try:
        pairs = sorted(records)
    except TypeError:  # ids of several types: "1" beside 2
        raise DataError(f'{path}: the annotations\' "id" fields are not all numbers') from None
    return [p[0] for p in pairs], [p[2] for p in pairs]


def caption_record(path: Path, annotation, files: dict) -> tuple[str, int, str]:
    """(file name, annotation id, caption) of one record of a captions file's "annotations" list,
    ``{"image_id": 9, "id": 1, "caption": "A plate of food…"}`` with ``files`` the "images" list as {id: file name};
    a DataError naming the record for one whose image_id no image record has or whose caption is not a string
    (as `read_metadata` refuses a non-string "text": None would train as the text "None")."""
    if not isinstance(annotation, dict) or "image_id" not in annotation:
        raise DataError(f'{path}: an "annotations" record without an "image_id": {str(annotation)[:80]}')
    image_id = annotation["image_id"]
    where = f"{path}: the annotation of id {annotation.get('id')!r} (image_id {image_id!r})"
    try:
        file_name = files[image_id]
    except (KeyError, TypeError):
        raise DataError(f'{where}: no record of the "images" list has id {image_id!r}') from None
    caption = annotation.get("caption")
    if not isinstance(caption, str):
        raise DataError(f'{where}: no string "caption" field (got {caption!r})')
    return file_name, annotation.get("id", 0), caption.strip()


def read_instances(path: Path) -> tuple[dict[int, str], dict[str, list[tuple[str, list]]]]:
    """(category id → name, file name → [(category name, polygons), …]) from a COCO instances file
    (``instances_train2017.json``); crowd regions (run-length masks) are left out."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        files = {image["id"]: image["file_name"] for image in data["images"]}
        regions: dict[str, list[tuple[str, list]]] = {}
        for a in data["annotations"]:
            if not a.get("iscrowd") and isinstance(a.get("segmentation"), list):
                regions.setdefault(files[a["image_id"]], []).append((categories[a["category_id"]], a["segmentation"]))
    except FileNotFoundError:
        raise DataError(f"COCO instances not found: {path}") from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a COCO instances file ({type(e).__name__}: {e})") from None
    return categories, regions


def category_spans(caption: str, name: str) -> tuple[tuple[int, int], ...]:
    """Where ``caption`` names the category ``name`` (its first whole-word mention, also as a plural): ()
    when it does not."""
    match = re.search(rf"(?<!\w){re.escape(name)}(?:s|es)?(?!\w)", caption, flags=re.IGNORECASE)
    return (match.span(),) if match else ()


class CocoCaptions(Dataset):
    """One item per (image, caption) pair: ``{"images": 3×H×W in [-1, 1], "caption": str}``.

    Each image is seen once per caption in an epoch, as the COCO text-to-image benchmarks pair them.
    Missing or unreadable images do not stop training: the item falls through to the next readable
    pair, the file goes into ``self.skipped`` and one warning is issued per bad file.
    """

    def __init__(self, annotations: str | Path, images: str | Path | None, image_size: int, hflip: bool = False,
                 instances: str | Path | None = None):
        self.annotations = Path(annotations).expanduser()
        self.root = Path(images).expanduser() if images else default_image_folder(self.annotations)
        if not self.root.is_dir():
            raise DataError(f"COCO image folder not found: {self.root} (set data.coco_images)")
        names, self.captions = read_annotations(self.annotations)
        if not names:
            raise DataError(f"{self.annotations} holds no captions")
        self.paths = [self.root / name for name in names]
        self.image_size, self.hflip = image_size, hflip
        self.skipped: set[Path] = set()
        self.regions = read_instances(Path(instances).expanduser())[1] if instances else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} captions")
        index %= n
        found = first_readable(self.paths, index, self.skipped, self.image_size, self.hflip)
        if found is None:
            raise DataError(f"none of the images of {self.annotations} in {self.root} could be read")
        i, images, flipped = found
        item = {"images": images, "caption": self.captions[i]}
        if self.regions is not None:
            item["grounding"] = self._grounding(i, flipped)
        return item

    def _grounding(self, i: int, flipped: bool) -> Grounding | None:
        """One object per category the caption names, its mask the union of the category's instances."""
        by_name: dict[str, list] = {}
        for name, polygons in self.regions.get(self.paths[i].name, []):
            by_name.setdefault(name, []).extend(polygons)
        named = [(spans, polygons) for name, polygons in by_name.items()
                 if (spans := category_spans(self.captions[i], name))]
        if not named:
            return None
        with Image.open(self.paths[i]) as image:
            size = image.size
        masks = torch.stack([mask_tensor(polygon_mask(polygons, size), self.image_size) for _, polygons in named])
        return Grounding(masks.flip(-1) if flipped else masks, tuple(spans for spans, _ in named))

    def __repr__(self) -> str:
        return f"CocoCaptions({str(self.annotations)!r}, {str(self.root)!r}): {len(self.paths)} captions"
