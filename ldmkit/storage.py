"""Files on disk: atomic writes, safetensors weights and typed YAML configs, with clear errors.

Nothing here unpickles code: weights are safetensors, and training state is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ldmkit.config import AutoencoderConfig, ConfigError, ModelConfig, load_yaml, save_yaml


from ldmkit.errors import CheckpointError, LdmkitError  # CheckpointError also re-exported: ldmkit.storage.CheckpointError


MAX_NAMED = 5  # offending keys named in an error message


def first_keys(keys: list[str]) -> str:
    """The first `MAX_NAMED` of ``keys`` for an error message, and how many more there are."""
    more = f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else ""
    return ", ".join(keys[:MAX_NAMED]) + more


_UMASK = os.umask(0o022)  # read the process's umask (only a call that sets it returns it) and put it back
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    A crash mid-write leaves the old file (or none), never half a file. The file gets the mode a plain
    ``open(path, "w")`` would give it (0666 less the umask), not the temporary file's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through `atomic_path`: the old file or the whole new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, as ``sha256sum`` prints it (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load a safetensors file into ``module``; every key must match."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    wrong = [f"{k} {tuple(v.shape)} vs {shapes[k]}" for k, v in state.items()
             if k in shapes and tuple(v.shape) != shapes[k]]
    if wrong:  # load_state_dict would raise a RuntimeError per tensor: one line instead
        raise CheckpointError(f"corrupt model folder {path.parent}: {path.name} does not fit the model in its "
                              f"config.yaml: shapes differ for {first_keys(wrong)}")
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing {first_keys(missing)}" if missing else f"unexpected {first_keys(unexpected)}"
        raise CheckpointError(f"{path} does not fit the model in its config.yaml: {what}")


def save_config(config, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_yaml(config, tmp)


def load_config(cls, folder: str | Path):
    """``folder/config.yaml`` as a ``cls``; a missing folder or file is a `CheckpointError`, and so is a
    config with keys missing (ldmkit writes it whole: a file cut short is damage, not defaults) or of
    the other kind of folder (an autoencoder folder where a model folder is wanted, or the reverse)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{'model' if cls is ModelConfig else 'autoencoder'} folder not found: {folder}")
    path = folder / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an ldmkit model folder: it has no config.yaml")
    try:
        return load_yaml(cls, path, strict=True)
    except ConfigError as e:
        other = _folder_kind(path)
        if cls is ModelConfig and other == "autoencoder":
            raise CheckpointError(f"{folder} is an autoencoder folder (as `ldmkit train-autoencoder` writes it), "
                                  "not a model folder; give a model folder written by `ldmkit train`") from None
        if cls is AutoencoderConfig and other == "model":
            raise CheckpointError(f"{folder} is a text-to-image model folder, not an autoencoder folder; give a "
                                  "folder written by `ldmkit train-autoencoder`") from None
        raise CheckpointError(f"corrupt model folder {folder}: {path.name}: {e}") from None


def _folder_kind(path: Path) -> str | None:
    """"model" or "autoencoder" by the top-level keys of the config file ``path``; None if neither."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    for kind, cls in (("model", ModelConfig), ("autoencoder", AutoencoderConfig)):
        if set(data) <= {f.name for f in dataclasses.fields(cls)}:
            return kind
    return None


PICKLES = (".ckpt", ".pt", ".pth", ".bin")  # the suffixes of torch.save files ldmkit reads


def load_pickle(path: Path, what: str, error: type[LdmkitError] = CheckpointError, mmap: bool = False):
    """What ``torch.load(path, weights_only=True)`` returns: tensors and plain containers, no pickled code run.
    ``mmap``: memory-mapped when the file is in torch's zip format (the legacy format cannot be mapped).

    A file it cannot read raises ``error`` (one line; ``what`` names the kind of file: "checkpoint", "embedding
    file", "LoRA file"). Two cases are told apart (`_unpickling_refusal`): a file that holds pickled objects
    other than tensors — classes or functions to import, which ldmkit never unpickles, so only a .safetensors
    version of it can be used — and a file that is damaged or was not written by ``torch.save`` (cut short, an
    HTML page, random bytes, a plain pickle), which torch's unpickler fails on with one of several exception
    types."""
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not (mmap and "mmap" in str(e)):
                raise
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises KeyError, EOFError, RuntimeError, … for damaged files
        raise error(_unpickling_refusal(path, what, e)) from None


# how torch's weights_only unpickler names a class or function it refused to import (garbage bytes fail elsewhere)
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*) (?:was not an allowed|whose module)")
# lines of torch's message that advise on torch.load itself (among them: load with weights_only=False), never repeated
_TORCH_ADVICE = re.compile(r"weights_only|torch\.load|torch\.serialization|"
                           r"Please file an issue|Check the documentation")


def _unpickling_refusal(path: Path, what: str, e: Exception) -> str:
    """The one-line message for a pickle ``torch.load(weights_only=True)`` refused with ``e`` (see `load_pickle`).
    It never repeats torch's advice to load the file with ``weights_only=False``, which would run its code."""
    message = str(e)
    found = _REFUSED_GLOBAL.search(message) if isinstance(e, pickle.UnpicklingError) else None
    if found:
        return (f"{path} holds pickled Python objects besides tensors ({found[1]}), which ldmkit will "
                f"not unpickle: loading them could run any code; a .safetensors version of this {what} is needed")
    lines = [line.strip() for line in message.splitlines() if line.strip() and not _TORCH_ADVICE.search(line)]
    detail = type(e).__name__ + (f": {lines[0].split('. ')[0]}" if lines else "")
    return (f"{path} is not a readable {what} ({detail}): the file is damaged or was not written by torch.save; "
            f"ldmkit reads .safetensors files and torch.save's {'/'.join(PICKLES)} files")
