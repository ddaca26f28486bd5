"""ldmkit.data: the shapes dataset, image folders, batching and image helpers."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.config import DataConfig
from ldmkit.images import to_8bit, to_rgb
from ldmkit.data import (
    BACKGROUND,
    COLORS,
    POSITIONS,
    RELATIONS,
    RGB,
    SHAPES,
    SIZES,
    DataError,
    ImageFolderDataset,
    Scene,
    ShapeObject,
    ShapesDataset,
    build_dataset,
    caption_scene,
    collate,
    image_to_tensor,
    parse_prompt,
    prompt_matches_scene,
    render_scene,
    sample_scene,
    save_grid,
    shapes_sample,
    tensor_to_pil,
)

# --------------------------------------------------------------------------------------------------
# shapes


def colour_mask(image: Image.Image, color: str, tol: float = 40.0) -> np.ndarray:
    """Pixels within ``tol`` of a palette colour; anti-aliased edges blend with the background
    and fall outside."""
    array = np.asarray(image, dtype=np.float32)
    return np.linalg.norm(array - np.array(RGB[color], dtype=np.float32), axis=-1) < tol


def centre_of_mass(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return xs.mean() / mask.shape[1], ys.mean() / mask.shape[0]


def test_palette_is_well_separated():
    colours = [RGB[c] for c in COLORS] + [BACKGROUND]
    assert len(COLORS) == 8 and len(SHAPES) >= 6
    for i, a in enumerate(colours):
        for b in colours[i + 1 :]:
            assert np.linalg.norm(np.subtract(a, b)) > 90


def test_items_are_deterministic_from_seed_and_index():
    a, b = ShapesDataset(seed=0, num_samples=100), ShapesDataset(seed=0, num_samples=100)
    assert torch.equal(a[7]["images"], b[7]["images"])
    assert a[7]["caption"] == b[7]["caption"] and a[7]["scene"] == b[7]["scene"]
    assert torch.equal(a[7]["images"], a[7]["images"])
    other = ShapesDataset(seed=1, num_samples=100)
    assert any(not torch.equal(a[i]["images"], other[i]["images"]) for i in range(5))
    assert not torch.equal(a[7]["images"], a[8]["images"])
    assert torch.equal(a[-1]["images"], a[99]["images"])
    with pytest.raises(IndexError):
        a[100]


@pytest.mark.parametrize("size", [32, 64, 96])
def test_any_image_size(size):
    item = ShapesDataset(image_size=size, num_samples=10)[3]
    assert item["images"].shape == (3, size, size) and item["images"].dtype == torch.float32
    assert item["images"].min() >= -1 and item["images"].max() <= 1
    # the same picture at every size: same caption and scene
    assert item["caption"] == ShapesDataset(image_size=64, num_samples=10)[3]["caption"]


def test_captions_parse_back_to_their_scene():
    for i in range(400):
        _, caption, scene = shapes_sample(3, i, image_size=8)
        parsed = parse_prompt(caption)
        assert parsed is not None, caption
        assert prompt_matches_scene(parsed, scene), (caption, scene)
        # the fullest caption states every attribute (positions of two-object scenes aside)
        full = parse_prompt(caption_scene(scene))
        assert prompt_matches_scene(full, scene)
        assert all(o.size and o.color and o.shape for o in full.objects)


def test_parse_prompt_examples():
    blue_above_yellow = Scene(
        (ShapeObject("square", "blue", "large", "top"), ShapeObject("star", "yellow", "small", "bottom")), "above"
    )
    texts = (
        "a blue square above a yellow star", "a yellow star below a blue square",
        "There is a blue square over a star.",
    )
    for text in texts:
        assert prompt_matches_scene(parse_prompt(text), blue_above_yellow), text
    assert not prompt_matches_scene(parse_prompt("a yellow star above a blue square"), blue_above_yellow)
    assert not prompt_matches_scene(parse_prompt("a blue square above a red star"), blue_above_yellow)

    parsed = parse_prompt("A Large Green Star in the center.")
    assert parsed == Scene((ShapeObject("star", "green", "large", "centre"),))
    assert parse_prompt("an orange circle") == Scene((ShapeObject("circle", "orange"),))
    assert parse_prompt("a red circle and a blue square").relation is None
    for nonsense in ("", "a dog on a sofa", "a red", "a red circle above", "a circle left of"):
        assert parse_prompt(nonsense) is None, nonsense


def test_every_attribute_occurs():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(1000)]
    one = [s for s in scenes if len(s.objects) == 1]
    assert 400 < len(one) < 600  # about half one-object scenes
    objects = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.color for o in objects} == set(COLORS)
    assert {o.size for o in objects} == set(SIZES)
    assert {s.objects[0].position for s in one} == set(POSITIONS)
    assert {s.relation for s in scenes if s.relation} == set(RELATIONS)
    assert all(s.objects[0].color != s.objects[1].color for s in scenes if len(s.objects) == 2)
    # numpy generators work too, and max_objects=1 gives one object only
    np_rng = np.random.default_rng(0)
    assert all(len(sample_scene(np_rng, max_objects=1).objects) == 1 for _ in range(50))


def test_two_object_geometry():
    """Object 0 lies on the relation's side of object 1, with no overlap along that axis."""
    rng = random.Random(1)
    checked = 0
    while checked < 150:
        scene = sample_scene(rng)
        if scene.relation is None:
            continue
        image = render_scene(scene, 64, rng)
        m0, m1 = (colour_mask(image, o.color) for o in scene.objects)
        assert m0.sum() > 10 and m1.sum() > 10
        (x0, y0), (x1, y1) = centre_of_mass(m0), centre_of_mass(m1)
        cols0, cols1 = np.nonzero(m0.any(0))[0], np.nonzero(m1.any(0))[0]
        rows0, rows1 = np.nonzero(m0.any(1))[0], np.nonzero(m1.any(1))[0]
        if scene.relation == "left of":
            assert x0 < x1 and cols0.max() < cols1.min()
        elif scene.relation == "right of":
            assert x0 > x1 and cols0.min() > cols1.max()
        elif scene.relation == "above":
            assert y0 < y1 and rows0.max() < rows1.min()
        else:
            assert y0 > y1 and rows0.min() > rows1.max()
        # the relation's axis dominates, so the layout reads one way only
        along_x = scene.relation in ("left of", "right of")
        assert (abs(x0 - x1) > abs(y0 - y1)) == along_x
        checked += 1


EXPECTED_CENTRE = {
    "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "centre": (0.5, 0.5)
}  # fmt: skip


def test_one_object_position_and_size():
    rng = random.Random(2)
    areas = {(shape, size): [] for shape in SHAPES for size in SIZES}
    for _ in range(300):
        scene = sample_scene(rng, max_objects=1)
        (obj,) = scene.objects
        mask = colour_mask(render_scene(scene, 64, rng), obj.color)
        x, y = centre_of_mass(mask)
        ex, ey = EXPECTED_CENTRE[obj.position]
        assert abs(x - ex) < 0.08 and abs(y - ey) < 0.08, (scene, x, y)
        areas[obj.shape, obj.size].append(mask.sum())
    for shape in SHAPES:
        assert min(areas[shape, "large"]) > 1.8 * max(areas[shape, "small"]), shape


def test_scene_validation():
    with pytest.raises(ValueError):
        ShapeObject("blob")
    with pytest.raises(ValueError):
        Scene((ShapeObject("circle"),), "above")
    with pytest.raises(ValueError):
        sample_scene(random.Random(0), max_objects=3)
    with pytest.raises(ValueError, match="two_object_share = 1.5"):
        sample_scene(random.Random(0), two_object_share=1.5)


def test_two_object_share_sets_how_many_scenes_have_two_objects():
    """``data.two_object_share`` reaches the dataset; the default 0.5 leaves every item as it was."""
    def share(dataset) -> float:
        return sum(len(dataset[i]["scene"].objects) == 2 for i in range(len(dataset))) / len(dataset)

    weighted = build_dataset(DataConfig(image_size=16, num_samples=400, two_object_share=0.8))
    assert 0.74 < share(weighted) < 0.86
    assert share(ShapesDataset(16, 50, two_object_share=1.0)) == 1.0
    assert share(ShapesDataset(16, 50, two_object_share=0.0)) == 0.0
    assert share(ShapesDataset(16, 50, max_objects=1, two_object_share=1.0)) == 0.0
    # the items every trained model (the shipped one too) saw before the option existed
    default = ShapesDataset(16, 6)
    assert [default[i]["caption"] for i in range(4)] == [
        "there is a red circle above a blue square", "a small cyan circle above a small orange triangle",
        "there is a yellow diamond to the right of a purple circle", "an image of a large white diamond"]


# --------------------------------------------------------------------------------------------------
# image folders


def write_png(path: Path, size=(20, 12), color=(255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_imagefolder_with_metadata(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "cats" / "b.jpg", color=(0, 255, 0))
    write_png(tmp_path / "cats" / "deep" / "c.webp", size=(12, 30))
    lines = [{"file_name": "a.png", "text": "red"}, {"file_name": "cats/b.jpg", "text": "green", "extra": 1}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert len(ds) == 3 and ds.num_uncaptioned == 1
    items = {Path(p).name: ds[i] for i, p in enumerate(ds.paths)}
    assert items["a.png"]["caption"] == "red" and items["a.png"]["class_name"] == ""
    assert items["b.jpg"]["caption"] == "green" and items["b.jpg"]["class_name"] == "cats"
    assert items["c.webp"]["caption"] == "" and items["c.webp"]["class_name"] == "cats"
    assert ds.classes == ("cats",)
    images = items["a.png"]["images"]
    assert images.shape == (3, 16, 16)
    assert torch.allclose(images[:, 8, 8], torch.tensor([1.0, -1.0, -1.0]), atol=0.02)


def test_metadata_entries_that_name_no_image_are_said_and_a_bom_is_read(tmp_path):
    for name in ("0.png", "1.png"):
        write_png(tmp_path / name)
    lines = [{"file_name": "images/0.png", "text": "red"}, {"file_name": "1.png", "text": "blue"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8-sig")
    with pytest.warns(UserWarning, match=r"1 of its 2 entries name no image .* first: 'images/0.png'"):
        ds = ImageFolderDataset(tmp_path, image_size=16)
    assert ds.captions == ["", "blue"]


def test_imagefolder_with_sidecar_txt(tmp_path):
    write_png(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("a red thing\n")
    write_png(tmp_path / "y.bmp")
    (tmp_path / "notes.txt").write_text("not a caption")
    ds = ImageFolderDataset(tmp_path, image_size=8)
    captions = {Path(p).name: ds[i]["caption"] for i, p in enumerate(ds.paths)}
    assert captions == {"x.png": "a red thing", "y.bmp": ""}
    assert ds.num_uncaptioned == 1


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    write_png(tmp_path / "a.png")
    bad = tmp_path / "b.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    write_png(tmp_path / "c.png", color=(0, 0, 255))
    ds = ImageFolderDataset(tmp_path, image_size=8)
    assert len(ds) == 3
    with pytest.warns(UserWarning, match="b.png"):
        item = ds[1]
    assert torch.allclose(item["images"][:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))  # fell through to c.png
    assert ds.skipped == {bad}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per bad file, not per read
        ds[1]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["images"].shape == (3, 3, 8, 8)


def test_nothing_readable_raises(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(tmp_path, image_size=8)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="could be read"):
        ds[0]


def test_empty_or_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ImageFolderDataset(tmp_path / "nope", image_size=8)
    with pytest.raises(DataError, match=r"no images in .*\.png"):
        ImageFolderDataset(tmp_path, image_size=8)
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / ".hidden").mkdir()
    write_png(tmp_path / ".hidden" / "a.png")
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(tmp_path, image_size=8)


def test_malformed_metadata_names_the_line(tmp_path):
    write_png(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{"file_name": oops}\n')
    with pytest.raises(DataError, match=r"metadata\.jsonl, line 2"):
        ImageFolderDataset(tmp_path, image_size=8)
    (tmp_path / "metadata.jsonl").write_text('{"text": "no file name"}\n')
    with pytest.raises(DataError, match="line 1"):
        ImageFolderDataset(tmp_path, image_size=8)


def test_hflip_flips(tmp_path):
    image = Image.new("RGB", (8, 8), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 8))  # white left half
    image.save(tmp_path / "half.png")
    plain = ImageFolderDataset(tmp_path, image_size=8)[0]["images"]
    ds = ImageFolderDataset(tmp_path, image_size=8, hflip=True)
    torch.manual_seed(0)
    seen = [ds[0]["images"] for _ in range(20)]
    assert all(torch.equal(s, plain) or torch.equal(s, plain.flip(-1)) for s in seen)
    assert any(torch.equal(s, plain) for s in seen) and any(torch.equal(s, plain.flip(-1)) for s in seen)


# --------------------------------------------------------------------------------------------------
# build_dataset, collate, image helpers


def test_build_dataset_and_collate(tmp_path):
    ds = build_dataset(DataConfig(image_size=32, num_samples=10, seed=5))
    assert isinstance(ds, ShapesDataset) and len(ds) == 10
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["images"].shape == (4, 3, 32, 32)
    assert len(batch["caption"]) == 4 and isinstance(batch["scene"][0], Scene)
    with pytest.raises(DataError, match="hflip"):
        build_dataset(DataConfig(hflip=True))

    write_png(tmp_path / "dogs" / "a.png")
    folder = build_dataset(DataConfig(source=str(tmp_path), image_size=16))
    assert isinstance(folder, ImageFolderDataset)
    assert collate([folder[0]])["class_name"] == ["dogs"]
    with pytest.raises(DataError):
        build_dataset(DataConfig(source=str(tmp_path / "missing")))


def test_tensor_image_round_trip():
    image = render_scene(sample_scene(random.Random(0)), 24)
    t = image_to_tensor(image)
    assert t.shape == (3, 24, 24)
    assert np.array_equal(np.asarray(tensor_to_pil(t)), np.asarray(image))
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    wide.paste((255, 255, 255), (10, 0, 30, 20))  # the centre square is white, the sides black
    assert torch.allclose(image_to_tensor(wide, 10), torch.ones(3, 10, 10), atol=0.02)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent: composited over white
    assert torch.allclose(image_to_tensor(rgba), torch.ones(3, 4, 4))


def test_a_16_bit_grey_image_reads_at_its_own_brightness(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)  # 16-bit grey, black to white
    Image.fromarray(ramp).save(tmp_path / "grey16.png")  # PIL reads it back in mode I;16 (or I)
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode.startswith("I")
        rgb = np.asarray(to_rgb(image), dtype=np.float64)
    expected = np.round(ramp / 257.0)
    assert np.abs(rgb[..., 0] - expected).max() <= 1 and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.asarray(to_8bit(Image.fromarray(np.full((2, 2), 0.5, np.float32)))).max() == 128  # "F" in 0 … 1


def test_save_grid(tmp_path):
    images = torch.rand(5, 3, 16, 12) * 2 - 1
    path = save_grid(images, tmp_path / "out" / "grid.png", nrow=3)
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.size == (3 * (12 + 2) + 2, 2 * (16 + 2) + 2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temp file left
    pils = [tensor_to_pil(t) for t in images[:4]]
    with Image.open(save_grid(pils, tmp_path / "g.png", padding=0)) as grid:
        assert grid.size == (24, 32)
        assert np.array_equal(np.asarray(grid)[:16, :12], np.asarray(pils[0]))


def test_an_interrupted_pack_leaves_no_shards_and_a_rerun_writes_them_all(tmp_path, capsys):
    from ldmkit.cli import main
    from ldmkit.data.shards import ShardDataset, ShardSample, write_shards

    def samples(stop_after=None):
        for i in range(5):
            if i == stop_after:
                raise KeyboardInterrupt  # Ctrl-C, two shards in
            yield ShardSample(f"{i:08d}", write_png(tmp_path / "x.png").read_bytes(), "png", f"caption {i}")

    out = tmp_path / "shards"
    out.mkdir()  # an empty --out, as a user may make it first
    with pytest.raises(KeyboardInterrupt):
        write_shards(samples(stop_after=4), out, shard_size=2)
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["shards", "x.png"]
    assert [p.name for p in write_shards(samples(), out, shard_size=2)] == ["000000.tar", "000001.tar", "000002.tar"]
    assert len(list(ShardDataset(str(out), 8))) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "x.png"]  # no temporary folder left

    assert main(["data", "pack", "shapes", "--out", str(tmp_path / "bar"), "--num-samples", "3",
                 "--image-size", "8"]) == 0
    err = capsys.readouterr().err  # the progress bar, as `data cache` has
    assert "packing" in err and "3/3" in err
