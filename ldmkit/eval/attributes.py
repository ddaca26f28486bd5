"""Reading a `Scene` back out of an image with the shapes judge (`ShapesNet`).

The objects are the colours the network finds present (probability > ½), most confident first, and
a colour found in several connected regions (`ldmkit.eval.components`) is as many objects, each read
alone; each gets the shape and size the network rates highest, and the layout comes from the objects'
centres (the centroids of their masks), as the dataset defines it:

- one object: the position whose nominal centre is nearest — left (0.25, 0.5), right (0.75, 0.5),
  top (0.5, 0.25), bottom (0.5, 0.75), centre (0.5, 0.5), as fractions of the side. A render's
  jitter (≤ 0.04) and the offset of a triangle's or star's centroid (≤ 0.03) stay well inside the
  0.125 to the nearest boundary;
- two objects: the relation along the axis on which they lie further apart, and the positions
  that relation implies ("above": top, bottom), as the dataset places related objects;
- three or more (which a prompt never asks for): each its nearest position, and no relation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ldmkit.data import BACKGROUND, COLORS, SHAPES, SIZES, Scene, ShapeObject
from ldmkit.eval.components import MALFORMED_IOU, colour_components, shape_fit
from ldmkit.eval.shapes_net import ShapesNet, ShapesNetOutput, load_shapes_net, palette_masks, prepare

# Nominal centres of the positions (the shapes dataset's documented geometry).
POSITION_CENTRES = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
                    "centre": (0.5, 0.5)}
# Where each of two related objects sits, as the dataset places them.
_POSITIONS_OF_RELATION = {"left of": ("left", "right"), "right of": ("right", "left"),
                          "above": ("top", "bottom"), "below": ("bottom", "top")}


def nearest_position(centre: tuple[float, float]) -> str:
    """The position whose nominal centre is nearest to ``centre`` (x, y as fractions of the side)."""
    x, y = centre
    return min(POSITION_CENTRES, key=lambda p: (POSITION_CENTRES[p][0] - x) ** 2 + (POSITION_CENTRES[p][1] - y) ** 2)


def relation_between(a: tuple[float, float], b: tuple[float, float]) -> str:
    """How the object at centre ``a`` relates to the one at ``b`` (x right, y down): along the axis
    on which they lie further apart, "left of"/"right of" or "above"/"below"."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def scene_of(objects: list[tuple[ShapeObject, tuple[float, float]]]) -> Scene | None:
    """The scene of found objects (shape, colour and size set; position unset) with their centres,
    most confident first: positions and the relation as the module docstring says; None for none."""
    if not objects:
        return None
    placed = [ShapeObject(o.shape, o.color, o.size, nearest_position(c)) for o, c in objects]
    if len(placed) == 2:
        relation = relation_between(objects[0][1], objects[1][1])
        pos_a, pos_b = _POSITIONS_OF_RELATION[relation]
        placed = [ShapeObject(o.shape, o.color, o.size, p) for o, p in zip(placed, (pos_a, pos_b))]
        return Scene(tuple(placed), relation)
    return Scene(tuple(placed))


def _object(out: ShapesNetOutput, i: int, c: int) -> tuple[ShapeObject, tuple[float, float]]:
    return (ShapeObject(SHAPES[int(out.shape[i, c].argmax())], COLORS[c], SIZES[int(out.size[i, c].argmax())]),
            tuple(out.centre[i, c].tolist()))


def present_colours(out: ShapesNetOutput, threshold: float = 0.5) -> list[list[int]]:
    """Per image, the colours the network finds present (probability > ``threshold``), most confident first."""
    probs = out.presence.sigmoid()
    return [[int(c) for c in probs[i].argsort(descending=True) if probs[i, c] > threshold]
            for i in range(probs.shape[0])]


@dataclass
class Reading:
    """What the judge reads in one image: the scene (None: nothing found) and how many of its objects
    fit no clean shape (`ldmkit.eval.components.shape_fit` below `MALFORMED_IOU`)."""

    scene: Scene | None
    malformed: int = 0


class AttributePredictor:
    """``predictor(images)`` → one `Scene` (or None: nothing found) per image; ``predictor.read(images)``
    → one `Reading` per image.

    ``images``: B×3×H×W in [-1, 1], any size (resized to 64×64). Runs in batches under no_grad. A colour
    present as several connected regions (`colour_components`) is several objects: each region is read
    on its own, in a copy of the image where the colour's other regions are painted background.
    """

    def __init__(self, net: ShapesNet | None = None, batch_size: int = 256):
        self.net = net if net is not None else load_shapes_net()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[Scene | None]:
        return [r.scene for r in self.read(images)]

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> list[Reading]:
        device = next(self.net.parameters()).device
        readings: list[Reading] = []
        for batch in images.split(self.batch_size):
            readings += self._read(prepare(batch.to(device)))
        return readings

    def _read(self, batch: torch.Tensor) -> list[Reading]:
        out = self.net(batch)
        found = present_colours(out)
        masks = palette_masks(batch) > 0.5
        pairs = [(i, c) for i, colours in enumerate(found) for c in colours]
        if not pairs:
            return [Reading(None) for _ in found]
        labels, counts = colour_components(torch.stack([masks[i, c] for i, c in pairs]))
        background = torch.tensor(BACKGROUND, dtype=batch.dtype, device=batch.device).view(3, 1, 1) / 127.5 - 1
        splits = []  # (pair index, region): a copy of image i with colour c's other regions painted background
        for j, (i, c) in enumerate(pairs):
            for k in range(1, int(counts[j]) + 1) if counts[j] > 1 else ():
                others = ((labels[j] > 0) & (labels[j] != k)) | (masks[i, c] & (labels[j] == 0))
                splits.append((j, k, torch.where(others, background, batch[i])))
        split_out = self.net(torch.stack([x for *_, x in splits])) if splits else None
        objects: list[list] = [[] for _ in found]
        for j, (i, c) in enumerate(pairs):
            if counts[j] <= 1:
                region = labels[j] == 1 if counts[j] == 1 else masks[i, c]
                objects[i].append((*_object(out, i, c), region))
        for s, (j, k, _) in enumerate(splits):
            i, c = pairs[j]
            objects[i].append((*_object(split_out, s, c), labels[j] == k))
        readings = []
        for objs in objects:
            malformed = sum(shape_fit(region.cpu().numpy(), o.shape) < MALFORMED_IOU for o, _, region in objs)
            readings.append(Reading(scene_of([(o, centre) for o, centre, _ in objs]), int(malformed)))
        return readings
