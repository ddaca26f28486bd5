"""The project's own judge of shapes images: one small network, trained on rendered shapes, that
both reads the attributes of each object (for prompt accuracy) and supplies the features and
class probabilities that FID, KID and IS are computed on when no Inception weights are given.

It reads 64×64 images; `prepare` resizes anything else to 64×64 first (32×32 models included).

The dataset draws with a known palette (`RGB`, `BACKGROUND`) and the two objects of a scene always
differ in colour, so the network looks at one colour at a time, object-centred:

1. a fixed (not learned) first layer splits the image into one soft mask per palette colour,
   m_c(p) = softmax_k(−‖p − rgb_k‖² / 2σ²)[c] over the background and the 8 colours (σ = 25 on the
   0–255 scale: a pixel exactly at one colour gives its neighbours, ≥ 102 away, < 3·10⁻⁴);
2. colours covering fewer than `MIN_MASS` pixels are absent (a real object covers ≥ 35); for
   each other colour the mask's centroid (x̄, ȳ) and mass are measured, and a 32×32 window of the
   mask centred on (x̄, ȳ) — half the image side, enough for the largest shape — is cut out;
3. a small CNN, shared by all colours, reads the window; with (x̄, ȳ, log mass) it gives a 32-d
   embedding e_c, from which shared heads predict whether the colour is an object and, if so,
   its shape and size. Its centre is the centroid itself (`ldmkit.eval.attributes` turns it into
   a position or a relation).

Reading centred windows makes shape translation-invariant by construction and lets every object
train one shape reader, whatever its colour; it learns in minutes on a CPU where a whole-image
CNN did not (it had to learn the binding of shapes to colours, and shapes at every position).

- FID/KID features: the 8 embeddings side by side (zeros for absent colours), 256-d.
- IS classes: y = (shape, colour), p(y|x) ∝ P(colour c present) · p(shape | c), normalised over
  the 48 pairs; an image of two objects spreads its mass over both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.data import BACKGROUND, COLORS, RGB, SHAPES, SIZES
from ldmkit.storage import CheckpointError, load_weights

INPUT_SIZE = 64
WINDOW = 32  # pixels of the 64×64 mask read around each object: half the side
EMBED_DIM = 32
FEATURE_DIM = EMBED_DIM * len(COLORS)  # 256
NUM_CLASSES = len(SHAPES) * len(COLORS)  # IS classes: shape × colour, class = shape index · 8 + colour index
PALETTE_SIGMA = 25.0
MIN_MASS = 4.0  # pixels (of 64×64) a colour must cover to be read at all
ABSENT_LOGIT = -20.0
WEIGHTS_PATH = Path(__file__).parent / "weights" / "shapes_net.safetensors"

# Head layout: presence logit, shape logits, size logits.
_HEAD = (1, len(SHAPES), len(SIZES))


def prepare(images: torch.Tensor) -> torch.Tensor:
    """``images`` (B×3×H×W in [-1, 1]) as the network reads them: float32, 64×64.

    Bilinear resampling, with antialiasing when shrinking so that a 256×256 image does not alias.
    """
    images = images.float()
    if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        shrink = min(images.shape[-2:]) > INPUT_SIZE
        images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                               antialias=shrink)
    return images


@dataclass
class ShapesNetOutput:
    """Per image: ``features`` (B×256, for FID/KID) and ``classes`` (B×48 log-probabilities, for IS); per
    image and colour: ``presence`` (B×8 logits), ``shape`` (B×8×6) and ``size`` (B×8×2) logits, and
    ``centre`` (B×8×2, x and y as fractions of the side, 0 at the top left)."""

    features: torch.Tensor
    classes: torch.Tensor
    presence: torch.Tensor
    shape: torch.Tensor
    size: torch.Tensor
    centre: torch.Tensor


def palette_masks(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W images in [-1, 1] → B×8×H×W soft masks, one per colour of `COLORS` (the background's
    share is dropped): m_c(p) = softmax_k(−‖p − rgb_k‖² / 2σ²)[c]."""
    palette = torch.tensor([BACKGROUND] + [RGB[c] for c in COLORS], dtype=images.dtype, device=images.device)
    pixels = (images + 1) * 127.5  # the 0–255 scale of the palette
    distance2 = (pixels[:, None] - palette[None, :, :, None, None]).pow(2).sum(2)  # B×9×H×W
    return torch.softmax(-distance2 / (2 * PALETTE_SIGMA**2), dim=1)[:, 1:]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def mask_moments(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mass N, centroid N×2) of N×H×W masks: mass = Σ m in pixels; the centroid (x, y as fractions
    of the side) weighs only pixels with m > ½, so that faint fringes (anti-aliased edges of
    other objects, noise) do not pull it."""
    h, w = masks.shape[-2:]
    ys = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5) / h
    xs = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5) / w
    weight = masks * (masks > 0.5) + 1e-6 * masks  # the small soft part keeps an all-faint mask defined
    total = weight.sum(dim=(-2, -1)).clamp_min(1e-12)
    cx = (weight.sum(dim=-2) * xs).sum(-1) / total
    cy = (weight.sum(dim=-1) * ys).sum(-1) / total
    return masks.sum(dim=(-2, -1)), torch.stack([cx, cy], dim=-1)


def windows(masks: torch.Tensor, centres: torch.Tensor, size: int = WINDOW) -> torch.Tensor:
    """N×1×size×size crops of N×H×W masks centred on ``centres`` (fractions), zero outside the image."""
    n, h, _ = masks.shape
    scale = size / h
    theta = torch.zeros(n, 2, 3, device=masks.device, dtype=masks.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = centres * 2 - 1
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ShapesNet(nn.Module):
    """64×64 image → `ShapesNetOutput` (see the module docstring for the design)."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.reader = nn.Sequential(
            _conv(1, w),              # 32
            _conv(w, 2 * w, 2),       # 16
            _conv(2 * w, 3 * w, 2),   # 8
            _conv(3 * w, 3 * w, 2),   # 4: centred, so flattening keeps the layout of the shape
            nn.Flatten(),
            nn.Linear(3 * w * 16, EMBED_DIM),
            nn.ReLU(),
        )
        self.embed = nn.Sequential(nn.Linear(EMBED_DIM + 3, EMBED_DIM), nn.ReLU())
        self.heads = nn.Linear(EMBED_DIM, sum(_HEAD))

    def forward(self, images: torch.Tensor) -> ShapesNetOutput:
        masks = palette_masks(prepare(images))
        b, k = masks.shape[:2]
        mass, centre = mask_moments(masks)  # B×8, B×8×2
        candidate = mass > MIN_MASS
        rows, cols = candidate.nonzero(as_tuple=True)
        embeddings = masks.new_zeros(b, k, EMBED_DIM)
        if len(rows):
            read = self.reader(windows(masks[rows, cols], centre[rows, cols]))
            where = torch.cat([centre[rows, cols] * 2 - 1, (mass[rows, cols].log() - 5)[:, None]], dim=1)
            embeddings = embeddings.index_put((rows, cols), self.embed(torch.cat([read, where], dim=1)))
        presence, shape, size = self.heads(embeddings).split(_HEAD, dim=2)
        presence = presence.squeeze(2).masked_fill(~candidate, ABSENT_LOGIT)
        # log p(shape, colour | x) = log P(c present) + log p(shape | c) − log Z
        joint = F.logsigmoid(presence)[:, :, None] + F.log_softmax(shape, dim=2)  # B×8×6
        classes = joint.transpose(1, 2).reshape(b, -1)  # index shape · 8 + colour
        classes = classes - torch.logsumexp(classes, dim=1, keepdim=True)
        return ShapesNetOutput(embeddings.view(b, -1), classes, presence, shape, size, centre)


def load_shapes_net(path: str | Path = WEIGHTS_PATH) -> ShapesNet:
    """The trained network shipped with ldmkit (or the one at ``path``), frozen, in eval mode."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"shapes judge weights not found: {path} (train them with "
            f"`python -m ldmkit.eval.train_attributes --out {path}`)"
        )
    net = ShapesNet()
    load_weights(net, path)
    return net.requires_grad_(False).eval()
