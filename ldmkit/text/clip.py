"""CLIP's tokenizer and text model, for Stable Diffusion's prompt encoder τθ.

The tokenizer is CLIP's byte-level BPE (49408 tokens) run by the ``tokenizers`` library: lower-cased,
split into words, numbers and punctuation, each word ending in ``</w>``; a prompt becomes
``<|startoftext|> w₁ … w_n <|endoftext|>`` padded to 77 tokens. Stable Diffusion 1.x pads with
``<|endoftext|>`` (49407), 2.x (OpenCLIP's tokenizer) with id 0 (``!``). The cross-attention sees all 77
outputs, so the padding id changes the image: it is part of the model (``TextEncoderConfig.kind``).

The vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz``, which ships inside the ``clip-anytorch``
package; `clip_vocab_and_merges` derives from it the ``vocab.json`` / ``merges.txt`` pair that
Hugging Face's ``CLIPTokenizer`` reads, exactly as OpenAI's ``SimpleTokenizer`` builds its tables.
A model folder stores the tokenizer as ``tokenizer.json``, so it needs the package only to be created.

The text model is ``transformers``' ``CLIPTextModel`` built from a config (nothing downloaded):
context = final LayerNorm of the last block's output, all 77 positions, causal attention and no
padding mask, as Stable Diffusion uses it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import nn

from ldmkit.config import TextEncoderConfig
from ldmkit.text.optional import missing_dependency, require
from ldmkit.text.tokenizer import FixedLengthTokenizer
from ldmkit.errors import CheckpointError

START, END = "<|startoftext|>", "<|endoftext|>"
START_ID, END_ID = 49406, 49407
VOCAB_SIZE = 49408
MAX_LENGTH = 77
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
FILE_NAME = "tokenizer.json"
# CLIP's word splitter (OpenAI's SimpleTokenizer.pat, as transformers' CLIPTokenizer writes it)
SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters (printable
    Latin-1 bytes map to themselves, the rest to code points from 256 on), used by CLIP's BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_vocab_path() -> Path:
    """OpenAI's BPE file inside the installed ``clip-anytorch`` package (found without importing the
    package, whose import pulls in torchvision)."""
    spec = importlib.util.find_spec("clip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise missing_dependency("clip-anytorch", "the CLIP tokenizer vocabulary")


@lru_cache(maxsize=2)
def clip_vocab_and_merges(path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of CLIP's BPE from OpenAI's merges file, in OpenAI's order:

    the 256 byte characters, the same with ``</w>``, one token per merge (48894 merges), then
    ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
    """
    lines = gzip.open(path or clip_vocab_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [START, END]
    return {t: i for i, t in enumerate(tokens)}, merges


class ClipTokenizer(FixedLengthTokenizer):
    """Prompts → (token_ids int64[B, 77], mask bool[B, 77]) with CLIP's BPE.

    ``[START, w₁, …, w_n, END, pad, …]``; prompts longer than 75 tokens are cut, keeping END (and warn
    once). ``mask`` is True on START … END; Stable Diffusion's text model ignores it.
    """

    KIND = "CLIP tokenizer"
    MAKERS = "build(), from_clip_package() or load()"

    def __init__(self, tokenizer: Tokenizer):
        super().__init__(tokenizer)
        self.start_id = tokenizer.token_to_id(START)
        self.end_id = tokenizer.token_to_id(END)
        if self.start_id is None or self.end_id is None:
            raise CheckpointError(f"a CLIP tokenizer needs the tokens {START} and {END}")

    @classmethod
    def build(
        cls, vocab: dict[str, int], merges: list[tuple[str, str]], pad_id: int = END_ID, max_length: int = MAX_LENGTH
    ) -> ClipTokenizer:
        """The tokenizers pipeline of Hugging Face's ``CLIPTokenizer`` over (vocab, merges), padding with
        ``pad_id`` (SD 1.x: END_ID; SD 2.x: 0)."""
        tok = Tokenizer(
            models.BPE(
                vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                fuse_unk=False, unk_token=END,
            )
        )
        # OpenAI's basic_clean + whitespace_clean + lower(); ftfy's repairs are left out (they only touch
        # mis-decoded text) so that the tokenizer needs nothing beyond `tokenizers`.
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        start, end = vocab[START], vocab[END]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{START} $A {END}", special_tokens=[(START, start), (END, end)]
        )
        tok.enable_truncation(max_length)
        pad_token = next((t for t, i in vocab.items() if i == pad_id), None)
        if pad_token is None:
            raise CheckpointError(f"pad id {pad_id} is not in the CLIP vocabulary")
        tok.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
        return cls(tok)

    @classmethod
    def from_clip_package(cls, pad_id: int = END_ID, max_length: int = MAX_LENGTH) -> ClipTokenizer:
        """OpenAI's vocabulary from the installed ``clip-anytorch`` package."""
        vocab, merges = clip_vocab_and_merges()
        return cls.build(vocab, merges, pad_id, max_length)

    @classmethod
    def from_vocab_files(cls, folder: str | Path, max_length: int = MAX_LENGTH) -> ClipTokenizer:
        """A diffusers ``tokenizer/`` folder: ``vocab.json`` + ``merges.txt`` (or, as transformers 5 saves
        it, the BPE inside ``tokenizer.json``) and the pad token named in ``special_tokens_map.json`` or
        ``tokenizer_config.json`` (SD 1.x ``<|endoftext|>``, SD 2.x ``!``)."""
        folder = Path(folder)
        if (folder / "vocab.json").is_file():
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
            merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        else:
            model = json.loads((folder / FILE_NAME).read_text(encoding="utf-8"))["model"]
            if model.get("type") != "BPE":
                raise CheckpointError(f"{folder / FILE_NAME} does not hold a BPE tokenizer")
            vocab = model["vocab"]
            merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        pad_token = END
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = folder / name
            if path.is_file():
                value = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
                if isinstance(value, dict):  # an AddedToken written out
                    value = value.get("content")
                if isinstance(value, str):
                    pad_token = value
                    break
        if pad_token not in vocab:
            raise CheckpointError(f"{folder}: pad token {pad_token!r} is not in vocab.json")
        return cls.build(vocab, merges, vocab[pad_token], max_length)

    def save_vocab_files(self, folder: str | Path) -> None:
        """Write ``vocab.json``, ``merges.txt``, ``special_tokens_map.json`` and ``tokenizer_config.json``,
        the files of a diffusers ``tokenizer/`` folder (transformers' ``CLIPTokenizer`` reads them)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.model.save(str(folder))
        pad_token = self._tok.id_to_token(self.pad_id)
        special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
        config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": self.max_length}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))

    def limit(self) -> str:
        return f"{self.max_length - 2} CLIP tokens"

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        rows = token_ids.reshape(-1, token_ids.shape[-1]).tolist()
        texts = self._tok.decode_batch(rows)
        return [t.replace("</w>", " ").strip() for t in texts]


def clip_text_config(cfg: TextEncoderConfig):
    """The ``transformers.CLIPTextConfig`` that ``cfg`` describes (no download)."""
    transformers = require("transformers", "CLIP text encoders")
    return transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        intermediate_size=cfg.ff_width or 4 * cfg.width,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.max_length,
        hidden_act=cfg.activation,
        layer_norm_eps=1e-5,
        bos_token_id=START_ID,
        eos_token_id=END_ID,
        pad_token_id=END_ID if cfg.kind == "clip" else 0,
    )


class _TextModelSlot(nn.Module):
    """Holds a transformers-5 ``CLIPTextModel`` under the name ``text_model``, where transformers 4 had
    its ``CLIPTextTransformer``, so that the parameter names do not depend on the installed version."""

    def __init__(self, text_model: nn.Module):
        super().__init__()
        self.text_model = text_model

    def forward(self, **kwargs):
        return self.text_model(**kwargs)


class ClipTextEncoder(nn.Module):
    """context = τθ(y) = CLIPTextModel(ids).last_hidden_state, [B, 77, width].

    The state-dict keys are ``transformer.text_model.embeddings…``, ``….encoder.layers.{i}…``,
    ``….final_layer_norm…``: the SD 1.x single-file keys without ``cond_stage_model.``, and the keys of
    the diffusers folders on the Hub with a ``transformer.`` prefix, whichever transformers is installed.
    """

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        transformers = require("transformers", "CLIP text encoders")
        self.cfg = cfg
        model = transformers.CLIPTextModel(clip_text_config(cfg))
        # transformers 4's CLIPTextModel wraps the network as .text_model; transformers 5 dropped the wrapper
        self.transformer = model if hasattr(model, "text_model") else _TextModelSlot(model)

    sees_padding = False  # causal: a token sees only those before it

    def forward(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` is accepted for the common interface and ignored: Stable Diffusion runs CLIP with its
        causal mask only, so the outputs at padding positions (which cross-attention sees) are those the
        UNet was trained with."""
        del mask
        return self.transformer(input_ids=token_ids).last_hidden_state
