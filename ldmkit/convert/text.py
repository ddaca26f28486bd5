"""Text-encoder keys: ldmkit ↔ the original single file ↔ diffusers, per ``TextEncoderConfig.kind``.

- "clip" (SD 1.x): ldmkit ``text_encoder.transformer.text_model.X`` = original
  ``cond_stage_model.transformer.text_model.X`` = diffusers ``text_encoder/text_model.X`` (all three are
  transformers' ``CLIPTextModel``; transformers 5 saves it without ``text_model.``, which
  `ldmkit.convert.diffusers_folder` accepts and writes back as found).
- "openclip" (SD 2.x): the original holds OpenCLIP's own layout under ``cond_stage_model.model.``:

      token_embedding.weight, positional_embedding      embeddings.token_embedding / position_embedding
      transformer.resblocks.{i}.ln_1, ln_2               encoder.layers.{i}.layer_norm1, layer_norm2
      transformer.resblocks.{i}.attn.in_proj_{weight,bias}   self_attn.{q,k,v}_proj (stacked along dim 0)
      transformer.resblocks.{i}.attn.out_proj            self_attn.out_proj
      transformer.resblocks.{i}.mlp.c_fc, c_proj         mlp.fc1, fc2
      ln_final                                           final_layer_norm

  SD 2 uses the penultimate block's output, so the last resblock, ``text_projection`` and
  ``logit_scale`` are not part of ldmkit's model; they travel as extras.
- "ldm-bert" (the LDM text-to-image model): ``cond_stage_model.transformer.`` is x-transformers'
  ``TransformerWrapper``: ``token_emb``, ``pos_emb.emb``, ``attn_layers.layers.{2i}`` = [LayerNorm,
  Attention], ``attn_layers.layers.{2i+1}`` = [LayerNorm, FeedForward (net.0.0, net.2)], ``norm``; its
  ``to_logits`` head is unused (an extra). There is no diffusers layout for it here.
- "minilm": the frozen encoder has no weights here (its package provides them); the trained adapter blocks on
  top of it (``text.adapter_layers``), ldmkit's own, are ``cond_stage_model.adapter.*`` in a single file (which
  only ldmkit reads: its config is in the file's metadata). There is no diffusers layout for it.
"""

from __future__ import annotations

import re

from ldmkit.config import TextEncoderConfig
from ldmkit.convert.rules import Rule
from ldmkit.storage import CheckpointError

CLIP_ORIGINAL = "cond_stage_model.transformer."
OPENCLIP_ORIGINAL = "cond_stage_model.model."
MINILM_ORIGINAL = "cond_stage_model."  # + adapter.*
DIFFUSERS = "text_encoder/"
PREFIX = "text_encoder."

OPENCLIP_LEAVES = {  # CLIPTextModel layer module → OpenCLIP resblock module
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
LDM_BERT_LEAVES = {  # ldmkit TextTransformerBlock module → (layer offset, x-transformers module)
    "norm1": (0, "0"),
    "attn.to_q": (0, "1.to_q"),
    "attn.to_k": (0, "1.to_k"),
    "attn.to_v": (0, "1.to_v"),
    "attn.to_out": (0, "1.to_out"),
    "norm2": (1, "0"),
    "fc1": (1, "1.net.0.0"),
    "fc2": (1, "1.net.2"),
}


OPENCLIP_FIXED = {  # CLIPTextModel key (under transformer.) → OpenCLIP name (under cond_stage_model.model.)
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
LDM_BERT_FIXED = {  # ldmkit text-encoder key → the LDM's x-transformers name
    "token_embedding.weight": "token_emb.weight",
    "position_embedding": "pos_emb.emb.weight",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}


def _layer_key(key: str, fixed: dict, pattern: str, leaves: dict, build, what: str) -> str:
    """``fixed[key]``, or for a per-layer key matching ``pattern`` (layer index, module, weight|bias)
    ``build(layer, leaves[module], kind)``; KeyError naming ``what`` otherwise."""
    if key in fixed:
        return fixed[key]
    m = re.fullmatch(pattern, key)
    if not m or m[2] not in leaves:
        raise KeyError(f"no {what} name for text key {key!r}")
    return build(int(m[1]), leaves[m[2]], m[3])


def _openclip_key(key: str) -> str:
    """OpenCLIP name (under cond_stage_model.model.) of a CLIPTextModel key (under transformer.)."""
    return _layer_key(key, OPENCLIP_FIXED, r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", OPENCLIP_LEAVES,
                      lambda i, leaf, kind: f"transformer.resblocks.{i}.{leaf}.{kind}", "OpenCLIP")


def _ldm_bert_key(key: str) -> str:
    """The LDM's x-transformers name of an ldmkit text-encoder key (two x-transformers layers per block)."""
    return _layer_key(key, LDM_BERT_FIXED, r"blocks\.(\d+)\.(.+)\.(weight|bias)", LDM_BERT_LEAVES,
                      lambda i, leaf, kind: f"attn_layers.layers.{2 * i + leaf[0]}.{leaf[1]}.{kind}", "LDM")


def text_rules(cfg: TextEncoderConfig, ldmkit_keys: list[str], layout: str) -> list[Rule]:
    """Rules for the ldmkit text-encoder keys (with their ``text_encoder.`` prefix) to ``layout``."""
    keys = [k.removeprefix(PREFIX) for k in ldmkit_keys]
    if cfg.kind == "minilm":
        if layout == "diffusers":
            raise CheckpointError("a 'minilm' text encoder has no diffusers layout; convert to ldmkit or original")
        return [Rule((PREFIX + k,), (MINILM_ORIGINAL + k,)) for k in keys]
    if layout == "diffusers":
        if cfg.kind not in ("clip", "openclip"):
            raise CheckpointError(f"a {cfg.kind!r} text encoder has no diffusers layout; convert to ldmkit or original")
        return [Rule((PREFIX + k,), (DIFFUSERS + k.removeprefix("transformer."),)) for k in keys]
    if cfg.kind == "clip":
        return [Rule((PREFIX + k,), (CLIP_ORIGINAL + k.removeprefix("transformer."),)) for k in keys]
    if cfg.kind == "ldm-bert":
        return [Rule((PREFIX + k,), (CLIP_ORIGINAL + _ldm_bert_key(k),)) for k in keys]
    if cfg.kind != "openclip":
        raise CheckpointError(f"a {cfg.kind!r} text encoder has no Stable Diffusion single-file layout")
    rules = []
    for k in keys:
        inner = k.removeprefix("transformer.")
        if m := re.fullmatch(r"(text_model\.encoder\.layers\.\d+\.self_attn)\.([qkv])_proj\.(weight|bias)", inner):
            if m[2] != "q":
                continue  # stacked with q
            stacked = tuple(f"{PREFIX}transformer.{m[1]}.{p}_proj.{m[3]}" for p in "qkv")
            block = re.search(r"layers\.(\d+)", inner)[1]
            rules.append(
                Rule(stacked, (f"{OPENCLIP_ORIGINAL}transformer.resblocks.{block}.attn.in_proj_{m[3]}",), "stack")
            )
        else:
            rules.append(Rule((PREFIX + k,), (OPENCLIP_ORIGINAL + _openclip_key(inner),)))
    return rules
