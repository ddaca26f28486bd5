"""Misspelt prompt words read as the words they were meant as (`ldmkit.text.spelling`, `KnownWords.meant`)."""

from __future__ import annotations

import pytest

from ldmkit.text.known_words import KnownWords
from ldmkit.text.spelling import distance, edits
from ldmkit.text.wordnet import default_wordnet

wordnet = default_wordnet()
needs_wordnet = pytest.mark.skipif(wordnet is None, reason="WordNet is not installed (pip install 'ldmkit[words]')")

CAPTIONS = ["a red circle above a blue square", "a small green triangle on the right", "a large yellow star",
            "a purple diamond to the left of an orange cross", "a white hexagon at the top",
            "a red circle", "a blue square below a green triangle"]


def test_edits_are_the_strings_one_letter_operation_away():
    near = edits("cat")
    assert {"at", "act", "cut", "cart", "scat"} <= near and "cat" not in near and "dog" not in near
    assert all(distance("cat", w) == 1 for w in near)
    assert {w for w in ("ca", "tac", "cta", "coat", "bat", "cats") if distance("cat", w) == 1} <= near
    assert distance("cirlce", "circle") == 1  # two neighbours swapped: one edit
    assert distance("trinagel", "triangle") == 2
    assert distance("", "abc") == 3 and distance("kitten", "sitting") == 3 and distance("same", "same") == 0


@needs_wordnet
def test_wordnet_knows_words_of_every_part_of_speech_and_their_inflections():
    for word in ("circles", "placed", "sitting", "quickly", "vibrant", "bigger"):
        assert wordnet.is_word(word), word
    for word in ("cirlce", "abvoe", "sqaure", "qwertyuiop"):
        assert not wordnet.is_word(word), word


@needs_wordnet
@pytest.mark.parametrize("prompt, read", [
    ("a red cirlce abvoe a blue sqaure", "a red circle above a blue square"),  # swapped letters
    ("a smal gren trinagle on the rigth", "a small green triangle on the right"),  # dropped, swapped
    ("an purpel diamnod", "a purple diamond"),  # the article made to fit the word meant
    ("Yelow star", "Yellow star"),  # a capital kept
    ("two circels", "two circles"),  # an inflection of a caption word
    ("a trinagel", "a triangle"),  # two edits from a long caption word
    ("a blu star", "a blue star"),  # three letters: a caption word one edit away
    ("a smalll star", "a small star"),  # the caption word itself before its plural ("smalls")
])
def test_misspelt_words_are_read_as_the_words_they_were_meant_as(prompt, read):
    known = KnownWords.from_captions(CAPTIONS)
    assert known.spelled(prompt, wordnet) == read


@needs_wordnet
@pytest.mark.parametrize("prompt", [
    "a red circle above a blue square",  # caption words
    "a crimson disc placed quickly, vibrant, isometric",  # English words the captions never held
    "a star, 8k, HDR, hdr, artstation, octane render",  # numbers, capitals, names and tags no word is near
    "a magneta circle",  # two English words one edit away (magenta, magnet): which one is not known
    "a lavender hexagon",  # a colour name of the lexicon
    "a star, manga style, figma, pixar, dribbble",  # short names and words near no word the model draws
])
def test_words_spelt_right_or_with_no_one_word_near_stay_as_written(prompt):
    known = KnownWords.from_captions(CAPTIONS)
    assert known.spelled(prompt, wordnet) == prompt


@needs_wordnet
def test_the_rewrite_reads_a_misspelt_word_then_by_its_meaning():
    known = KnownWords.from_captions(CAPTIONS)
    assert known.meant("turqoise", wordnet) == "turquoise"  # the one English word one edit away
    assert known.rewrite("a scarlet cirlce abvoe a blue sqaure", wordnet) == "a red circle above a blue square"
