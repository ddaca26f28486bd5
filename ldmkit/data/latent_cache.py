"""The latent cache: the training set encoded once by the frozen autoencoder, memory-mapped from disk.

Stage two never changes E, so encoding every image at every step repeats the same work. `build_latent_cache`
runs E once over a map-style dataset and stores, for every item i, the posterior q(z | x_i) = N(μ, σ²) —
not a sample of it — so that training draws a fresh z each step exactly as it does from images:

    z_0 = s · (μ + σ ⊙ ε),   ε the step's posterior noise (`ldmkit.train.diffusion.StepDraws`), s = scale_factor

(a VQ autoencoder stores the pre-quantisation latent z_e = μ alone: z_0 = s · z_e, as `encode_latents`).

A cache folder holds

- ``mean.npy``, ``std.npy``: N × F × c × h × w arrays (numpy ``.npy``, read with ``mmap_mode="r"``), of
  float16 by default (relative rounding error ≤ 2⁻¹¹ ≈ 5·10⁻⁴ on each of μ and σ; the tests bound the
  difference to fresh encoding) or float32. F = 2 when the data flips horizontally: slot 0 holds
  the image, slot 1 its mirror image, each encoded — E(flip(x)) is not flip(E(x)), the encoder is
  not equivariant to flips. ``std.npy`` is absent for a VQ autoencoder.
- ``captions.json``: the N captions as text. Not token ids: the tokenizer of a jointly trained text
  encoder is learnt from the captions when ``ldmkit train`` starts, after the cache is built, and
  tokenizing a batch costs microseconds next to a UNet step.
- ``cache.json``, the manifest, written last and atomically: the count, shapes, dtype, the sha256 of
  the autoencoder's weights and the `DataConfig` the cache was made from. A folder without it is an
  unfinished build and is refused, as is a cache of another autoencoder or other data.

A build writes into a hidden temporary folder (``.NAME.*.partial`` beside the cache folder, or
``.cache.*.partial`` inside it when the folder exists already) and moves the finished files into place at the
end, the manifest last, so an interrupted build (Ctrl-C, an error) leaves the cache folder as it was — absent,
or as the user left it — and its temporary folder removed; running it again starts afresh (a build has nothing
to resume: it is one pass of the encoder).

`LatentCache` reads a cache as a map-style dataset with the same index order as the images it came
from. Inside `ldmkit.train.common.TrainingItems` the torch RNG is seeded per item before
``__getitem__``, and the cache draws its flip as the image datasets do (one ``torch.rand(()) < 0.5``
when flips are on), so training from the cache sees the same flip of the same item at the same step.

Streams of tar shards are refused: their order is not an index, so a cache of them could not keep
the order and flips of training from the shards. Cache the folder they were packed from instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ldmkit.autoencoder import KLAutoencoder
from ldmkit.autoencoder.folder import WEIGHTS, load_autoencoder
from ldmkit.config import DataConfig, from_dict, to_dict
from ldmkit.data.collate import collate
from ldmkit.data.dataset import DataError, build_dataset
from ldmkit.device import resolve_device
from ldmkit.progress import tqdm
from ldmkit.storage import atomic_path, sha256_file
from ldmkit.errors import UsageError

MANIFEST = "cache.json"
CAPTIONS = "captions.json"
MEAN, STD = "mean.npy", "std.npy"
FORMAT = 1
DTYPES = ("float16", "float32")


def autoencoder_checksum(autoencoder_dir: str | Path) -> str:
    """sha256 of the autoencoder folder's weights file (which also holds its scale_factor)."""
    return sha256_file(Path(autoencoder_dir) / WEIGHTS)


def cache_key(data: DataConfig) -> DataConfig:
    """The data config a cache is matched on: ``latent_cache`` itself left out."""
    return dataclasses.replace(data, latent_cache="")


def check_condition(kind: str) -> None:
    """The cache holds latents and captions only: the image conditions (sr, inpaint, colorize) need the
    images, and class labels are not stored."""
    if kind != "text":
        raise DataError(f"data.latent_cache supports text-conditioned models only, not condition.kind {kind!r}")


# --------------------------------------------------------------------------------------------------
# building


def build_latent_cache(autoencoder_dir: str | Path, data: DataConfig, out: str | Path, batch_size: int = 32,
                       device: str = "auto", dtype: str = "float16", progress: bool = True) -> Path:
    """Encode every item of ``build_dataset(data)`` (and its mirror image if ``data.hflip``) into ``out``.

    Stores μ(x) and σ(x) of q(z | x) unscaled (see the module docstring). Built in a temporary folder and
    moved into place at the end: an interrupted or failed build leaves ``out`` as it was and no temporary
    folder behind. ``out`` is created (renamed from the temporary folder beside it), or an existing folder is
    used (the files built in a hidden folder inside it are moved in, replacing those of an unfinished build,
    the manifest last; other files stay). ``out`` must not hold a finished cache, nor be a file.
    """
    if dtype not in DTYPES:
        raise UsageError(f"unknown cache dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    out = Path(out)
    if (out / MANIFEST).exists():
        raise DataError(f"{out} already holds a latent cache; choose another folder or delete it")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file, not a folder; a latent cache is a folder")
    key = cache_key(data)
    dataset = build_dataset(dataclasses.replace(key, hflip=False))  # the mirror image is encoded beside each item
    if isinstance(dataset, IterableDataset):
        raise DataError(f"data.source {data.source!r} is a stream of shards; a latent cache needs an indexed "
                        "dataset: cache the image folder the shards were packed from")
    dev = resolve_device(device)
    autoencoder = load_autoencoder(autoencoder_dir).to(dev)
    kl = isinstance(autoencoder, KLAutoencoder)
    f = autoencoder.downsample_factor
    n, flips = len(dataset), 2 if data.hflip else 1
    shape = (n, flips, autoencoder.latent_channels, data.image_size // f, data.image_size // f)

    if out.is_dir():  # the user's folder: the build goes in a hidden folder inside it (its parent may be read-only)
        work = Path(tempfile.mkdtemp(dir=out, prefix=".cache.", suffix=".partial"))
    else:
        parent = Path(os.path.abspath(out)).parent
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)  # a plain mkdir's mode, not mkdtemp's private 0700
        _encode(autoencoder, autoencoder_dir, dataset, key, shape, flips, batch_size, dev, dtype, progress, work)
        _move_into_place(work, out, kl)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out


def _encode(autoencoder, autoencoder_dir, dataset, key: DataConfig, shape: tuple, flips: int, batch_size: int,
            dev, dtype: str, progress: bool, out: Path) -> None:
    """Write the arrays, the captions and the manifest of a cache into the (new, empty) folder ``out``."""
    kl = isinstance(autoencoder, KLAutoencoder)
    n = shape[0]
    mean = np.lib.format.open_memmap(out / MEAN, mode="w+", dtype=dtype, shape=shape)
    std = np.lib.format.open_memmap(out / STD, mode="w+", dtype=dtype, shape=shape) if kl else None
    captions: list[str] = []
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    with tqdm(total=n, desc="encoding", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        start = 0
        for batch in loader:
            images = batch["images"].to(dev)
            rows = slice(start, start + len(images))
            for slot in range(flips):
                mu, sigma = encode_moments(autoencoder, images.flip(-1) if slot else images)
                mean[rows, slot] = mu.cpu().numpy()
                if std is not None:
                    std[rows, slot] = sigma.cpu().numpy()
                if not (np.isfinite(mean[rows, slot]).all() and (std is None or np.isfinite(std[rows, slot]).all())):
                    raise DataError(f"a latent of items {rows.start}..{rows.stop - 1} is not finite in {dtype}"
                                    + (" (beyond its range: use --dtype float32)" if dtype == "float16" else ""))
            captions.extend(batch["caption"])
            start = rows.stop
            bar.update(len(images))
    for array in (mean, std):
        if array is not None:
            array.flush()
    del mean, std
    with atomic_path(out / CAPTIONS) as tmp:
        tmp.write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    manifest = {
        "format": FORMAT, "count": n, "flips": flips, "latent_shape": list(shape[2:]), "dtype": dtype,
        "autoencoder": {"kind": "kl" if kl else "vq", "sha256": autoencoder_checksum(autoencoder_dir),
                        "config": to_dict(autoencoder.config)},
        "data": to_dict(key),
        "skipped": sorted(str(p) for p in getattr(dataset, "skipped", ())),
    }
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _move_into_place(work: Path, out: Path, kl: bool) -> None:
    """Make the finished cache in ``work`` the folder ``out``: one rename where ``out`` does not exist, else
    each file moved into the existing folder (an unfinished build's arrays replaced, a VQ cache's stale std.npy
    removed), the manifest last, so that ``out`` is never taken for a finished cache before it is one."""
    if (out / MANIFEST).exists():  # finished by another build meanwhile
        raise DataError(f"{out} already holds a latent cache; choose another folder or delete it")
    if not out.exists():
        try:
            os.replace(work, out)  # the whole cache appears at once
            return
        except OSError:
            if not out.is_dir():  # (created meanwhile: moved in file by file below)
                raise
    for name in (MEAN, STD, CAPTIONS):
        if (work / name).exists():
            os.replace(work / name, out / name)
    if not kl:
        (out / STD).unlink(missing_ok=True)  # left by an unfinished build with a KL autoencoder
    os.replace(work / MANIFEST, out / MANIFEST)


@torch.no_grad()
def encode_moments(autoencoder, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(μ(x), σ(x)) of a KL autoencoder's posterior, or (z_e, None) for VQ; unscaled, fp32."""
    if hasattr(autoencoder, "posterior"):
        posterior = autoencoder.posterior(images)
        return posterior.mean, posterior.std
    return autoencoder.encode(images), None


# --------------------------------------------------------------------------------------------------
# reading


class LatentCache(Dataset):
    """A cache folder as a dataset. Item i: ``{"mean": c×h×w, "std": c×h×w (KL only), "caption": str}``
    in the cache's dtype, the mirror image's moments with probability ½ when the cache holds flips.

    The arrays are opened lazily in each process (DataLoader workers included) and never pickled.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DataError(f"latent cache not found: {self.folder} (make it with `ldmkit data cache`)")
        path = self.folder / MANIFEST
        if not path.is_file():
            raise DataError(f"{self.folder} is not a complete latent cache: it has no {MANIFEST} "
                            "(an interrupted `ldmkit data cache`? build it again into an empty folder)")
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
            self.count, self.flips = int(self.manifest["count"]), int(self.manifest["flips"])
            self.kl = self.manifest["autoencoder"]["kind"] == "kl"
            shape = (self.count, self.flips, *self.manifest["latent_shape"])
            self.captions: list[str] = json.loads((self.folder / CAPTIONS).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: unreadable latent cache manifest or captions ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{path}: latent cache format {self.manifest.get('format')!r}, "
                            f"this ldmkit reads {FORMAT}")
        if len(self.captions) != self.count:
            raise DataError(f"{self.folder / CAPTIONS} holds {len(self.captions)} captions, the manifest {self.count}")
        for name in (MEAN, STD) if self.kl else (MEAN,):
            array = self._open(name)
            if array.shape != shape or array.dtype != np.dtype(self.manifest["dtype"]):
                raise DataError(f"{self.folder / name} is {array.dtype} {array.shape}, the manifest says "
                                f"{self.manifest['dtype']} {shape}; build the cache again")
        self._arrays: dict[str, np.ndarray] = {}

    def _open(self, name: str) -> np.ndarray:
        try:
            return np.load(self.folder / name, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{self.folder / name} is not a readable latent array ({e}); build the cache again") from None

    def check(self, autoencoder_dir: str | Path, data: DataConfig) -> None:
        """Refuse a cache made by other autoencoder weights or from other data than ``data``."""
        if self.manifest["autoencoder"]["sha256"] != autoencoder_checksum(autoencoder_dir):
            raise DataError(f"the latent cache {self.folder} was built with another autoencoder than {autoencoder_dir} "
                            "(weights checksum differs); rebuild it with `ldmkit data cache`")
        built = to_dict(from_dict(DataConfig, self.manifest["data"], "data"))
        wanted = to_dict(cache_key(data))
        for name in wanted:
            if built[name] != wanted[name]:
                raise DataError(f"the latent cache {self.folder} was built from data.{name} = {built[name]!r}, this "
                                f"config has {wanted[name]!r}; rebuild it with `ldmkit data cache`")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        if not -self.count <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} cached latents")
        if not self._arrays:
            self._arrays = {name: self._open(name) for name in ((MEAN, STD) if self.kl else (MEAN,))}
        # the same draw, from the same seeded RNG, as an image dataset's flip
        slot = 1 if self.flips == 2 and torch.rand(()) < 0.5 else 0
        item = {"mean": torch.from_numpy(np.array(self._arrays[MEAN][index, slot]))}
        if self.kl:
            item["std"] = torch.from_numpy(np.array(self._arrays[STD][index, slot]))
        item["caption"] = self.captions[index]
        return item

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}

    def __repr__(self) -> str:
        return (f"LatentCache({str(self.folder)!r}): {self.count} items × {self.flips} flip(s), "
                f"{self.manifest['dtype']} {self.manifest['latent_shape']}")


def open_latent_cache(data: DataConfig, autoencoder_dir: str | Path, condition_kind: str) -> LatentCache:
    """The training dataset when ``data.latent_cache`` is set: checked against the autoencoder and ``data``."""
    check_condition(condition_kind)
    cache = LatentCache(data.latent_cache)
    cache.check(autoencoder_dir, data)
    return cache


def cached_latents(batch: dict, posterior_noise: torch.Tensor | None, scale_factor: torch.Tensor,
                   device: torch.device) -> torch.Tensor:
    """z_0 = s · (μ + σ ⊙ ε) from a batch of cached moments (s · z_e for VQ), in fp32 on ``device``:
    the same z_0 `ldmkit.train.diffusion.encode_latents` forms from the images, up to the cache's rounding."""
    z = batch["mean"].to(device, torch.float32)
    if "std" in batch:
        z = z + batch["std"].to(device, torch.float32) * posterior_noise
    return z * scale_factor
