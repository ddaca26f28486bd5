"""Data at scale: WebDataset shards (pack, stream, split across ranks and workers, resume), COCO
captions, and unreadable images reported from DataLoader workers."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ldmkit.cli import main
from ldmkit.config import DataConfig, load_preset
from ldmkit.data import DataError, build_dataset, image_to_tensor, shapes_sample
from ldmkit.data.coco import CocoCaptions
from ldmkit.data.shapes_dataset import ShapesDataset
from ldmkit.data.shards import ShardDataset, expand_shards, is_shard_source
from ldmkit.train.common import SkipReport, make_loader
from ldmkit.train.distributed import Distributed

SINGLE = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # much faster on a busy 2-core machine
    yield
    torch.set_num_threads(threads)


def pack_shapes(out: Path, num: int, shard_size: int) -> Path:
    assert main(["data", "pack", "shapes", "--out", str(out), "--num-samples", str(num),
                 "--shard-size", str(shard_size), "--image-size", "16"]) == 0
    return out


def add_corrupt_sample(shard: Path, key: str = "99999999") -> None:
    with tarfile.open(shard, "a") as t:
        for name, data in [(f"{key}.png", b"this is not a png"), (f"{key}.txt", b"a broken picture")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def keys(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def test_pack_shapes_and_read_back(tmp_path):
    out = pack_shapes(tmp_path / "shards", num=20, shard_size=8)
    assert sorted(p.name for p in out.glob("*.tar")) == ["000000.tar", "000001.tar", "000002.tar"]
    assert is_shard_source(str(out)) and is_shard_source(str(out / "{000000..000002}.tar"))
    assert expand_shards(str(out / "{000000..000002}.tar")) == [str(p) for p in sorted(out.glob("*.tar"))]
    items = list(ShardDataset(str(out), image_size=16))
    assert len(items) == 20
    for i in (0, 13):
        image, caption, _ = shapes_sample(0, i, 16)
        assert items[i]["caption"] == caption
        assert torch.equal(items[i]["images"], image_to_tensor(image))  # PNG: lossless
    assert ShardDataset(str(out), 16).read_captions(3) == [it["caption"] for it in items[:3]]
    with pytest.raises(DataError, match="shard not found"):
        expand_shards(str(out / "{000000..000005}.tar"))


def test_pack_shapes_holds_the_dataset_items_of_the_same_scene_options(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["data", "pack", "shapes", "--out", str(out), "--num-samples", "12", "--image-size", "16",
                 "--seed", "3", "--two-object-share", "1"]) == 0
    expected = ShapesDataset(16, 12, seed=3, max_objects=2, two_object_share=1.0)
    items = list(ShardDataset(str(out), image_size=16))
    assert [it["caption"] for it in items] == [expected[i]["caption"] for i in range(12)]
    assert all(len(expected[i]["scene"].objects) == 2 for i in range(12))
    assert main(["data", "pack", "shapes", "--out", str(tmp_path / "one"), "--num-samples", "6",
                 "--image-size", "16", "--max-objects", "1"]) == 0
    one = ShapesDataset(16, 6, max_objects=1)
    assert [it["caption"] for it in ShardDataset(str(tmp_path / "one"), 16)] == [one[i]["caption"] for i in range(6)]
    with pytest.raises(SystemExit) as e:
        main(["data", "pack", "shapes", "--out", str(tmp_path / "bad"), "--two-object-share", "1.5"])
    assert e.value.code == 2 and "in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_pack_folder_leaves_out_unreadable_files(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"picture {i}")
    (folder / "bad.png").write_bytes(b"not a png")
    assert main(["data", "pack", str(folder), "--out", str(tmp_path / "shards")]) == 0
    assert "bad.png" in capsys.readouterr().err
    items = list(ShardDataset(str(tmp_path / "shards"), image_size=16))
    assert [it["caption"] for it in items] == [f"picture {i}" for i in range(4)]


@pytest.mark.parametrize("files, message", [
    ({"a.png": b"not a png", "b.jpg": b"nor a jpeg"}, "none of the 2 images in .* could be read \\(a.png, b.jpg\\)"),
    ({"notes.txt": b"no image here"}, "no images in "),
])
def test_pack_of_a_folder_with_nothing_to_pack_is_one_line_and_writes_nothing(tmp_path, capsys, files, message):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "new" / "shards"
    assert main(["data", "pack", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "new").exists()  # not even the --out folder


def test_ranks_read_disjoint_parts_and_workers_keep_the_order(tmp_path):
    out = pack_shapes(tmp_path / "shards", num=24, shard_size=4)  # 6 shards
    shards = ShardDataset(str(out), image_size=16, shuffle_buffer=5)
    per_rank = [list(itertools.islice(iter(shards.batches(3, seed=1, rank=r, world_size=2, start_step=0)), 4))
                for r in range(2)]
    a, b = keys(per_rank[0]), keys(per_rank[1])
    assert len(set(a) | set(b)) == 24, "one epoch over both ranks reads every sample once"
    # with 2 DataLoader workers per rank the order is as fixed as with none (but not the same order)
    stream = shards.batches(3, seed=1, rank=0, world_size=1, start_step=0)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    first = keys(itertools.islice(iter(loader), 8))
    again = keys(itertools.islice(iter(DataLoader(stream, batch_size=None, num_workers=2)), 8))
    assert first == again and len(set(first)) == 24


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_where_it_stopped(tmp_path, workers):
    out = pack_shapes(tmp_path / "shards", num=20, shard_size=5)
    shards = ShardDataset(str(out), image_size=16, shuffle_buffer=4)

    def run(start: int, n: int) -> list[str]:
        stream = shards.batches(3, seed=7, rank=0, world_size=1, start_step=start)
        return keys(itertools.islice(iter(DataLoader(stream, batch_size=None, num_workers=workers)), n))

    whole = run(0, 9)  # crosses into the second epoch
    assert run(5, 4) == whole[15:]


def test_corrupt_image_in_shards_trains_and_is_reported(tmp_path, capsys):
    from ldmkit.train.autoencoder import train_autoencoder

    out = pack_shapes(tmp_path / "shards", num=16, shard_size=8)
    add_corrupt_sample(out / "000001.tar")
    preset = load_preset("tiny")
    preset = dataclasses.replace(
        preset, data=dataclasses.replace(preset.data, source=str(out)),
        autoencoder_train=dataclasses.replace(preset.autoencoder_train, tensorboard=False),
    )
    with pytest.warns(UserWarning, match="99999999"):
        train_autoencoder(preset, tmp_path / "ae", steps=3, progress=False)
    assert "skipped 1 unreadable image(s): 000001.tar/99999999.png" in capsys.readouterr().err
    assert (tmp_path / "ae" / "autoencoder.safetensors").is_file()


def coco_layout(root: Path) -> Path:
    """coco/annotations/captions_val2017.json and coco/val2017/ with 3 images (one missing)."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, image_id in enumerate((42, 7, 99)):
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": 30, "height": 20})
        if image_id != 99:  # image 99 is listed but missing
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "val2017" / name)
        for j in range(2):
            annotations.append({"image_id": image_id, "id": 10 * i + j, "caption": f" photo {image_id} take {j} "})
    path = root / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_captions(tmp_path):
    annotations = coco_layout(tmp_path / "coco")
    with pytest.raises(DataError, match="coco_annotations"):
        build_dataset(DataConfig(source="coco", image_size=16))
    ds = build_dataset(DataConfig(source="coco", coco_annotations=str(annotations), image_size=16))
    assert isinstance(ds, CocoCaptions) and len(ds) == 6
    assert ds.captions[:2] == ["photo 7 take 0", "photo 7 take 1"]  # sorted by file name, caption id
    assert ds[0]["images"].shape == (3, 16, 16)
    with pytest.warns(UserWarning, match="000000000099.jpg"):
        item = ds[4]  # image 99 is missing: falls through to the next readable pair
    assert item["caption"] == "photo 7 take 0"
    assert {p.name for p in ds.skipped} == {"000000000099.jpg"}


@pytest.mark.parametrize("change, message", [
    ({"caption": None}, r'the annotation of id 1 \(image_id 42\): no string "caption" field \(got None\)'),
    ({"image_id": 5}, r'the annotation of id 1 \(image_id 5\): no record of the "images" list has id 5'),
])
def test_a_coco_record_that_is_not_one_is_named(tmp_path, change, message):
    """A null caption would train as the text "None"; an image_id no image has read "(missing 5)"."""
    annotations = coco_layout(tmp_path / "coco")
    data = json.loads(annotations.read_text())
    record = next(a for a in data["annotations"] if a["id"] == 1)
    record.update(change)
    annotations.write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"^{re.escape(str(annotations))}: {message}$"):
        build_dataset(DataConfig(source="coco", coco_annotations=str(annotations), image_size=16))


def test_skips_found_by_dataloader_workers_reach_the_report(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"broken")
    dataset = build_dataset(DataConfig(source=str(folder), image_size=8))
    report = SkipReport()
    for batch in make_loader(dataset, 4, seed=0, start_step=0, total_steps=4, num_workers=2, ctx=SINGLE):
        report.take(batch)
        assert "skipped" not in batch
    assert not dataset.skipped, "the workers' copies found it, not the main process's"
    report.report(dataset, SINGLE)
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err and "bad.png" in report.found.pop()
