"""The noise model εθ(z_t, t, τθ(y)): a UNet of ResBlocks with spatial-transformer blocks.

Layout (LDM ``openaimodel``): an encoder of resolution levels, each ``num_res_blocks`` ResBlocks
(each followed by a `SpatialTransformer` on attention levels) and a stride-2 Downsample between
levels; a middle ResBlock–SpatialTransformer–ResBlock; a decoder mirroring the encoder with
``num_res_blocks + 1`` ResBlocks per level, each taking one encoder activation by concatenation.

A latent of any size runs: each Downsample takes a side s to ⌈s/2⌉, and each Upsample goes back to
the size of the skip connection it meets (2s, or 2s − 1 after an odd side), as diffusers'
``UNet2DConditionModel`` does (its ``upsample_size``), so SD sizes need only be multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.config import ConfigError, UNetConfig
from ldmkit.nn.embeddings import timestep_embedding
from ldmkit.nn.layers import Downsample, ResBlock, Upsample, group_norm, narrowest_group
from ldmkit.nn.transformer import SpatialTransformer


def attention_heads(cfg: UNetConfig, channels: int) -> tuple[int, int]:
    """(heads, head_dim) of a transformer block at a level of width ``channels``: a fixed head width
    ``head_dim`` (ldmkit, SD 2.x: 64), or a fixed count ``num_heads`` when it is set (SD 1.x: 8)."""
    if cfg.num_heads > 0:
        return cfg.num_heads, channels // cfg.num_heads
    return channels // cfg.head_dim, cfg.head_dim


class ResAttnBlock(nn.Module):
    """h = SpatialTransformer(ResBlock(x, emb), c) on attention levels, h = ResBlock(x, emb) elsewhere."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, cfg: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim, cfg.dropout, cfg.norm_eps)
        heads, head_dim = attention_heads(cfg, out_channels)
        self.attn = (
            SpatialTransformer(
                out_channels,
                heads=heads,
                head_dim=head_dim,
                context_dim=cfg.context_dim,
                depth=cfg.transformer_depth,
                dropout=cfg.dropout,
                linear_projection=cfg.linear_projection,
            )
            if attention
            else None
        )

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h, context, mask)


class EncoderLevel(nn.Module):
    """One resolution level going down; every block's output is pushed onto ``skips`` for the decoder."""

    def __init__(
        self, in_channels: int, out_channels: int, emb_dim: int, cfg: UNetConfig, attention: bool, downsample: bool
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResAttnBlock(in_channels if i == 0 else out_channels, out_channels, emb_dim, cfg, attention)
            for i in range(cfg.num_res_blocks)
        )
        self.downsample = Downsample(out_channels) if downsample else None

    def forward(
        self, h: torch.Tensor, emb, context, mask, skips: list[torch.Tensor], start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Blocks ``start`` … ``stop`` − 1 (default: all), then the downsample if ``stop`` is None; running
        [0, k) and then [k, None) is the whole level (feature reuse splits the first level so)."""
        for block in self.blocks[start:stop]:
            h = block(h, emb, context, mask)
            skips.append(h)
        if self.downsample is not None and stop is None:
            h = self.downsample(h)
            skips.append(h)
        return h


class SkipUpsample(Upsample):
    """`Upsample` to a given size: the size of the skip connection the next level concatenates, which is
    one less than double after an odd side was halved (diffusers' ``Upsample2D`` with ``output_size``)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Double H and W (``size`` None or double: `Upsample`'s own computation, bit for bit), or
        nearest-neighbour upsampling to ``size`` (h, w), then the 3×3 convolution."""
        if size is None or tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1]):
            return super().forward(x)
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class DecoderLevel(nn.Module):
    """One resolution level going up: block j sees cat(h, skip_j), skips popped last-in first-out; the
    upsample at its end goes to the size of the next level's first skip (`SkipUpsample`)."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: list[int],
        out_channels: int,
        emb_dim: int,
        cfg: UNetConfig,
        attention: bool,
        upsample: bool,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResAttnBlock((in_channels if j == 0 else out_channels) + s, out_channels, emb_dim, cfg, attention)
            for j, s in enumerate(skip_channels)
        )
        self.upsample = SkipUpsample(out_channels) if upsample else None

    def forward(
        self, h: torch.Tensor, emb, context, mask, skips: list[torch.Tensor], start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Blocks ``start`` … ``stop`` − 1 (default: all), then the upsample if ``stop`` is None, to the size
        of the skip the next level takes first."""
        for block in self.blocks[start:stop]:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, mask)
        if self.upsample is not None and stop is None:
            h = self.upsample(h, skips[-1].shape[-2:])
        return h


class MiddleBlock(nn.Module):
    """h = ResBlock(SpatialTransformer(ResBlock(x, emb), c), emb) at the lowest resolution."""

    def __init__(self, channels: int, emb_dim: int, cfg: UNetConfig, attention: bool):
        super().__init__()
        self.block1 = ResAttnBlock(channels, channels, emb_dim, cfg, attention)
        self.res2 = ResBlock(channels, channels, emb_dim, cfg.dropout, cfg.norm_eps)

    def forward(self, h: torch.Tensor, emb, context, mask) -> torch.Tensor:
        return self.res2(self.block1(h, emb, context, mask), emb)


class UNet(nn.Module):
    """ε̂ = εθ(z_t, t, τθ(y)), the noise predicted in z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε.

    The timestep enters every ResBlock through emb = MLP(timestep_embedding(t)); the prompt enters
    every `SpatialTransformer` (levels in ``cfg.attention_levels``, plus the middle block when that
    list is non-empty) as the keys and values of cross-attention.

    Initialisation: each SpatialTransformer's ``proj_out`` is zero, so a fresh UNet is a plain
    ResBlock UNet that ignores the prompt. ``conv_out`` keeps PyTorch's default init (as diffusers;
    LDM zeroes it): with a zero ``conv_out`` every gradient but its own is zero at the first step, and
    the transformer internals, already behind a zero ``proj_out``, would wait two steps instead of one.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # A consistency student's guidance input (`UNetConfig.guidance_embedding`); zero, so that the
        # student starts as the teacher it is copied from.
        self.guidance_embed = nn.Linear(mc, mc, bias=False) if cfg.guidance_embedding else None
        if self.guidance_embed is not None:
            nn.init.zeros_(self.guidance_embed.weight)
        self.conv_in = nn.Conv2d(cfg.in_channels + 2 * cfg.coordinate_channels, mc, 3, padding=1)

        last = len(cfg.channel_mults) - 1
        skip_channels = [mc]  # conv_in's output is the first skip
        ch = mc
        self.encoder = nn.ModuleList()
        for level, mult in enumerate(cfg.channel_mults):
            out = mc * mult
            self.encoder.append(EncoderLevel(ch, out, emb_dim, cfg, level in cfg.attention_levels, level != last))
            skip_channels += [out] * (cfg.num_res_blocks + (level != last))
            ch = out

        self.middle = MiddleBlock(ch, emb_dim, cfg, attention=bool(cfg.attention_levels))

        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            out = mc * mult
            skips = [skip_channels.pop() for _ in range(cfg.num_res_blocks + 1)]
            self.decoder.append(
                DecoderLevel(ch, skips, out, emb_dim, cfg, level in cfg.attention_levels, upsample=level != 0)
            )
            ch = out

        self.norm_out = group_norm(ch, cfg.norm_eps)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)

    @property
    def downsample_factor(self) -> int:
        """2^(number of levels − 1): a latent side over its lowest level's side (when the side is a multiple of it;
        any side runs, `lowest_level_size`)."""
        return 2 ** (len(self.cfg.channel_mults) - 1)

    def lowest_level_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the lowest level for a latent of ``height`` × ``width``: each Downsample (a stride-2 3×3
        convolution, padding 1) takes a side s to ⌈s/2⌉, so the lowest level's side is ⌈s / d⌉,
        d = `downsample_factor`."""
        d = self.downsample_factor
        return -(-height // d), -(-width // d)

    @property
    def _one_value_per_group(self) -> bool:
        """Whether the narrowest GroupNorm at the lowest level has one channel per group (the tiny presets), so
        that a 1×1 lowest level would leave one value per group, and every output the same."""
        bottom = (self.encoder[-1], self.middle, self.decoder[0])
        return min(narrowest_group(part) for part in bottom) == 1

    def too_small(self, height: int, width: int) -> bool:
        """Whether a latent of ``height`` × ``width`` is too small for this UNet: GroupNorm needs more than one
        value per group, which a 1×1 lowest level (`lowest_level_size`) leaves only where a group has one channel."""
        return self._one_value_per_group and self.lowest_level_size(height, width) == (1, 1)

    @property
    def context_dim(self) -> int:
        return self.cfg.context_dim

    def forward(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None = None,
        guidance: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """z_t: [B, in_channels, h, w]; t: int64[B] in 0 … T−1 (a 0-d t is shared by the batch);
        context: τθ(y), [B, L, context_dim] (None only for a UNet without attention levels);
        context_mask: bool[B, L], True = real token, False = padding; every row needs one True (the
        tokenizer's start and end tokens always are), or that sample's attention is 0/0 = NaN;
        guidance: the guidance scale s ([B], 0-d or a number), for a UNet with ``guidance_embedding``
        only (a consistency student), which needs it.
        Returns ε̂: [B, out_channels, h, w].
        """
        emb, h = self._embed(z_t, t, context, guidance)
        skips = [h]
        for level in self.encoder:
            h = level(h, emb, context, context_mask, skips)
        h = self.middle(h, emb, context, context_mask)
        for level in self.decoder:
            h = level(h, emb, context, context_mask, skips)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward_split(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None = None,
        deep: torch.Tensor | None = None,
        shallow_blocks: int = 1,
        guidance: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` split at the skip branch of the first level, for feature reuse (DeepCache, Ma et al.
        2023; `ldmkit.nn.feature_cache`). Returns (ε̂, D).

        With k = ``shallow_blocks`` (0 … ``num_res_blocks``), the shallow branch S is conv_in, the first k
        ResAttnBlocks of the first encoder level (their outputs and conv_in's are the skips it feeds), the
        last k + 1 blocks of the last decoder level (the ones that take those skips) and the output head.
        D is what enters the first of those decoder blocks: everything deeper (the rest of the first level,
        the lower levels, the middle block and the decoder up to there). Then

            ε̂ = S(z_t, t, c; D),   D = Deep(z_t, t, c)      (``deep`` None: D computed, ε̂ = `forward`'s,
                                                              bit for bit)
            ε̂ ≈ S(z_t, t, c; D')                            (``deep`` = D' from an earlier, nearby step)

        Only S runs in the second form: D changes slowly from one sampling step to the next, the shallow
        features with z_t. k = 1 is DeepCache's branch 0; larger k recomputes more, and is closer to `forward`.
        """
        nrb = self.cfg.num_res_blocks
        if not 0 <= shallow_blocks <= nrb:
            raise ValueError(f"shallow_blocks = {shallow_blocks}; must be 0 … num_res_blocks = {nrb}")
        emb, h = self._embed(z_t, t, context, guidance)
        skips = [h]
        first, last = self.encoder[0], self.decoder[-1]
        h = first(h, emb, context, context_mask, skips, stop=shallow_blocks)
        if deep is None:
            h = first(h, emb, context, context_mask, skips, start=shallow_blocks)
            for level in self.encoder[1:]:
                h = level(h, emb, context, context_mask, skips)
            h = self.middle(h, emb, context, context_mask)
            for level in self.decoder[:-1]:
                h = level(h, emb, context, context_mask, skips)
            deep = last(h, emb, context, context_mask, skips, stop=nrb - shallow_blocks)
        elif deep.shape[0] != z_t.shape[0]:
            raise ValueError(f"deep features of batch {deep.shape[0]} for z_t of batch {z_t.shape[0]}")
        h = last(deep, emb, context, context_mask, skips, start=nrb - shallow_blocks)
        return self.conv_out(F.silu(self.norm_out(h))), deep

    def _embed(
        self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None,
        guidance: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(emb, conv_in(z_t)) after checking the inputs: what every forward starts with."""
        b, _, height, width = z_t.shape
        if context is None and self.cfg.attention_levels:
            raise ValueError("this UNet has cross-attention (attention_levels is not empty): pass a context")
        if context is not None and context.shape[-1] != self.cfg.context_dim:
            raise ValueError(f"context width {context.shape[-1]} != UNet context_dim {self.cfg.context_dim}")
        if t.ndim == 0:
            t = t.expand(b)

        # A global condition could be added to emb here (LDM's label_emb); ldmkit's class models pass
        # their class embedding as a one-token context instead (ldmkit.condition.classes).
        features = timestep_embedding(t, self.cfg.model_channels)
        if self.guidance_embed is not None:
            if guidance is None:
                raise ValueError("this UNet takes the guidance scale as an input (guidance_embedding): pass guidance")
            s = torch.as_tensor(guidance, dtype=torch.float32, device=z_t.device)
            s = s.expand(b) if s.ndim == 0 else s
            features = features + self.guidance_embed(timestep_embedding(100 * s, self.cfg.model_channels))
        elif guidance is not None:
            raise ValueError("this UNet has no guidance input (unet.guidance_embedding is false)")
        emb = self.time_embed(features)
        if self.cfg.coordinate_channels:
            z_t = torch.cat([z_t, coordinate_maps(b, height, width, z_t)], dim=1)
        if self.conv_in.weight.is_contiguous(memory_format=torch.channels_last):
            z_t = z_t.contiguous(memory_format=torch.channels_last)  # a channels-last UNet runs so from its input on
        return emb, self.conv_in(z_t)


def level_hw(latent_hw: tuple[int, int], positions: int) -> tuple[int, int]:
    """(h, w) of the UNet level whose features hold ``positions`` = h·w values, on a latent of ``latent_hw``:
    the latent's own sides halved, rounding up (`UNet.lowest_level_size`), until they hold that many. What a hook on an
    attention layer, which sees h·w tokens, reshapes them to; a ValueError where no level holds that many."""
    h, w = latent_hw
    while h * w > positions and (h, w) != (1, 1):
        h, w = -(-h // 2), -(-w // 2)
    if h * w != positions:
        raise ValueError(f"no UNet level of a {latent_hw[0]}x{latent_hw[1]} latent holds {positions} positions")
    return h, w


def coordinate_maps(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """[B, 2, h, w]: channel 0 is each pixel's x, channel 1 its y, both from −1 (left, top) to 1 (right,
    bottom) at pixel centres, on ``like``'s device and dtype."""
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=like.device, dtype=like.dtype)
    grid = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])
    return grid.expand(batch, 2, height, width)


def _check_config(cfg: UNetConfig) -> None:
    """Reject a UNetConfig the network cannot be built from, with a message naming the field."""
    levels = len(cfg.channel_mults)
    if levels == 0:
        raise ConfigError("unet.channel_mults must have at least one entry")
    if cfg.num_res_blocks < 1:
        raise ConfigError(f"unet.num_res_blocks = {cfg.num_res_blocks}; must be at least 1")
    for level in cfg.attention_levels:
        if not 0 <= level < levels:
            raise ConfigError(f"unet.attention_levels has {level}; levels are 0 … {levels - 1}")
    attended = [cfg.model_channels * cfg.channel_mults[i] for i in cfg.attention_levels]
    if cfg.attention_levels:
        attended.append(cfg.model_channels * cfg.channel_mults[-1])  # the middle block
    for ch in attended:
        if cfg.num_heads > 0:
            if ch % cfg.num_heads:
                raise ConfigError(
                    f"unet.num_heads = {cfg.num_heads} does not divide the width {ch} of an attention level"
                )
        elif cfg.head_dim < 1 or ch % cfg.head_dim:
            raise ConfigError(f"unet.head_dim = {cfg.head_dim} does not divide the width {ch} of an attention level")
