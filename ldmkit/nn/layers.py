"""Convolutional building blocks shared by the autoencoders and the UNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.nn.prepack import PackedConv2d


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the width allows it (fewer for the tiny presets).

    Statistics are computed in fp32 even under bf16 autocast, which keeps the normalisation stable at low
    precision: CUDA's autocast runs group_norm in fp32; on the CPU a bf16 input stays bf16, and the kernel
    accumulates the mean and variance in fp32 and rounds only its output to bf16. ``eps`` is 1e-6 as in the
    LDM autoencoder and transformer blocks; Stable Diffusion's UNet ResBlocks use PyTorch's 1e-5.
    """
    groups = 32
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels, eps=eps)


def narrowest_group(module: nn.Module) -> int | None:
    """The fewest channels per group of any ``nn.GroupNorm`` in ``module`` (C / G), or None where it has none."""
    return min((m.num_channels // m.num_groups for m in module.modules() if isinstance(m, nn.GroupNorm)), default=None)


class ResBlock(nn.Module):
    """h = x + F(x, emb): GroupNorm → SiLU → conv3×3, (+ projected embedding), GroupNorm → SiLU →
    dropout → conv3×3, with a 1×1 skip projection when the width changes.

    ``emb_dim`` is the size of the timestep embedding (UNet) or None (autoencoder); ``eps`` that of
    both GroupNorms.
    """

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int | None = None, dropout: float = 0.0, eps: float = 1e-6
    ):
        super().__init__()
        self.norm1 = group_norm(in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels) if emb_dim else None
        self.norm2 = group_norm(out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 convolution.

    ``asymmetric``: pad one row and column at the bottom and right only, then convolve without padding,
    as the LDM / Stable Diffusion autoencoder does (its weights were trained with that alignment).
    """

    def __init__(self, channels: int, asymmetric: bool = False):
        super().__init__()
        self.asymmetric = asymmetric
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


# Which rows (columns) of a 3×3 kernel fall on input rows i − 1 + a + t, t ∈ {0, 1}, for output row 2i + a
# after nearest-neighbour doubling (`subpixel_convolution`)
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def subpixel_convolution(conv: nn.Conv2d, dtype: torch.dtype | None = None) -> nn.Conv2d:
    """The 2×2 convolution (4·C_out outputs, padding 1) that, on x at its own resolution, gives the four output
    phases of ``conv`` (3×3, padding 1) applied to x doubled by nearest-neighbour upsampling.

    Doubling repeats input row i at rows 2i and 2i + 1, so output row Y = 2i + a of a 3×3 convolution reads
    kernel row 0 at input row i − 1 and rows 1, 2 at row i (a = 0), or rows 0, 1 at row i and row 2 at row
    i + 1 (a = 1); the same holds for columns (b). Phase (a, b) is therefore a 2×2 convolution on x whose taps are
    sums of W's taps,

        K_ab[t, u] = Σ_{k ∈ rows(a, t)} Σ_{l ∈ cols(b, u)} W[k, l],     y[2i + a, 2j + b] = (K_ab ⋆ x)[i + a, j + b]

    with x zero-padded by one on every side (the doubled image's zero border is x's). 16 taps at H×W instead
    of 9 at 2H×2W: 4/9 of the arithmetic, and no doubled copy of x. Output channels are ordered (a, b, c).

    ``dtype`` (default: W's): what ``conv`` computes in, e.g. bf16 under autocast: W is rounded to it first and
    the sums to it last, so that W stored in bf16 and W cast by autocast give the same kernel, bit for bit. Built
    outside inference mode (its weights are ordinary tensors, whose version a packed convolution reads)."""
    dtype = dtype or conv.weight.dtype
    with torch.inference_mode(False), torch.no_grad():
        return _subpixel_convolution(conv, dtype)


def _subpixel_convolution(conv: nn.Conv2d, dtype: torch.dtype) -> nn.Conv2d:
    w = conv.weight.detach().to(dtype).float()
    kernels = torch.stack([
        torch.stack([torch.stack([w[:, :, list(rows)].sum(2) for rows in row_taps], 2)[..., list(cols)].sum(-1)
                     for cols in col_taps], -1)
        for row_taps in _PHASE_TAPS for col_taps in _PHASE_TAPS])  # (a, b) × C_out × C_in × 2 × 2
    out, inp = w.shape[:2]
    phases = type(conv)(inp, 4 * out, 2, padding=1, bias=conv.bias is not None, device=w.device)
    phases.weight.copy_(kernels.reshape(4 * out, inp, 2, 2))
    if conv.bias is not None:
        phases.bias.copy_(conv.bias.detach().to(dtype).float().repeat(4))
    phases = phases.to(dtype).requires_grad_(False)
    if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
        phases = phases.to(memory_format=torch.channels_last)  # the layout oneDNN was given for ``conv``
    return phases


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3×3 convolution.

    Inference (autograd off) runs the same map as one 2×2 convolution at the input's resolution
    (`subpixel_convolution`; equal up to float rounding, 4/9 of the arithmetic: Stable Diffusion v1's decoder runs
    1.16× faster in fp32 on the CPU, benchmarks/SUBPIXEL_UPSAMPLING.md), built from ``conv`` at first use and
    again whenever its weights change (their version counter, storage and dtype, and the dtype autocast computes
    in, are the key; memory: 16/9 of ``conv``'s weight). Training, a LoRA on ``conv``, a traced graph and
    ``subpixel`` False (`use_subpixel`) take the plain path.
    """

    subpixel = True  # inference through `subpixel_convolution`; False: always the plain path

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    _subpixel: tuple | None = None  # (key, `subpixel_convolution` of conv), kept outside the module tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._subpixel_applies(x):
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        w = self.conv.weight
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else w.dtype
        key = (w._version, w.data_ptr(), w.dtype, w.device, type(self.conv), dtype)
        cached = self._subpixel  # read once: another thread may replace it meanwhile
        if cached is None or cached[0] != key:
            cached = (key, subpixel_convolution(self.conv, dtype))
            self._subpixel = cached
        y = cached[1](x).unflatten(1, (2, 2, -1))  # N × a × b × C × (H + 1) × (W + 1)
        # y[n, a, b, c, i + a, j + b] is output pixel (2i + a, 2j + b): one strided view of y, one copy
        n, a, b, c, row, col = y.stride()
        phases = y.as_strided((x.shape[0], y.shape[3], x.shape[2], 2, x.shape[3], 2),
                              (n, c, row, a + row, col, b + col), y.storage_offset())
        size = (x.shape[0], y.shape[3], 2 * x.shape[2], 2 * x.shape[3])
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():  # as it came in
            return phases.permute(0, 2, 3, 4, 5, 1).contiguous().view(size[0], *size[2:], size[1]).permute(0, 3, 1, 2)
        return phases.contiguous().view(size)

    def _subpixel_applies(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` takes the sub-pixel path: inference on a 4-d x, ``conv`` a plain (or prepacked)
        3×3 convolution with padding 1, ``subpixel`` on, no compiler tracing."""
        conv = self.conv
        return (self.subpixel and not torch.is_grad_enabled() and x.dim() == 4
                and type(conv) in (nn.Conv2d, PackedConv2d) and conv.kernel_size == (3, 3)
                and conv.padding == (1, 1) and conv.stride == (1, 1) and conv.dilation == (1, 1)
                and conv.groups == 1 and conv.padding_mode == "zeros"
                and not torch.compiler.is_compiling())

    def __getstate__(self) -> dict:
        """Copies and pickles leave the sub-pixel convolution out; they build it again on first use."""
        state = self.__dict__.copy()
        state.pop("_subpixel", None)
        return state


def use_subpixel(module: nn.Module, enabled: bool = True) -> int:
    """Let every `Upsample` in ``module`` run inference through `subpixel_convolution` (``enabled``), or through
    the doubled copy and the 3×3 convolution, bit for bit as in training and in diffusers (not); returns how many."""
    ups = [m for m in module.modules() if isinstance(m, Upsample)]
    for m in ups:
        m.subpixel = enabled
        m.__dict__.pop("_subpixel", None)
    return len(ups)
