"""Feature networks for FID, KID and IS: images in, (features, class logits) out.

- `ShapesFeatures` (the default, name "shapes-cnn"): the project's `ShapesNet`, trained on the
  built-in shapes and shipped with ldmkit: 256-d features, 48 shape × colour classes.
- `InceptionV3Features` (name "inception-v3"): the FID Inception of pytorch-fid / torch-fidelity
  from a weights file the user already has; nothing is downloaded. 2048-d pool3 features,
  1008 classes. Its numbers are comparable with published ones only at their image counts and
  on natural images; on 64×64 shapes they are a second opinion, not a standard.

Every number computed on these features is reported with the network's ``name`` next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ldmkit.eval.inception import FIDInceptionV3
from ldmkit.eval.shapes_net import FEATURE_DIM, NUM_CLASSES, ShapesNet, load_shapes_net
from ldmkit.progress import tqdm
from ldmkit.storage import CheckpointError


class FeatureNetwork:
    """What FID/KID/IS need from a network: ``network(images) -> (features N×d, logits N×K)``.

    ``images`` are B×3×H×W in [-1, 1] of any size; each network resizes them itself.
    ``recommended_images`` is the image count below which its FID is too biased to compare.
    """

    name: str
    feature_dim: int
    num_classes: int
    recommended_images: int
    module: torch.nn.Module

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def to(self, device: str | torch.device) -> "FeatureNetwork":
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


class ShapesFeatures(FeatureNetwork):
    """The shapes judge's 256-d embedding (features) and shape × colour log-probabilities (classes)."""

    name = "shapes-cnn"
    feature_dim = FEATURE_DIM
    num_classes = NUM_CLASSES
    # FID between two disjoint sets of real held-out shapes (64×64) is 121 at 512 images, 69 at
    # 1024, 38 at 2048 and 15 at 4096 (the 1/N bias of FID; KID stays ≈ 0 at every N). Below 1024
    # the floor swamps all but gross differences; `ldmkit eval generate` prints it next to the FID.
    recommended_images = 1024

    def __init__(self, net: ShapesNet | None = None):
        self.module = net if net is not None else load_shapes_net()

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.module(images)
        return out.features, out.classes


class InceptionV3Features(FeatureNetwork):
    """FID Inception-v3 (pt_inception-2015-12-05) from a local weights file (.pth or .safetensors).

    Images are resized to 299×299 bilinearly (align_corners=False), as pytorch-fid does; its
    [0, 1] → [-1, 1] step is not needed because ``images`` already are in [-1, 1].
    """

    name = "inception-v3"
    feature_dim = FIDInceptionV3.FEATURE_DIM
    num_classes = FIDInceptionV3.NUM_CLASSES
    recommended_images = 10_000  # what papers report FID on (10k–50k); full rank alone needs > 2048
    input_size = 299  # what the network was trained at

    def __init__(self, weights: str | Path):
        self.module = load_inception(weights)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = (self.input_size, self.input_size)
        x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
        return self.module(x)


def load_inception(path: str | Path) -> FIDInceptionV3:
    """`FIDInceptionV3` with the weights of ``path``, frozen, in eval mode.

    ``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors only, no code);
    ``num_batches_tracked`` and ``AuxLogits.*`` entries, which some exports carry and the FID
    network does not use, are ignored. A missing, unreadable or mismatched file raises
    `CheckpointError` with one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Inception weights file not found: {path} (pass a local copy of pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth; ldmkit downloads nothing)"
        )
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same problem for the user
        raise CheckpointError(f"{path} is not a readable weights file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") and not k.startswith("AuxLogits.")}
    # Built on the meta device and filled by assignment: no time spent initialising 24M weights
    # that the file replaces at once.
    with torch.device("meta"):
        model = FIDInceptionV3()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                else f"wrong shape for {wrong[:3]}")
        raise CheckpointError(f"{path} is not in the FID Inception-v3 layout (pytorch-fid's pt_inception): {what}")
    counters = {k: torch.zeros((), dtype=torch.long) for k in model.state_dict() if k.endswith("num_batches_tracked")}
    model.load_state_dict({k: v.float() for k, v in state.items()} | counters, assign=True)
    return model.requires_grad_(False).eval()


@torch.no_grad()
def extract(
    network: FeatureNetwork,
    images: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features N×d, logits N×K) of ``images`` (one tensor, or an iterable of batches), on CPU in fp32."""
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    total = len(images) if isinstance(images, torch.Tensor) else None
    device = network.device
    features, logits = [], []
    with tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="img") as bar:
        for batch in batches:
            f, l = network(batch.to(device))
            features.append(f.float().cpu())
            logits.append(l.float().cpu())
            bar.update(len(batch))
    if not features:
        raise ValueError("extract got no images")
    return torch.cat(features), torch.cat(logits)
