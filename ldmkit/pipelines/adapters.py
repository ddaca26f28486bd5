"""LoRA adapters and textual-inversion embeddings on a pipeline's model, in diffusers' method names:

    pipe = ldmkit.load_pipeline("sd.safetensors")
    pipe.load_lora_weights("style.safetensors", scale=0.8)      # diffusers/peft or kohya layout
    pipe.load_textual_inversion("hexagon.safetensors", token="<hexagon>")
    pipe.set_adapters(["style"], [0.5]);  pipe.fuse_lora();  pipe.unload_lora_weights()

The UNet (and a CLIP text encoder) then compute W x + Σ s (α/r) B A x in each adapted layer
(`ldmkit.nn.lora`); the files are read as `ldmkit.convert.lora` and `ldmkit.text.inversion` describe.
"""

from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path

from ldmkit.convert.lora import WORDS_KEY, load_lora, lora_metadata, parse_lora_spec
from ldmkit.errors import UsageError
from ldmkit.nn import lora
from ldmkit.nn.prepack import prepack
from ldmkit.text.inversion import load_embedding
from ldmkit.text.known_words import KnownWords


class AdapterMixin:
    """The methods above, for a pipeline holding ``self.model`` (a `LatentDiffusion`)."""

    def load_lora_weights(self, path: str | Path, scale: float = 1.0, adapter_name: str | None = None) -> str:
        """Add the LoRA file ``path`` at strength ``scale``; returns the adapter's name (default: from the file
        name). UsageError, with the model unchanged, for a file that does not fit the model or a ``scale`` that is
        not a finite real number (`adapter_weight`)."""
        scale = adapter_weight(scale, "scale")
        name = load_lora(self.model, path, scale, adapter_name)
        # the words it was trained on, where its file lists them (`ldmkit finetune` does): known while it is loaded;
        # a file that does not has prompts read as written meanwhile (`LatentDiffusion.in_known_words`)
        listed = lora_metadata(path).get(WORDS_KEY)
        try:
            self.model.adapter_words[name] = None if listed is None else KnownWords.from_json(listed, str(path))
        except ValueError:
            self.model.adapter_words[name] = None
        return name

    def set_adapters(self, adapter_names: str | list[str], adapter_weights: float | list[float] | None = None) -> None:
        """Set the strength s of each named adapter (1 when ``adapter_weights`` is None; one real number for all, or
        one per name); the others keep theirs. Names and weights are checked first: a `UsageError` changes nothing."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        if adapter_weights is None:
            weights = [1.0] * len(names)
        elif isinstance(adapter_weights, (str, bytes)) or not hasattr(adapter_weights, "__iter__"):
            weights = [adapter_weight(adapter_weights)] * len(names)
        else:
            weights = [adapter_weight(w) for w in adapter_weights]
            if len(weights) != len(names):
                raise UsageError(f"{len(weights)} adapter_weights for {len(names)} adapter_names; give one weight per "
                                 "name, or one number for all")
        known = lora.adapter_names(self.model)
        for name in names:
            if name not in known:
                raise UsageError(f"no LoRA adapter named {name!r}; loaded: {', '.join(known) or 'none'}")
        for name, weight in zip(names, weights):
            lora.set_scale(self.model, name, weight)

    def get_active_adapters(self) -> list[str]:
        return lora.adapter_names(self.model)

    def fuse_lora(self) -> int:
        """Fold every adapter, at its strength, into the weights (W ← W + Σ s (α/r) B A): sampling then costs what
        it did without adapters. Returns the layers changed."""
        changed = lora.merge(self.model)
        words = self.model.adapter_words
        if changed and None in words.values():
            self.model.taught.add("fused")
        elif changed and self.model.known_words is not None:
            for listed in words.values():
                self.model.known_words = self.model.known_words.union(listed)
        words.clear()
        self._repack()
        return changed

    def unload_lora_weights(self) -> None:
        """Drop every adapter that is not fused; the weights are as before they were loaded."""
        lora.remove(self.model)
        self.model.adapter_words.clear()
        self._repack()

    def _repack(self) -> None:
        """Unwrapped layers are plain convolutions again: pack them where the pipeline packs (`ldmkit.nn.prepack`)."""
        if getattr(self, "packed", False):
            prepack(self.model)

    def load_textual_inversion(self, path: str | Path, token: str | None = None) -> str:
        """Add the embedding file ``path`` (diffusers' ``learned_embeds``, A1111's ``.safetensors``/``.pt``) as the
        word ``token`` (default: the file's own token, else its name); returns the token to write in prompts."""
        token = load_embedding(self.model, path, token)
        self.model.taught.add("embedding")
        return token


def adapter_weight(weight, what: str = "adapter_weights") -> float:
    """``weight`` as a float: a finite real number (a NumPy scalar too, as diffusers takes it; negative turns the
    adapter's change around); a `UsageError` naming ``what`` for a string, a bool, NaN or ±inf."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise UsageError(f"{what} = {weight!r}; an adapter's strength must be a finite real number (1: as trained, "
                         "0: off)")
    return float(weight)


def apply_adapters(pipe, loras: list[str] | None = None, embeddings: list[str] | None = None) -> None:
    """Each ``--lora FILE[:SCALE]`` and ``--embedding FILE`` on ``pipe``, as the CLI and the server take them. An
    embedding whose token is not its file's name is said in a one-line warning (`embedding_note`), which the CLI
    prints as ``ldmkit CMD: warning: …``."""
    for spec in loras or []:
        path, scale = parse_lora_spec(spec)
        pipe.load_lora_weights(path, scale)
    for path in embeddings or []:
        token = pipe.load_textual_inversion(path)
        if token != Path(path).stem:
            warnings.warn(embedding_note(path, token), stacklevel=2)


def embedding_note(path: str | Path, token: str) -> str:
    """The line that names the token an embedding file was loaded as, when that is not the file's name: the token
    the file itself names (diffusers' key, A1111's ``name``), which ldmkit and diffusers write in prompts, while
    A1111 triggers an embedding by its file name."""
    path = Path(path)
    return (f"embedding {path.name}: token \"{token}\" (the name inside the file, as diffusers reads it; A1111 would "
            f"use the file name \"{path.stem}\")")
