"""Places said in numbers, file names and symbols, said again in words (`ldmkit.text.positions`)."""

from __future__ import annotations

import pytest

from ldmkit.text.positions import (file_words, number_places, place, shorthand, side_compounds, without_north_up,
                                   without_symbols)


@pytest.mark.parametrize("u, v, said", [
    (0.5, 0.5, "in the centre"), (0.4, 0.6, "in the centre"), (0.15, 0.5, "on the left"), (0.9, 0.5, "on the right"),
    (0.5, 0.1, "at the top"), (0.5, 0.85, "at the bottom"), (0.2, 0.4, "on the left"), (0.45, 0.8, "at the bottom"),
])
def test_a_point_is_placed_by_its_larger_offset_from_the_centre(u, v, said):
    assert place(u, v) == said


@pytest.mark.parametrize("text, read", [
    # normalised coordinates, and the words that state the convention go with them
    ("a purple star centred at x=0.15, y=0.5 (normalised coordinates, x from the left)", "a purple star on the left"),
    ("a star at x = 0.8", "a star on the right"),
    # shares of the way, in per cent, fractions and words; an axis not given is at its middle
    ("an orange square exactly at 50% width and 50% height", "an orange square in the centre"),
    ("a star 85% of the way from the left", "a star on the right"),
    ("a star a quarter of the way from the right", "a star on the right"),
    ("Put a red circle about nine tenths of the way down the image.", "Put a red circle at the bottom."),
    ("a circle two thirds across", "a circle on the right"),
    ("a square three quarters of the way up", "a square at the top"),
    ("a star at y=0.2, then drag it up", "a star at the top, then drag it up"),  # "up" turns no axis over
    # pixels, only on a canvas the prompt gives; y down from the top unless it says otherwise
    ("Place a blue triangle at pixel (256, 460) on a 512x512 canvas, with y measured from the top.",
     "Place a blue triangle at the bottom."),
    ("a circle at (256, 460) on a 512x512 canvas, y measured from the bottom", "a circle at the top"),
    ("SVG 512x512: orange triangle at cx=256 cy=96, red circle at cx=256 cy=416.",
     "SVG: orange triangle at the top, red circle at the bottom."),
    ("a circle at (100, 256) and a star at (400, 256) on a 512 px canvas, x counted from the left",
     "a circle on the left and a star on the right"),
    # two objects by shares of the same axis
    ("Put a cross one third of the way down the image and a square about 85% of the way down.",
     "Put a cross at the top and a square at the bottom."),
    ("red star at y = 20% from the top, green cross at y = 80% from the top",
     "red star at the top, green cross at the bottom"),
    # cells of a grid the prompt names
    ("white cross in cell B3, purple star in cell B1 (3x3 grid, row 1 is the top row)",
     "white cross at the bottom, purple star at the top"),
    ("green diamond in cell C2 of a 3x3 grid", "green diamond on the right"),
])
def test_a_position_in_numbers_is_said_as_its_place(text, read):
    assert number_places(text) == read


@pytest.mark.parametrize("text", [
    "a red square at x=300",  # pixels on no canvas given
    "a red square at x=1.7",  # out of the picture
    "a 3x3 grid of squares", "a third circle", "the top half of the image", "a square (lower)",
    "two red circles and 3 blue squares", "a small red circle above a large blue square",
    "a star halfway up the left side",  # the middle of one axis alone says no side
])
def test_numbers_that_say_no_position_stay(text):
    assert number_places(text) == text


def test_file_names_and_underscored_words_are_read_as_words():
    assert file_words("white_diamond_left.png") == "white diamond left"
    assert file_words("red_cross_left_of_purple_square.png") == "red cross left of purple square"
    assert file_words("pos(red circle) = right_of(cyan star)") == "pos(red circle) = right of(cyan star)"
    assert file_words("a five-pointed star") == "a five-pointed star"  # hyphenated words stay


def test_pictographs_are_left_out_and_part_the_words_between_them():
    assert without_symbols("👇👇 yellow star at the bottom 👇👇") == "yellow star at the bottom"
    said = "red cross on top, blue square underneath"
    assert without_symbols("⬆️ red cross on top, ⬇️ blue square underneath") == said
    assert without_symbols("yellow diamond ➡️ cyan circle") == "yellow diamond, cyan circle"
    assert without_symbols("orange star 👉🏽 right side pls 🙏") == "orange star, right side pls"
    assert without_symbols("a red circle → a blue square") == "a red circle → a blue square"  # an arrow of text: Sm
    assert without_symbols("a red circle") == "a red circle"


@pytest.mark.parametrize("text, said", [
    ("red square lft", "red square left"), ("a star @ btm pls", "a star at bottom pls"),
    ("green triangle abv blue star", "green triangle above blue star"),
    ("a circle in ctr w/ dark bg", "a circle in center with dark bg"),
    ("red circle up top + blue triangle blw it", "red circle up top and blue triangle below it"),
    ("a diamond nxt to it on its rt side", "a diamond next to it on its right side"),
    ("Red square Lft", "Red square Left"),
])
def test_shorthand_for_where_is_written_in_full(text, said):
    assert shorthand(text) == said


@pytest.mark.parametrize("text", [
    "by my sky, try it", "thx pls hmm", "bt", "HDR", "a&b", "cnr",  # no where-word, or two (corner, center)
    "a red circle on the left",
])
def test_words_that_abbreviate_no_one_where_word_stay(text):
    assert shorthand(text) == text


@pytest.mark.parametrize("text, said", [
    ("the bottom-middle square", "the bottom square"), ("in the centre-left of the image", "in the left of the image"),
    ("top center", "top"), ("Middle Right", "Right"), ("a top-left circle", "a top-left circle"),
])
def test_a_side_said_with_the_middle_is_that_side(text, said):
    assert side_compounds(text) == said


@pytest.mark.parametrize("text, said", [
    ("Map, north up: a star on the east edge.", "Map: a star on the east edge."),
    ("Floor plan, north arrow pointing up. A star in the south.", "Floor plan. A star in the south."),
    ("On the east side (north up) put a star", "On the east side put a star"),
    ("a star north of a circle", "a star north of a circle"),
])
def test_a_maps_north_up_is_left_out(text, said):
    assert without_north_up(text) == said
