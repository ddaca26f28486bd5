"""WebDataset tar shards of image + caption: streamed for training, written by ``ldmkit data pack``.

A shard is a plain tar file; the files of one sample share a key: ``00000042.png`` (or .jpg, .jpeg,
.webp, .bmp) and ``00000042.txt`` (the caption; a ``.json`` with a "caption" or "text" field also
works). This is the layout of LAION-style datasets and of the ``webdataset`` library, which reads
the tars here (local files, or any URL it can open: ``https://…``, ``pipe:curl …``).

Streaming order, for ``world_size`` ranks each with ``num_workers`` DataLoader workers, i.e.
R = world_size × max(1, num_workers) readers: epoch e shuffles the shard list by (seed, e); reader j
reads shards j, j + R, j + 2R, … of that order (with fewer shards than readers, every reader reads
all shards and keeps every R-th sample), mixes them in a ``shuffle_buffer`` seeded by
(seed, e, j), and cuts batches of the rank's share of the global batch. Every rank thus reads its
own part of the data, and the order is a pure function of the seed for a given R.

Resuming at step S, each reader skips the samples it had consumed in its first S batches, reading
them without decoding, so the run continues where it stopped and (with the same world size and
number of workers) reads exactly the batches an uninterrupted run would have. Unlike a map-style
dataset, a stream's order depends on R: runs with different numbers of processes see the same data
in a different order.

A sample whose image does not decode is skipped, reported in the batch's ``"skipped"`` list, and
replaced by another sample of the same batch, so each batch still holds one sample per consumed
position and the resume arithmetic stays exact.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ldmkit.data.collate import collate
from ldmkit.data.imagefolder import ImageFolderDataset
from ldmkit.data.shapes import check_scene_options
from ldmkit.data.shapes_dataset import shapes_sample
from ldmkit.errors import DataError
from ldmkit.images import center_crop_resize, image_to_tensor, load_image
from ldmkit.progress import tqdm

IMAGE_KEYS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp", "bmp")
_URL_PREFIXES = ("http://", "https://", "pipe:", "gs://", "s3://", "ais://", "hf://")
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix64 steps), so that nearby inputs such as
    (seed, step) and (seed, step + 1) give unrelated random streams."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x >> 1


def _webdataset():
    """The webdataset package, or a `DataError` saying how to get it (it is an optional dependency)."""
    try:
        import webdataset
    except ImportError:
        raise DataError("tar shards need the webdataset package: pip install webdataset") from None
    return webdataset


def is_shard_source(source: str) -> bool:
    """Whether a ``data.source`` names tar shards: ``….tar`` (a file, URL or brace pattern), or a
    folder whose top level holds ``.tar`` files."""
    if source.endswith(".tar"):
        return True
    path = Path(source).expanduser()
    return path.is_dir() and any(p.suffix == ".tar" for p in path.iterdir())


def expand_shards(source: str) -> list[str]:
    """The shard URLs of a source: brace patterns expanded (``{000000..000009}.tar``), a folder's
    ``*.tar`` files in name order; local files must exist."""
    _webdataset()
    from braceexpand import braceexpand  # a dependency of webdataset

    path = Path(source).expanduser()
    if path.is_dir():
        urls = sorted(str(p) for p in path.glob("*.tar"))
    else:
        urls = list(braceexpand(source))
    if not urls:
        raise DataError(f"no .tar shards in {source}")
    missing = [u for u in urls if not u.startswith(_URL_PREFIXES) and not os.path.isfile(os.path.expanduser(u))]
    if missing:
        raise DataError(f"shard not found: {missing[0]} ({len(missing)} of {len(urls)} missing)")
    return [u if u.startswith(_URL_PREFIXES) else os.path.expanduser(u) for u in urls]


def _raw_samples(url: str, errors: list[str]) -> Iterator[dict]:
    """The samples of one shard, undecoded ({"__key__", "png": bytes, "txt": bytes, …}).

    A shard that cannot be opened or breaks off (truncated tar) ends early; the reason goes to ``errors``.
    """
    tarfile_samples = _webdataset().tariterators.tarfile_samples

    def on_error(exn: Exception) -> bool:
        errors.append(f"{Path(url).name}: {type(exn).__name__}: {str(exn.args[0]) if exn.args else exn}")
        return True  # go on with the next sample or shard

    yield from tarfile_samples([{"url": url}], handler=on_error)


def _caption(sample: dict) -> str:
    if "txt" in sample:
        return sample["txt"].decode("utf-8", errors="replace").strip()
    if "json" in sample:
        try:
            record = json.loads(sample["json"])
        except ValueError:
            return ""
        text = record.get("caption", record.get("text", "")) if isinstance(record, dict) else ""
        return text if isinstance(text, str) else ""
    return ""


def _name(sample: dict) -> str:
    ext = next((k for k in IMAGE_KEYS if k in sample), "?")
    return f"{Path(sample.get('__url__', '')).name}/{sample.get('__key__')}.{ext}"


def _shuffled(samples: Iterable[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Samples mixed in a buffer of ``size``: each new sample swaps out a random buffered one."""
    if size <= 1:
        yield from samples
        return
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


class ShardDataset(IterableDataset):
    """A set of tar shards: iterated in file order (`__iter__`, `read_captions`) or as the training
    stream of one rank (`batches`). Items: ``{"images": 3×H×W in [-1, 1], "caption": str, "key": str}``,
    the key naming the shard and sample ("000003.tar/00000042.png")."""

    def __init__(self, source: str, image_size: int, hflip: bool = False, shuffle_buffer: int = 1000):
        self.source = source
        self.urls = expand_shards(source)
        self.image_size, self.hflip, self.shuffle_buffer = image_size, hflip, shuffle_buffer
        self.skipped: set[str] = set()  # what `__iter__` found unreadable (the training stream reports per batch)

    def decode(self, sample: dict) -> dict:
        """The item of a raw sample; raises `DataError` when it has no image or the image does not decode."""
        ext = next((k for k in IMAGE_KEYS if k in sample), None)
        if ext is None:
            raise DataError(f"{_name(sample)}: no image entry ({', '.join(IMAGE_KEYS)})")
        try:
            images = image_to_tensor(load_image(io.BytesIO(sample[ext])), self.image_size)
        except _UNREADABLE as e:
            raise DataError(f"{_name(sample)}: {e}") from None
        if self.hflip and torch.rand(()) < 0.5:
            images = images.flip(-1)
        return {"images": images, "caption": _caption(sample), "key": _name(sample)}

    def raw(self) -> Iterator[dict]:
        """Every sample of every shard, in file order, undecoded."""
        errors: list[str] = []
        for url in self.urls:
            yield from _raw_samples(url, errors)
        for e in errors:
            warnings.warn(f"unreadable shard data: {e}")

    def __iter__(self) -> Iterator[dict]:
        for sample in self.raw():
            try:
                yield self.decode(sample)
            except DataError as e:
                self.skipped.add(_name(sample))
                warnings.warn(f"skipping unreadable image {e}")

    def check_readable(self) -> None:
        """`DataError` unless a sample of the shards decodes (read in file order up to the first that does), naming
        the first thing that did not: what a run checks before it writes anything."""
        errors: list[str] = []
        for url in self.urls:
            for sample in _raw_samples(url, errors):
                try:
                    self.decode(sample)
                    return
                except DataError as e:
                    errors.append(str(e))
        raise DataError(f"no readable samples in {self.source}" + (f": {errors[0]}" if errors else " (empty shards)"))

    def read_captions(self, limit: int) -> list[str]:
        """The first ``limit`` captions, read without decoding images."""
        return [_caption(s) for s in itertools.islice(self.raw(), limit)]

    def batches(self, batch_size: int, seed: int, rank: int, world_size: int, start_step: int) -> ShardBatches:
        """The stream of this rank's batches of ``batch_size`` from step ``start_step`` on."""
        return ShardBatches(self, batch_size, seed, rank, world_size, start_step)

    def __repr__(self) -> str:
        return f"ShardDataset({self.source!r}): {len(self.urls)} shards"


class ShardBatches(IterableDataset):
    """One rank's endless stream of collated batches (with a ``"skipped"`` list each); see the module
    docstring for the order. Give it to a DataLoader with ``batch_size=None``."""

    def __init__(self, shards: ShardDataset, batch_size: int, seed: int, rank: int, world_size: int,
                 start_step: int):
        self.shards, self.batch_size, self.seed = shards, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step

    def _reader_stream(self, reader: int, readers: int, errors: list[str]) -> Iterator[dict]:
        """The raw samples of reader ``reader`` of ``readers``, epoch after epoch, endlessly."""
        urls = self.shards.urls
        for epoch in itertools.count():
            order = list(urls)
            random.Random(mix_seed(self.seed, epoch)).shuffle(order)
            if len(order) >= readers:
                samples = (s for u in order[reader::readers] for s in _raw_samples(u, errors))
            else:  # too few shards to share out: everyone reads all, keeps every R-th sample
                every = (s for u in order for s in _raw_samples(u, errors))
                samples = (s for i, s in enumerate(every) if i % readers == reader)
            n = 0
            rng = random.Random(mix_seed(self.seed, epoch, reader))
            for sample in _shuffled(samples, self.shards.shuffle_buffer, rng):
                n += 1
                yield sample
            if n == 0:
                raise DataError(f"reader {reader} of {readers} found no samples in {self.shards.source}: {errors[:1]}")

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # The DataLoader takes batch k of the resumed run from worker k mod W. Worker w therefore
        # plays the part that worker (w + start_step) mod W played for those steps in the
        # uninterrupted run, and skips the batches that part had already produced.
        role = (worker + self.start_step) % workers
        done = max(0, -(-(self.start_step - role) // workers))  # steps s < start_step with s ≡ role (mod W)
        reader = self.rank * workers + role
        errors: list[str] = []
        stream = self._reader_stream(reader, self.world_size * workers, errors)
        for _ in itertools.islice(stream, done * self.batch_size):
            pass  # read, not decoded
        position = done * self.batch_size
        reported = 0
        while True:
            raw = list(itertools.islice(stream, self.batch_size))
            items, skipped = [], []
            for sample in raw:
                # the flip of a sample is a function of where it sits in this reader's stream
                torch.manual_seed(mix_seed(self.seed, reader, position))
                position += 1
                try:
                    items.append(self.shards.decode(sample))
                except DataError as e:
                    skipped.append(_name(sample))
                    warnings.warn(f"skipping unreadable image {e}")
            while not items:  # a whole batch unreadable: read on (the resume position drifts, rarely)
                sample = next(stream)
                try:
                    items.append(self.shards.decode(sample))
                except DataError:
                    skipped.append(_name(sample))
            # stand-ins for unreadable samples keep one item per consumed position
            items += [items[i % len(items)] for i in range(self.batch_size - len(items))]
            batch = collate(items)
            batch["skipped"] = [skipped + errors[reported:]]
            reported = len(errors)
            yield batch


# --------------------------------------------------------------------------------------------------
# Writing shards


@dataclass(frozen=True)
class ShardSample:
    key: str
    image: bytes  # encoded image file
    ext: str  # its format: png, jpg, …
    caption: str


def write_shards(samples: Iterable[ShardSample], out: str | Path, shard_size: int, total: int | None = None,
                 progress: bool = False) -> list[Path]:
    """Write ``samples`` into ``out/000000.tar``, ``out/000001.tar``, … of ``shard_size`` samples each.

    The shards are written into a temporary folder beside ``out`` and moved into ``out`` once the last is
    complete (the folder renamed as a whole where ``out`` is new or empty), so an interrupted pack (Ctrl-C, an
    error) leaves no shard in ``out``: a set of shards there is always the whole pack. ``out`` is created only
    then, so a source that yields none (a DataError) leaves nothing behind; no samples at all is a DataError
    too. An ``out`` that is a symbolic link is written through: the shards go into its target, the link stays.
    ``total``: the number of samples expected, for the progress bar (``progress``)."""
    TarWriter = _webdataset().TarWriter

    if shard_size < 1:
        raise ValueError(f"shard size {shard_size}; must be at least 1")
    out = Path(out)
    samples = iter(samples)
    chunk = list(itertools.islice(samples, shard_size))
    if not chunk:
        raise DataError(f"no samples to write into {out}; nothing was written")
    dest = Path(os.path.realpath(out))  # a link's target: a folder cannot be renamed onto a link
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".packing"))
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a plain mkdir's mode, not mkdtemp's private 0700
    names: list[str] = []
    try:
        with tqdm(total=total, desc="packing", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            while chunk:
                name = f"{len(names):06d}.tar"
                with open(tmp / name, "wb") as f:
                    # mtime fixed: the same samples give byte-identical shards
                    with TarWriter(f, encoder=False, mtime=0.0) as writer:
                        for s in chunk:
                            writer.write({"__key__": s.key, s.ext: s.image, "txt": s.caption.encode("utf-8")})
                    f.flush()
                    os.fsync(f.fileno())
                names.append(name)
                bar.update(len(chunk))
                chunk = list(itertools.islice(samples, shard_size))
        if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
            os.replace(tmp, dest)  # all shards appear at once
        else:  # a folder holding other files (no shards: `ldmkit data pack` refuses those)
            for name in names:
                os.replace(tmp / name, dest / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in names]


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shapes_samples(num_samples: int, image_size: int, seed: int = 0, max_objects: int = 2,
                   two_object_share: float = 0.5) -> Iterator[ShardSample]:
    """The built-in shapes scenes 0 … num_samples − 1 as PNG samples: the items of
    ``ShapesDataset(image_size, num_samples, seed, max_objects, two_object_share)``."""
    check_scene_options(max_objects, two_object_share)  # now, not at the first sample
    for i in range(num_samples):
        image, caption, _ = shapes_sample(seed, i, image_size, max_objects, two_object_share)
        yield ShardSample(f"{i:08d}", encode_png(image), "png", caption)


def folder_samples(root: str | Path, image_size: int | None, skipped: list[str]) -> Iterator[ShardSample]:
    """The images of a captioned image folder (see `ImageFolderDataset`) as samples.

    Without ``image_size`` the files go in as they are (no re-encoding); with it they are
    centre-cropped, resized and stored as PNG. Files that do not decode are left out and named in
    ``skipped``. The folder is listed now (a DataError for one without images); the samples are made as they
    are drawn, and a folder none of whose images decodes is a DataError once that is known, before a sample.
    """
    folder = ImageFolderDataset(root, image_size or 1)
    return _decoded_samples(folder, image_size, skipped)


def _decoded_samples(folder: ImageFolderDataset, image_size: int | None, skipped: list[str]) -> Iterator[ShardSample]:
    """`folder_samples`' samples, made one by one; DataError when none of the folder's images decodes."""
    made = 0
    for i, (path, caption) in enumerate(zip(folder.paths, folder.captions)):
        try:
            image = load_image(path)  # decoded even when stored as is: a broken file stays out
        except _UNREADABLE:
            skipped.append(str(path))
            continue
        made += 1
        if image_size is None:
            ext = path.suffix.lower().lstrip(".")
            yield ShardSample(f"{i:08d}", path.read_bytes(), "jpg" if ext == "jpeg" else ext, caption)
        else:
            yield ShardSample(f"{i:08d}", encode_png(center_crop_resize(image, image_size)), "png", caption)
    if not made:
        shown = ", ".join(Path(p).name for p in skipped[:5]) + (", …" if len(skipped) > 5 else "")
        raise DataError(f"none of the {len(folder.paths)} images in {folder.root} could be read ({shown}); "
                        "nothing to pack")

