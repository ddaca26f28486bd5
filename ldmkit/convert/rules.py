"""Key rules: how tensors of ldmkit's state dict correspond to those of another layout.

A `Rule` ties one or more ldmkit keys to one or more keys of the other layout (Stable Diffusion's
original single file, or a diffusers folder) and says how the tensors change between them. Every
transformation is exactly invertible (a rename, a reshape of a 1×1 convolution, a split of a stacked
q/k/v matrix), so converting there and back returns bit-identical tensors in their original dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ldmkit.convert.checkpoint import read_as
from ldmkit.storage import CheckpointError, first_keys

Op = Literal["rename", "conv1x1", "stack"]


@dataclass(frozen=True)
class Rule:
    """``ldmkit`` keys ↔ ``other`` keys.

    - ``rename``: one key each, the same tensor;
    - ``conv1x1``: ldmkit holds a Linear weight [out, in], the other layout a 1×1 convolution
      [out, in, 1, 1] (the SD autoencoder's attention);
    - ``stack``: ldmkit holds q, k, v separately, the other layout one matrix stacked along dim 0
      (OpenCLIP's ``in_proj_weight`` / ``in_proj_bias``).
    """

    ldmkit: tuple[str, ...]
    other: tuple[str, ...]
    op: Op = "rename"

    def to_other(self, tensors: list[Tensor]) -> list[Tensor]:
        if self.op == "rename":
            return tensors
        if self.op == "conv1x1":
            return [tensors[0].reshape(*tensors[0].shape, 1, 1)]
        return [torch.cat(tensors, dim=0)]

    def to_ldmkit(self, tensors: list[Tensor]) -> list[Tensor]:
        if self.op == "rename":
            return tensors
        if self.op == "conv1x1":
            return [tensors[0].reshape(tensors[0].shape[:2])]
        return [t.clone() for t in tensors[0].chunk(len(self.ldmkit), dim=0)]

    def other_shapes(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The shapes the other layout has for ldmkit tensors of ``shapes``."""
        if self.op == "rename":
            return shapes
        if self.op == "conv1x1":
            return [(*shapes[0], 1, 1)]
        return [(sum(s[0] for s in shapes), *shapes[0][1:])]


def apply_to_ldmkit(
    rules: list[Rule],
    source: Mapping[str, Tensor],
    expected: dict[str, tuple[int, ...]],
    passthrough: Callable[[str], bool],
    what: str,
    cast: torch.dtype | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Map ``source`` (the other layout) to ldmkit keys through ``rules``.

    Returns (weights, rest): the ldmkit state dict and the source tensors no rule used. ``expected``
    gives the ldmkit shape of every key; ``passthrough(key)`` says whether an unused source key is a
    known extra (schedule buffers, the other EMA copy, …) rather than a mistake. Missing keys, unexpected
    keys and wrong shapes raise one `CheckpointError` naming the first offending keys of ``what``.

    Renames and 1×1 reshapes are views of the source tensors (of the file's memory mapping, when
    ``source`` is a `LazyTensors` of a ``.safetensors`` file), not copies. ``cast``: floating-point
    weights of another dtype are read as ``cast``, one tensor at a time (`LazyTensors.read`); None keeps
    the source's dtypes. ``rest`` is never cast.
    """
    weights: dict[str, Tensor] = {}
    missing: list[str] = []
    wrong: list[str] = []
    used: set[str] = set()
    for rule in rules:
        absent = [k for k in rule.other if k not in source]
        if absent:
            missing += absent
            continue
        tensors = [source[k] for k in rule.other]
        want = rule.other_shapes([expected[k] for k in rule.ldmkit])
        used.update(rule.other)  # a misshapen key is reported as such, not also as unexpected
        bad = [f"{k} {tuple(t.shape)} (needs {tuple(w)})" for k, t, w in zip(rule.other, tensors, want) if tuple(t.shape) != tuple(w)]
        if bad:
            wrong += bad
            continue
        if cast is not None:
            tensors = [read_as(source, k, cast) if t.is_floating_point() and t.dtype != cast else t
                       for k, t in zip(rule.other, tensors)]
        weights.update(zip(rule.ldmkit, rule.to_ldmkit(tensors)))
    rest = {k: v for k, v in source.items() if k not in used}
    unexpected = [k for k in rest if not passthrough(k)]
    problems = []
    if missing:
        problems.append(f"missing keys: {first_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {first_keys(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {first_keys(wrong)}")
    if problems:
        raise CheckpointError(f"{what} does not fit the architecture: " + "; ".join(problems))
    return weights, rest


def apply_to_other(rules: list[Rule], weights: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """Map ldmkit ``weights`` to the other layout; every ldmkit key must be used by exactly the rules."""
    out: dict[str, Tensor] = {}
    missing = [k for r in rules for k in r.ldmkit if k not in weights]
    covered = {k for r in rules for k in r.ldmkit}
    unexpected = [k for k in weights if k not in covered]
    if missing or unexpected:
        parts = ([f"missing keys: {first_keys(missing)}"] if missing else []) + (
            [f"keys the other layout has no place for: {first_keys(unexpected)}"] if unexpected else []
        )
        raise CheckpointError(f"{what}: " + "; ".join(parts))
    for rule in rules:
        out.update(zip(rule.other, rule.to_other([weights[k] for k in rule.ldmkit])))
    return out
