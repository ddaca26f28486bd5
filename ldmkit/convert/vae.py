"""Autoencoder keys: ldmkit's KL autoencoder ↔ the original LDM/SD ``AutoencoderKL`` ↔ diffusers' ``AutoencoderKL``.

    ldmkit                          original (first_stage_model.)      diffusers (vae/)
    encoder.down.{l}.{j}            encoder.down.{l}.block.{j}         encoder.down_blocks.{l}.resnets.{j}
    encoder.down.{l}.{n}.conv       encoder.down.{l}.downsample.conv   encoder.down_blocks.{l}.downsamplers.0.conv
    {en,de}coder.mid.{0,2}          {en,de}coder.mid.block_{1,2}       {en,de}coder.mid_block.resnets.{0,1}
    {en,de}coder.mid.1.norm         … mid.attn_1.norm                  … mid_block.attentions.0.group_norm
    … mid.1.attn.to_{q,k,v}, to_out … mid.attn_1.{q,k,v}, proj_out     … attentions.0.to_{q,k,v}, to_out.0
    decoder.up.{i}.{j}              decoder.up.{L-1-i}.block.{j}       decoder.up_blocks.{i}.resnets.{j}
    decoder.up.{i}.{n+1}.conv       decoder.up.{L-1-i}.upsample.conv   decoder.up_blocks.{i}.upsamplers.0.conv
    {en,de}coder.norm_out           {en,de}coder.norm_out              {en,de}coder.conv_norm_out

The original's attention uses 1×1 convolutions ([C, C, 1, 1]) where ldmkit and diffusers use Linear
layers ([C, C]). ``scale_factor`` is not a weight in either other layout (see `ldmkit.convert.original`).
"""

from __future__ import annotations

import re

from ldmkit.config import AutoencoderConfig
from ldmkit.convert.rules import Rule

ORIGINAL = "first_stage_model."
DIFFUSERS = "vae/"
RES = {"skip": ("nin_shortcut", "conv_shortcut")}  # other ResBlock leaves keep their names
ATTN = {  # ldmkit → (original, diffusers)
    "norm": ("norm", "group_norm"),
    "attn.to_q": ("q", "to_q"),
    "attn.to_k": ("k", "to_k"),
    "attn.to_v": ("v", "to_v"),
    "attn.to_out": ("proj_out", "to_out.0"),
}
SCALE_FACTOR = "autoencoder.scale_factor"


def _res(rest: str) -> tuple[str, str]:
    module, _, param = rest.rpartition(".")
    orig, diff = RES.get(module, (module, module))
    return f"{orig}.{param}", f"{diff}.{param}"


def vae_key(key: str, cfg: AutoencoderConfig) -> tuple[str, str, bool]:
    """(original, diffusers, original-is-1×1-conv) names of ldmkit autoencoder key ``key``."""
    n = cfg.num_res_blocks
    levels = len(cfg.channel_mults)
    module, _, param = key.rpartition(".")
    if module in ("quant_conv", "post_quant_conv") or re.fullmatch(r"(en|de)coder\.(conv_in|conv_out)", module):
        return key, key, False
    if m := re.fullmatch(r"(encoder|decoder)\.norm_out", module):
        return key, f"{m[1]}.conv_norm_out.{param}", False
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.([02])\.(.+)", key):
        orig, diff = _res(m[3])
        i = int(m[2]) // 2
        return f"{m[1]}.mid.block_{i + 1}.{orig}", f"{m[1]}.mid_block.resnets.{i}.{diff}", False
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.1\.(.+)\.(weight|bias)", key):
        orig, diff = ATTN[m[2]]
        conv = m[2] != "norm" and m[3] == "weight"
        return f"{m[1]}.mid.attn_1.{orig}.{m[3]}", f"{m[1]}.mid_block.attentions.0.{diff}.{m[3]}", conv
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.(\d+)\.(.+)", key):
        level, j, rest = int(m[1]), int(m[2]), m[3]
        if j == n:
            return (
                f"encoder.down.{level}.downsample.{rest}",
                f"encoder.down_blocks.{level}.downsamplers.0.{rest}",
                False,
            )
        orig, diff = _res(rest)
        return f"encoder.down.{level}.block.{j}.{orig}", f"encoder.down_blocks.{level}.resnets.{j}.{diff}", False
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        level = levels - 1 - i
        if j == n + 1:
            return f"decoder.up.{level}.upsample.{rest}", f"decoder.up_blocks.{i}.upsamplers.0.{rest}", False
        orig, diff = _res(rest)
        return f"decoder.up.{level}.block.{j}.{orig}", f"decoder.up_blocks.{i}.resnets.{j}.{diff}", False
    raise KeyError(f"no original/diffusers name for autoencoder key {key!r}")


def vae_rules(cfg: AutoencoderConfig, ldmkit_keys: list[str], layout: str) -> list[Rule]:
    """Rules for the ldmkit autoencoder keys (with their ``autoencoder.`` prefix; ``scale_factor``
    excluded) to ``layout`` ("original" or "diffusers")."""
    rules = []
    for key in ldmkit_keys:
        if key == SCALE_FACTOR:
            continue
        orig, diff, conv = vae_key(key.removeprefix("autoencoder."), cfg)
        if layout == "original":
            rules.append(Rule((key,), (ORIGINAL + orig,), "conv1x1" if conv else "rename"))
        else:
            rules.append(Rule((key,), (DIFFUSERS + diff,)))
    return rules
