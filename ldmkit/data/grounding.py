"""Grounding targets: which words of a caption name which region of its image.

A dataset item may carry ``"grounding"``: a `Grounding` with one mask per object (float[n, H, W] in
[0, 1] at image size: the share of each pixel the object covers) and, per object, the character spans
of the caption's words that name it (its colour, size and shape words, or a category name). Grounded
training (`ldmkit.train.grounding`) maps the spans to the tokens they become and pulls those tokens'
cross-attention into the mask. Items without targets carry None.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Span = tuple[int, int]


@dataclass(frozen=True)
class Grounding:
    """``masks`` float[n, H, W]; ``spans[g]`` the (start, end) character spans naming object g."""

    masks: torch.Tensor
    spans: tuple[tuple[Span, ...], ...]

    def __post_init__(self):
        if self.masks.dim() != 3 or self.masks.shape[0] != len(self.spans):
            raise ValueError(f"grounding: {len(self.spans)} objects' spans but masks of shape {tuple(self.masks.shape)}")
        for spans in self.spans:
            for start, end in spans:
                if not 0 <= start < end:
                    raise ValueError(f"grounding: span ({start}, {end}) is empty or negative")
