"""LoRA files: ldmkit's adapters (`ldmkit.nn.lora`) ↔ the layouts diffusers, peft and kohya-ss write.

A LoRA file holds, for each adapted layer, A (``down``, [r, in]) and B (``up``, [out, r]), and the layer's
alpha α somewhere; the layer computes W x + s (α / r) B A x. On a k×k convolution (LoCon: kohya-ss' and
LyCORIS' conv LoRA, peft's LoRA on a Conv2d) A is a k×k kernel, [r, in, k, k], and B a 1×1 one, [out, r, 1, 1],
under the same key names; a 1×1 convolution's may be stored either way. The layouts, and how each carries α:

- **diffusers / peft** (what ``pipe.save_lora_weights`` writes and ``pipe.load_lora_weights`` reads):
  ``unet.<diffusers module>.lora_A.weight`` / ``.lora_B.weight`` (``text_encoder.<module>…`` for CLIP);
  α in the safetensors metadata ``lora_adapter_metadata`` (JSON ``{"unet.r": r, "unet.lora_alpha": α,
  "unet.target_modules": […]}``), else α = r. Keys without the ``unet.`` prefix (peft's
  ``get_peft_model_state_dict`` of a UNet) and the older ``….processor.to_q_lora.down.weight`` /
  ``….lora.down.weight`` spellings are read too.
- **kohya-ss** (sd-scripts, A1111, ComfyUI): ``lora_unet_<module with _ for .>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha`` (a scalar per layer), the module named as in diffusers (SD 1/2) or as in
  the original LDM UNet (``lora_unet_input_blocks_4_1_…``, SDXL-style); ``lora_te_…`` / ``lora_te1_…`` for the
  text encoder.

A kohya-layout file may also bundle textual-inversion embeddings, as A1111 reads them (its pivotal-tuning LoRAs):
``bundle_emb.NAME.string_to_param.*`` or ``bundle_emb.NAME.emb_params`` ([k, width]); `load_lora` adds each as the
word NAME, as A1111 does (diffusers' loader refuses such files, so ldmkit writes embeddings to files of their own).

ldmkit writes the diffusers/peft layout by default (``layout="kohya"`` for the other), with the metadata
above and ``ldmkit.rank`` / ``ldmkit.alpha`` (when every layer has the same; diffusers' ``rank_pattern`` /
``alpha_pattern`` otherwise). Which layers ``ldmkit finetune`` adapts is `TARGETS`'s; files with adapters on
any Linear or ungrouped Conv2d of the UNet (kohya's ``conv_in``, down/upsampler convolutions…) load. Module
names come from `ldmkit.convert.unet.unet_key`: the same rules that convert whole checkpoints, so a LoRA
trained on an ldmkit model has the diffusers names of its layers, and one trained on Stable Diffusion elsewhere
finds its layers in ldmkit's converted model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ldmkit.convert.lora_keys import split_key
from ldmkit.convert.unet import unet_key
from ldmkit.errors import UsageError
from ldmkit.nn import lora
from ldmkit.storage import atomic_path, first_keys, load_pickle
from ldmkit.text import inversion

METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
WORDS_KEY = "ldmkit.known_words"  # the words of the captions it was trained on (`ldmkit.text.known_words`)
LAYOUTS = ("diffusers", "kohya")
BUNDLE_PREFIX = "bundle_emb."  # A1111's embeddings bundled in a LoRA file: bundle_emb.NAME.<key>
TEXT_KINDS = ("clip", "openclip")  # text encoders whose layers have diffusers names (transformers' CLIPTextModel)
# what `ldmkit finetune --lora-targets` adapts: the attention projections, and LoCon's ResBlock 3×3 convolutions
TARGETS = ("attention", "attention+conv")


@dataclass
class LoRAFile:
    """A file's adapters by the file's module name: {name: (A, B [out, r], α)}, its metadata, and the embeddings
    it bundles, {word: [k, width]}; A is [r, in], or [r, in, k_h, k_w] for a convolution with a kernel larger than
    1×1."""

    path: Path
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    metadata: dict[str, str] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def ranks(self) -> set[int]:
        return {a.shape[0] for a, _, _ in self.modules.values()}


def _unet_names(model) -> dict[str, str]:
    names = {}
    for path, module in model.unet.named_modules():
        if not lora.can_wrap(module):
            continue
        try:
            orig, diff = unet_key(path + ".weight", model.config.unet)
        except KeyError:  # a layer the other layouts have no name for (a student's guidance input)
            continue
        diff, orig = diff.removesuffix(".weight"), orig.removesuffix(".weight")
        for name in ("unet." + diff, "lora_unet_" + diff.replace(".", "_"), "lora_unet_" + orig.replace(".", "_")):
            names[name] = "unet." + path
    return names


def _text_names(model) -> dict[str, str]:
    if model.text_encoder is None or model.config.text.kind not in TEXT_KINDS:
        return {}
    # diffusers names the layers as the installed transformers does: CLIPTextModel's "text_model.encoder…" in
    # transformers 4, "encoder…" in 5 (ldmkit keeps "text_model." either way); both spellings are read, the
    # installed one is written. kohya always writes transformers 4's.
    v5 = not hasattr(model.text_encoder.transformer, "config")
    names = {}
    for path, module in model.text_encoder.named_modules():
        if isinstance(module, nn.Linear) and path.startswith("transformer.text_model."):
            diff = path.removeprefix("transformer.")
            short = diff.removeprefix("text_model.")
            spellings = ("text_encoder." + short, "text_encoder." + diff) if v5 else \
                ("text_encoder." + diff, "text_encoder." + short)
            for name in (*spellings, "lora_te_" + diff.replace(".", "_"), "lora_te1_" + diff.replace(".", "_")):
                names[name] = "text_encoder." + path
    return names


def module_names(model) -> dict[str, str]:
    """{a layer's name in a LoRA file (any layout above) → its path in ``model``, a `LatentDiffusion`}."""
    return {**_unet_names(model), **_text_names(model)}


def file_name(model, path: str, layout: str = "diffusers") -> str:
    """The name layer ``path`` of ``model`` gets in a ``layout`` file."""
    for name, target in module_names(model).items():
        if target == path and (name.startswith(("lora_unet_", "lora_te_")) == (layout == "kohya")):
            return name
    raise ValueError(f"{path} has no {layout} LoRA name")


def training_targets(model, text_encoder: bool = False, targets: str = "attention") -> list[str]:
    """The layers `ldmkit finetune --method lora` adapts, paths in ``model``: W_Q, W_K, W_V, W_out of every UNet
    attention layer; with ``targets`` "attention+conv" also the two 3×3 convolutions of every UNet ResBlock
    (LoCon); with ``text_encoder`` the q/k/v/out projections of a CLIP text encoder."""
    if targets not in TARGETS:
        raise UsageError(f"--lora-targets {targets!r}; allowed: {', '.join(TARGETS)}")
    paths = ["unet." + p for p in lora.attention_projections(model.unet)]
    if targets == "attention+conv":
        paths += ["unet." + p for p in lora.resblock_convolutions(model.unet)]
    if text_encoder:
        if model.config.text.kind not in TEXT_KINDS:
            raise UsageError(f"text-encoder LoRA needs a CLIP text encoder; this model's is {model.config.text.kind!r}")
        paths += [p for p in _text_names(model).values() if re.search(r"self_attn\.(q|k|v|out)_proj$", p)]
    return list(dict.fromkeys(paths))


# --------------------------------------------------------------------------------------------------
# reading

def lora_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a readable LoRA file ({} for a .pt/.bin/.ckpt file, which holds none)."""
    path = Path(path)
    if path.suffix.lower() in (".pt", ".bin", ".ckpt"):
        return {}
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise UsageError(f"LoRA file not found: {path}")
    if path.suffix.lower() in (".pt", ".bin", ".ckpt"):
        state = load_pickle(path, "LoRA file", UsageError)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UsageError(f"{path} is not a LoRA file: it does not hold a flat dict of tensors")
        return state, {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"{path} is not a readable safetensors LoRA file ({str(e).splitlines()[0]})") from None


def read_lora(path: str | Path) -> LoRAFile:
    """The adapters of a LoRA file in any layout of the module docstring. UsageError (one line) for a file that
    is not a LoRA, DoRA/LoHa/LoKr variants (and LyCORIS' Tucker ``lora_mid``), an up (B) with a kernel larger
    than 1×1, an A whose rank differs from its B's, or ranks that differ from what the metadata states (a rank
    mismatch)."""
    path = Path(path)
    tensors, metadata = _tensors(path)
    embeddings = bundled_embeddings(tensors, path)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(BUNDLE_PREFIX)}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, tensor in tensors.items():
        split = split_key(key)
        if split is None:
            other.append(key)
            continue
        parts.setdefault(split[0], {})[split[1]] = tensor
    if other:
        kind = "DoRA" if any("dora_scale" in k or "magnitude" in k for k in other) else "LoRA"
        raise UsageError(f"{path}: keys that are not {'plain LoRA' if kind == 'DoRA' else 'LoRA'} weights "
                         f"({first_keys(other)}); ldmkit reads LoRA A/B (down/up) pairs with optional alphas")
    if not parts:
        raise UsageError(f"{path} holds no LoRA weights")
    info = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    modules, broken = {}, []
    for name, p in parts.items():
        if "down" not in p or "up" not in p:
            broken.append(name)
            continue
        a, b = p["down"].float(), p["up"].float()
        if a.ndim not in (2, 4) or b.ndim not in (2, 4) or (b.ndim == 4 and b.shape[2:] != (1, 1)):
            raise UsageError(f"{path}: {name} has A (down) {tuple(a.shape)}, B (up) {tuple(b.shape)}; ldmkit reads "
                             "LoRA whose A is a matrix or a convolution kernel and whose B is a matrix or 1×1")
        a = a if a.ndim == 4 and a.shape[2:] != (1, 1) else a.reshape(a.shape[0], -1)
        b = b.reshape(b.shape[0], -1)
        if b.shape[1] != a.shape[0]:
            raise UsageError(f"{path}: rank mismatch in {name}: A (down) has rank {a.shape[0]}, "
                             f"B (up) rank {b.shape[1]}")
        prefix = _component(name)
        alpha = p["alpha"].item() if "alpha" in p else _stated_alpha(info, prefix, name, a.shape[0])
        modules[name] = (a, b, float(alpha))
    if broken:
        raise UsageError(f"{path}: LoRA layers without both A and B (down and up): {first_keys(broken)}")
    file = LoRAFile(path, modules, metadata, embeddings)
    for prefix in ("unet", "text_encoder"):  # each component against its own metadata (peft's config per part)
        stated = set() if info.get(f"{prefix}.rank_pattern") or f"{prefix}.r" not in info else {int(info[f"{prefix}.r"])}
        if "ldmkit.rank" in metadata:
            stated.add(int(metadata["ldmkit.rank"]))
        ranks = {a.shape[0] for name, (a, _, _) in modules.items() if _component(name) == prefix}
        if stated and ranks - stated:
            raise UsageError(f"{path}: rank mismatch: the metadata states rank {', '.join(map(str, sorted(stated)))} "
                             f"for the {prefix}, its tensors have rank {', '.join(map(str, sorted(ranks)))}")
    return file


def bundled_embeddings(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """{NAME: [k, width]} of the ``bundle_emb.NAME.…`` tensors (A1111's layout: one per name, ``string_to_param.*``
    or ``emb_params``). UsageError for an SDXL pair (``clip_l``/``clip_g``) or a name with several tensors."""
    found: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        if key.startswith(BUNDLE_PREFIX):
            name, _, rest = key[len(BUNDLE_PREFIX):].partition(".")
            found.setdefault(name, []).append((rest, tensor))
    embeddings = {}
    for name, entries in found.items():
        if any(rest in ("clip_l", "clip_g") for rest, _ in entries):
            raise UsageError(f"{path} bundles an SDXL embedding ({name}: clip_l/clip_g); ldmkit's models have one "
                             "text encoder")
        if len(entries) != 1 or entries[0][1].ndim not in (1, 2) or not entries[0][1].is_floating_point():
            raise UsageError(f"{path}: the bundled embedding {name!r} is not one [vectors, width] float tensor "
                             f"({', '.join(BUNDLE_PREFIX + name + '.' + rest for rest, _ in entries[:3])})")
        vectors = entries[0][1].float()
        embeddings[name] = vectors.reshape(-1, vectors.shape[-1])
    return embeddings


def _component(name: str) -> str:
    """Which model part a LoRA layer's name adapts: "text_encoder" or "unet"."""
    return "text_encoder" if name.startswith(("text_encoder.", "lora_te")) else "unet"


def _stated_alpha(info: dict, prefix: str, name: str, rank: int) -> float:
    """The alpha peft's config (diffusers' metadata) gives the layer ``name`` of ``prefix``: its
    ``alpha_pattern`` entry where one matches the end of the layer's name (as peft matches it), else the
    component's ``lora_alpha``, else the rank (α = r: scale 1)."""
    module = name.split(".", 1)[1] if name.startswith(prefix + ".") else name
    for pattern, alpha in (info.get(f"{prefix}.alpha_pattern") or {}).items():
        if re.fullmatch(rf"(?:.*\.)?(?:{pattern})", module):
            return float(alpha)
    return float(info.get(f"{prefix}.lora_alpha", rank))


def _a_shape(layer: nn.Module) -> tuple[int, ...]:
    """The shape of one row of A that fits ``layer``: (in,), or (in, k_h, k_w) for a convolution larger than 1×1."""
    shape = tuple(layer.weight.shape[1:])
    return shape[:1] if shape[1:] in ((), (1, 1)) else shape


def _shape_text(a_row: tuple[int, ...], out: int) -> str:
    kernel = f" ({a_row[1]}×{a_row[2]} conv)" if len(a_row) == 3 else ""
    return f"{a_row[0]}→{out}{kernel}"


def _fit(model, file: LoRAFile) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{path in model: (A, B, α)}, after checking that every layer of ``file`` is one of ``model``'s, of its shape."""
    names = module_names(model)
    fitted, unknown, wrong = {}, [], []
    for name, (a, b, alpha) in file.modules.items():
        target = names.get(name) or names.get("unet." + name)
        if target is None:
            unknown.append(name)
            continue
        layer = model.get_submodule(target)
        wanted = _a_shape(layer)
        if tuple(a.shape[1:]) != wanted or b.shape[0] != layer.weight.shape[0]:
            wrong.append(f"{name} {_shape_text(wanted, layer.weight.shape[0])} here, "
                         f"{_shape_text(tuple(a.shape[1:]), b.shape[0])} in the file")
            continue
        fitted[target] = (a, b, alpha)
    if unknown or wrong:
        what = f"{len(unknown)} of its {len(file.modules)} layers are not in this model ({first_keys(unknown)})" \
            if unknown else f"layer shapes differ ({first_keys(wrong)})"
        raise UsageError(f"{file.path} does not fit this model: {what}; is it a LoRA for another architecture?")
    return fitted


def _adapter_name(model, path: Path) -> str:
    base = re.sub(r"\W", "_", path.stem) or "lora"
    taken = set(lora.adapter_names(model))
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def load_lora(model, path: str | Path | LoRAFile, scale: float = 1.0, adapter: str | None = None,
              embeddings: bool = True) -> str:
    """Add the adapters of LoRA file ``path`` (any layout; or the file as `read_lora` read it) to ``model`` (a
    `LatentDiffusion`) at strength ``scale``; returns the adapter's name (``adapter``, or one made from the file
    name). With ``embeddings``, each embedding the file bundles becomes the word NAME
    (`ldmkit.text.inversion.add_token`, as A1111 reads them; the scale does not apply to a word). Everything is
    checked before the model changes: a file that does not fit leaves it as it was."""
    file = path if isinstance(path, LoRAFile) else read_lora(path)
    fitted = _fit(model, file)
    name = adapter or _adapter_name(model, file.path)
    if name in lora.adapter_names(model):
        raise UsageError(f"a LoRA adapter named {name!r} is loaded already")
    words = file.embeddings if embeddings else {}
    for word, vectors in words.items():
        inversion.check_new_token(model, word)
        if vectors.shape[-1] != inversion.token_width(model):
            raise UsageError(f"{file.path} bundles the embedding {word!r} of {vectors.shape[-1]}-wide vectors; this "
                             f"model's text encoder takes {inversion.token_width(model)}-wide ones")
    for target, (a, b, alpha) in fitted.items():
        lora.wrap(model, target).add_adapter(name, a.shape[0], alpha, (a, b), scale)
    for word, vectors in words.items():
        inversion.add_token(model, word, vectors).requires_grad_(False)
    if words:
        model.taught.add("embedding")  # words no file's list of known words names
    return name


# --------------------------------------------------------------------------------------------------
# writing

def lora_state(model, adapter: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{path: (A, B, α)} of ``adapter`` on ``model``'s layers, A and B in the files' shapes
    (`ldmkit.nn.lora.LoRALinear.adapter_weights`: 4-D, B 1×1, on a convolution)."""
    return {path: (*layer.adapter_weights(adapter), layer.alpha[adapter])
            for path, layer in lora.lora_layers(model).items() if adapter in layer.lora_A}


def save_lora(model, path: str | Path, adapter: str = "default", layout: str = "diffusers",
              metadata: dict[str, str] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write adapter ``adapter`` of ``model`` as a LoRA file in ``layout`` (atomically; see the module docstring)."""
    if layout not in LAYOUTS:
        raise UsageError(f"LoRA layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    state = lora_state(model, adapter)
    if not state:
        raise ValueError(f"the model has no LoRA adapter {adapter!r}")
    tensors, info = {}, {}
    ranks = {a.shape[0] for a, _, _ in state.values()}
    alphas = {alpha for _, _, alpha in state.values()}
    for layer_path, (a, b, alpha) in state.items():
        name = file_name(model, layer_path, layout)
        a, b = a.to(dtype).contiguous().cpu(), b.to(dtype).contiguous().cpu()
        if layout == "kohya":
            tensors |= {f"{name}.lora_down.weight": a, f"{name}.lora_up.weight": b,
                        f"{name}.alpha": torch.tensor(alpha, dtype=dtype)}
        else:
            tensors |= {f"{name}.lora_A.weight": a, f"{name}.lora_B.weight": b}
            part, _, module = name.partition(".")
            entry = info.setdefault(part, {"r": a.shape[0], "lora_alpha": alpha, "target_modules": []})
            entry["target_modules"].append(module)
            if a.shape[0] != entry["r"] or alpha != entry["lora_alpha"]:
                entry.setdefault("rank_pattern", {})[module] = a.shape[0]
                entry.setdefault("alpha_pattern", {})[module] = alpha
    meta = {"format": "pt", "ldmkit.layout": layout}
    if len(ranks) == 1 and len(alphas) == 1:
        meta |= {"ldmkit.rank": str(ranks.pop()), "ldmkit.alpha": f"{alphas.pop():g}"}
    if info:
        meta[METADATA_KEY] = json.dumps({f"{part}.{k}": v for part, entry in info.items() for k, v in entry.items()},
                                        sort_keys=True)
    meta |= metadata or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """``FILE[:SCALE]`` → (file, scale); a trailing ``:number`` is the scale (default 1). A scale that is not a
    finite number ("nan", "inf"), or not a number after an existing FILE ("style.safetensors:abc"), is a
    `UsageError`."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            if Path(head).is_file() and not Path(spec).exists():
                raise UsageError(f"LoRA {spec!r}: the scale after ':' must be a number (1: as trained), not "
                                 f"{tail!r}") from None
            return spec, 1.0
        if not math.isfinite(scale):
            raise UsageError(f"LoRA {spec!r}: the scale after ':' must be a finite number (1: as trained), not {tail!r}")
        return head, scale
    return spec, 1.0
