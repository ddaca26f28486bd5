"""A model on its way between formats, and reading weight files without unpickling code."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ldmkit.config import ConfigError, ModelConfig
from ldmkit.convert.infer_diffusers import FOLLOWED, grid_from_scheduler
from ldmkit.storage import PICKLES, CheckpointError, load_pickle  # noqa: F401  (PICKLES re-exported)

if TYPE_CHECKING:
    from ldmkit.text.known_words import KnownWords

SAFETENSORS = (".safetensors",)


@dataclass
class Checkpoint:
    """A latent diffusion model in ldmkit's layout, read from any format.

    ``weights`` holds ldmkit keys (``unet.*``, ``autoencoder.*`` including ``autoencoder.scale_factor``,
    ``text_encoder.*``) in the dtype of the source file unless the reader was asked to cast them; tensors
    read from ``.safetensors`` files are views of the files' memory mappings. ``extras`` holds the source's tensors that
    ldmkit does not use (schedule buffers, the EMA or non-EMA copy not chosen, SD 2's unused last text
    block, …) under their source names, and ``source`` says how they fit back: ``layout`` ("original",
    "diffusers"), ``unet_weights`` ("model" or "model_ema"), ``scale_factor_key`` ("present"/"absent").
    Writing back to the source layout restores the file's key set and tensors bit for bit.

    ``tokenizer`` is None for a class-conditional model (``condition.kind: class``), whose weights hold
    ``class_embedding.*`` in place of ``text_encoder.*``. ``known_words``: the `ldmkit.text.known_words.KnownWords`
    of the training captions (a model folder's ``known_words.json``, an ldmkit-written single file's metadata), None
    where the source records none. ``scheduler_grid``: the grid its samples default to, ``{"spacing", "steps_offset"}``
    (`ldmkit.convert.infer.grid_from_scheduler`: a diffusers folder's scheduler config, a model folder's
    ``scheduler.json``, an ldmkit-written single file's metadata); {} where the source names none, so that each
    sampler takes its own. Every writer carries it (`scheduler_fields`).
    """

    config: ModelConfig
    weights: dict[str, Tensor]
    tokenizer: object
    extras: dict[str, Tensor] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    description: str = ""
    scheduler_grid: dict = field(default_factory=dict)
    known_words: KnownWords | None = None


class _MappedFile:
    """One ``.safetensors`` file, memory-mapped: `view` is a tensor over the file's pages (a private,
    copy-on-write mapping: nothing is copied or read until the tensor is used, and writing into it never
    reaches the file); `read` with another dtype reads the bytes with ``pread`` into a buffer of their
    own, casts them and frees the buffer, so that the file's pages do not stay resident beside the cast
    copy."""

    def __init__(self, path: Path):
        self.path = path
        self.mapped = safe_open(str(path), "pt")
        self._pread = None

    def keys(self) -> list[str]:
        return list(self.mapped.keys())

    def view(self, key: str) -> Tensor:
        return self.mapped.get_tensor(key)

    def read(self, key: str, dtype: torch.dtype) -> Tensor:
        tensor = self.view(key)
        if tensor.dtype == dtype:
            return tensor
        if self._pread is None:
            try:
                self._pread = safe_open(str(self.path), "pt", backend="pread")
            except TypeError:  # safetensors before the pread backend: cast from the mapping
                self._pread = self.mapped
        return self._pread.get_tensor(key).to(dtype)


class _LoadedTensors:
    """Tensors ``torch.load`` returned (memory-mapped where the file allows it)."""

    def __init__(self, tensors: dict[str, Tensor]):
        self.tensors = tensors

    def keys(self) -> list[str]:
        return list(self.tensors)

    def view(self, key: str) -> Tensor:
        return self.tensors[key]

    def read(self, key: str, dtype: torch.dtype) -> Tensor:
        tensor = self.tensors[key]
        return tensor if tensor.dtype == dtype else tensor.to(dtype)


class LazyTensors(Mapping[str, Tensor]):
    """The named tensors of one or more weight files, each produced when it is asked for.

    ``lazy[name]`` is the tensor as stored: for a ``.safetensors`` file a view of its memory mapping
    (no bytes copied or read until used), for a ``.ckpt`` what ``torch.load`` returned. `read` gives
    it in a given dtype, one tensor at a time (see `_MappedFile.read`). `renamed` and `union` rename and
    combine sources without reading anything.
    """

    def __init__(self, index: dict[str, tuple[_MappedFile | _LoadedTensors, str]]):
        self._index = index

    @classmethod
    def of(cls, source: _MappedFile | _LoadedTensors) -> "LazyTensors":
        return cls({key: (source, key) for key in source.keys()})

    def __getitem__(self, name: str) -> Tensor:
        source, key = self._index[name]
        return source.view(key)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def read(self, name: str, dtype: torch.dtype) -> Tensor:
        """The tensor ``name`` as ``dtype``: the stored tensor itself when it has that dtype, else a cast
        copy whose source bytes are not kept."""
        source, key = self._index[name]
        return source.read(key, dtype)

    def renamed(self, rename: Callable[[str], str]) -> "LazyTensors":
        return LazyTensors({rename(name): entry for name, entry in self._index.items()})

    @staticmethod
    def union(parts: Iterable["LazyTensors"]) -> "LazyTensors":
        """All names of ``parts``; a later part's tensor wins a name two share."""
        index: dict = {}
        for part in parts:
            index.update(part._index)
        return LazyTensors(index)


def read_as(source: Mapping[str, Tensor], name: str, dtype: torch.dtype) -> Tensor:
    """``source[name]`` cast to ``dtype``, through `LazyTensors.read` when ``source`` is one."""
    if isinstance(source, LazyTensors):
        return source.read(name, dtype)
    tensor = source[name]
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def read_tensors(path: Path) -> tuple[LazyTensors, dict[str, str], dict]:
    """(tensors, safetensors metadata, other top-level entries) of one weights file.

    ``.safetensors`` is memory-mapped (``safe_open``): the tensors are views of the file, read only when
    used (see `LazyTensors`). ``.ckpt``/``.pt``/``.pth``/``.bin`` go through
    ``torch.load(weights_only=True)`` (`load_pickle`: a file that holds code, or a damaged one, is a one-line
    `CheckpointError`), memory-mapped (``mmap=True``) unless the file predates torch's zip format; a
    Lightning-style ``{"state_dict": …}`` wrapper is unwrapped and its other entries (``global_step``, …) returned.
    """
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS:
        try:
            mapped = _MappedFile(path)
            metadata = dict(mapped.mapped.metadata() or {})
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
        return LazyTensors.of(mapped), metadata, {}
    if suffix not in PICKLES:
        raise CheckpointError(f"{path}: unknown weights format {suffix!r}; expected .safetensors or .ckpt")
    data = load_pickle(path, "checkpoint", mmap=True)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict")
    top: dict = {}
    if isinstance(data.get("state_dict"), dict):
        top = {k: v for k, v in data.items() if k != "state_dict"}
        data = data["state_dict"]
    tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    return LazyTensors.of(_LoadedTensors(tensors)), {}, top


def scheduler_fields(grid: dict) -> dict:
    """A sampling grid (`Checkpoint.scheduler_grid`) in a diffusers scheduler config's names: ``steps_offset``, and
    ``timestep_spacing``, ``_class_name`` and ``use_karras_sigmas`` where the grid names them, and the class's settings
    as ldmkit samples it (`FOLLOWED`: PNDM's ``skip_prk_steps``); {} for {}. `grid_from_fields` reads them
    back as the same grid."""
    if not grid:
        return {}
    fields = {"_class_name": grid["scheduler"]} if grid.get("scheduler") else {}
    fields["steps_offset"] = grid["steps_offset"]
    if grid["spacing"] is not None:
        fields["timestep_spacing"] = grid["spacing"]
    if grid.get("karras"):
        fields["use_karras_sigmas"] = True
    fields.update(FOLLOWED.get(grid.get("scheduler"), {}))  # how ldmkit samples the class, stated for diffusers too
    return fields


def grid_from_fields(text: str, where: str) -> dict:
    """The sampling grid of `scheduler_fields` written as JSON ``text`` (a model folder's ``scheduler.json``, a
    single file's metadata); `CheckpointError` naming ``where`` for text that is not such a grid."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where} is not valid JSON ({e})") from None
    if not isinstance(fields, dict) or not fields:
        raise CheckpointError(f"{where}: expected {{\"timestep_spacing\": …, \"steps_offset\": …}}, "
                              f"got {text[:80]!r}")
    try:
        return grid_from_scheduler(fields)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None


def no_training_weights(where: str, why: str) -> CheckpointError:
    """The error for ``ema=False`` (``--no-ema``, take the training weights rather than the EMA copy) on a model
    that holds no training weights beside the weights it has; ``why`` says why it has none."""
    return CheckpointError(f"--no-ema: {where} has no training weights to take in place of an EMA copy ({why}); "
                           "leave --no-ema out")


def with_prediction(config: ModelConfig, prediction: str) -> ModelConfig:
    """``config`` with its diffusion prediction ("epsilon" or "v") replaced."""
    if prediction not in ("epsilon", "v"):
        raise ConfigError(f"prediction = {prediction!r}; allowed: epsilon, v")
    return replace(config, diffusion=replace(config.diffusion, prediction=prediction))
