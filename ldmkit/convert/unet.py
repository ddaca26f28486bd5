"""UNet keys: ldmkit ↔ the original LDM/SD ``openaimodel`` layout ↔ diffusers' ``UNet2DConditionModel``.

The three share one structure (see `ldmkit.nn.unet`); only the names differ:

    ldmkit                              original (model.diffusion_model.)   diffusers (unet/)
    time_embed.{0,2}                    time_embed.{0,2}                    time_embedding.linear_{1,2}
    conv_in                             input_blocks.0.0                    conv_in
    encoder.{l}.blocks.{j}.res|attn     input_blocks.{k}.0|1                down_blocks.{l}.resnets|attentions.{j}
    encoder.{l}.downsample.conv         input_blocks.{k}.0.op               down_blocks.{l}.downsamplers.0.conv
    middle.block1.res|attn, middle.res2 middle_block.{0,1,2}                mid_block.resnets.0|attentions.0|resnets.1
    decoder.{i}.blocks.{j}.res|attn     output_blocks.{k}.0|1               up_blocks.{i}.resnets|attentions.{j}
    decoder.{i}.upsample.conv           output_blocks.{k}.{1|2}.conv        up_blocks.{i}.upsamplers.0.conv
    norm_out, conv_out                  out.0, out.2                        conv_norm_out, conv_out

with k counting the original's flat block lists (each encoder level has num_res_blocks blocks and a
downsample, the last no downsample; each decoder level num_res_blocks + 1 blocks).
"""

from __future__ import annotations

import re

from ldmkit.config import UNetConfig
from ldmkit.convert.rules import Rule

ORIGINAL = "model.diffusion_model."
DIFFUSERS = "unet/"

# ResBlock leaves: ldmkit → (original, diffusers)
RES = {
    "norm1": ("in_layers.0", "norm1"),
    "conv1": ("in_layers.2", "conv1"),
    "emb_proj": ("emb_layers.1", "time_emb_proj"),
    "norm2": ("out_layers.0", "norm2"),
    "conv2": ("out_layers.3", "conv2"),
    "skip": ("skip_connection", "conv_shortcut"),
}
# Inside a transformer block: ldmkit → original = diffusers
BLOCK = {"attn1.to_out": "attn1.to_out.0", "attn2.to_out": "attn2.to_out.0", "ff.geglu.proj": "ff.net.0.proj", "ff.out": "ff.net.2"}


def _res_leaf(rest: str) -> tuple[str, str]:
    module, _, param = rest.rpartition(".")
    orig, diff = RES[module]
    return f"{orig}.{param}", f"{diff}.{param}"


def _attn_leaf(rest: str) -> str:
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", rest)
    if not m:
        return rest  # norm, proj_in, proj_out keep their names
    block, module, param = m.groups()
    return f"transformer_blocks.{block}.{BLOCK.get(module, module)}.{param}"


def unet_key(key: str, cfg: UNetConfig) -> tuple[str, str]:
    """(original, diffusers) names of ldmkit UNet key ``key`` (without prefixes)."""
    n = cfg.num_res_blocks
    attended = set(cfg.attention_levels)
    levels = len(cfg.channel_mults)
    simple = {
        "time_embed.0": ("time_embed.0", "time_embedding.linear_1"),
        "time_embed.2": ("time_embed.2", "time_embedding.linear_2"),
        "conv_in": ("input_blocks.0.0", "conv_in"),
        "norm_out": ("out.0", "conv_norm_out"),
        "conv_out": ("out.2", "conv_out"),
    }
    module, _, param = key.rpartition(".")
    if module in simple:
        orig, diff = simple[module]
        return f"{orig}.{param}", f"{diff}.{param}"

    if m := re.fullmatch(r"encoder\.(\d+)\.blocks\.(\d+)\.(res|attn)\.(.+)", key):
        level, j, part, rest = int(m[1]), int(m[2]), m[3], m[4]
        k = 1 + level * (n + 1) + j
        if part == "res":
            orig, diff = _res_leaf(rest)
            return f"input_blocks.{k}.0.{orig}", f"down_blocks.{level}.resnets.{j}.{diff}"
        leaf = _attn_leaf(rest)
        return f"input_blocks.{k}.1.{leaf}", f"down_blocks.{level}.attentions.{j}.{leaf}"
    if m := re.fullmatch(r"encoder\.(\d+)\.downsample\.conv\.(weight|bias)", key):
        level = int(m[1])
        return f"input_blocks.{1 + level * (n + 1) + n}.0.op.{m[2]}", f"down_blocks.{level}.downsamplers.0.conv.{m[2]}"

    if m := re.fullmatch(r"middle\.block1\.(res|attn)\.(.+)", key):
        if m[1] == "res":
            orig, diff = _res_leaf(m[2])
            return f"middle_block.0.{orig}", f"mid_block.resnets.0.{diff}"
        leaf = _attn_leaf(m[2])
        return f"middle_block.1.{leaf}", f"mid_block.attentions.0.{leaf}"
    if m := re.fullmatch(r"middle\.res2\.(.+)", key):
        orig, diff = _res_leaf(m[1])
        return f"middle_block.{2 if attended else 1}.{orig}", f"mid_block.resnets.1.{diff}"

    if m := re.fullmatch(r"decoder\.(\d+)\.blocks\.(\d+)\.(res|attn)\.(.+)", key):
        i, j, part, rest = int(m[1]), int(m[2]), m[3], m[4]
        k = i * (n + 1) + j
        if part == "res":
            orig, diff = _res_leaf(rest)
            return f"output_blocks.{k}.0.{orig}", f"up_blocks.{i}.resnets.{j}.{diff}"
        leaf = _attn_leaf(rest)
        return f"output_blocks.{k}.1.{leaf}", f"up_blocks.{i}.attentions.{j}.{leaf}"
    if m := re.fullmatch(r"decoder\.(\d+)\.upsample\.conv\.(weight|bias)", key):
        i = int(m[1])
        level = levels - 1 - i
        slot = 2 if level in attended else 1
        return f"output_blocks.{i * (n + 1) + n}.{slot}.conv.{m[2]}", f"up_blocks.{i}.upsamplers.0.conv.{m[2]}"
    raise KeyError(f"no original/diffusers name for UNet key {key!r}")


def unet_rules(cfg: UNetConfig, ldmkit_keys: list[str], layout: str) -> list[Rule]:
    """Rules for every ldmkit UNet key (given with its ``unet.`` prefix) to ``layout``
    ("original" or "diffusers"), the other names carrying their layout's prefix."""
    rules = []
    for key in ldmkit_keys:
        orig, diff = unet_key(key.removeprefix("unet."), cfg)
        rules.append(Rule((key,), (ORIGINAL + orig if layout == "original" else DIFFUSERS + diff,)))
    return rules


def ema_key(original_key: str) -> str:
    """The name the LDM's LitEma gives the EMA copy of a UNet weight: ``model_ema.`` + the name inside
    ``model.`` with its dots removed (model.diffusion_model.out.0.weight → model_ema.diffusion_modelout0weight)."""
    return "model_ema." + original_key.removeprefix("model.").replace(".", "")
