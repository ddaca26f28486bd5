"""Colour words read by their colour: a colour-name lexicon on the tokens that name a colour.

A frozen sentence encoder tells the colour words a UNet was trained on apart, but not the ones it never read:
MiniLM's token states name the colour of "lemon" or "navy" barely above chance (experiments/TEXT_PROBE.md).
What the prompt model does not know, the UNet cannot learn. A colour-name lexicon does know it: the xkcd colour
survey's 949 names as people use them ("scarlet", "navy blue", "robin's egg") and CSS's named colours
(``colour_names.tsv``, about a thousand in all). With ``text.colour_lexicon`` the model reads each colour word by
the colour the lexicon gives it as well as by its spelling (``"add"``), or instead of it (``"replace"``):

1. every colour name in the prompt is found (longest first, up to three words; a single word ending in "y"
   also as the word without it: "grassy" → "grass"); in ``"replace"`` mode it is replaced, before the text
   encoder reads the prompt, by the neutral word "colour" once per token the name had, so every other word
   keeps its tokens and positions;
2. the name's tokens get the colour's features added to their context vectors:

       c_i ← c_i + s · R φ(x),   x = (L*/50 − 1, a*/100, b*/100)   (CIELAB, D65, of the name's sRGB colour),
       φ(x) = (x, sin πkx/2, cos πkx/2 for k = 1, 2, 1)   ∈ ℝ¹⁶,

   R ∈ ℝ^{d×16} a fixed matrix with orthonormal columns (seeded, a function of d alone) and s = 2, so that
   ‖s R φ‖ ≈ 5.4, near the norm of a MiniLM token vector (6–10). No period is shorter than the range of x,
   so the distance between two colours' φ grows with their distance in CIELAB (which follows perceived
   difference): a UNet trained on some colour words reads the colour of one it never saw through the keys
   and values of the colours near it.

In ``"replace"`` mode the text encoder never sees a colour word, so the colour reaches the UNet only through φ
(and no longer through the other words' contextual vectors: "circle" in "a red circle" stops knowing it is red,
which is how a frozen encoder binds a colour to its object). ``"replace-noun"`` puts that binding back by rule:
as in ``"replace"``, and s R φ is also added to the tokens of the noun whose phrase the colour name is in
(`ldmkit.text.phrases`: "a small red circle", "a circle in red" → "circle"), so the word an object's pixels
attend to carries its colour. In ``"add"`` mode the encoder reads the prompt as
written and φ comes on top, so a held-out word reaches the UNet through both; training's
``colour_word_dropout`` hides the names from the encoder in a share of an "add" model's captions, so that its
UNet learns to read φ too. Words that are also colour names elsewhere ("an orange on a plate", "the night sky")
are read as colours too. A model samples in the mode it was trained in (the mode is part of its config); one
trained without the lexicon is unchanged. Measured in experiments/COLOUR_LEXICON.md.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from importlib import resources

import torch

from ldmkit.config import ConfigError
from ldmkit.text.phrases import parse_phrases

FEATURES = 16  # the width of φ
SCALE = 2.0  # s
MAX_WORDS = 3  # the longest names looked up
MODES = ("add", "replace", "replace-noun")  # text.colour_lexicon besides "off"
NEUTRAL_WORDS = ("colour", "color")  # the first that is one token of the model's tokenizer replaces colour names
_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?")


@functools.lru_cache(maxsize=1)
def lexicon() -> dict[str, tuple[float, float, float]]:
    """Colour name (lower case, single spaces) → its sRGB colour in [0, 1]³, from ``colour_names.tsv``."""
    names = {}
    text = resources.files("ldmkit.text").joinpath("colour_names.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, hex_colour = line.split("\t")
        names[name] = tuple(int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return names


def srgb_to_lab(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """CIELAB (D65 white) of an sRGB colour in [0, 1]³: linearise, XYZ, then L*, a*, b*."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x = (0.4124 * lin[0] + 0.3576 * lin[1] + 0.1805 * lin[2]) / 0.95047
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    z = (0.0193 * lin[0] + 0.1192 * lin[1] + 0.9505 * lin[2]) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def colour_difference(lab1: tuple[float, float, float], lab2: tuple[float, float, float],
                      lightness_weight: float = 1.0) -> float:
    """ΔE₀₀, the CIEDE2000 difference of two CIELAB colours (Sharma, Wu and Dalal's statement of the formula):

        ΔE₀₀ = √[(ΔL′/k_L S_L)² + (ΔC′/S_C)² + (ΔH′/S_H)² + R_T (ΔC′/S_C)(ΔH′/S_H)],

    a* scaled by 1 + G for near-neutral colours, S_L, S_C, S_H weighting lightness, chroma and hue by where
    the pair lies, R_T turning the blue region's ellipses. ``lightness_weight`` is k_L (1 the reference
    conditions; 2 the CIE's factor for textiles, where a difference in lightness counts half)."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_mean = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_mean ** 7 / (c_mean ** 7 + 25 ** 7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    h1 = math.degrees(math.atan2(b1, a1)) % 360 if c1 else 0.0
    h2 = math.degrees(math.atan2(b2, a2)) % 360 if c2 else 0.0
    dh = 0.0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    d_hue = 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        h_mean = h1 + h2
    elif abs(h1 - h2) <= 180:
        h_mean = (h1 + h2) / 2
    else:
        h_mean = (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = (1 - 0.17 * math.cos(math.radians(h_mean - 30)) + 0.24 * math.cos(math.radians(2 * h_mean))
         + 0.32 * math.cos(math.radians(3 * h_mean + 6)) - 0.20 * math.cos(math.radians(4 * h_mean - 63)))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    r_t = -2 * math.sqrt(c_mean ** 7 / (c_mean ** 7 + 25 ** 7)) * math.sin(
        math.radians(60 * math.exp(-(((h_mean - 275) / 25) ** 2))))
    dl, dc, dh_ = (l2 - l1) / (lightness_weight * s_l), (c2 - c1) / s_c, d_hue / s_h
    return math.sqrt(dl ** 2 + dc ** 2 + dh_ ** 2 + r_t * dc * dh_)


def colour_features(rgb: tuple[float, float, float]) -> torch.Tensor:
    """φ(x) of the module docstring for one sRGB colour: float32[16]."""
    lab = srgb_to_lab(rgb)
    x = torch.tensor([lab[0] / 50 - 1, lab[1] / 100, lab[2] / 100], dtype=torch.float64)
    parts = [x] + [f(math.pi * k * x / 2) for k in (1, 2) for f in (torch.sin, torch.cos)] + [torch.ones(1)]
    return torch.cat(parts).float()


@functools.lru_cache(maxsize=8)
def projection(width: int) -> torch.Tensor:
    """R: float32[width, 16] with orthonormal columns, the same for every model of this width."""
    if width < FEATURES:
        raise ConfigError(f"text.colour_lexicon needs a context width of at least {FEATURES}; this one is {width}")
    gaussian = torch.randn(width, FEATURES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)
    return q.float()


@dataclass(frozen=True)
class ColourName:
    """A colour name found in a prompt: its character span, the name as the lexicon has it, its colour."""

    span: tuple[int, int]
    name: str
    rgb: tuple[float, float, float]


def find_colour_names(prompt: str) -> list[ColourName]:
    """The colour names of ``prompt``, left to right, longest match first (see the module docstring); words
    of a name are separated by spaces only."""
    names = lexicon()
    words = [(m.start(), m.end(), m.group().lower().replace("’", "'")) for m in _WORD.finditer(prompt)]
    found, i = [], 0
    while i < len(words):
        for n in range(min(MAX_WORDS, len(words) - i), 0, -1):
            group = words[i:i + n]
            if any(prompt[a[1]:b[0]].strip(" ") for a, b in zip(group, group[1:])):
                continue  # not separated by spaces alone
            name = " ".join(w for _, _, w in group)
            if n == 1 and name not in names and len(name) > 4 and name.endswith("y"):
                name = name[:-1]
            if name in names:
                found.append(ColourName((group[0][0], group[-1][1]), name, names[name]))
                i += n
                break
        else:
            i += 1
    return found


def neutral_word(tokenizer) -> str:
    """The first of `NEUTRAL_WORDS` that ``tokenizer`` keeps as one token; a ConfigError if none is."""
    for word in NEUTRAL_WORDS:
        if len(tokenizer.token_indices(word, [(0, len(word))])) == 1:
            return word
    raise ConfigError(f"text.colour_lexicon needs a tokenizer that keeps one of {', '.join(NEUTRAL_WORDS)} "
                      "as a single token; this one splits both")


def named_colours(prompt: str, tokenizer) -> list[tuple[tuple[int, int], list[int], tuple[float, float, float]]]:
    """[(span, token positions, colour)] of each colour name of ``prompt``; a name cut off by truncation is left
    out."""
    named = []
    for found in find_colour_names(prompt):
        positions = tokenizer.token_indices(prompt, [found.span])
        if positions:
            named.append((found.span, positions, found.rgb))
    return named


def neutralise(prompt: str, named, word: str) -> str:
    """``prompt`` with each of its `named_colours` replaced by ``word`` once per token the name had, so that
    every token keeps its position."""
    pieces, last = [], 0
    for span, positions, _ in named:
        pieces += [prompt[last:span[0]], " ".join([word] * len(positions))]
        last = span[1]
    pieces.append(prompt[last:])
    return "".join(pieces)


@functools.lru_cache(maxsize=4096)
def colour_vector(rgb: tuple[float, float, float], width: int) -> torch.Tensor:
    """s R φ(x) of one colour: float32[width] (read-only; cached, as the same few colours recur every step)."""
    return SCALE * (projection(width) @ colour_features(rgb))


def colour_context(prompts: list[str], tokenizer, length: int, width: int, mode: str = "replace",
                   replace: list[bool] | None = None) -> tuple[list[str], torch.Tensor | None]:
    """(the prompts for the text encoder — their colour names neutralised in ``"replace"`` mode, as they are in
    ``"add"`` mode —, the s R φ to add to their context [B, length, width], or None when no prompt names a
    colour). ``replace``: per prompt, True neutralises its names in ``"add"`` mode too (training's
    ``colour_word_dropout``)."""
    if mode not in MODES:
        raise ConfigError(f"text.colour_lexicon = {mode!r}; allowed: off, {', '.join(MODES)}")
    replace = [mode != "add" or bool(r) for r in (replace if replace is not None else [False] * len(prompts))]
    word = neutral_word(tokenizer) if any(replace) else None
    texts, added = [], None
    for b, prompt in enumerate(map(str, prompts)):
        named = named_colours(prompt, tokenizer)
        texts.append(neutralise(prompt, named, word) if replace[b] else prompt)
        if mode == "replace-noun":
            named = named + nouns_of(prompt, named, tokenizer)
        for _, positions, rgb in named:
            if added is None:
                added = torch.zeros(len(prompts), length, width)
            added[b, positions] += colour_vector(rgb, width)
    return texts, added


def nouns_of(prompt: str, named, tokenizer) -> list[tuple[tuple[int, int], list[int], tuple[float, float, float]]]:
    """[(noun span, its token positions, colour)] for each of the `named_colours` that lies in a noun phrase of
    ``prompt`` (among its modifiers; a colour name that is itself the noun, "a red", has none)."""
    nouns = []
    for phrase in parse_phrases(prompt).objects:
        for span, _, rgb in named:
            if any(m[0] <= span[0] and span[1] <= m[1] or span[0] <= m[0] < span[1] for m in phrase.modifiers):
                positions = tokenizer.token_indices(prompt, [phrase.noun])
                if positions:
                    nouns.append((phrase.noun, positions, rgb))
    return nouns
