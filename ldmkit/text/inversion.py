"""Textual inversion (Gal et al. 2022): a new word whose token vectors are learned, everything else frozen.

A token "<name>" of k vectors v_1 … v_k becomes k new token ids i_1 … i_k of the tokenizer (a k-vector "<name>"
is read as k tokens, as diffusers and A1111 expand multi-vector embeddings), and the
text encoder's input embedding becomes

    e(i) = E[i] for the ids of the vocabulary,   e(i_j) = v_j for the new ones,

so τθ(y) of a prompt with "<name>" is computed from v_1 … v_k through the frozen encoder. `TokenEmbedding`
wraps the encoder's table (CLIP's ``token_embedding``, BERT/MiniLM's ``word_embeddings``, ldmkit's own
``token_embedding``) in place; E is shared, not copied.

Files (`save_embedding`, `load_embedding`): diffusers' ``learned_embeds.safetensors`` ``{token: [k, d]}``, and
A1111's ``NAME.safetensors`` ``{"emb_params": [k, d]}`` (A1111 triggers it by the file name); A1111's pickled
``.pt`` (``{"string_to_param": {"*": [k, d]}, "name": …}``) is read with ``torch.load(weights_only=True)``,
which runs no pickled code.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, normalizers
from torch import nn

from ldmkit.errors import UsageError
from ldmkit.storage import atomic_path, load_pickle

TABLE_NAMES = ("token_embedding", "word_embeddings")


class TokenEmbedding(nn.Module):
    """e(i) = E[i], except e(i_j) = v_j for each added token's ids (see the module docstring)."""

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.vectors = nn.ParameterDict()  # token → [k, d]
        self.ids: dict[str, list[int]] = {}

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def add(self, token: str, ids: list[int], vectors: torch.Tensor) -> nn.Parameter:
        key = _key(token)
        self.vectors[key] = nn.Parameter(vectors.detach().to(self.base.weight.device, torch.float32).clone())
        self.ids[key] = list(ids)
        return self.vectors[key]

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(token_ids.clamp(max=self.base.num_embeddings - 1))
        for key, vectors in self.vectors.items():
            for j, i in enumerate(self.ids[key]):
                out = torch.where((token_ids == i)[..., None], vectors[j].to(out.dtype), out)
        return out


def _key(token: str) -> str:
    return token.replace(".", "_") or "_"


def _table(text_encoder: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) of the text encoder's input embedding table."""
    root = text_encoder.frozen_network() if hasattr(text_encoder, "frozen_network") else text_encoder
    found = [(n, m) for n, m in root.named_modules()
             if n.rsplit(".", 1)[-1] in TABLE_NAMES and isinstance(m, (nn.Embedding, TokenEmbedding))]
    if len(found) != 1:
        raise UsageError(f"textual inversion cannot find the token embedding table of a {type(text_encoder).__name__}")
    name, module = found[0]
    parent, _, attr = name.rpartition(".")
    return (root.get_submodule(parent) if parent else root), attr, module


def token_width(model) -> int:
    """d: the width of the text encoder's token vectors."""
    return _table(model.text_encoder)[2].embedding_dim


def check_new_token(model, token: str) -> None:
    """UsageError unless ``token`` is a new word for ``model``'s tokenizer: not empty, no spaces, not a token of
    its vocabulary already (as typed, lower-cased or with CLIP's end-of-word mark)."""
    if model.tokenizer is None or model.text_encoder is None:
        raise UsageError("textual inversion needs a text-to-image model")
    if not token or token != token.strip() or " " in token:
        raise UsageError(f"token {token!r}: give one word without spaces, e.g. \"<hexagon>\"")
    tok = model.tokenizer._tok
    normalized = tok.normalizer.normalize_str(token) if tok.normalizer is not None else token
    vocab = tok.get_vocab(with_added_tokens=True)
    table = _table(model.text_encoder)[2]
    if isinstance(table, TokenEmbedding) and _key(token) in table.vectors:
        raise UsageError(f"token {token!r} is already in the model's vocabulary (an embedding loaded before)")
    for form in {token, normalized, token + "</w>", normalized + "</w>", "▁" + normalized}:
        if form in vocab:
            raise UsageError(f"token {token!r} is already in the model's vocabulary (as {form!r}); choose a new word, "
                             "e.g. in angle brackets: \"<my-thing>\"")


def add_token(model, token: str, vectors: torch.Tensor) -> nn.Parameter:
    """Teach ``model`` (a `LatentDiffusion`) the word ``token`` with token vectors ``vectors`` [k, d]; returns them
    as the Parameter the prompts now read (train it to learn them). UsageError for a known word or a wrong d."""
    check_new_token(model, token)
    vectors = vectors.reshape(-1, vectors.shape[-1]) if vectors.ndim != 2 else vectors
    parent, attr, table = _table(model.text_encoder)
    if vectors.shape[-1] != table.embedding_dim:
        raise UsageError(f"the embedding for {token!r} has {vectors.shape[-1]}-wide vectors; this model's text encoder "
                         f"takes {table.embedding_dim}-wide ones (was it made for another model?)")
    tok = model.tokenizer._tok
    norm = tok.normalizer.normalize_str if tok.normalizer is not None else (lambda s: s)
    if vectors.shape[0] == 1:
        names = [token]
    else:  # "<name>" is rewritten into k tokens of their own, whose spellings do not contain "<name>" again
        tag = hashlib.sha1(token.encode()).hexdigest()[:10]
        names = [f"\u27e6{tag}#{j}\u27e7" for j in range(vectors.shape[0])]
    tok.add_tokens([AddedToken(n, normalized=True, single_word=False) for n in names])
    if len(names) > 1:
        expand = normalizers.Replace(norm(token), " ".join(names))
        tok.normalizer = expand if tok.normalizer is None else normalizers.Sequence([tok.normalizer, expand])
    ids = [tok.token_to_id(n) for n in names]
    if not isinstance(table, TokenEmbedding):
        table = TokenEmbedding(table)
        setattr(parent, attr, table)
    return table.add(token, ids, vectors)


def initial_vectors(model, token: str, init_word: str | None = None, num_vectors: int = 1) -> torch.Tensor:
    """[k, d] start for a new token: the mean token vector of ``init_word`` (default: ``token`` without its
    brackets, e.g. "hexagon" for "<hexagon>"; its word pieces, if it is not one token), repeated k times."""
    word = init_word or re.sub(r"[^\w-]", " ", token).strip() or "object"
    ids, mask = model.tokenizer([word])
    tokenizer = model.tokenizer
    special = {tokenizer.pad_id, getattr(tokenizer, "start_id", None), getattr(tokenizer, "end_id", None)}
    special |= {model.tokenizer._tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")} - {None}
    keep = [i for i, m in zip(ids[0].tolist(), mask[0].tolist()) if m and i not in special]
    table = _table(model.text_encoder)[2]
    weight = table.weight
    if not keep:
        return weight.detach().float().mean(0, keepdim=True).repeat(num_vectors, 1).cpu()
    rows = weight.detach()[torch.tensor(keep, device=weight.device)].float()
    return rows.mean(0, keepdim=True).repeat(num_vectors, 1).cpu()


def token_vectors(model, token: str) -> torch.Tensor:
    """The learned [k, d] vectors of added ``token``."""
    table = _table(model.text_encoder)[2]
    if not isinstance(table, TokenEmbedding) or _key(token) not in table.vectors:
        raise ValueError(f"{token!r} is not an added token")
    return table.vectors[_key(token)].detach().cpu()


def a1111_name(token: str) -> str:
    """The file stem A1111 users type to trigger the embedding: the token without brackets or odd characters."""
    return re.sub(r"[^\w-]", "", token) or "embedding"


def save_embedding(folder: str | Path, token: str, vectors: torch.Tensor) -> list[Path]:
    """Write ``learned_embeds.safetensors`` (diffusers) and ``NAME.safetensors`` (A1111) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = vectors.detach().float().contiguous().cpu()
    written = []
    for path, tensors in ((folder / "learned_embeds.safetensors", {token: vectors}),
                          (folder / f"{a1111_name(token)}.safetensors", {"emb_params": vectors})):
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "ldmkit.token": token})
        written.append(path)
    return written


def read_embedding(path: str | Path, token: str | None = None) -> tuple[str, torch.Tensor]:
    """(token, vectors [k, d]) of an embedding file in any format of the module docstring. The token is
    ``token`` if given, else the file's own (diffusers' key, A1111's ``name``: a renamed A1111 ``.pt`` keeps its
    token, as diffusers reads it, while A1111 triggers it by the file name), else the file name. A damaged file, or
    a pickle holding more than tensors, is a one-line `UsageError` (`ldmkit.storage.load_pickle`)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"embedding file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UsageError(f"{path} is not a readable embedding file ({type(e).__name__}); give a .safetensors or "
                             ".pt file from textual inversion") from None
    else:
        data = load_pickle(path, "embedding file", UsageError)
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not an embedding file")
    if isinstance(data.get("string_to_param"), dict) and "*" in data["string_to_param"]:
        vectors, own = data["string_to_param"]["*"], data.get("name")
    elif "emb_params" in data:
        vectors, own = data["emb_params"], None
    elif "clip_l" in data or "clip_g" in data:
        raise UsageError(f"{path} is an SDXL embedding (clip_l/clip_g); ldmkit's models have one text encoder")
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        own, vectors = next(iter(data.items()))
    else:
        raise UsageError(f"{path} is not an embedding file: expected one {{token: tensor}} entry, 'emb_params' or "
                         f"'string_to_param'; found {', '.join(list(data)[:4])}")
    if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2) or not vectors.is_floating_point():
        raise UsageError(f"{path}: the embedding is not a [vectors, width] float tensor")
    name = token or (own if isinstance(own, str) and own else None) or path.stem
    return name, vectors.float().reshape(-1, vectors.shape[-1])


def load_embedding(model, path: str | Path, token: str | None = None) -> str:
    """Add the embedding of file ``path`` to ``model`` as ``token`` (see `read_embedding`); returns the token."""
    name, vectors = read_embedding(path, token)
    add_token(model, name, vectors).requires_grad_(False)  # for use; `ldmkit finetune` trains its own
    return name
