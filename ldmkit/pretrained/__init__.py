"""The models shipped inside the package, trained on the built-in shapes data: ``shapes64-grounded`` (the
default, `DEFAULT`), trained with the grounding loss (`ldmkit.train.grounding`; `make shapes64`), which draws
two-object prompts right far more often, ``shapes64-grounded-lcm``, its 4-step consistency student
(`ldmkit distill`; `make shapes64-grounded-lcm`), ``shapes64``, the same networks trained without the grounding
loss (the default until 2026-12-07; `make shapes64-varied`), and ``shapes64-lcm``, that one's 4-step student.

``ldmkit generate PROMPT --out FILE`` uses `DEFAULT` when no ``--model`` is given; so does
``ldmkit.load_pipeline()`` with no folder. ``--model shapes64-lcm`` (or ``load_pipeline("shapes64-lcm")``), and
likewise the other names of `SHIPPED`, name a shipped model where no file or folder of that name exists
(`resolve_model`). ``SHA256SUMS`` beside its files records their checksums; `verify` checks them. `pack` writes a trained model folder in the shipped form: the same files,
with every large float tensor stored as float16 (loading casts back to float32), which halves the
size to fit the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from ldmkit.storage import CheckpointError, atomic_path, save_weights, sha256_file

SHAPES64 = Path(__file__).parent / "shapes64"
SHIPPED = {"shapes64": SHAPES64, "shapes64-lcm": Path(__file__).parent / "shapes64-lcm",
           "shapes64-grounded": Path(__file__).parent / "shapes64-grounded",
           "shapes64-grounded-lcm": Path(__file__).parent / "shapes64-grounded-lcm"}
DEFAULT = "shapes64-grounded"  # the model a call without --model (or folder) gets
NAMES_HELP = ("shapes64-grounded, the default shipped with ldmkit; shapes64-grounded-lcm, its 4-step student; shapes64, "
              "trained without the grounding loss; shapes64-lcm, that one's student")  # for --model's help
CHECKSUMS = "SHA256SUMS"
WEIGHT_FILES = ("autoencoder.safetensors", "text_encoder.safetensors", "unet.safetensors")
OTHER_FILES = ("config.yaml", "tokenizer.json")
OPTIONAL_FILES = ("known_words.json",)  # copied, and summed, where the folder has them
HALF_MIN_NUMEL = 1024  # smaller tensors (norm scales, biases, scale_factor) stay float32


def shipped_model() -> Path:
    """The folder of the default shipped model (`DEFAULT`), or a `CheckpointError` if this install lacks it."""
    folder = SHIPPED[DEFAULT]
    if not (folder / "config.yaml").is_file():
        raise CheckpointError(f"this install has no shipped model ({folder} is missing); pass --model DIR")
    return folder


def resolve_model(model: str | Path | None) -> str | Path:
    """What ``--model`` names: the default shipped model (`DEFAULT`) for None, a shipped model's folder for its name
    (`SHIPPED`) when no file or folder of that name exists here, else ``model`` itself."""
    if model is None:
        return shipped_model()
    name = str(model)
    if name in SHIPPED and not Path(name).exists():
        if not (SHIPPED[name] / "config.yaml").is_file():
            raise CheckpointError(f"this install has no shipped model {name!r} ({SHIPPED[name]} is missing)")
        return SHIPPED[name]
    return model


def recorded_checksums(folder: Path = SHIPPED[DEFAULT]) -> dict[str, str]:
    """``file name -> sha256`` as written in ``folder/SHA256SUMS`` (the ``sha256sum`` format)."""
    lines = (folder / CHECKSUMS).read_text().splitlines()
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def verify(folder: Path = SHIPPED[DEFAULT]) -> list[str]:
    """The files of ``folder`` whose checksum differs from the recorded one (empty: all intact)."""
    return [name for name, digest in recorded_checksums(folder).items()
            if not (folder / name).is_file() or sha256_file(folder / name) != digest]


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Large floating-point tensors as float16; the rest unchanged."""
    return {k: v.half() if v.is_floating_point() and v.numel() >= HALF_MIN_NUMEL else v for k, v in state.items()}


def pack(model_dir: str | Path, out: str | Path = SHIPPED[DEFAULT]) -> Path:
    """Write the model folder ``model_dir`` to ``out`` in the shipped form, with ``SHA256SUMS``."""
    model_dir, out = Path(model_dir), Path(out)
    missing = [n for n in WEIGHT_FILES + OTHER_FILES if not (model_dir / n).is_file()]
    if missing:
        raise CheckpointError(f"{model_dir} is not a complete model folder: missing {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    others = OTHER_FILES + tuple(n for n in OPTIONAL_FILES if (model_dir / n).is_file())
    for name in others:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(model_dir / name, tmp)
    for name in WEIGHT_FILES:
        save_weights(half_precision(load_file(str(model_dir / name))), out / name)
    write_checksums(out, WEIGHT_FILES + others)
    return out


def write_checksums(folder: Path, names: tuple[str, ...]) -> None:
    """``folder/SHA256SUMS`` for the files ``names`` of ``folder``."""
    with atomic_path(folder / CHECKSUMS) as tmp:
        Path(tmp).write_text("".join(f"{sha256_file(folder / n)}  {n}\n" for n in names))
