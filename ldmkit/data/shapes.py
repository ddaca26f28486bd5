"""``shapes``: a built-in dataset of procedurally drawn, captioned scenes.

Each image holds one or two flat-coloured shapes on a dark grey background, drawn from
(seed, index) alone: no download, any size, and a structured ground truth (`Scene`) next to
every caption, so that a later evaluation can check whether a generated image shows what its
prompt asked for.

Vocabulary (all public tuples):

- `SHAPES`: circle, square, triangle, star, diamond, cross — upright, so that a square and a
  diamond (the same square turned by 45°) stay apart;
- `COLORS`: eight colours whose RGB values (`RGB`) lie at least ~100 apart from each other and
  far from `BACKGROUND` (30, 30, 30), a dark grey against which white still shows;
- `SIZES`: small (radius ≈ 0.11 of the image side) and large (≈ 0.19), about 3× apart in area;
- `POSITIONS`: left, right, top, bottom, centre — centres at 0.25 / 0.75 / 0.5 of the side, with a
  jitter of at most 0.04, so a classifier can tell them apart;
- `RELATIONS`: "left of", "right of", "above", "below".

A two-object scene puts object 0 in one half of the image and object 1 in the other half along
the relation's axis ("above": object 0 in the top half, object 1 in the bottom half), so the
objects never overlap; they are shifted across that axis by less than they are apart along it,
so the relation is plain to see and no other relation reads as well. Their ``position`` fields are derived
from that placement ("above" → object 0 "top", object 1 "bottom"), matching where a one-object
scene with that position would be drawn; the two objects always have different colours, so each
can be picked out of the image by its colour.

The code lives in three modules, re-exported here: `ldmkit.data.shapes_scene` (vocabulary, ground truth,
sampling), `ldmkit.data.shapes_render` (drawing) and `ldmkit.data.shapes_text` (template captions and
parsing prompts back).
"""

from ldmkit.data.shapes_render import draw_shape, render_scene, render_scene_masks
from ldmkit.data.shapes_scene import (  # noqa: F401  (the private helpers: ldmkit.data.shapes_captions reads them here)
    BACKGROUND, COLORS, INVERSE_RELATION, POSITIONS, RELATIONS, RGB, SHAPES, SIZES, Rng, Scene, ShapeObject,
    _chance, _pick, check_scene_options, object_matches, prompt_matches_scene, sample_scene,
)
from ldmkit.data.shapes_text import caption_scene, parse_prompt

__all__ = [
    "BACKGROUND", "COLORS", "INVERSE_RELATION", "POSITIONS", "RELATIONS", "RGB", "SHAPES", "SIZES", "Rng", "Scene",
    "ShapeObject", "caption_scene", "check_scene_options", "draw_shape", "object_matches", "parse_prompt",
    "prompt_matches_scene", "render_scene", "render_scene_masks", "sample_scene",
]
