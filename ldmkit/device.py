"""Which device to run on, and in which precision."""

from __future__ import annotations

import torch
from ldmkit.errors import UsageError
from ldmkit.nn.layers import narrowest_group


def resolve_device(name: str | torch.device, what: str = "--device") -> torch.device:
    """The device ``name`` means: auto (cuda where available, else cpu), cpu, cuda or cuda:N, or such a
    ``torch.device``. A CUDA device that is not here and any other name ("mps", "gpu") are a one-line
    `UsageError` naming ``what`` (the command line's --device; the Python API's "device"), to be raised before
    a model loads."""
    shown = f"{what} {name}" if what.startswith("--") else f"{what}={str(name)!r}"
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"{shown} is not a device ldmkit runs on; allowed: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{shown} was asked for, but no CUDA device is available; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"{shown} was asked for, but there are {torch.cuda.device_count()} CUDA devices "
                         f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    return device


PRECISIONS = ("fp32", "bf16", "auto")


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 here: on GPUs with bf16, and on CPUs with AVX-512, where
    bf16 matmuls and convolutions run 4–5× faster. On an AVX2-only CPU bf16 convolutions take a
    slow path (measured 5–25× slower than fp32), so ``bf16: true`` in a config means "where it pays"."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` (fp32, bf16, or auto: bf16 where `bf16_pays`) means bf16 on ``device``."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and bf16_pays(device))


NHWC_MIN_GROUP_WIDTH = 4  # channels per GroupNorm group from which PyTorch's channels-last GroupNorm keeps pace


def unet_channels_last(device: torch.device, bf16: bool, unet: torch.nn.Module | None = None) -> bool:
    """Whether ``unet`` runs faster in channels-last (NHWC) layout here (measured, docs/performance.md):

    - a CPU without AVX-512 running fp32: yes, oneDNN's AVX2 convolutions take NHWC ~1.1× as fast (the shipped
      UNet and an SD-v1-shaped one);
    - a CPU with AVX-512 in bf16: yes where every GroupNorm of ``unet`` has at least `NHWC_MIN_GROUP_WIDTH`
      channels per group (Stable Diffusion's widths: 10 and more). oneDNN's bf16 convolutions answer in NHWC, so
      an NCHW UNet copies every convolution's output back, and its Transformer blocks' token reshapes are copies
      too (the SD-shaped benchmark UNet: ~1.09× in NHWC, docs/performance.md). PyTorch's
      channels-last GroupNorm runs one short loop per group, far slower on narrower groups: the shipped UNet (2
      per group) runs 0.67× in NHWC, and stays NCHW, as does a UNet not given;
    - fp32 with AVX-512 (as fast either way) and a GPU: no, the layout is left as it is.

    The layout changes results only by rounding."""
    if device.type != "cpu":
        return False
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return not bf16
    narrowest = narrowest_group(unet) if (bf16 and unet is not None) else None
    return narrowest is not None and narrowest >= NHWC_MIN_GROUP_WIDTH


def lay_out_unet(unet: torch.nn.Module, device: torch.device, bf16: bool) -> bool:
    """Put ``unet`` in channels-last layout where `unet_channels_last` says it runs faster; returns whether it did."""
    nhwc = unet_channels_last(device, bf16, unet)
    if nhwc:
        unet.to(memory_format=torch.channels_last)
    return nhwc


AUTOCAST_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d)


def store_for_autocast(module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store in ``dtype`` the weights and biases of the layers that ``torch.autocast(dtype=dtype)`` runs in
    ``dtype`` (linear layers and convolutions, `AUTOCAST_LAYERS`); returns how many layers changed.

    Under that autocast no output changes by a bit: autocast casts these tensors to ``dtype`` at every
    call anyway (it caches casts only of tensors that require gradients, which inference weights do not).
    Stored so, the cast happens once instead of once per call, and their memory halves. Outside autocast
    such a layer then needs ``dtype`` inputs. Normalisation layers and embeddings keep their dtype. A
    network that ``module`` holds outside its module tree (the frozen MiniLM) is reached through its
    ``frozen_network()``.
    """
    changed = 0
    for m in module.modules():
        if isinstance(m, AUTOCAST_LAYERS) and m.weight.dtype != dtype:
            m.to(dtype)
            changed += 1
        hidden = getattr(m, "frozen_network", None)
        if callable(hidden):
            changed += store_for_autocast(hidden(), dtype)
    return changed
