"""Prompt following: the broad caption grammar, grounding targets and loss, the general binding rule, and
the judge's object counting and malformed-shape test."""

from __future__ import annotations

import csv
import dataclasses
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ldmkit.config import DataConfig, GroundingConfig, load_preset
from ldmkit.data import Scene, ShapeObject, build_dataset, image_to_tensor, prompt_matches_scene, render_scene
from ldmkit.data.shapes import sample_scene
from ldmkit.data.shapes_captions import phrase_scene, vocabulary
from ldmkit.diffusion.binding import binding_groups
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.components import MALFORMED_IOU, shape_fit
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.text.clip import ClipTokenizer
from ldmkit.text.minilm import WordPieceTokenizer
from ldmkit.text.phrases import parse_phrases
from ldmkit.text.tokenizer import PromptTokenizer
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.diffusion import train_diffusion
from ldmkit.train.grounding import GroundingTargets, grounding_losses, grounding_targets

CAPTION = "A crimson, five-pointed star is over a Big box."


def _span(text: str, word: str) -> list[tuple[int, int]]:
    start = text.index(word)
    return [(start, start + len(word))]


@pytest.mark.parametrize("kind", ["wordpiece", "clip", "joint"])
def test_a_word_maps_to_exactly_its_tokens(kind):
    tokenizer = {
        "wordpiece": lambda: WordPieceTokenizer.from_package(24),
        "clip": lambda: ClipTokenizer.from_clip_package(),
        "joint": lambda: PromptTokenizer.train([CAPTION, "a red circle on the left"] * 50, 256, 24),
    }[kind]()
    tokens = tokenizer.tokens(CAPTION)[0]
    pieces = {w: "".join(tokens[i] for i in tokenizer.token_indices(CAPTION, _span(CAPTION, w)))
              for w in ("crimson", "five-pointed star", "Big", "box")}
    for word, joined in pieces.items():
        assert joined.replace("##", "").replace("</w>", "").replace("▁", "") == word.lower().replace(" ", "")
    # no special token and no neighbour is taken: "box" is one piece, and "." beside it is not in it
    assert len(tokenizer.token_indices(CAPTION, _span(CAPTION, "box"))) == 1


def test_captions_are_true_and_their_spans_name_their_object():
    rng = random.Random(0)
    for part in ("seen", "unseen"):
        for _ in range(300):
            scene = sample_scene(rng)
            said = phrase_scene(scene, rng, part)
            assert prompt_matches_scene(said.stated, scene), (said.text, scene)
            for obj, spans in zip(scene.objects, said.spans):
                named = {said.text[a:b].lower() for a, b in spans}
                words = vocabulary("seen") if part == "seen" else {
                    k: [*vocabulary("seen")[k], *vocabulary("unseen")[k]] for k in ("color", "shape", "size")}
                assert named & set(words["color"]) and named & set(words["shape"]), (said.text, named)


def test_the_unseen_part_never_reaches_training():
    unseen = {w for words in vocabulary("unseen").values() for w in words}
    data = build_dataset(DataConfig(captions="varied", num_samples=1500))
    text = " ".join(data[i]["caption"].lower() for i in range(len(data)))
    assert not [w for w in unseen if re.search(rf"\b{re.escape(w)}\b", text)]
    frames = ("i see", "draw ", "sits ", "we see", "placed ", "coloured", "you can see", "a drawing of")
    assert not any(f in data[i]["caption"].lower() for i in range(len(data)) for f in frames)
    # and the held-out evaluation's unseen captions use them: the same images, other words
    seen, unseen_set = heldout_shapes(40, phrasing="seen"), heldout_shapes(40, phrasing="unseen")
    assert torch.equal(seen.images, unseen_set.images)
    assert all(prompt_matches_scene(s, t) for s, t in zip(unseen_set.stated, unseen_set.scenes))
    assert any(re.search(rf"\b{re.escape(w)}\b", c.lower()) for c in unseen_set.captions for w in unseen)


def test_grounded_items_carry_masks_of_their_objects():
    data = build_dataset(DataConfig(captions="varied", grounding=True, num_samples=20))
    templates = build_dataset(DataConfig(num_samples=20))
    for i in range(20):
        item = data[i]
        assert torch.equal(item["images"], templates[i]["images"])  # the same pictures as the templates'
        masks = item["grounding"].masks
        assert masks.shape == (len(item["scene"].objects), 64, 64)
        background = (item["images"] + 1) * 127.5 - torch.tensor([30.0, 30, 30]).view(3, 1, 1)
        covered = background.abs().sum(0) > 30  # pixels away from the background colour
        assert ((masks.sum(0) > 0.5) == covered).float().mean() > 0.98


def _targets(masks: torch.Tensor, token: int, length: int = 6) -> GroundingTargets:
    tokens = torch.zeros(1, 1, length)
    tokens[0, 0, token] = 1
    return GroundingTargets(tokens, masks[None, None], torch.ones(1, 1, dtype=torch.bool))


def test_the_loss_is_zero_inside_the_mask_and_positive_outside():
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    inside = torch.full((1, 6, 8, 8), 1 / 6)
    inside[0, 3] = 0
    inside[0, 3, 2:6, 2:6] = 0.5  # token 3's attention all inside the mask
    token, _ = grounding_losses([inside], _targets(mask, 3), (8, 8))
    assert token.item() == pytest.approx(0.0, abs=1e-6)
    outside = inside.clone()
    outside[0, 3] = 0
    outside[0, 3, 0:2, 0:2] = 0.5
    token_out, pixel_out = grounding_losses([outside], _targets(mask, 3), (8, 8))
    _, pixel_in = grounding_losses([inside], _targets(mask, 3), (8, 8))
    assert token_out.item() == pytest.approx(1.0) and pixel_out > pixel_in
    # a level that is not recorded selects nothing: a config error, not a silent zero
    with pytest.raises(ValueError, match="levels"):
        grounding_losses([inside], _targets(mask, 3), (8, 8), levels=(2,))


def test_the_loss_is_computed_in_float32_under_autocast():
    # a bfloat16 training step (the default on GPUs and fast-bf16 CPUs) must give the float32 loss: in
    # bfloat16 a map lying wholly inside its mask rounds a_g(u) to 1 and the pixel term to infinity
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    maps = torch.full((2, 6, 8, 8), 0.2)  # each pixel's attention sums to 1 over the 6 tokens
    maps[:, 3] = 0
    maps[:, :, 2:6, 2:6] = 1e-5
    maps[:, 3, 2:6, 2:6] = 1 - 5e-5  # token 3 takes (almost) all the attention inside its mask,
    maps[:, :, 0, 0:2] = 1e-5
    maps[:, 3, 0, 0:2] = 1 - 5e-5  # and at two pixels outside it: log(1 − a_g) must not round to log 0
    targets = _targets(mask, 3)
    targets = GroundingTargets(targets.tokens.expand(2, -1, -1), targets.masks.expand(2, -1, -1, -1),
                               targets.valid.expand(2, -1))
    maps = maps.bfloat16()  # as the attention of a bfloat16 step comes
    reference = grounding_losses([maps.float()], targets, (8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = grounding_losses([maps], targets, (8, 8))
    for ref, got in zip(reference, under_autocast):
        assert got.dtype == torch.float32 and torch.isfinite(got)
        assert got.item() == pytest.approx(ref.item(), rel=1e-2, abs=1e-3)


def test_dropped_captions_and_items_without_targets_carry_none():
    tokenizer = WordPieceTokenizer.from_package(24)
    item = build_dataset(DataConfig(captions="varied", grounding=True, num_samples=2))[0]
    assert grounding_targets([None, None], ["a", "b"], tokenizer) is None
    assert grounding_targets([item["grounding"]], [""], tokenizer) is None  # dropped for guidance
    targets = grounding_targets([item["grounding"], None], [item["caption"], "x"], tokenizer)
    assert targets.valid[0].all() and not targets.valid[1].any()


def test_noun_grounding_keeps_only_each_object_s_head_noun():
    from ldmkit.data.grounding import Grounding

    tokenizer = WordPieceTokenizer.from_package(24)
    caption = "a small crimson star above a big blue box"
    spans = tuple(tuple(s for w in words for s in _span(caption, w))
                  for words in (("small", "crimson", "star"), ("big", "blue", "box")))
    grounding = Grounding(torch.ones(2, 8, 8), spans)
    every = grounding_targets([grounding], [caption], tokenizer)
    nouns = grounding_targets([grounding], [caption], tokenizer, words="nouns")
    for k, (words, noun) in enumerate(((("small", "crimson", "star"), "star"), (("big", "blue", "box"), "box"))):
        assert every.tokens[0, k].nonzero().flatten().tolist() == \
            tokenizer.token_indices(caption, [s for w in words for s in _span(caption, w)])
        assert nouns.tokens[0, k].nonzero().flatten().tolist() == tokenizer.token_indices(caption, _span(caption, noun))
    # an object named by a modifier alone ("red" of "a red circle") is left out, not grounded on its adjective
    alone = Grounding(torch.ones(1, 8, 8), (tuple(_span("a red circle", "red")),))
    assert grounding_targets([alone], ["a red circle"], tokenizer, words="nouns") is None


def _tiny(tmp_path, **data):
    preset = load_preset("tiny")
    return dataclasses.replace(preset, data=dataclasses.replace(preset.data, **data))


@pytest.mark.slow
def test_grounding_weights_without_targets_train_bitwise_as_before(tmp_path):
    plain = _tiny(tmp_path)
    ae = train_autoencoder(plain, tmp_path / "ae", steps=4, progress=False)
    weighted = dataclasses.replace(plain, train=dataclasses.replace(
        plain.train, grounding=GroundingConfig(weight_token=1.0, weight_pixel=0.5)))
    a = train_diffusion(plain, ae, tmp_path / "a", steps=6, progress=False)
    b = train_diffusion(weighted, ae, tmp_path / "b", steps=6, progress=False)  # the data carry no targets
    sa = torch.load(a / "checkpoints" / "step_0000006.pt", weights_only=True)["model"]
    sb = torch.load(b / "checkpoints" / "step_0000006.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_grounded_training_logs_its_terms_and_fine_tunes(tmp_path):
    preset = _tiny(tmp_path, captions="varied", grounding=True)
    preset = dataclasses.replace(preset, train=dataclasses.replace(
        preset.train, log_every=2, grounding=GroundingConfig(weight_token=1.0, weight_pixel=0.1)))
    ae = train_autoencoder(preset, tmp_path / "ae", steps=4, progress=False)
    base = train_diffusion(preset, ae, tmp_path / "base", steps=4, progress=False)
    tuned = train_diffusion(preset, ae, tmp_path / "tuned", steps=4, progress=False, init=base)
    for run in (base, tuned):
        rows = list(csv.DictReader(open(run / "log.csv")))
        assert {"loss", "grounding_token", "grounding_pixel"} <= set(rows[0])
        assert all(0 < float(r["grounding_token"]) <= 1 for r in rows)


@pytest.mark.parametrize("prompt, objects, relation", [
    ("a small red circle above a large blue square", [(["small", "red"], "circle"), (["large", "blue"], "square")],
     "above"),
    ("a cat next to a dog", [([], "cat"), ([], "dog")], None),
    ("red circle, blue square", [(["red"], "circle"), (["blue"], "square")], None),
    ("a fluffy white cat to the left of a brown dog", [(["fluffy", "white"], "cat"), (["brown"], "dog")], "left of"),
    ("above a blue square there is a red circle", [(["blue"], "square"), (["red"], "circle")], "below"),
    ("a star in cyan beneath a box that is small and green", [(["cyan"], "star"), (["small", "green"], "box")],
     "below"),
    ("a picture of a crimson, big square at the bottom", [(["crimson", "big"], "square")], None),
    ("a box of red colour atop a small disc", [(["red"], "box"), (["small"], "disc")], "above"),
    ("a yellow little triangle, right in the middle", [(["yellow", "little"], "triangle")], None),
    ("a red circle at the top, a blue square at the bottom", [(["red"], "circle"), (["blue"], "square")], "above"),
    ("on the right a black cat and on the left a dog", [(["black"], "cat"), ([], "dog")], "right of"),
    ("a red circle on the left and a blue square on the left", [(["red"], "circle"), (["blue"], "square")], None),
    ("a white rhombus and a purple circle, the rhombus below the circle",
     [(["white"], "rhombus"), (["purple"], "circle")], "below"),
    # a relation that points back places the other object against the one named before it
    ("a red circle and, beneath it, a blue square", [(["red"], "circle"), (["blue"], "square")], "above"),
    ("a red circle with a blue square beneath it", [(["red"], "circle"), (["blue"], "square")], "above"),
    ("a blue square, and above it a red circle", [(["blue"], "square"), (["red"], "circle")], "below"),
    ("a red circle, below which is a blue square", [(["red"], "circle"), (["blue"], "square")], "above"),
    ("a cat that has a dog to the left of it", [([], "cat"), ([], "dog")], "right of"),
    ("a red circle beneath it", [(["red"], "circle")], None),
    # a relation said after both objects, of the one named last
    ("a small red circle and a big blue square, the circle above",
     [(["small", "red"], "circle"), (["big", "blue"], "square")], "above"),
    # the picture is the frame, not an object: after "of"/"in", before "with"/"showing", or as a relation's end
    ("an image with a red circle in it", [(["red"], "circle")], None),
    ("a red circle at the top of the picture, a blue square at the bottom",
     [(["red"], "circle"), (["blue"], "square")], "above"),
    ("a red circle to the left of the image and a blue square", [(["red"], "circle"), (["blue"], "square")], None),
    # verbs of placing and painting are no objects
    ("a red circle stacked on top of a square painted blue", [(["red"], "circle"), (["blue"], "square")], "above"),
    # a place of the object named before ("its") is a relation to it
    ("draw a blue square and put a red circle to its left", [(["blue"], "square"), (["red"], "circle")], "right of"),
    ("next to a red star, on its right-hand side, is a green circle",
     [(["red"], "star"), (["green"], "circle")], "left of"),
    # a clause's last words naming a side are a place; a word set off by commas describes the object before it
    ("yellow square right, orange cross left", [(["yellow"], "square"), (["orange"], "cross")], "right of"),
    ("there's a square, red, sitting right in the centre", [(["red"], "square")], None),
    ("a blue star up high and a red cross down low beneath it", [(["blue"], "star"), (["red"], "cross")], "above"),
    # words of asking and imperatives that are nouns elsewhere name no object
    ("Can I get a purple diamond with a green triangle below it?",
     [(["purple"], "diamond"), (["green"], "triangle")], "above"),
    ("Render a large purple cross against the left side", [(["large", "purple"], "cross")], None),
    ("A simple image: a green cross and nothing more.", [(["green"], "cross")], None),
    # a predicate after "be", or one word after "it" ending its clause, describes the object it is said of
    ("Can you make me a diamond? It should be purple.", [(["purple"], "diamond")], None),
    ("the dog should be brown, and there should be a cat above it", [(["brown"], "dog"), ([], "cat")], "below"),
    ("draw a cat and colour it grey.", [(["grey"], "cat")], None),
    # "over" before a place is an adverb; "its" side with no object named before it is a place; "lots of" counts
    ("a red square over on the right with a blue star to the left of it",
     [(["red"], "square"), (["blue"], "star")], "right of"),
    ("on its far right there floats a small orange cross", [(["small", "orange"], "cross")], None),
    ("lots of blue circles", [(["blue"], "circles")], None),
])
def test_the_general_rule_finds_each_noun_with_its_modifiers(prompt, objects, relation):
    parsed = parse_phrases(prompt)
    words = [([prompt[a:b] for a, b in o.modifiers], prompt[o.noun[0]:o.noun[1]]) for o in parsed.objects]
    assert words == objects and parsed.relation == relation


def test_binding_groups_need_no_shapes_vocabulary():
    groups, relation = binding_groups("a tall tree beside a red house", WordPieceTokenizer.from_package(24))
    # [CLS] a tall tree beside a red house [SEP]
    assert groups == [([[2]], [3]), ([[6]], [7])] and relation is None


def _render_with(scene: Scene, recolour: dict[str, str]) -> torch.Tensor:
    from ldmkit.data import shapes

    saved = dict(shapes.RGB)
    try:
        shapes.RGB.update({k: saved[v] for k, v in recolour.items()})
        return image_to_tensor(render_scene(scene, 64))[None]
    finally:
        shapes.RGB.update(saved)


def test_the_judge_counts_two_objects_of_one_colour():
    judge = AttributePredictor()
    scene = Scene((ShapeObject("diamond", "white", "large"), ShapeObject("circle", "red", "small")), "left of")
    two_white = _render_with(scene, {"red": "white"})  # the circle drawn white too
    (read,) = judge(two_white)
    assert read is not None and len(read.objects) == 2
    assert sorted(o.shape for o in read.objects) == ["circle", "diamond"]
    one = Scene((ShapeObject("diamond", "white", "large", "left"),))
    assert not prompt_matches_scene(one, read)  # "one white diamond" is not this image


def test_clean_renders_fit_and_deformed_shapes_do_not():
    rng = random.Random(3)
    for shape in ("circle", "square", "triangle", "star", "diamond", "cross"):
        for size in ("small", "large"):
            scene = Scene((ShapeObject(shape, "white", size, "centre"),))
            region = np.asarray(render_scene(scene, 64, rng).convert("L")) > 137
            assert shape_fit(region, shape) >= 0.85, (shape, size)

    def region(draw_fn) -> np.ndarray:
        image = Image.new("L", (64, 64), 0)
        draw_fn(ImageDraw.Draw(image))
        return np.asarray(image) > 127

    oval = region(lambda d: d.ellipse((14, 26, 50, 38), fill=255))  # 3:1
    trapezoid = region(lambda d: d.polygon([(26, 20), (38, 20), (48, 44), (16, 44)], fill=255))
    stacked = region(lambda d: [d.rectangle((20, 28, 44, 34), fill=255), d.rectangle((29, 12, 35, 52), fill=255),
                                d.rectangle((20, 40, 44, 46), fill=255)])  # a cross with two bars
    assert shape_fit(oval, "circle") < MALFORMED_IOU
    assert shape_fit(trapezoid, "square") < MALFORMED_IOU
    assert shape_fit(stacked, "cross") < MALFORMED_IOU


def test_an_image_folder_reads_grounding_from_sidecars(tmp_path):
    import json

    folder, masks = tmp_path / "images", tmp_path / "masks"
    folder.mkdir()
    masks.mkdir()
    image = Image.new("RGB", (80, 64), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((8, 8, 39, 39), fill=(255, 0, 0))
    image.save(folder / "a.png")
    (folder / "a.txt").write_text("A red box beside a dog")
    box = Image.new("L", (80, 64), 0)
    ImageDraw.Draw(box).rectangle((8, 8, 39, 39), fill=255)
    box.save(masks / "a_box.png")
    (folder / "a.grounding.json").write_text(json.dumps({"objects": [
        {"words": ["red", "box"], "mask": "../masks/a_box.png"}, {"words": ["dog"], "polygon": [[56, 8, 72, 8, 72, 40]]}]}))
    Image.new("RGB", (32, 32)).save(folder / "b.png")  # no sidecar: no targets
    data = build_dataset(DataConfig(source=str(folder), image_size=32, grounding=True))
    item = data[0]
    target = item["grounding"]
    assert [[item["caption"][a:b] for a, b in spans] for spans in target.spans] == [["red", "box"], ["dog"]]
    # the mask is cropped and resized as the image is: the red pixels are the box's
    red = (item["images"][0] > 0) & (item["images"][1] < 0)
    assert ((target.masks[0] > 0.5) == red).float().mean() > 0.97
    assert data[1]["grounding"] is None
    (folder / "a.grounding.json").write_text(json.dumps({"objects": [{"words": ["cat"], "polygon": [[0, 0, 9, 0, 9, 9]]}]}))
    with pytest.raises(ValueError, match="'cat' is not in the caption"):
        data[0]


def test_coco_instances_ground_the_categories_a_caption_names(tmp_path):
    import json

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.new("RGB", (40, 40)).save(root / "val2017" / "000000000001.jpg")
    images = [{"id": 1, "file_name": "000000000001.jpg", "width": 40, "height": 40}]
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": [{"image_id": 1, "id": 1, "caption": "Two dogs on a sofa"}]}))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": images, "categories": [{"id": 18, "name": "dog"}, {"id": 63, "name": "couch"}],
        "annotations": [
            {"image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]},
            {"image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[20, 20, 40, 20, 40, 40, 20, 40]]},
            {"image_id": 1, "category_id": 63, "iscrowd": 0, "segmentation": [[0, 30, 40, 30, 40, 40, 0, 40]]}]}))
    data = build_dataset(DataConfig(source="coco", coco_annotations=str(root / "annotations" / "captions_val2017.json"),
                                    coco_instances=str(root / "annotations" / "instances_val2017.json"),
                                    image_size=40, grounding=True))
    target = data[0]["grounding"]
    assert target.spans == (((4, 8),),)  # "dogs": the category named (as a plural); "couch" is not
    assert target.masks.shape == (1, 40, 40) and target.masks[0].sum().item() == pytest.approx(800, rel=0.1)


def test_the_general_rule_groups_template_captions_as_the_shapes_vocabulary_did():
    """On the dataset's own templates the rule finds exactly the groups and relation that the shapes
    vocabulary gave binding guidance before, so its images there are the same."""
    from ldmkit.data import COLORS, SHAPES, SIZES, parse_prompt
    from ldmkit.diffusion.binding import words_of

    tokenizer = WordPieceTokenizer.from_package(24)
    for caption in heldout_shapes(300).captions:
        expected, pending = [], []
        for word, indices in words_of(tokenizer.tokens(caption)[0]):
            if word in set(COLORS) | set(SIZES):
                pending.append(indices)
            elif word in SHAPES:
                expected.append((pending, indices))
                pending = []
        groups, relation = binding_groups(caption, tokenizer)
        assert groups == expected, caption
        assert relation == (parse_prompt(caption).relation if len(expected) >= 2 else None), caption


@pytest.mark.parametrize("captions", ["templates", "varied"])
def test_training_reads_the_shapes_captions_themselves(captions):
    """The captions a training run trains its tokenizer on and draws its preview grids for are the items'
    (once they were the letters of the caption style's name)."""
    from ldmkit.data.dataset import dataset_captions

    data = build_dataset(DataConfig(captions=captions, num_samples=6))
    assert dataset_captions(data, 4) == [data[i]["caption"] for i in range(4)]
