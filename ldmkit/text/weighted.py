"""Prompts in A1111's emphasis syntax as contexts: each piece encoded, its tokens' vectors weighted, pieces joined.

A prompt parsed by `ldmkit.text.emphasis.parse` is cut into pieces: its ``BREAK``-separated chunks, each cut
again where it does not fit the tokenizer (`FixedLengthTokenizer.pieces`: A1111's chunks of 75 CLIP tokens). Each
piece is encoded on its own, c = τθ(piece) (L×d, L the tokenizer's length), each token's vector multiplied by the
weight w of the characters it comes from, and the piece rescaled to its former mean (A1111's "original" emphasis):

    c' = (c ⊙ w) · mean(c) / mean(c ⊙ w)

The pieces are concatenated along the sequence: a prompt of k pieces gives a (k·L)×d context, which the UNet's
cross-attention reads as any other. Rows of a batch with fewer pieces are padded with the context of the empty
prompt, as A1111 pads with empty chunks, so that a prompt and its negative prompt batch together. A piece without
weights is what `encode` makes of it alone, so a plain prompt that fits gives the plain context exactly.
"""

from __future__ import annotations

from typing import Callable

import torch

from ldmkit.text.emphasis import parse


def prompt_pieces(prompt: str, tokenizer) -> list[tuple[str, list[tuple[tuple[int, int], float]]]]:
    """The pieces of ``prompt`` (module docstring), each with the ((start, end), weight) of its character spans whose
    weight is not 1, in the piece's own text."""
    parsed = parse(prompt)
    pieces = []
    for chunk, spans in zip(parsed.chunks, parsed.weights):
        at = 0
        for piece in tokenizer.pieces(chunk):
            start = chunk.index(piece, at) if piece else at
            at = start + len(piece)
            pieces.append((piece, [((max(s, start) - start, min(e, at) - start), w) for (s, e), w in spans
                                   if min(e, at) > max(s, start)]))
    return pieces


def token_weights(piece: str, spans, tokenizer) -> torch.Tensor:
    """w, float32[L]: the weight of each of the piece's ``max_length`` tokens (1 for the special tokens, padding
    and characters of weight 1)."""
    weights = torch.ones(tokenizer.max_length)
    for span, weight in spans:
        weights[tokenizer.token_indices(piece, [span])] = weight
    return weights


def emphasis_contexts(prompts: list[str], encode: Callable[[list[str]], torch.Tensor], tokenizer,
                      read: Callable[[list[str]], list[str]] = list) -> torch.Tensor:
    """The contexts of ``prompts`` in A1111's emphasis syntax (module docstring), B×(k·L)×d with k the most
    pieces any prompt has. ``encode``: texts → τθ, B×L×d; ``read``: how the model reads plain text (e.g. in the
    words it knows), applied to the pieces without weights (a weighted piece is read as written, so that its
    weights stay on their words)."""
    pieces = [prompt_pieces(p, tokenizer) for p in prompts]
    flat = [piece for row in pieces for piece in row]
    texts = [text for text, _ in flat]
    plain = [i for i, (_, spans) in enumerate(flat) if not spans]
    for i, text in zip(plain, read([texts[i] for i in plain])):
        texts[i] = text
    encoded = encode(texts + [""])
    empty = encoded[-1]
    contexts, k = [], max(len(row) for row in pieces)
    position = 0
    for row in pieces:
        parts = []
        for text, spans in row:
            c = encoded[position]
            position += 1
            if spans:
                weighted = c * token_weights(text, spans, tokenizer).to(c)[:, None]
                mean = weighted.mean()  # 0 where every vector was weighted 0 (or cancels): left unscaled
                c = weighted * (c.mean() / mean) if mean.abs() > 1e-12 else weighted
            parts.append(c)
        parts += [empty] * (k - len(row))
        contexts.append(torch.cat(parts))
    return torch.stack(contexts)
