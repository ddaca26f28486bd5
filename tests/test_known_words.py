"""Prompts read in the words a model was trained on (`ldmkit.text.known_words`), by WordNet (`ldmkit.text.wordnet`)."""

from __future__ import annotations

import json

import pytest
import torch

from ldmkit import load_pipeline
from ldmkit.data.dataset import dataset_word_colours
from ldmkit.data.shapes_dataset import ShapesDataset
from ldmkit.data.shapes_scene import RGB
from ldmkit.model import LatentDiffusion
from ldmkit.text.known_words import FILE, KnownWords
from ldmkit.text.phrases import is_function_word, parse_phrases, resolve_references
from ldmkit.text.wordnet import default_wordnet
from tests.tiny_models import build_attentive_tiny_model

wordnet = default_wordnet()
needs_wordnet = pytest.mark.skipif(wordnet is None, reason="WordNet is not installed (pip install 'ldmkit[words]')")

CAPTIONS = ["a red circle on the left", "a small blue square above a large star", "a crimson box at the top",
            "there is a little white disc", "a big green block to the right of a yellow wedge",
            "a purple triangle below a turquoise circle", "a picture of a star in red"]


@needs_wordnet
def test_wordnet_gives_a_synonym_or_a_more_general_word_never_a_sibling():
    known = {"red": 5, "crimson": 1, "blue": 3, "large": 2, "big": 4, "star": 1, "disc": 1, "block": 1}
    assert wordnet.nearest("scarlet", known) == "red"  # same synset; the word seen most often
    assert wordnet.nearest("navy", known) == "blue"  # navy blue, a dark shade of blue: one link up
    assert wordnet.nearest("huge", known) == "big"  # an adjective satellite → its head {large, big}
    assert wordnet.nearest("dots", known) == "disc"  # an inflected form, by its base form
    assert wordnet.nearest("blue", {"red": 1, "green": 1}) is None  # red is blue's sibling, not its hypernym
    assert wordnet.nearest("navy", known, depth=0) is None
    assert wordnet.nearest("qwertyuiop", known) is None
    assert wordnet.lemmas("plus sign") and wordnet.lemmas("Plus  Sign") == wordnet.lemmas("plus_sign")


@needs_wordnet
def test_a_noun_with_nothing_known_above_it_is_read_as_a_kind_of_it_never_a_sibling():
    assert wordnet.narrower("oval", {"circle": 1, "square": 1}) == "circle"  # {oval, ellipse} → circle, one link down
    assert wordnet.narrower("rectangle", {"square": 1, "box": 3}) == "box"  # both kinds of it: the most seen
    assert wordnet.narrower("circle", {"oval": 1}) is None  # a more general word is not a kind of it
    assert wordnet.narrower("square", {"circle": 1, "triangle": 1}) is None  # siblings, never
    words = KnownWords.from_captions(CAPTIONS)
    # only the phrase's noun reads downward ("an" follows its new noun); a modifier keeps the upward rule alone
    assert words.rewrite("an oval below a red rectangle", wordnet) == "a circle below a red square"
    assert words.reading("oval", wordnet) is None and words.reading("oval", wordnet, noun=True) == "circle"
    assert words.read_words("a rectangle that is navy", wordnet) == "a square that is blue"


@needs_wordnet
@needs_wordnet
def test_a_modifier_is_never_read_as_a_noun_of_the_captions_nor_by_wordnet_as_a_colour_the_images_drew():
    captions = [*CAPTIONS, "a square shape"]  # "square": a noun, and a modifier of "shape"
    assert wordnet.nearest("solid", {"square": 1}) == "square" and wordnet.nearest("clean", {"white": 1}) == "white"
    plain = KnownWords.from_captions(captions)
    assert plain.reading("solid", wordnet) is None  # a hearty meal, not a square: no noun of the captions
    assert plain.reading("clean", wordnet) == "white"  # without recorded colours, WordNet's synonym
    drawn = KnownWords.from_captions(captions, colours={"red": (1, 0, 0), "white": (1, 1, 1), "blue": (0, 0, 1)})
    assert drawn.reading("clean", wordnet) is None  # a colour is read by its colour, not "clean" as "white"
    assert drawn.reading("huge", wordnet) == "large"


def test_a_word_is_read_only_as_a_word_seen_in_its_role():
    words = KnownWords.from_captions(["a red figure on the left", "a big box at the top", "a small apartment"])
    # "single" is one, a kind of figure (a digit), and "flat" an apartment: nouns, never what a modifier becomes
    assert words.read_words("a single flat box", wordnet) == "a single flat box"
    # as a phrase's noun, "flat" may be read as a noun seen in the captions
    assert words.read_words("a huge flat", wordnet) == "a big apartment"


@needs_wordnet
def test_what_names_no_object_is_never_read_as_one():
    words = KnownWords.from_captions(CAPTIONS + ["a square figure", "a round shape"])
    # a relation said before both objects is said again even in known words; a verb taken for a noun is no object
    assert words.rewrite("below a turquoise circle there is a purple triangle", wordnet) == \
        "a turquoise circle above a purple triangle"
    assert words.rewrite("I remember a red circle below a blue square", wordnet) == "a red circle below a blue square"
    assert words.rewrite("I remember a picture where a square sat way over a circle", wordnet) == \
        "a square above a circle"
    # style words: a lone adjective is not read through its noun senses, nor a noun as a word above most nouns
    assert words.read_words("a red circle, simple, flat colors", wordnet) == "a red circle, simple, flat colors"
    assert words.reading("sphere", wordnet, noun=True) == "round shape" and \
        words.reading("colors", wordnet, noun=True) is None


def test_known_words_of_captions_keep_the_object_words_apart():
    words = KnownWords.from_captions(CAPTIONS)
    assert words.words["a"] == 7 and words.words["red"] == 2 and "left" in words.words
    assert {"red", "circle", "small", "square", "wedge", "turquoise", "white disc"} <= set(words.objects)
    assert not {"left", "top", "picture", "above", "a"} & set(words.objects)  # places, media, function words
    accented = KnownWords.from_captions(["a café sign", "a naïve star"])
    assert {"café", "naïve"} <= set(accented.words) and accented.knows("a naïve café")  # whole words, any script


@needs_wordnet
def test_a_prompt_is_read_in_the_words_the_model_knows():
    words = KnownWords.from_captions(CAPTIONS)
    for caption in CAPTIONS:  # words it knows: unchanged, character for character
        assert words.rewrite(caption, wordnet) == caption
    assert words.rewrite("a small navy tile above a huge scarlet box", wordnet) == \
        "a small blue block above a large red box"
    # the words of noun phrases alone: relation, place and frame words stay; the article follows its new noun
    assert words.read_words("I see an ivory dot higher than a wedge", wordnet) == \
        "I see a white disc higher than a wedge"
    # ... and then, its frame and relation words never seen, said again in the captions' phrasing
    assert words.rewrite("I see an ivory dot higher than a wedge", wordnet) == "a white disc above a wedge"
    assert words.rewrite("Scarlet circle, an Aqua box", wordnet) == "Red circle, a Turquoise box"  # capitals kept
    # a compound WordNet knows is one unit: with no object word near it, it stays as written
    assert words.rewrite("a plus sign on the left", wordnet) == "a plus sign on the left"
    # an inflected form of a known word stays (not made singular); one of an unknown word is read by its base form
    assert words.rewrite("two red circles and two navy boxes", wordnet) == "two red circles and two blue boxes"
    # numbers stay numbers (WordNet holds "3" as a noun, a kind of "figure"); A1111's emphasis, which a prompt read
    # as written takes as text, is read without its brackets and weights; brackets of prose stay
    assert words.rewrite("3 navy boxes, 2nd from the left, (red:1.3)", wordnet) == \
        "3 blue boxes, 2nd from the left, red"
    assert words.rewrite("((navy box)) above [a circle]", wordnet) == "a blue box above a circle"  # its article
    assert words.rewrite("a navy box (big)", wordnet) == "a blue box (big)"


def test_the_chunker_reads_relation_and_place_phrases_and_what_they_say():
    text = "up at the top a red circle, further right than it a box in the top left corner"
    parsed = parse_phrases(text)
    assert [(s.meaning, text[s.span[0]:s.span[1]]) for s in parsed.relations] == [("right of", "further right than")]
    assert [(s.meaning, text[s.span[0]:s.span[1]]) for s in parsed.places] == \
        [("top", "up at the top"), (None, "in the top left corner")]  # two sides: none
    assert [s.meaning for s in parse_phrases("a star in the very middle, on the left-hand side a dot").places] == \
        ["centre", "left"]
    assert is_function_word("sits") and is_function_word(",") and not is_function_word("watercolour")
    for prompt, relation in (("a red circle directly above a blue square", "above"), ("a ball farther down than a box",
                             "below"), ("a cat to the left side of a dog", "left of")):
        parsed = parse_phrases(prompt)  # an adverb of degree is no object; relations said otherwise
        assert (len(parsed.objects), parsed.relation) == (2, relation), prompt


@pytest.mark.parametrize("prompt, resolved", [
    ("There should be a red circle and a blue square. The first one needs to sit higher up than the second one.",
     "There should be a red circle and a blue square. The red circle needs to sit higher up than the blue square."),
    ("make a red circle and a blue square, the first one goes on the right and the other on the left",
     "make a red circle and a blue square, the red circle goes on the right and the blue square on the left"),
    ("hi! a cat, a red circle and a blue square; the former is big, the latter is small",  # the last two named
     "hi! a cat, a red circle and a blue square; the red circle is big, the blue square is small"),
    ("Put a diamond below a square. The lower one is purple and the upper one is red.",  # by the side they are on
     "Put a diamond below a square. The diamond is purple and the square is red."),
    ("a red star next to a purple cross, with the red one on the left", "a red star next to a purple cross, with "
     "the red star on the left"),  # by the modifier one of them alone holds
])
def test_an_object_named_by_order_modifier_or_side_is_named_by_its_own_words(prompt, resolved):
    assert resolve_references(prompt) == resolved


@pytest.mark.parametrize("prompt", [
    "the first red circle above a blue square",  # an ordinal before a content word
    "a red circle, the other one a blue square",  # "other" with one object before it: a second object
    "a red circle and a blue circle, the circle one on the left",  # a noun, not a modifier
    "a red circle and a red square, the red one at the top",  # a modifier both hold
    "a red circle and a blue square, the lower one is big",  # a side, but no relation between them
])
def test_a_reference_that_names_no_one_object_stays(prompt):
    assert resolve_references(prompt) == prompt


def test_words_after_an_object_named_again_describe_it_and_its_clause_places_it():
    text = "a circle and a square. The circle is red and the square is blue."
    objects = parse_phrases(text).objects
    assert [[text[a:b] for a, b in o.modifiers] for o in objects] == [["red"], ["blue"]]
    assert parse_phrases("a circle and a square, the circle on the right and the square on the left").relation == \
        "right of"
    # side by side, a left or right side of one of them puts the other opposite
    assert parse_phrases("a red star next to a purple cross, with the red star on the left").relation == "left of"
    assert parse_phrases("a red star beside a purple cross, keeping the cross on the left").relation == "right of"
    assert parse_phrases("a red star and a purple cross, with the red star on the left").relation is None
    keep = "a star above a white square, keep it bold"  # a verb of keeping: "bold" is how it looks, not the square
    assert [keep[a:b] for a, b in parse_phrases(keep).objects[1].modifiers] == ["white"]
    words = KnownWords.from_captions(CAPTIONS)
    unread = "put a circle below a square; the lower one is red and the upper one is blue"
    assert words.resay(unread) == unread  # resay alone reads no references: "one" is no object of it
    assert words.rewrite("put a box below a square. the lower one is red and the upper one is blue", wordnet) == \
        "a red box below a blue square"


@pytest.mark.parametrize("prompt, relation", [
    ("um a red circle and a blue square next to each other like the first one on the left", "left of"),
    ("red circle on top blue square on the bottom", "above"),
    ("a red circle to the west of a blue square", "left of"),
    ("The red circle should not be on the left of the blue square, it should be on its right.", "right of"),
    ("a red circle top row, a blue square bottom row", "above"),
])
def test_the_chunker_reads_relations_said_in_other_ways(prompt, relation):
    assert parse_phrases(resolve_references(prompt)).relation == relation


def test_captions_record_their_phrases_for_each_relation_and_place():
    words = KnownWords.from_captions(CAPTIONS + ["a red circle over a box", "a star above a disc"])
    assert words.relations == {"above": {"above": 2, "over": 1}, "below": {"below": 1},
                               "right of": {"to the right of": 1}}
    assert words.places == {"left": {"on the left": 1}, "top": {"at the top": 1}}
    both = words.union(KnownWords.from_captions(["a disc over a star", "a disc over a box"]))
    assert both.relations["above"] == {"above": 2, "over": 3} and both.places == words.places
    assert KnownWords(words.words, words.objects).union(words).relations == words.relations


def test_a_prompt_in_unseen_phrasing_is_said_again_in_the_captions_phrasing():
    words = KnownWords.from_captions(CAPTIONS)
    said = {
        # frame and relation words never seen: the objects joined by the captions' phrase for the relation read
        "we see a red circle sitting higher than a blue square": "a red circle above a blue square",
        "further right than a star there is a small box": "a star left of a small box",  # relation first
        "a red circle and, beneath it, a blue square": "a red circle above a blue square",  # "it": the circle
        "we see a red circle to the left of the image": "a red circle on the left",  # a relation to the frame
        # the modifiers said after the noun come first; the determiner stays, "a"/"an" made to fit
        "a box that is small and red placed beneath an orange triangle": "a small red box below an orange triangle",
        "a star of red colour sits lower than a small big wedge": "a red star below a small big wedge",
        # one object: its place in the captions' phrase for that side; without one, the object alone
        "i see two red circles in the top half": "two red circles at the top",
        "draw a small star coloured red": "a red small star",
        # places on opposite sides of two objects give their relation
        "in the left half a red circle, in the right half a box": "a red circle left of a box",
    }
    words.relations["left of"] = {"left of": 1}  # as if a caption had said it
    for prompt, expected in said.items():
        assert words.resay(prompt) == expected, prompt
    unchanged = [
        *CAPTIONS,  # every word known
        "a red circle beside a blue square, watercolour painting of it",  # a content word outside the objects
        "we see a red circle, a blue square and a star",  # three objects
        "we see a red circle and a blue square",  # two objects, no relation
        "we see a red circle in the top left corner",  # a place on two sides
        "we see a red circle in the bottom half",  # no phrase of the captions for that side
        "we see a red circle to the left of a box",  # ... nor for that relation (before it is recorded)
    ]
    del words.relations["left of"]
    for prompt in unchanged:
        assert words.resay(prompt) == prompt, prompt
    assert KnownWords(words.words, words.objects).resay("we see a red circle above a box") == \
        "we see a red circle above a box"  # a file recorded before phrases were: never said again


def test_known_words_round_trip_and_a_bad_file(tmp_path):
    words = KnownWords.from_captions(CAPTIONS)
    words.save(tmp_path / FILE)
    again = KnownWords.load(tmp_path / FILE)
    assert again.words == words.words and again.objects == words.objects
    assert again.relations == words.relations and again.places == words.places
    older = json.loads((tmp_path / FILE).read_text())
    del older["relations"], older["places"]  # a file written before phrases were recorded
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert KnownWords.load(tmp_path / "older.json").relations is None
    (tmp_path / "bad.json").write_text(json.dumps({"words": {}, "objects": {}, "relations": {"above": 3}}))
    with pytest.raises(ValueError, match="bad.json: not a known-words list"):
        KnownWords.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps(["red", "blue"]))
    with pytest.raises(ValueError, match="bad.json: not a known-words list"):
        KnownWords.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny model folder that records the words of `CAPTIONS`."""
    folder = build_attentive_tiny_model(tmp_path_factory.mktemp("known") / "attentive")
    model = LatentDiffusion.load(folder)
    model.known_words = KnownWords.from_captions(CAPTIONS)
    model.save(folder.parent / "words")
    return folder.parent / "words"


@needs_wordnet
def test_each_prompt_is_read_on_its_own_whatever_the_batch(folder):
    model = load_pipeline(folder).model
    alone = model.in_known_words(["red circle top"])
    assert alone == ["a red circle at the top"]  # every word known, and still said with its article and place
    assert model.in_known_words(["red circle top", "a scarlet circle"]) == [*alone, "a red circle"]
    assert model.in_known_words(["a red circle on the left"]) == ["a red circle on the left"]


@needs_wordnet
def test_pipelines_draw_a_never_seen_word_as_the_word_it_becomes(folder):
    pipe = load_pipeline(folder)
    assert (folder / FILE).is_file() and pipe.model.known_words is not None
    seen = pipe.generate_tensors("a scarlet circle on the left", steps=2, seed=0)
    assert torch.equal(seen, pipe.generate_tensors("a red circle on the left", steps=2, seed=0))
    resaid = pipe.generate_tensors("we see a scarlet circle sitting higher than a box", steps=2, seed=0)
    assert torch.equal(resaid, pipe.generate_tensors("a red circle above a box", steps=2, seed=0))
    pipe.model.known_words = None  # read as written
    assert not torch.equal(seen, pipe.generate_tensors("a scarlet circle on the left", steps=2, seed=0))


@needs_wordnet
def test_while_an_adapter_may_have_taught_new_words_prompts_are_read_as_written(folder, tmp_path):
    from ldmkit.convert import lora as lora_files
    from ldmkit.nn import lora

    model = LatentDiffusion.load(folder)
    lora.inject(model, lora_files.training_targets(model), 2, 2)
    path = lora_files.save_lora(model, tmp_path / "magenta.safetensors")
    pipe = load_pipeline(folder)
    assert pipe.model.in_known_words(["a scarlet circle"]) == ["a red circle"]
    pipe.load_lora_weights(path)  # "scarlet" may be what it taught
    assert pipe.model.in_known_words(["a scarlet circle"]) == ["a scarlet circle"]
    pipe.unload_lora_weights()
    assert pipe.model.in_known_words(["a scarlet circle"]) == ["a red circle"]
    pipe.load_lora_weights(path)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # fused: it stays taught
    assert pipe.model.in_known_words(["a scarlet circle"]) == ["a scarlet circle"]


@needs_wordnet
def test_a_lora_that_lists_its_training_words_keeps_them_and_the_rest_is_read_as_before(folder, tmp_path):
    from ldmkit.convert import lora as lora_files
    from ldmkit.nn import lora

    model = LatentDiffusion.load(folder)
    lora.inject(model, lora_files.training_targets(model), 2, 2)
    taught = KnownWords.from_captions(["a magenta circle on the left"])  # WordNet alone would read magenta as red
    path = lora_files.save_lora(model, tmp_path / "magenta.safetensors",
                                metadata={lora_files.WORDS_KEY: taught.to_json()})
    pipe = load_pipeline(folder)
    assert pipe.model.in_known_words(["a magenta circle"]) == ["a red circle"]
    pipe.load_lora_weights(path)
    assert pipe.model.in_known_words(["a magenta circle", "a scarlet box"]) == ["a magenta circle", "a red box"]
    other = lora_files.save_lora(model, tmp_path / "scarlet.safetensors", metadata={
        lora_files.WORDS_KEY: KnownWords.from_captions(["a scarlet box"]).to_json()})
    pipe.unload_lora_weights()
    pipe.load_lora_weights(other)  # another list under the same adapter name: read by it, not the last one
    assert pipe.model.in_known_words(["a magenta circle", "a scarlet box"]) == ["a red circle", "a scarlet box"]
    pipe.unload_lora_weights()
    pipe.load_lora_weights(path)
    pipe.fuse_lora()  # fused: its words stay known
    pipe.unload_lora_weights()
    assert pipe.model.in_known_words(["a magenta circle", "a scarlet box"]) == ["a magenta circle", "a red box"]


def test_without_wordnet_prompts_are_read_as_written_and_said_once(folder, monkeypatch):
    import ldmkit.model

    monkeypatch.setattr(ldmkit.model, "default_wordnet", lambda: None)
    model = LatentDiffusion.load(folder)
    with pytest.warns(UserWarning, match="WordNet is not installed"):
        assert model.in_known_words(["a scarlet circle"]) == ["a scarlet circle"]
    with pytest.warns() as caught:
        import warnings
        warnings.warn("marker")
        model.in_known_words(["a scarlet circle"])
    assert [str(w.message) for w in caught] == ["marker"]
    assert model.in_known_words(["a red circle"]) == ["a red circle"]  # all known: WordNet not needed


@needs_wordnet
def test_generate_says_how_it_read_the_prompt_and_as_written_reads_it_as_given(folder, tmp_path, capsys):
    from ldmkit.cli import main

    out = tmp_path / "out.png"
    assert main(["generate", "a scarlet circle", "--model", str(folder), "--steps", "1", "--out", str(out),
                 "--no-progress"]) == 0
    assert "note: read as 'a red circle'" in capsys.readouterr().err
    assert main(["generate", "a scarlet circle", "--model", str(folder), "--steps", "1", "--out", str(out),
                 "--no-progress", "--as-written", "--overwrite"]) == 0
    assert "read as" not in capsys.readouterr().err


def test_eval_generate_as_written_measures_the_model_with_prompts_as_given(folder, monkeypatch):
    import ldmkit.cli.eval
    from ldmkit.cli import main

    seen = []

    def fake(target, *args, **kwargs):
        seen.append((target, kwargs.get("as_written", False)))
        raise SystemExit(0)  # nothing to measure: which model the evaluation would run is what is checked

    monkeypatch.setattr(ldmkit.cli.eval, "evaluate_generation", fake)
    with pytest.raises(SystemExit):
        main(["eval", "generate", "--model", str(folder), "--as-written", "--no-progress"])
    with pytest.raises(SystemExit):
        main(["eval", "generate", "--model", str(folder), "--no-progress"])
    assert seen == [(str(folder), True), (str(folder), False)]


@needs_wordnet
def test_the_server_reports_how_it_read_a_prompt(folder):
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from ldmkit.serve import create_app

    with TestClient(create_app(load_pipeline(folder), model_name="tiny")) as client:
        for prompt, read_as in (("a scarlet circle", "a red circle"), ("a red circle", None)):
            r = client.post("/v1/generate", json={"prompt": prompt, "steps": 1, "seed": 0})
            assert r.status_code == 200, r.text
            assert [image["read_as"] for image in r.json()["images"]] == [read_as]


@needs_wordnet
def test_an_evaluation_says_how_many_captions_it_read_in_known_words(folder):
    from ldmkit.eval.generation import evaluate_generation
    from ldmkit.eval.heldout import heldout_shapes
    from ldmkit.settings import GenerationSettings

    pipe = load_pipeline(folder)
    size = pipe.model.config.image_size
    pipe.model.known_words = KnownWords.from_captions(heldout_shapes(4, size).captions)  # the templates' words
    unseen = heldout_shapes(4, size, phrasing="unseen").captions
    expected = sum(pipe.model.in_known_words([c]) != [c] for c in unseen)
    one_step = GenerationSettings(num_inference_steps=1)
    assert expected > 0
    assert evaluate_generation(pipe, 4, one_step, phrasing="unseen").settings["captions_read_in_known_words"] == expected
    assert "captions_read_in_known_words" not in evaluate_generation(pipe, 4, one_step).settings


SHAPES_COLOURS = {name: tuple(c / 255 for c in rgb) for name, rgb in RGB.items()}  # as the images draw them


def test_the_colours_a_dataset_draws_its_colour_words_in_are_read_from_its_grounding_targets():
    colours = dataset_word_colours(ShapesDataset(32, 300, captions="varied", grounding=True), 300)
    assert {"red", "blue", "crimson", "white"} <= set(colours)  # colour words, synonyms too
    assert not {"small", "large", "circle", "square", "box"} & set(colours)  # they name objects of every colour
    for word in ("red", "crimson", "blue", "white"):
        drawn = SHAPES_COLOURS["red" if word == "crimson" else word]
        assert max(abs(a - b) for a, b in zip(colours[word], drawn)) < 2 / 255
    assert dataset_word_colours(ShapesDataset(32, 50), 50) == {}  # no grounding targets: no colours


@needs_wordnet
def test_a_colour_name_never_seen_is_read_as_the_colour_the_images_drew_nearest():
    words = KnownWords.from_captions(CAPTIONS, {w: SHAPES_COLOURS[w] for w in ("red", "blue", "green", "yellow",
                                                                              "white", "purple")}
                                     | {"crimson": SHAPES_COLOURS["red"], "turquoise": SHAPES_COLOURS["cyan"]})
    # WordNet holds no colour sense of "lime", and reads "amber" as a yellow; the colours say green and orange-ish
    assert words.read_words("a lime circle", wordnet) == "a green circle"
    assert words.read_words("a circle coloured lime and a navy box", wordnet) == "a circle coloured green and a blue box"
    # a name of several words is read whole; of the words drawn in one colour, the one the captions held most
    assert words.read_words("a sky blue star above a scarlet wedge", wordnet) == "a turquoise star above a red wedge"
    assert words.read_words("a black circle", wordnet) == "a black circle"  # nothing drawn is near black
    assert words.read_words("a lime", wordnet) != "a green"  # a noun is an object, not a colour
    without = KnownWords.from_captions(CAPTIONS)  # a model whose data drew no colours reads by WordNet alone
    assert without.read_words("a lime circle", wordnet) == "a lime circle"
    again = KnownWords.from_json(words.to_json(), "here")
    assert again.read_words("a lime circle and a sky blue star", wordnet) == "a green circle and a turquoise star"
    assert KnownWords.from_captions(["a red circle"]).union(words).colours.keys() == words.colours.keys()


def test_known_words_colours_must_be_written_as_hex(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"words": {}, "objects": {}, "colours": {"red": [1, 0, 0]}}))
    with pytest.raises(ValueError, match="bad.json: 'colours' must map words to colours written #rrggbb"):
        KnownWords.load(tmp_path / "bad.json")


@needs_wordnet
@pytest.mark.parametrize("prompt, read", [
    # tags of style, labels and asides: parts between clause marks that hold no object word and say no place
    ("a red circle on the left, minimal, flat design, 8k, trending on artstation", "a red circle on the left"),
    ("Alt text: a small red circle above a large star.", "a small red circle above a large star"),
    ("For the poster, put a red circle at the top. Can you make one for her?", "a red circle at the top"),
    # noun phrases with no object word, with their determiners ("the designer", "my daughter")
    ("my daughter wants a picture of a small blue square", "a small blue square"),
    # a lone colour word set off by a comma describes the object before it, even without its article; said again,
    # an object gets "a" as in the captions, unless its noun is none of theirs in the singular
    ("square, red, top of the picture, plain backdrop", "a red square at the top"),
    ("red circles on the left, plain backdrop", "red circles on the left"),
    # a word seen only as a modifier after a noun: "make the square blue" names a blue square
    ("make the square blue and move it to the top", "the blue square at the top"),
    # a part that says where is kept, and a phrase holding or following a word that says where is no aside
    ("a red circle, centered composition, flat vector, 4k", "a red circle, centered composition"),
    ("Poster idea: a red circle pushed over to the left, lots of empty space around it.", "a red circle on the left"),
    # where what is left needs no saying again, it is kept as it is; nothing is dropped from a prompt in known words
    ("a red circle, a blue square, minimal", "a red circle, a blue square"),
    ("a red circle on the left, the square", "a red circle on the left, the square"),
    # nor one of the two objects a relation joins, nor the only object, where the model cannot read them
    ("a tall pentagon above a red circle", "a tall pentagon above a red circle"),
    ("a pentagon on the left, 8k", "a pentagon on the left"),  # the tag alone goes
    # the picture itself is no object, however many words come before it
    ("a red circle above a box, minimalist vector illustration", "a red circle above a box"),
    # "it" and a modifier before "and"; a property and its value; a label's value
    ("Draw one star. Make it red and put it at the top.", "one red star at the top"),
    ("Draw a red star. Make it look bold and graphic.", "a red star"),
    ("a star, colour red, at the top", "a red star at the top"),
    ("Shape: star. Colour: red. Position: top.", "a red star at the top"),
    # parts set apart by "|" stay apart: "circle, red" is one object
    ("circle, red | square, blue | the red circle sits above the blue square | clean, geometric",
     "a red circle above a blue square"),
    # a relation pointing back from the object named right before it; "that one"; a comparative with its "than"
    ("a red circle on top, a blue square below it, stacked vertically", "a red circle above a blue square"),
    ("There's a blue square. Below that one, add a red circle.", "a blue square above a red circle"),
    ("a red circle sits higher in the picture than a blue square", "a red circle above a blue square"),
    # a part of the frame with its side ("the foot", "the head" of the image) is a place
    ("a red star at the head of the image", "a red star at the top"),
    # keys and values, emphasis weights, sides in brackets, a side joined to its verb, words of hedging and asking
    ("shape=star color=red pos=top", "a red star at the top"),
    ("masterpiece, best quality, (red circle:1.3), placed at top of frame, no text", "a red circle at the top"),
    ("Stacked layout: small red circle (upper), large blue square (lower).",
     "a small red circle above a large blue square"),
    ("Left-aligned element: a small red star", "a small red star on the left"),
    ("There was this red star over on the left, and I'm sure it was small.", "this small red star on the left"),
    ("put a red circle on the left side ok", "a red circle on the left"),
    ("a red circle is in right from a blue square", "a red circle to the right of a blue square"),
    # the order two objects are listed in, said outright; "that" pointing back before a copula; a place of no side
    ("row: [red circle, blue square] // top to bottom", "a red circle above a blue square"),
    ("objects=[red circle, blue square]; layout=vertical; order=top-to-bottom", "a red circle above a blue square"),
    ("It had a large star, and above that was a red circle.", "a large star below a red circle"),
    ("Left-aligned element: a small red star on a dark background.", "a small red star on the left"),
    # a place or relation taken back for another; one said not to hold, or said empty; what is said absent
    ("a red circle on the left no wait at the top", "a red circle at the top"),
    ("a red circle on top of, sorry, below a star", "a red circle below a star"),
    ("not on the left — put a red circle at the top", "a red circle at the top"),
    ("a red circle, I don't want it on the left, it should sit at the top", "a red circle at the top"),
    ("a red circle at the top, negative space on the left", "a red circle at the top"),
    ("a red circle at the top; the left half stays empty", "a red circle at the top"),
    ("um so like a red circle at the top, no gradients, no text, ta", "a red circle at the top"),
    # "the shape" after one object; sides of rows; a side before an object; a flat picture's compass
    ("At the top rests a red circle, lots of room above the shape.", "a red circle at the top"),
    ("red circle top row, star bottom row", "a red circle above a star"),
    ("red circle on top star on the bottom", "a red circle above a star"),
    ("a red circle due north of a star", "a red circle above a star"),
    # never-seen nouns beside named objects are their setting; a side left by one is a place; a side one first
    ("Exercise 4 (2 marks): draw a red circle at the top", "a red circle at the top"),
    ("I dreamt of a red circle glowing on the left side of an endless sky", "a red circle on the left"),
    ("Two forms: the lower one is a red circle, and the upper one is a star.", "a red circle below a star"),
    ("Draw a red circle in the top half of the box.", "a red circle at the top"),
    ("When I was young I had a poster with nothing on it but a red circle up at the very top.",
     "a red circle at the top"),
    # objects without an article, in words the captions hold, are said with one
    ("red circle above star", "a red circle above a star"),
    # "it … its left": "it" the other one; a place said wrong; a clock's hour; a side after "its" before a verb
    ("A red circle shouldn't be on the left of the star, it should be on its right.",
     "a red circle to the right of the star"),
    ("the red circle came out on the left, that's wrong, I need it at the top", "the red circle at the top"),
    ("Put a red circle at twelve o'clock, please", "a red circle at the top"),
    ("I followed a red circle through the dark, and just to its left drifted a star",
     "a red circle to the right of a star"),
    # the picture's own words; a setting beside two named objects
    ("A minimalist flat design illustration featuring a red circle at the top.", "a red circle at the top"),
    ("Draw a red circle. Below it, draw a star, leaving a large gap between them.", "a red circle above a star"),
    # a post's hashtags and chat words; a place run on into other words; the picture however described
    ("ok so i need a red circle on the LEFT side lol #art #minimal", "a red circle on the left"),
    ("red circle top pls 🙏✨", "a red circle at the top"),
    ("On the left side of an otherwise plain dark image sits a red circle.", "a red circle on the left"),
    # directions: a side to move to between two objects places the one ahead against the one before
    ("Find the star, then go a bit to the left and you'll see a red circle.", "the star to the right of a red circle"),
    ("Start at the star and head straight up; first thing you'll bump into is a red circle.",
     "the star below a red circle"),
    ("Keep going left till you nearly hit the wall, and there's a red circle.", "a red circle on the left"),
    # never a place lost: a question and its answer, a side before a preposition, a relation to a setting said
    # after both, a side word with no place ("… way down the image": as written)
    ("Where did the red circle go? Oh! It's all the way up at the top, sweetie.", "the red circle at the top"),
    ("As a user I want to see a red circle placed left in the canvas, with equal space on every side.",
     "a red circle on the left"),
    ("Place the subject, a red circle, in the upper third of the frame, minimal headroom above it.",
     "a red circle at the top"),
    ("Put a red circle most of the way down the image.", "Put a red circle most of the way down the image."),
    # positions in numbers, file names, pictographs (`ldmkit.text.positions`); a pronoun of a person points back
    ("Put a red circle nine tenths of the way up the image.", "a red circle at the top"),
    ("a red circle at x=0.1, y=0.5", "a red circle on the left"),
    ("a star at (400, 256) and a red circle at (100, 256) on a 512 px canvas", "a star to the right of a red circle"),
    ("red_circle_left.png", "a red circle on the left"),
    ("👉 red circle on the left ✨", "a red circle on the left"),
    ("a star is at the top, and under him is a red circle", "a star above a red circle"),
    # shorthand, a compass's adjectives, prompts written as data (`ldmkit.text.structured`)
    ("need a red circle @ lft edge, dk bg", "a red circle on the left"),
    ("a red circle in the northern hemisphere of the image", "a red circle at the top"),
    ("a red circle due north of a star", "a red circle above a star"),
    ("shape: circle\ncolor: red\nposition: left", "a red circle on the left"),
    ("| item | where |\n|---|---|\n| red circle | top |", "a red circle at the top"),
    # a specification's words; a predicate of the picture describes no object
    ("wherein a red circle is disposed at the superior edge of the image area", "a red circle at the top"),
    ("A composition wherein said red circle is disposed inferior to said star.", "the red circle below the star"),
    ("The red circle shall be positioned adjacent to the left-hand boundary of the canvas. The background shall be "
     "dark.", "The red circle on the left"),
    # a wall's words; a setting's colour name among many phrases; a verb after the object's noun
    ("Elevation view, facing the wall: mount a red circle up at ceiling height.", "a red circle at the top"),
    ("In a moody setting of pure midnight darkness, a red circle rests at the top of the frame. Its surface is "
     "smooth, catching a hint of light.", "a red circle at the top"),
    ("a red circle in the centre-left of the image", "a red circle on the left"),
    ("Map, north up: red circle marks a spot on the west edge.", "a red circle on the left"),
    ("Close, but the circle needs to be at the top. Keep it red.", "the red circle at the top"),
    ("One more try: leave the star alone, but move the red circle so it sits directly above the star.",
     "the star below the red circle"),
    # "one over the other" says how they stand, not which is where; a comparative said in full
    ("Two shapes, one over the other: red circle upper, star lower.", "a red circle above a star"),
    ("Put a star in the picture, and a red circle farther to the left than it.", "a star to the right of a red circle"),
    # "its" after both, in a clause of its own, is the one named last: the other is placed
    ("red circle beside a star, to its right", "a red circle to the right of a star"),
    ("PANEL 3: a red circle frame left, nothing else.", "a red circle on the left"),
    # formal words; "the former", "the latter"
    ("The image shall contain a red circle and a star, whereby the former shall be above the latter.",
     "a red circle above a star"),
])
def test_what_the_model_cannot_draw_is_left_out_when_a_prompt_is_said_again(prompt, read):
    assert KnownWords.from_captions(CAPTIONS).rewrite(prompt, wordnet) == read
