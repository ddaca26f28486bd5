"""A folder of the user's own images with captions.

Captions come from ``metadata.jsonl`` in the folder (the Hugging Face imagefolder convention,
one ``{"file_name": "cats/1.png", "text": "a cat"}`` per line, file names relative to the folder)
or from a sidecar ``.txt`` next to an image (``cats/1.png`` → ``cats/1.txt``). metadata.jsonl wins
where both exist; an image with neither gets the empty caption "" (still useful: unconditional
training, and the caption dropout of classifier-free guidance uses "" too).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ldmkit.data.grounding import Grounding, read_sidecar
from ldmkit.errors import DataError
from ldmkit.images import image_to_tensor, load_image

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
METADATA_FILE = "metadata.jsonl"

log = logging.getLogger(__name__)

# What PIL raises for unreadable files: OSError (UnidentifiedImageError, truncated data),
# SyntaxError and ValueError from some decoders, DecompressionBombError for absurd sizes.
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def find_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted; hidden files and folders are left out
    (``.ipynb_checkpoints``, ``.git``, macOS ``._`` files)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


def read_metadata(path: Path) -> dict[str, str]:
    """``metadata.jsonl`` as {relative posix path: caption}; a malformed line raises `DataError`.

    The caption field is "text" (or "caption", another common name); other fields are ignored.
    """
    captions = {}
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (as some editors write) is not JSON
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {number}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
                raise DataError(f'{path}, line {number}: expected {{"file_name": "...", "text": "..."}}')
            text = record.get("text", record.get("caption"))
            if not isinstance(text, str):
                raise DataError(f'{path}, line {number}: no string "text" field for {record["file_name"]!r}')
            captions[Path(os.path.normpath(record["file_name"])).as_posix()] = text
    return captions


_SIDES = {"left": "right", "right": "left"}


def mirror_caption(caption: str) -> str:
    """The caption of the image mirrored left to right: the words "left" and "right" swapped (whole words, any
    case, e.g. "Left-hand" → "Right-hand"); every other word as it was."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = _SIDES[word.lower()]
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other
    return re.sub(r"\b(?:left|right)\b", swap, caption, flags=re.IGNORECASE)


def first_readable(paths: list[Path], index: int, skipped: set[Path], image_size: int,
                   hflip: bool) -> tuple[int, torch.Tensor, bool] | None:
    """(i, image 3×S×S in [-1, 1], whether it was mirrored) of the first readable image among
    paths[index], paths[index + 1], … (wrapping around), or None if none is. An unreadable image is added
    to ``skipped`` (and skipped from then on) with a warning. With ``hflip`` the image is mirrored with
    probability ½, drawn from torch's RNG, which the training loader seeds per item."""
    n = len(paths)
    for k in range(index, index + n):
        i = k % n
        path = paths[i]
        if path in skipped:
            continue
        try:
            images = image_to_tensor(load_image(path), image_size)
        except _UNREADABLE as e:
            skipped.add(path)
            warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=3)
            continue
        flipped = bool(hflip and torch.rand(()) < 0.5)
        return i, images.flip(-1) if flipped else images, flipped
    return None


class ImageFolderDataset(Dataset):
    """Every image under ``root`` (recursively), centre-cropped and resized to a square.

    Item: ``{"images": FloatTensor 3×H×W in [-1, 1], "caption": str, "class_name": str}`` (and with
    ``grounding`` the `Grounding` of the image's ``NAME.grounding.json`` sidecar, or None), where
    ``class_name`` is the first folder below ``root`` on the image's path ("cats" for
    ``root/cats/a.png`` and ``root/cats/x/b.png``; "" for files directly in ``root``).

    Unreadable images do not stop training: the item falls through to the next readable image,
    the path goes into ``self.skipped`` and one warning is issued per bad file. With DataLoader
    workers each worker keeps its own ``skipped`` set.
    """

    def __init__(self, root: str | Path, image_size: int, hflip: bool = False, grounding: bool = False):
        self.root = Path(root)
        self.image_size = image_size
        self.hflip = hflip
        self.grounding = grounding
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        self.paths = find_images(self.root)
        if not self.paths:
            raise DataError(f"no images in {self.root} (allowed extensions: {', '.join(IMAGE_EXTENSIONS)})")

        relative = [p.relative_to(self.root) for p in self.paths]
        metadata_path = self.root / METADATA_FILE
        metadata = read_metadata(metadata_path) if metadata_path.is_file() else {}
        self.captions: list[str] = []
        self.num_uncaptioned = 0
        for path, rel in zip(self.paths, relative):
            caption = metadata.get(rel.as_posix())
            if caption is None:
                sidecar = path.with_suffix(".txt")
                caption = sidecar.read_text(encoding="utf-8", errors="replace").strip() if sidecar.is_file() else None
            if caption is None:
                self.num_uncaptioned += 1
            self.captions.append(caption or "")
        self.class_names: list[str] = [rel.parts[0] if len(rel.parts) > 1 else "" for rel in relative]
        self.classes: tuple[str, ...] = tuple(sorted(set(self.class_names) - {""}))
        self.skipped: set[Path] = set()

        unmatched = sorted(set(metadata) - {rel.as_posix() for rel in relative})
        if unmatched:  # a typo or a path prefix ("images/0.png" with the folder itself as the root)
            warnings.warn(f"{metadata_path}: {len(unmatched)} of its {len(metadata)} entries name no image in "
                          f"{self.root} (file_name is relative to the folder holding it, e.g. "
                          f"{relative[0].as_posix()!r}); first: {unmatched[0]!r}", stacklevel=2)
        if self.num_uncaptioned:
            # Some captioned and some not is likely a mistake; none captioned is likely on purpose.
            level = logging.WARNING if self.num_uncaptioned < len(self.paths) else logging.INFO
            log.log(level, "%s: %d of %d images have no caption", self.root, self.num_uncaptioned, len(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        n = len(self.paths)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        found = first_readable(self.paths, index, self.skipped, self.image_size, self.hflip)
        if found is None:
            raise DataError(f"none of the {n} images in {self.root} could be read")
        i, images, flipped = found
        item = {"images": images, "caption": self.captions[i], "class_name": self.class_names[i]}
        if self.grounding:  # from NAME.grounding.json beside the image, when there is one
            sidecar = self.paths[i].with_suffix(".grounding.json")
            target = None
            if sidecar.is_file():
                with Image.open(self.paths[i]) as image:
                    size = ImageOps.exif_transpose(image).size
                target = read_sidecar(sidecar, self.captions[i], size, self.image_size)
                if flipped:
                    target = Grounding(target.masks.flip(-1), target.spans)
            item["grounding"] = target
        return item

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset({str(self.root)!r}, image_size={self.image_size}, hflip={self.hflip}): "
            f"{len(self.paths)} images, {self.num_uncaptioned} without caption, {len(self.skipped)} skipped"
        )
