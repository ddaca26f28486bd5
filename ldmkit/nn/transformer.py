"""The Transformer layer inside the UNet: self-attention, cross-attention to τθ(y), MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.nn.attention import Attention
from ldmkit.nn.layers import group_norm


class GEGLU(nn.Module):
    """GEGLU(x) = (x W + b) ⊙ GELU(x V + c), one Linear producing both halves (as in Stable Diffusion)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """FF(x) = W₂ dropout(GEGLU(x)), inner width 4·dim."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        self.geglu = GEGLU(dim, mult * dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.geglu(x)))


class BasicTransformerBlock(nn.Module):
    """Pre-LN block over the h·w tokens φ(z_t) of one UNet level:

        x ← x + SelfAttn(LN(x))
        x ← x + CrossAttn(LN(x), c)      Q = W_Q x, K = W_K c, V = W_V c, c = τθ(y)
        x ← x + FF(LN(x))

    ``mask`` (bool[B, L], True = keep) hides the padding tokens of c from the cross-attention.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)
        # Stable Diffusion puts dropout after each attention's output projection; same here.
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn1(self.norm1(x)))
        x = x + self.dropout(self.attn2(self.norm2(x), context, mask))
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """out = x + reshape(W_out · Blocks(W_in · tokens(GroupNorm(x)), c)), x of shape [B, C, h, w].

    The lecture's "Transformer layer inside the UNet": the feature map becomes h·w tokens, projected
    from C to d·n_h = ``heads · head_dim``, passes ``depth`` `BasicTransformerBlock`s, and is
    projected back to C. With ``linear_projection`` (ldmkit's default, Stable Diffusion v2's
    ``use_linear_in_transformer``) the projections are Linear layers applied to tokens already in
    [B, h·w, C] order; otherwise they are 1×1 convolutions on the feature map (Stable Diffusion v1):
    the same map, kept as convolutions so that SD v1 weights load with their own shapes.
    ``proj_out`` starts at zero, so a fresh block is the identity and a new UNet ignores the prompt
    until training moves it.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        context_dim: int,
        depth: int = 1,
        dropout: float = 0.0,
        linear_projection: bool = True,
    ):
        super().__init__()
        inner = heads * head_dim
        self.linear_projection = linear_projection
        self.norm = group_norm(channels)
        self.proj_in = nn.Linear(channels, inner) if linear_projection else nn.Conv2d(channels, inner, 1)
        self.blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, context_dim, dropout) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if linear_projection else nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        # permute + reshape: free for channels_last input (already B·h·w·C in memory), a copy otherwise.
        if self.linear_projection:
            tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            hidden = self.proj_in(self.norm(x))
            tokens = hidden.permute(0, 2, 3, 1).reshape(b, h * w, hidden.shape[1])
        for block in self.blocks:
            tokens = block(tokens, context, mask)
        if self.linear_projection:
            out = self.proj_out(tokens).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out = self.proj_out(tokens.reshape(b, h, w, tokens.shape[-1]).permute(0, 3, 1, 2))
        return x + out
