"""LoRA: low-rank adapters on the linear maps of a frozen network (Hu et al. 2021).

A layer y = W x + b with adapters n = 1 … N becomes

    y = W x + b + Σ_n s_n (α_n / r_n) B_n A_n x,     A_n ∈ R^{r_n × in},  B_n ∈ R^{out × r_n}

where W, b stay frozen, A_n, B_n are trained, r_n is the rank, α_n the alpha the adapter was trained with
(α / r is the fixed scale of the file; α = r gives 1) and s_n the strength chosen at run time (1 by default).
B_n starts at zero (`add_adapter` with ``init="train"``), so a fresh adapter leaves the layer unchanged.

A convolution W ∈ R^{out × in × k_h × k_w} (LoCon, as kohya-ss and LyCORIS put it on a UNet's ResBlocks) gets

    y = W ⋆ x + b + Σ_n s_n (α_n / r_n) B_n ⋆ (A_n ⋆ x),
    A_n ∈ R^{r_n × in × k_h × k_w},  B_n ∈ R^{out × r_n × 1 × 1}

with A_n a k_h×k_w convolution of W's stride, padding and dilation into r_n channels and B_n a 1×1 one. Both
are linear, so B ⋆ (A ⋆ x) = (B A) ⋆ x with (B A)[o, i, u, v] = Σ_j B[o, j] A[j, i, u, v]: the update is the
rank-r_n matrix B_n A_n over W flattened to [out, in·k_h·k_w], which `merge` adds to W (exact up to float
rounding). A 1×1 convolution (Stable Diffusion 1's ``proj_in`` / ``proj_out``) is the case k = 1, the
`LoRALinear` map per pixel. Inside, A_n is kept flattened, [r_n, in·k_h·k_w]; `adapter_weights` gives it in
the files' shape.

`inject` wraps the named ``nn.Linear`` / ``nn.Conv2d`` modules of a network in place: a wrapped layer is a
`LoRALinear` / `LoRAConv`, still an ``nn.Linear`` / ``nn.Conv2d`` holding the very same W and b Parameters
(their state-dict names do not change), plus ``lora_A.<adapter>`` / ``lora_B.<adapter>``. `merge` folds the
adapters into W (W ← W + Σ s (α/r) B A) and unwraps; `remove` drops them and unwraps (W untouched). Which
layers a model's adapters go on, and the file layouts, are `ldmkit.convert.lora`'s.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")
RESBLOCK_CONVOLUTIONS = ("conv1", "conv2")
_CONV_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
               "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice")


class _LoRAMixin:
    """The adapters of one wrapped layer: ``lora_A[name]``, ``lora_B[name]``, ``alpha[name]``, ``scale[name]``."""

    lora_A: nn.ParameterDict
    lora_B: nn.ParameterDict

    def _init_adapters(self) -> None:
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.alpha: dict[str, float] = {}
        self.scale: dict[str, float] = {}

    def add_adapter(self, name: str, rank: int, alpha: float, init: str | tuple[torch.Tensor, torch.Tensor] = "train",
                    scale: float = 1.0) -> None:
        """Add adapter ``name`` of rank r: ``init`` "train" (A ~ Kaiming-uniform as peft draws it, B = 0) or
        the tensors (A [r, in], B [out, r]; a convolution's A also [r, in, k_h, k_w], B [out, r, 1, 1]) to copy.
        ValueError if ``name`` exists or the shapes do not fit."""
        if name in self.lora_A:
            raise ValueError(f"this layer already has a LoRA adapter named {name!r}")
        in_f, out_f = self._lora_features()
        device = self.weight.device
        if isinstance(init, str):
            a = torch.empty(rank, in_f, device=device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.zeros(out_f, rank, device=device)
        else:
            a, b = (t.detach().reshape(t.shape[0], -1).to(device=device, dtype=torch.float32).clone() for t in init)
            if a.shape != (rank, in_f) or b.shape != (out_f, rank):
                raise ValueError(f"LoRA A {tuple(a.shape)}, B {tuple(b.shape)} do not fit a rank-{rank} adapter of a "
                                 f"{in_f}→{out_f} layer")
        self.lora_A[name] = nn.Parameter(a)
        self.lora_B[name] = nn.Parameter(b)
        self.alpha[name] = float(alpha)
        self.scale[name] = float(scale)

    def drop_adapter(self, name: str) -> None:
        del self.lora_A[name], self.lora_B[name]
        del self.alpha[name], self.scale[name]

    def factor(self, name: str) -> float:
        """s (α / r) of adapter ``name``."""
        return self.scale[name] * self.alpha[name] / self.lora_A[name].shape[0]

    def delta(self) -> torch.Tensor:
        """ΔW = Σ_n s_n (α_n / r_n) B_n A_n, float32 [out, in] (zero without adapters)."""
        in_f, out_f = self._lora_features()
        total = torch.zeros(out_f, in_f, device=self.weight.device)
        for name in self.lora_A:
            total += self.factor(name) * (self.lora_B[name].float() @ self.lora_A[name].float())
        return total

    def adapter_weights(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of adapter ``name`` as LoRA files store them: [r, in], [out, r] for a linear layer;
        [r, in, k_h, k_w], [out, r, 1, 1] for a convolution (peft's and kohya's shapes)."""
        a, b = self.lora_A[name].detach(), self.lora_B[name].detach()
        if isinstance(self, nn.Conv2d):
            return a.reshape(a.shape[0], *self.weight.shape[1:]), b[:, :, None, None]
        return a, b

    def _lora_terms(self, x: torch.Tensor, down, up) -> torch.Tensor | None:
        out = None
        for name, a in self.lora_A.items():
            s = self.factor(name)
            if s == 0.0:
                continue
            term = up(down(x, a), self.lora_B[name]) * s
            out = term if out is None else out + term
        return out


class LoRALinear(_LoRAMixin, nn.Linear):
    """y = W x + b + Σ_n s_n (α_n / r_n) B_n A_n x on the W, b of the ``nn.Linear`` it wraps (shared, not copied)."""

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self._init_adapters()

    def _lora_features(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        extra = self._lora_terms(x, F.linear, F.linear)
        return out if extra is None else out + extra.to(out.dtype)

    def unwrapped(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding this layer's W and b."""
        plain = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(plain)
        plain.in_features, plain.out_features = self.in_features, self.out_features
        plain.weight, plain.bias = self.weight, self.bias
        return plain


class LoRAConv(_LoRAMixin, nn.Conv2d):
    """y = W ⋆ x + b + Σ_n s_n (α_n / r_n) B_n ⋆ (A_n ⋆ x) on the W, b of the ``nn.Conv2d`` it wraps (shared):
    A_n a k×k convolution with W's stride, padding and dilation, B_n a 1×1 one (the module docstring)."""

    def __init__(self, base: nn.Conv2d):
        if not (isinstance(base, nn.Conv2d) and can_wrap(base)):
            raise ValueError("LoRA on convolutions takes plain (ungrouped) 2-D convolutions only")
        nn.Module.__init__(self)
        for attr in _CONV_ATTRS:
            setattr(self, attr, getattr(base, attr))
        self.weight, self.bias = base.weight, base.bias
        self._init_adapters()

    def _lora_features(self) -> tuple[int, int]:
        return self.weight[0].numel(), self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, self.bias)
        extra = self._lora_terms(x, lambda h, a: self._conv_forward(h, a.view(a.shape[0], *self.weight.shape[1:]),
                                                                    None),
                                 lambda h, b: F.conv2d(h, b[:, :, None, None]))
        return out if extra is None else out + extra.to(out.dtype)

    def unwrapped(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding this layer's W and b."""
        plain = nn.Conv2d.__new__(nn.Conv2d)
        nn.Module.__init__(plain)
        for attr in _CONV_ATTRS:
            setattr(plain, attr, getattr(self, attr))
        plain.weight, plain.bias = self.weight, self.bias
        return plain


LoRALayer = LoRALinear | LoRAConv


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a linear ``layer`` applies: W, or W + ΔW for a `LoRALinear` (cast to W's dtype)."""
    if isinstance(layer, LoRALinear):
        return layer.weight + layer.delta().to(layer.weight.dtype)
    return layer.weight


def can_wrap(module: nn.Module) -> bool:
    """Whether `inject` can put adapters on ``module``: a Linear or an ungrouped Conv2d (any kernel, stride,
    padding)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def wrap(root: nn.Module, name: str) -> LoRALayer:
    """The module ``name`` of ``root``, wrapped (in place) to take adapters if it was not already."""
    module = root.get_submodule(name)
    if isinstance(module, (LoRALinear, LoRAConv)):
        return module
    if not can_wrap(module):
        raise ValueError(f"{name} is a {type(module).__name__}; LoRA goes on Linear layers and ungrouped Conv2d")
    wrapped = LoRALinear(module) if isinstance(module, nn.Linear) else LoRAConv(module)
    _set_submodule(root, name, wrapped)
    return wrapped


def inject(root: nn.Module, names: list[str], rank: int, alpha: float, adapter: str = "default",
           scale: float = 1.0) -> dict[str, LoRALayer]:
    """A fresh adapter (B = 0: the output is unchanged) of rank r and alpha α on each module ``names`` of ``root``;
    returns {name: layer}. The adapters are the only parameters of ``root`` that require gradients afterwards
    only if the caller freezes the rest."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    layers = {}
    for name in names:
        layer = wrap(root, name)
        layer.add_adapter(adapter, rank, alpha, "train", scale)
        layers[name] = layer
    return layers


def attention_projections(root: nn.Module, targets: tuple[str, ...] = ATTENTION_PROJECTIONS) -> list[str]:
    """The names of ``root``'s Linear modules named one of ``targets`` inside an attention layer (a module with
    ``to_q``): the UNet's W_Q, W_K, W_V, W_out of self- and cross-attention."""
    found = []
    for name, module in root.named_modules():
        if hasattr(module, "to_q") and isinstance(module.to_q, nn.Linear):
            found += [f"{name}.{t}" if name else t for t in targets if isinstance(getattr(module, t, None), nn.Linear)]
    return found


def resblock_convolutions(root: nn.Module, targets: tuple[str, ...] = RESBLOCK_CONVOLUTIONS) -> list[str]:
    """The names of ``root``'s Conv2d modules named one of ``targets`` inside a residual block (a module with
    Conv2d ``conv1`` and ``conv2``: ldmkit's ``ResBlock``, diffusers' ``ResnetBlock2D``): the UNet's 3×3
    convolutions, where LoCon puts its adapters."""
    found = []
    for name, module in root.named_modules():
        if all(isinstance(getattr(module, c, None), nn.Conv2d) for c in RESBLOCK_CONVOLUTIONS):
            found += [f"{name}.{t}" if name else t for t in targets if isinstance(getattr(module, t, None), nn.Conv2d)]
    return found


def lora_layers(root: nn.Module) -> dict[str, LoRALayer]:
    """{name: layer} of the wrapped layers of ``root``."""
    return {n: m for n, m in root.named_modules() if isinstance(m, (LoRALinear, LoRAConv))}


def adapter_names(root: nn.Module) -> list[str]:
    """The adapters on ``root``, in the order they were added."""
    names: dict[str, None] = {}
    for layer in lora_layers(root).values():
        names.update(dict.fromkeys(layer.lora_A))
    return list(names)


def set_scale(root: nn.Module, adapter: str, scale: float) -> None:
    """s of adapter ``adapter`` on every layer of ``root`` that has it (0 switches it off)."""
    for layer in lora_layers(root).values():
        if adapter in layer.scale:
            layer.scale[adapter] = float(scale)


def adapter_parameters(root: nn.Module, adapter: str = "default") -> list[nn.Parameter]:
    """A, B of ``adapter`` on every layer, in module order (what an optimizer trains)."""
    params = []
    for layer in lora_layers(root).values():
        if adapter in layer.lora_A:
            params += [layer.lora_A[adapter], layer.lora_B[adapter]]
    return params


def remove(root: nn.Module, adapter: str | None = None) -> None:
    """Drop adapter ``adapter`` (None: all) from ``root``; a layer left without adapters is unwrapped.
    W is untouched."""
    for name, layer in lora_layers(root).items():
        for n in [adapter] if adapter is not None else list(layer.lora_A):
            if n in layer.lora_A:
                layer.drop_adapter(n)
        if not layer.lora_A:
            _set_submodule(root, name, layer.unwrapped())


@torch.no_grad()
def merge(root: nn.Module) -> int:
    """W ← W + Σ_n s_n (α_n / r_n) B_n A_n in every wrapped layer of ``root``, then unwrap it; the network then
    computes what it did with the adapters (up to float rounding) at no extra cost. Returns the layers merged."""
    layers = lora_layers(root)
    for name, layer in layers.items():
        delta = layer.delta()
        layer.weight.add_(delta.reshape(layer.weight.shape).to(layer.weight.dtype))
        _set_submodule(root, name, layer.unwrapped())
    return len(layers)
