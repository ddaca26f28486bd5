"""AUTOMATIC1111's prompt emphasis syntax, parsed into plain text and per-character weights.

The syntax, as the A1111 web UI reads a prompt:

- ``(words)`` multiplies the weight of ``words`` by 1.1, ``[words]`` divides it by 1.1; brackets nest and
  multiply (``((words))`` is 1.21);
- ``(words:w)`` multiplies it by ``w`` (a decimal number, possibly negative);
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the characters themselves;
- a bracket left open is closed at the end of the prompt; a closing one without its opening is kept as text;
- ``BREAK`` (the upper-case word) ends the current chunk of 75 tokens: what follows starts a new one.

`parse` gives the prompt as the text encoder should read it (the syntax removed) with the weight of every
character span; `ldmkit.text.weighted` turns that into a weighted context. A prompt without the syntax parses to
itself, every weight 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND, SQUARE = 1.1, 1 / 1.1

# one syntax element, or a run of plain characters; the weight of "(words:w)" is group 1 of ":w)"
_ELEMENT = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class Emphasis:
    """A parsed prompt: ``chunks``, the plain text of each part that ``BREAK`` separates, and for each chunk the
    ((start, end), weight) of its character spans whose weight is not 1 (in that chunk's text)."""

    chunks: tuple[str, ...]
    weights: tuple[tuple[tuple[tuple[int, int], float], ...], ...]

    @property
    def text(self) -> str:
        """The whole prompt as plain text, chunks joined by a space."""
        return " ".join(self.chunks)

    @property
    def plain(self) -> bool:
        """Whether the syntax changes nothing: one chunk, every weight 1."""
        return len(self.chunks) == 1 and not self.weights[0]


def segments(prompt: str) -> list[tuple[str, float | None]]:
    """``prompt`` as (text, weight) segments in order, adjacent segments of equal weight merged; a ``BREAK`` is
    the segment ("BREAK", None)."""
    parts: list[list] = []  # [text, weight]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            if part[1] is not None:
                part[1] *= factor

    for match in _ELEMENT.finditer(prompt):
        text, weight = match.group(0), match.group(1)
        if text.startswith("\\") and len(text) == 2:
            parts.append([text[1], 1.0])
        elif text == "(":
            round_open.append(len(parts))
        elif text == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif text == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif text == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, piece in enumerate(_BREAK.split(text)):
                if i:
                    parts.append(["BREAK", None])
                parts.append([piece, 1.0])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    merged: list[list] = []
    for text, weight in parts:
        if not text:
            continue
        if merged and weight is not None and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]


def parse(prompt: str) -> Emphasis:
    """``prompt`` read in A1111's emphasis syntax (module docstring)."""
    chunks: list[str] = []
    weights: list[tuple] = []
    text, spans = "", []
    for piece, weight in segments(prompt) + [("BREAK", None)]:
        if weight is None:
            stripped = text.lstrip()
            shift = len(text) - len(stripped)
            chunks.append(stripped.rstrip())
            weights.append(tuple(((max(0, s - shift), min(len(chunks[-1]), e - shift)), w) for (s, e), w in spans
                                 if min(len(chunks[-1]), e - shift) > max(0, s - shift)))
            text, spans = "", []
            continue
        if weight != 1.0:
            spans.append(((len(text), len(text) + len(piece)), weight))
        text += piece
    if len(chunks) > 1 and not chunks[-1]:  # a BREAK at the end starts no chunk (as in A1111)
        chunks.pop(), weights.pop()
    return Emphasis(tuple(chunks), tuple(weights))


def uses_syntax(prompt: str) -> bool:
    """Whether ``prompt`` holds A1111 emphasis that plain reading would take as text: a bracket that weighs
    something, or ``BREAK``."""
    parsed = parse(prompt)
    return not parsed.plain or parsed.text != prompt.strip()
