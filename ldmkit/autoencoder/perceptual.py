"""LPIPS (Zhang et al. 2018, VGG16 variant) from weights the user supplies as a local file; never downloads.

The file is a safetensors file or a ``torch.load(weights_only=True)`` state dict in the ``lpips``
package's key layout, i.e. what ``lpips.LPIPS(net="vgg").state_dict()`` holds:
``net.slice1.0.weight`` … ``net.slice5.28.bias`` (torchvision's ``vgg16().features`` convolutions,
keeping their indices) and ``lin0.model.1.weight`` … ``lin4.model.1.weight`` (the learned 1×1 layers;
``lin{k}.model.0.weight``, the layout without dropout, is accepted too). Other keys are ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from ldmkit.errors import CheckpointError, ConfigError

# The 13 convolutions of VGG16 by their index in torchvision's `vgg16().features`, grouped into the
# five LPIPS slices; each slice ends at the ReLU whose output LPIPS compares (relu1_2 … relu5_3).
# Every slice after the first starts with a 2×2 max-pool.
VGG16_SLICES: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((0, 3, 64), (2, 64, 64)),
    ((5, 64, 128), (7, 128, 128)),
    ((10, 128, 256), (12, 256, 256), (14, 256, 256)),
    ((17, 256, 512), (19, 512, 512), (21, 512, 512)),
    ((24, 512, 512), (26, 512, 512), (28, 512, 512)),
)  # (features index, in channels, out channels)


def lpips_weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor LPIPS-VGG needs, by its key in the lpips layout, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for s, convs in enumerate(VGG16_SLICES, start=1):
        for index, cin, cout in convs:
            shapes[f"net.slice{s}.{index}.weight"] = (cout, cin, 3, 3)
            shapes[f"net.slice{s}.{index}.bias"] = (cout,)
        shapes[f"lin{s - 1}.model.1.weight"] = (1, convs[-1][2], 1, 1)
    return shapes


class LPIPS(nn.Module):
    """d(x, x̂) = Σ_l mean_{h,w} ‖ w_l ⊙ (φ̂_l(x) − φ̂_l(x̂)) ‖², one value per sample (B,).

    φ_l are the VGG16 activations relu1_2 … relu5_3 of the input shifted and scaled by LPIPS's
    ScalingLayer (images in [−1, 1]); φ̂ = φ / ‖φ‖ normalises each pixel's feature vector over
    channels; w_l ≥ 0 are the learned per-channel weights (the 1×1 ``lin`` layers).

    All weights are non-persistent buffers: they move with `.to()`, receive no gradient and stay out of
    checkpoints (the file they came from is the source of truth).
    """

    shift = (-0.030, -0.088, -0.188)
    scale = (0.458, 0.448, 0.450)

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        shapes = lpips_weight_shapes()
        weights = {_lin_key(k): v for k, v in weights.items()}
        missing = [k for k in shapes if k not in weights]
        if missing:
            few = ", ".join(missing[:4]) + (", …" if len(missing) > 4 else "")
            raise CheckpointError(f"LPIPS weights lack {len(missing)} of {len(shapes)} tensors: {few}")
        for key, shape in shapes.items():
            if tuple(weights[key].shape) != shape:
                raise CheckpointError(f"LPIPS weight {key} has shape {tuple(weights[key].shape)}, expected {shape}")
            self.register_buffer(_buffer_name(key), weights[key].detach().float().clone(), persistent=False)
        self.register_buffer("shift_", torch.tensor(self.shift).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale_", torch.tensor(self.scale).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        """Load the weights from a local ``.safetensors`` file or a torch state dict; nothing is downloaded."""
        return cls(load_lpips_weights(path))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[φ_1 … φ_5]: the VGG16 activations at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
        h = (images - self.shift_.to(images.dtype)) / self.scale_.to(images.dtype)
        out = []
        for s, convs in enumerate(VGG16_SLICES, start=1):
            if s > 1:
                h = F.max_pool2d(h, 2)
            for index, _, _ in convs:
                weight = getattr(self, _buffer_name(f"net.slice{s}.{index}.weight"))
                bias = getattr(self, _buffer_name(f"net.slice{s}.{index}.bias"))
                h = F.relu(F.conv2d(h, weight, bias, padding=1))
            out.append(h)
        return out

    def forward(self, images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        feats = self.features(torch.cat([images, reconstruction]))
        total = images.new_zeros(images.shape[0], dtype=torch.float32)
        for level, phi in enumerate(feats):
            # The unit-normalisation and squared difference in fp32: bf16 would lose small differences.
            phi = phi.float()
            phi = phi / (phi.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            a, b = phi.chunk(2)
            lin = getattr(self, _buffer_name(f"lin{level}.model.1.weight")).float()
            total = total + F.conv2d((a - b).pow(2), lin).mean(dim=(1, 2, 3))
        return total


def load_lpips_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (safetensors or torch), with a one-line error if it is not there."""
    if not str(path):
        raise ConfigError("no LPIPS weights file given (perceptual_weights_path is empty; nothing is downloaded)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"LPIPS weights file not found: {path} (perceptual_weights_path; nothing is downloaded)")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _lin_key(key: str) -> str:
    # lpips stores lin layers at model.1 (after a Dropout) or model.0 (use_dropout=False).
    if key.startswith("lin") and key.endswith(".model.0.weight"):
        return key.replace(".model.0.weight", ".model.1.weight")
    return key


def _buffer_name(key: str) -> str:
    return key.replace(".", "_")
