"""Reading a `Scene` back out of an image with the shapes judge (`ShapesNet`).

The objects are the colours the network finds present (probability > ½), most confident first;
each gets the shape and size the network rates highest for that colour, and the layout comes
from the objects' centres (the centroids of their colour masks), as the dataset defines it:

- one object: the position whose nominal centre is nearest — left (0.25, 0.5), right (0.75, 0.5),
  top (0.5, 0.25), bottom (0.5, 0.75), centre (0.5, 0.5), as fractions of the side. A render's
  jitter (≤ 0.04) and the offset of a triangle's or star's centroid (≤ 0.03) stay well inside the
  0.125 to the nearest boundary;
- two objects: the relation along the axis on which they lie further apart, and the positions
  that relation implies ("above": top, bottom), as the dataset places related objects;
- three or more (which a prompt never asks for): each its nearest position, and no relation.
"""

from __future__ import annotations

import torch

from ldmkit.data import COLORS, SHAPES, SIZES, Scene, ShapeObject
from ldmkit.eval.shapes_net import ShapesNet, ShapesNetOutput, load_shapes_net

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


def scenes_from_output(out: ShapesNetOutput, threshold: float = 0.5) -> list[Scene | None]:
    """One `Scene` per image of a `ShapesNet` output; None where no object is found."""
    scenes: list[Scene | None] = []
    probs = out.presence.sigmoid()
    for i in range(probs.shape[0]):
        found = [int(c) for c in probs[i].argsort(descending=True) if probs[i, c] > threshold]
        if not found:
            scenes.append(None)
            continue
        objects = [
            ShapeObject(SHAPES[int(out.shape[i, c].argmax())], COLORS[c], SIZES[int(out.size[i, c].argmax())],
                        nearest_position(tuple(out.centre[i, c].tolist())))
            for c in found
        ]
        if len(objects) == 2:
            (a, b), centres = found, out.centre[i]
            relation = relation_between(tuple(centres[a].tolist()), tuple(centres[b].tolist()))
            pos_a, pos_b = _POSITIONS_OF_RELATION[relation]
            objects = [ShapeObject(o.shape, o.color, o.size, p) for o, p in zip(objects, (pos_a, pos_b))]
            scenes.append(Scene(tuple(objects), relation))
        else:
            scenes.append(Scene(tuple(objects)))
    return scenes


class AttributePredictor:
    """``predictor(images)`` → one `Scene` (or None: nothing found) per image.

    ``images``: B×3×H×W in [-1, 1], any size (resized to 64×64). Runs in batches under no_grad.
    """

    def __init__(self, net: ShapesNet | None = None, batch_size: int = 256):
        self.net = net if net is not None else load_shapes_net()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[Scene | None]:
        device = next(self.net.parameters()).device
        scenes: list[Scene | None] = []
        for batch in images.split(self.batch_size):
            scenes += scenes_from_output(self.net(batch.to(device)))
        return scenes
