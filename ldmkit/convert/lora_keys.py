"""The keys of a LoRA file, in every layout `ldmkit.convert.lora` reads: which module a key adapts and which part
of the adapter it holds. A leaf module (nothing of ``ldmkit.convert`` imported), so that the inference of a single
file's architecture can tell a LoRA file given as a model without importing the LoRA reader."""

from __future__ import annotations

import re

_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"),
          (".lora.down.weight", ".lora.up.weight"))
_ATTN_PROC = re.compile(r"(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")


def split_key(key: str) -> tuple[str, str] | None:
    """(module, "down" | "up" | "alpha") of a LoRA key, or None."""
    key = key.removeprefix("base_model.model.")
    if m := _ATTN_PROC.fullmatch(key):
        return f"{m[1]}.{m[2] if m[2] != 'to_out' else 'to_out.0'}", m[3]
    for down, up in _PAIRS:
        if key.endswith(down):
            return key[: -len(down)], "down"
        if key.endswith(up):
            return key[: -len(up)], "up"
    if key.endswith(".alpha"):
        return key[: -len(".alpha")], "alpha"
    return None
