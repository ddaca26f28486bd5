"""Prompt-to-Prompt (Hertz et al. 2022): edit an image by editing its prompt, through the attention maps.

The source prompt y and the edited prompt y* are sampled side by side from the same z_T. In every
attention layer the weights A = softmax(Q Kᵀ / √d) of the edited branch are replaced by the source's
(`Attention.probs_hook`), so the edit keeps the source's layout and only what the words change changes.
With the source's cross-attention A ∈ [0, 1]^{N×L} (N query pixels, L tokens) and the edit's own A*,
the edited branch's cross-attention at sampler step i < τ_c · n is

    A' = ((α ⊙ (A M) + (1 − α) ⊙ A*) ⊙ w                    (broadcast over the pixels)

where M ∈ R^{L×L} maps source tokens to edited tokens (`TokenAlignment`), α ∈ {0, 1}^L is 1 on the
edited tokens that M takes from the source and 0 on tokens the edit adds, and w ∈ R^L scales tokens'
attention (1 unless reweighted). At steps i ≥ τ_c · n the edit attends on its own (A' = A*). Self-attention
is injected wholesale, A'_self = A_self, for i < τ_s · n in layers of at most ``self_replace_max_pixels``
query pixels (Prompt-to-Prompt leaves the finest layers alone). τ_c and τ_s are ``cross_replace_steps`` and
``self_replace_steps``. The three edits differ only in M, α and w:

- **replace** (word swap, "a red circle" → "a blue circle"): the prompts have the same words but the
  swapped ones; word k of the source maps to word k of the edit, its tokens S onto the edit's T by
  M[s, t] = 1/|T| (identity when both are one token), so each pixel's weights still sum to 1; α = 1;
- **refine** (words added, "a circle" → "a small red circle on the left"): the words are matched by
  `difflib.SequenceMatcher`; matched words map as above with α = 1, the edit's other words keep their
  own attention (α = 0);
- **reweight** ("a red(2) circle"): the same words; M = I, α = 1 and w = the given scale on the
  weighted words' tokens. A weight may also be given on top of replace and refine.

Tokens past the prompt (padding) map by their offset from the prompt's end. With classifier-free guidance
only the conditional half of each batch is controlled: the batch is [unconditional; conditional], each
half [source rows; edited rows].

**Local blend** confines the change to where the blend words attend: with m̄_w the cross-attention maps of
the blend words (summed over their tokens, averaged over the heads, the layers and the steps so far,
resized to the latent grid h × w), each branch's mask is

    B = 1[maxpool₃(m̄) / max(m̄) > threshold],   B_pair = B_source ∪ B_edit,

and after every step z*_t ← z_t + B_pair ⊙ (z*_t − z_t): outside the mask the edited latent is the source's.
"""

from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldmkit.diffusion.binding import words_of
from ldmkit.errors import UsageError
from ldmkit.nn.unet import level_hw
from ldmkit.nn.transformer import BasicTransformerBlock

MODES = ("replace", "refine", "reweight")
_WEIGHT = re.compile(r"\((?:[x×*])?\s*([0-9]*\.?[0-9]+)\s*\)")


class PromptEditError(UsageError):
    """Prompts, weights or blend words that do not fit the edit asked for (a `UsageError`, so a ValueError:
    the CLI prints it as one line)."""


# --------------------------------------------------------------------------------------------------
# Prompts: weights and words


def parse_weights(prompt: str) -> tuple[str, list[tuple[str, int, float]]]:
    """The prompt without its weights, and each weighted word as (word, occurrence, weight).

    A weight follows a word in parentheses, optionally with ×, x or *: "a red(2) circle", "a red(x0.5)
    circle". ``occurrence`` counts earlier words spelt the same (0: the first), so "a red square and a
    red(2) circle" weights the second "red".
    """
    words, weighted = [], []
    for raw in prompt.split():
        match = _WEIGHT.search(raw)
        if match is None:
            if "(" in raw or ")" in raw:
                raise PromptEditError(f"cannot read the weight in {raw!r}: write it as word(2) or word(x2)")
            words.append(raw)
            continue
        word = raw[: match.start()]
        if not word or match.end() != len(raw):
            raise PromptEditError(f"cannot read the weight in {raw!r}: write it right after the word, as red(2)")
        weight = float(match.group(1))
        key = _normal(word)
        weighted.append((key, sum(_normal(w) == key for w in words), weight))
        words.append(word)
    return " ".join(words), weighted


def _normal(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


@dataclass(frozen=True)
class PromptWords:
    """A prompt as the text encoder sees it: L token strings, the first ``real`` the prompt's (special
    tokens included), and its whole words (`words_of`) with their token indices."""

    tokens: list[str]
    real: int
    words: list[tuple[str, list[int]]]

    @classmethod
    def of(cls, tokenizer, prompt: str) -> "PromptWords":
        tokens, real = tokenizer.tokens(prompt)
        return cls(tokens, real, words_of(tokens[:real]))

    @property
    def texts(self) -> list[str]:
        return [_normal(w) or w for w, _ in self.words]

    def find(self, word: str, occurrence: int = 0) -> list[int] | None:
        """The token indices of the ``occurrence``-th word spelt ``word`` (case and punctuation aside)."""
        seen = 0
        for text, indices in zip(self.texts, (i for _, i in self.words)):
            if text == _normal(word):
                if seen == occurrence:
                    return indices
                seen += 1
        return None


# --------------------------------------------------------------------------------------------------
# Token alignment


@dataclass(frozen=True)
class TokenAlignment:
    """M float32[L, L] (source token → edited token), α float32[L] and w float32[L] for one prompt pair
    (see the module docstring)."""

    mapper: Tensor
    alphas: Tensor
    weights: Tensor


def _map_word(mapper: Tensor, alphas: Tensor, source: list[int], target: list[int]) -> None:
    if len(source) == len(target):
        mapper[source, target] = 1.0
    else:
        for t in target:
            mapper[source, t] = 1.0 / len(target)
    alphas[target] = 1.0


def _map_padding(mapper: Tensor, alphas: Tensor, source: PromptWords, target: PromptWords) -> None:
    length = len(target.tokens)
    for t in range(target.real, length):
        mapper[min(source.real + t - target.real, len(source.tokens) - 1), t] = 1.0
        alphas[t] = 1.0


def align(tokenizer, source_prompt: str, target_prompt: str, mode: str) -> TokenAlignment:
    """M, α and w for ``mode`` (replace, refine or reweight); weights are read from the target prompt
    (`parse_weights`). A `PromptEditError` says why prompts that cannot be aligned for the mode cannot."""
    if mode not in MODES:
        raise PromptEditError(f"unknown edit mode {mode!r}; allowed: {', '.join(MODES)}")
    if parse_weights(source_prompt)[1]:
        raise PromptEditError("weights such as red(2) go in the target prompt, not the source")
    plain_target, weighted = parse_weights(target_prompt)
    check_within_limit(tokenizer, source_prompt, plain_target, weighted)
    source, target = PromptWords.of(tokenizer, source_prompt), PromptWords.of(tokenizer, plain_target)
    if len(source.tokens) != len(target.tokens):
        raise PromptEditError("the two prompts tokenize to different lengths")
    length = len(target.tokens)
    mapper, alphas, weights = torch.zeros(length, length), torch.zeros(length), torch.ones(length)
    if mode in ("replace", "reweight"):
        if len(source.words) != len(target.words):
            fix = ('use mode="refine" (--mode refine) to add words' if mode == "replace"
                   else "reweight keeps the source's words")
            raise PromptEditError(
                f"{mode} needs the same number of words in both prompts (the source has {len(source.words)}, "
                f"the target {len(target.words)}, counting the tokenizer's special tokens); {fix}"
            )
        if mode == "reweight" and source.texts != target.texts:
            changed = next(b for a, b in zip(source.texts, target.texts) if a != b)
            raise PromptEditError(f"reweight keeps the source prompt's words, but the target changes one ({changed!r}); "
                                  'use mode="replace" (--mode replace) to swap words')
        for (_, s), (_, t) in zip(source.words, target.words):
            _map_word(mapper, alphas, s, t)
    else:
        matcher = difflib.SequenceMatcher(None, source.texts, target.texts, autojunk=False)
        kept = 0
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                _map_word(mapper, alphas, source.words[block.a + k][1], target.words[block.b + k][1])
                kept += not _special(source.words[block.a + k][0])
        if kept == 0:
            raise PromptEditError(f"refine keeps the source's words and adds others, but {target_prompt!r} "
                                  f"shares no word with {source_prompt!r}")
    _map_padding(mapper, alphas, source, target)
    if mode == "reweight" and not weighted:
        raise PromptEditError("reweight needs a weight in the target prompt, such as 'a red(2) circle'")
    for word, occurrence, weight in weighted:
        indices = target.find(word, occurrence)
        if indices is None:
            raise PromptEditError(f"the weighted word {word!r} is not a word of the tokenized target prompt")
        weights[indices] = weight
    return TokenAlignment(mapper, alphas, weights)


def seen_words(tokenizer, prompt: str) -> int:
    """How many of ``prompt``'s space-separated words the text encoder sees (at least one token of each): the
    words after them lie past the tokenizer's length limit (``max_length``) and are cut off."""
    spans = [m.span() for m in re.finditer(r"\S+", prompt)]
    seen = len(spans)
    if tokenizer.tokens(prompt)[1] < tokenizer.max_length:  # room to spare: nothing was cut
        return seen
    while seen and not tokenizer.token_indices(prompt, [spans[seen - 1]]):
        seen -= 1
    return seen


def _past_limit(tokenizer, word: str, what: str) -> PromptEditError:
    """The refusal of a ``what`` word (changed, weighted, blend) that the tokenizer cuts off."""
    return PromptEditError(f"the {what} word {word!r} lies past the text encoder's limit ({tokenizer.limit()}), "
                           "where the prompt is cut off, so the edit could not act on it; shorten the prompt so that "
                           "the word comes within the limit")


def check_within_limit(tokenizer, source_prompt: str, plain_target: str,
                       weighted: Sequence[tuple[str, int, float]] = ()) -> None:
    """A `PromptEditError` naming the first changed word (swapped, added or removed: `difflib` on the prompts'
    space-separated words) or ``weighted`` word (`parse_weights`; ``plain_target`` is the target without its
    weights) that lies past the tokenizer's length limit (`seen_words`): the text encoder never sees it, so the
    edit would silently give back the source."""
    source_words, target_words = source_prompt.split(), plain_target.split()
    source_seen, target_seen = seen_words(tokenizer, source_prompt), seen_words(tokenizer, plain_target)
    matcher = difflib.SequenceMatcher(None, [_normal(w) or w for w in source_words],
                                      [_normal(w) or w for w in target_words], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        cut = source_words[max(i1, source_seen):i2] + target_words[max(j1, target_seen):j2]
        if tag != "equal" and cut:
            raise _past_limit(tokenizer, cut[0], "changed")
    for word, occurrence, _ in weighted:
        index = [k for k, w in enumerate(target_words) if _normal(w) == word][occurrence]
        if index >= target_seen:
            raise _past_limit(tokenizer, target_words[index], "weighted")


def _special(word: str) -> bool:
    return (word[:1], word[-1:]) in (("[", "]"), ("<", ">"))


def blend_selection(tokenizer, prompt: str, words: Sequence[str]) -> tuple[Tensor, list[str]]:
    """float32[L]: 1 on the tokens of each of ``words`` found in ``prompt`` (every occurrence), and the
    words found."""
    prompt_words = PromptWords.of(tokenizer, parse_weights(prompt)[0])
    selection = torch.zeros(len(prompt_words.tokens))
    found = []
    for word in words:
        hits = [i for text, (_, i) in zip(prompt_words.texts, prompt_words.words) if text == _normal(word)]
        for indices in hits:
            selection[indices] = 1.0
        if hits:
            found.append(word)
    return selection, found


def blend_selections(tokenizer, source_prompt: str, target_prompt: str, words: Sequence[str]) -> tuple[Tensor, Tensor]:
    """The blend words' token selections in the source and in the target prompt; a `PromptEditError`
    names a word in neither."""
    if not words:
        raise PromptEditError("local blend needs at least one word")
    source, in_source = blend_selection(tokenizer, source_prompt, words)
    target, in_target = blend_selection(tokenizer, target_prompt, words)
    missing = [w for w in words if w not in in_source and w not in in_target]
    if missing:
        prompts = f"{source_prompt} {parse_weights(target_prompt)[0]}".split()
        if any(_normal(w) == _normal(missing[0]) for w in prompts):  # a word of the text, cut off by the tokenizer
            raise _past_limit(tokenizer, missing[0], "blend")
        raise PromptEditError(f"blend word {missing[0]!r} is not a word of the source or the target prompt")
    return source, target


def check_blend_threshold(threshold: float) -> None:
    """A `PromptEditError` unless local blend's threshold T is in [0, 1): the mask is where the words' map,
    divided by its maximum, exceeds T, so at T ≥ 1 it is empty and the edit would be the source."""
    if not 0.0 <= threshold < 1.0:
        raise PromptEditError(f"blend_threshold = {threshold}; must be in [0, 1) (the mask is where the blend words' map "
                              "exceeds that fraction of its maximum: from 1 on it is empty, and the edit the source)")


# --------------------------------------------------------------------------------------------------
# The controller


class AttentionController:
    """Edits the attention weights of the edited rows of a batch while sampling (see the module docstring).

    ``alignments``: one `TokenAlignment` per pair; the model batch holds the n pairs as [n source rows;
    n edited rows] (twice, [unconditional; conditional], under guidance). ``num_steps``: the sampler's
    steps; `set_step` goes to the step about to run. ``blend``: (source selection, target
    selection) float32[n, L] each, for local blend on a latent grid ``latent_hw``.
    """

    def __init__(self, alignments: Sequence[TokenAlignment], num_steps: int, cross_replace_steps: float = 0.8,
                 self_replace_steps: float = 0.4, self_replace_max_pixels: int = 32 * 32,
                 blend: tuple[Tensor, Tensor] | None = None, blend_threshold: float = 0.3,
                 latent_hw: tuple[int, int] | None = None):
        for name, value in (("cross_replace_steps", cross_replace_steps), ("self_replace_steps", self_replace_steps)):
            if not 0.0 <= value <= 1.0:
                raise PromptEditError(f"{name} = {value}; must be in [0, 1]")
        check_blend_threshold(blend_threshold)
        if blend is not None and latent_hw is None:
            raise ValueError("local blend needs the latent grid size latent_hw")
        self.pairs = len(alignments)
        self.mapper = torch.stack([a.mapper for a in alignments])  # [n, L, L]
        self.alphas = torch.stack([a.alphas for a in alignments])  # [n, L]
        self.weights = torch.stack([a.weights for a in alignments])  # [n, L]
        self.cross_until = round(cross_replace_steps * num_steps)
        self.self_until = round(self_replace_steps * num_steps)
        self.self_replace_max_pixels = self_replace_max_pixels
        self.blend = None if blend is None else torch.cat(blend)  # [2n, L]: source rows, then edited rows
        self.blend_threshold = blend_threshold
        self.latent_hw = latent_hw
        self.step = 0
        self.blocks: list[BasicTransformerBlock] = []  # set by `controlling`
        self._map_sum: Tensor | None = None  # Σ over layers and steps of the blend words' maps, [2n, 1, h, w]
        self._map_count = 0

    def set_step(self, step: int) -> None:
        """Go to sampler step ``step``: hooks on the layers whose weights that step edits (or records, for
        local blend), the fused attention everywhere else (`controlling` must be active)."""
        self.step = step
        self_hook = self.hook(cross=False) if step < self.self_until else None
        cross_hook = self.hook(cross=True) if step < self.cross_until or self.blend is not None else None
        for block in self.blocks:
            block.attn1.probs_hook = self_hook
            block.attn2.probs_hook = cross_hook

    def _conditional(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        rows = 2 * self.pairs
        if probs.shape[0] not in (rows, 2 * rows):
            raise ValueError(f"attention batch {probs.shape[0]} is neither {rows} nor {2 * rows} rows")
        cond = probs[probs.shape[0] - rows:]
        return cond[: self.pairs], cond[self.pairs:]

    def hook(self, cross: bool):
        """The `Attention.probs_hook` of a cross-attention (``cross``) or self-attention layer."""

        def edit(probs: Tensor) -> Tensor:
            source, edited = self._conditional(probs)
            if cross:
                if self.blend is not None:
                    self._record_blend(torch.cat([source, edited]))
                if self.step >= self.cross_until:
                    return probs
                m, a, w = (x.to(probs.device) for x in (self.mapper, self.alphas, self.weights))
                mapped = torch.einsum("bhps,bst->bhpt", source, m)
                new = (a[:, None, None] * mapped + (1 - a[:, None, None]) * edited) * w[:, None, None]
            else:
                if self.step >= self.self_until or probs.shape[2] > self.self_replace_max_pixels:
                    return probs
                new = source
            out = probs.clone()
            out[probs.shape[0] - self.pairs:] = new
            return out

        return edit

    def _record_blend(self, cond: Tensor) -> None:
        h, w = self.latent_hw
        maps = (cond.mean(dim=1) * self.blend.to(cond.device)[:, None, :]).sum(-1)  # [2n, N]
        maps = maps.reshape(maps.shape[0], 1, *level_hw((h, w), maps.shape[1]))
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
        self._map_sum = maps if self._map_sum is None else self._map_sum + maps
        self._map_count += 1

    def blend_mask(self) -> Tensor | None:
        """B_pair float32[n, 1, h, w] from the maps recorded so far (None without local blend)."""
        if self.blend is None or self._map_sum is None:
            return None
        maps = F.max_pool2d(self._map_sum / self._map_count, 3, stride=1, padding=1)
        maps = maps / maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None, None]
        masks = (maps > self.blend_threshold).float()
        return torch.maximum(masks[: self.pairs], masks[self.pairs:])

    def apply_blend(self, latents: Tensor) -> tuple[Tensor, Tensor | None]:
        """z*_t ← z_t + B ⊙ (z*_t − z_t) on the [source; edited] latents, and B (None without local blend)."""
        mask = self.blend_mask()
        if mask is None:
            return latents, None
        mask = mask.to(latents.device)
        source, edited = latents[: self.pairs], latents[self.pairs:]
        return torch.cat([source, source + mask * (edited - source)]), mask


@contextmanager
def controlling(unet: nn.Module, controller: AttentionController) -> Iterator[AttentionController]:
    """Attach ``controller`` to every self- and cross-attention layer of ``unet`` for the ``with`` block;
    `AttentionController.set_step` then sets the hooks each step needs."""
    controller.blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    controller.set_step(controller.step)
    try:
        yield controller
    finally:
        for block in controller.blocks:
            block.attn1.probs_hook = None
            block.attn2.probs_hook = None
        controller.blocks = []
