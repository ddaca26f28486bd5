"""Prompts written as data, said as a sentence (`ldmkit.text.structured`)."""

from __future__ import annotations

import pytest

from ldmkit.text.structured import as_sentence


@pytest.mark.parametrize("text, said", [
    ('{"objects": [{"shape": "circle", "color": "red", "position": "left"}], "background": "dark"}',
     "a red circle on the left"),
    ("- shape: circle\n- color: orange\n- size: small\n- position: right side\n- background: dark",
     "a small orange circle on the right"),
    ("shape=star, color=red, pos=top", "a red star at the top"),
    ("shape: star color: dark red size: large", "a large dark red star"),  # each value up to the next key
    ("Shape: diamond. Colour: green.", "a green diamond"),
    # an attribute said again starts the next object
    ("objects:\n  - color: orange\n    shape: triangle\n    position: top\n  - color: white\n    shape: diamond\n"
     "    position: bottom\nbackground: dark", "an orange triangle at the top and a white diamond at the bottom"),
    # markdown tables: the header's cells are the keys of each row's
    ("| object | color | position |\n|---|---|---|\n| circle | red | top |\n\nbackground: black",
     "a red circle at the top"),
    ("| # | item | where |\n|---|---|---|\n| 1 | red circle | left |\n| 2 | blue square | right |",
     "a red circle on the left and a blue square on the right"),
    # a relation that names the objects by their keys or numbers
    ("subject_a: cyan circle\nsubject_b: yellow star\nrelation: subject_a left_of subject_b\nbg: dark",
     "a cyan circle left of a yellow star"),
    ('{"objects": [{"id": 1, "color": "red", "shape": "circle"}, {"id": 2, "color": "blue", "shape": "square"}], '
     '"layout": "object 1 is above object 2"}', "a red circle is above a blue square"),
])
def test_a_prompt_written_as_data_is_said_as_a_sentence(text, said):
    assert as_sentence(text) == said


@pytest.mark.parametrize("text", [
    "a red circle on the left",
    "Negative prompt: blurry, text\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512",  # no object
    "Note: a red circle",
    "Element one: a red cross, placed left. Element two: a purple square, placed to the right of element one.",
    "colour: red",  # one key
])
def test_prose_and_settings_stay_as_written(text):
    assert as_sentence(text) == text
