"""The prompt tokenizer: a small BPE trained on the training captions.

y (a string) → token ids [<s>, w₁, …, w_n, </s>, <pad>, …] of fixed length ``max_length``, and a
mask that is True on real tokens. The empty prompt "" is the null condition ∅ of classifier-free
guidance: it becomes <s> </s> and padding.

Why this model: a SentencePiece-style BPE ("▁" marks the start of a word) over a character
alphabet that always contains a–z, 0–9 and common punctuation. A word never seen in the captions
still splits into known pieces, down to single letters; only characters outside the alphabet
(CJK, emoji, …) become <unk>. Byte-level BPE would cover those too, but its 256 byte tokens alone
exceed the tiny preset's whole vocabulary (128) and take a quarter of the default (1024).
"""

from __future__ import annotations

import string
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, START, END = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, START, END]  # trained first, so their ids are 0, 1, 2, 3
WORD_START = "▁"  # Metaspace's word-start marker, as in SentencePiece
ALPHABET = [WORD_START, *string.ascii_lowercase, *string.digits, *",.!?'\"-:;()&/"]
FILE_NAME = "tokenizer.json"


def _normalizer() -> normalizers.Normalizer:
    """Compatibility-decompose, drop accents, lowercase, and fold typographic punctuation to ASCII,
    so "Café — ‘Red’" and "cafe - 'red'" tokenize alike."""
    return normalizers.Sequence(
        [
            normalizers.NFKD(),  # also maps full-width and ligature forms to plain letters
            normalizers.StripAccents(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex("[‘’‚‛′`´]"), "'"),
            normalizers.Replace(Regex("[“”„‟″«»]"), '"'),
            normalizers.Replace(Regex("[‐‑‒–—―−]"), "-"),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )


class FixedLengthTokenizer:
    """A `tokenizers.Tokenizer` with truncation and padding set, run on a batch of prompts:
    prompts → (token_ids int64[B, max_length], mask bool[B, max_length]), mask True on real tokens.

    Longer prompts are cut to ``max_length`` tokens, keeping the end token; the first cut prompt of
    each instance triggers one warning naming the limit. Subclasses say how the tokenizer is built.
    """

    KIND = "tokenizer"  # named in errors
    MAKERS = "load()"  # the constructors that set truncation and padding

    def __init__(self, tokenizer: Tokenizer):
        if tokenizer.truncation is None or tokenizer.padding is None:
            raise ValueError(f"{type(self).__name__} needs truncation and padding set on the tokenizer; "
                             f"use {self.MAKERS}")
        self._tok = tokenizer
        self.max_length: int = tokenizer.truncation["max_length"]
        self.pad_id: int = tokenizer.padding["pad_id"]
        self._warned = False

    def save(self, path: str | Path) -> Path:
        """Write the one file that `load` reads; ``path`` is a file or a folder (→ folder/tokenizer.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a file written by `save`; ValueError if it is missing or not a tokenizer file."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise ValueError(f"tokenizer file not found: {path}")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # the Rust side raises a bare Exception for malformed JSON
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{path} is not a valid {cls.KIND} file: {reason}") from None

    @property
    def vocab_size(self) -> int:
        """Number of distinct ids; the text encoder's embedding table needs at least this many rows."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def limit(self) -> str:
        """The length limit, as the truncation warning states it."""
        return f"max_length = {self.max_length} tokens"

    def __call__(self, prompts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(token_ids int64[B, max_length], mask bool[B, max_length]); a lone string counts as B = 1."""
        if isinstance(prompts, str):
            prompts = [prompts]
        encodings = self._tok.encode_batch([str(p) for p in prompts])
        if not self._warned and any(e.overflowing for e in encodings):
            self._warned = True
            warnings.warn(
                f"a prompt is longer than {self.limit()} and was truncated (this warning is shown once per tokenizer)",
                stacklevel=2,
            )
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64).reshape(len(prompts), self.max_length)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool).reshape(ids.shape)
        return ids, mask

    def tokens(self, prompt: str) -> tuple[list[str], int]:
        """The ``max_length`` token strings of one prompt as the text encoder sees them (special tokens and
        padding included), and how many of them are the prompt's (the rest are padding)."""
        encoding = self._tok.encode(str(prompt))
        return list(encoding.tokens), sum(encoding.attention_mask)

    def token_indices(self, prompt: str, spans) -> list[int]:
        """The positions (in the ``max_length`` tokens of ``prompt``) of the tokens that the character
        ``spans`` [(start, end), …] of the prompt become: every non-special token whose characters
        overlap a span. A span cut off by truncation gives nothing."""
        encoding = self._tok.encode(str(prompt))
        special = encoding.special_tokens_mask
        found = []
        for i, (start, end) in enumerate(encoding.offsets):
            if special[i] or not encoding.attention_mask[i] or end <= start:
                continue
            if any(start < e and s < end for s, e in spans):
                found.append(i)
        return found

    def pieces(self, text: str) -> list[str]:
        """``text`` cut, between tokens, into pieces that each fit the ``max_length`` tokens whole (its special
        tokens included): A1111's chunks of 75 CLIP tokens for a long prompt. One piece when it fits."""
        whole = Tokenizer.from_str(self._tok.to_str())
        whole.no_truncation()
        whole.no_padding()
        room = self.max_length - len(whole.encode("").ids)  # the special tokens every piece carries
        offsets = whole.encode(str(text), add_special_tokens=False).offsets
        if len(offsets) <= room:
            return [text]
        starts = [offsets[i][0] for i in range(0, len(offsets), room)]
        return [text[a:b].strip() for a, b in zip(starts, starts[1:] + [len(text)])]

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """The normalised text of each row of token_ids (special tokens and padding dropped)."""
        return self._tok.decode_batch(token_ids.reshape(-1, token_ids.shape[-1]).tolist())


class PromptTokenizer(FixedLengthTokenizer):
    """Prompts → (token_ids int64[B, max_length], mask bool[B, max_length]) with a BPE trained on the
    captions (see the module docstring); truncation as in `FixedLengthTokenizer`.
    """

    MAKERS = "train() or load()"

    def __init__(self, tokenizer: Tokenizer):
        """Wrap a trained `tokenizers.Tokenizer` whose truncation and padding are already set
        (use `train` or `load`); ``max_length`` is read from its truncation setting."""
        super().__init__(tokenizer)
        self.pad_id, self.unk_id, self.start_id, self.end_id = (self._id(t) for t in SPECIAL_TOKENS)

    def _id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer has no special token {token}")
        return i

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int, max_length: int) -> PromptTokenizer:
        """Learn BPE merges from ``captions`` until the vocabulary holds ``vocab_size`` tokens (fewer
        when the captions run out of pairs to merge; never more)."""
        if max_length < 2:
            raise ValueError(f"max_length = {max_length}; needs at least 2 for the start and end tokens")
        floor = len(SPECIAL_TOKENS) + len(ALPHABET)
        if vocab_size < floor:
            raise ValueError(f"vocab_size = {vocab_size}; needs at least {floor} for the special tokens and alphabet")
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = _normalizer()
        # Metaspace first ("red, car" → "▁red," "▁car"), then punctuation split off on its own
        # ("▁red" ","), so "red" and "red," share one token.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(WORD_START, prepend_scheme="always"), pre_tokenizers.Punctuation("isolated")]
        )
        tok.decoder = decoders.Metaspace(WORD_START, prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=ALPHABET,
            # ALPHABET is always kept; other characters found in the captions may fill at most
            # half of the vocabulary, so a few stray symbols cannot crowd out the merges.
            limit_alphabet=max(floor - len(SPECIAL_TOKENS), (vocab_size - len(SPECIAL_TOKENS)) // 2),
            show_progress=False,
        )
        tok.train_from_iterator(captions, trainer=trainer)
        trained = tok.get_vocab_size(with_added_tokens=True)
        if trained > vocab_size:  # the trainer's own cap, checked: the encoder's table has vocab_size rows
            raise ValueError(f"trained vocabulary has {trained} tokens, more than vocab_size = {vocab_size}")
        start, end = tok.token_to_id(START), tok.token_to_id(END)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{START} $A {END}", special_tokens=[(START, start), (END, end)]
        )
        # Truncation and padding live inside tokenizer.json, so max_length travels with the file.
        tok.enable_truncation(max_length)
        tok.enable_padding(length=max_length, pad_id=tok.token_to_id(PAD), pad_token=PAD)
        return cls(tok)
