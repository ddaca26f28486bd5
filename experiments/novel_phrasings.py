"""Phrasings from neither part of the grammar: prompt frames written blind by someone who never saw the chunker,
the known-words rule or the caption grammar (experiments/novel_phrasings/frames.json: 30 one-object frames, each
with the place it states, and 30 two-object frames, each with the relation it states), filled with the dataset's
own colour, shape and size words, so that only the frame is new. Each frame is filled for ``--per-frame`` scenes
(seeded; two objects of different colours and shapes), and each prompt drawn three ways by a shipped model:
as the pipelines read it (`ldmkit.text.known_words`), as written (`read_as_written`), and the same stated scene in
the dataset's templates (`caption_scene`: the model's own wording, the ceiling). ddim 25 steps, guidance 4,
seed 0; judged by the shapes attribute predictor against the stated scene (colour, shape, size where the frame
says one, the place or the relation).

    python experiments/novel_phrasings.py [--model shapes64-grounded] [--per-frame 8] \\
        [--results experiments/NOVEL_PHRASINGS.md]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

from ldmkit.data.shapes_scene import COLORS, SHAPES, SIZES, Scene, ShapeObject
from ldmkit.data.shapes_text import caption_scene
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.generation import generate_for_prompts, read_as_written
from ldmkit.eval.prompt_accuracy import score_prompt
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.settings import GenerationSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, show_results  # noqa: E402

FRAMES = Path(__file__).with_name("novel_phrasings") / "frames.json"
SETTINGS = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=4.0, seed=0)


def fill(frame: str, objects: list[ShapeObject]) -> str:
    """``frame`` with its slots filled by ``objects``' words; {aN} the article that fits the word after it."""
    text = frame
    for n, obj in enumerate(objects, 1):
        text = text.replace(f"{{color{n}}}", obj.color).replace(f"{{shape{n}}}", obj.shape)
        text = text.replace(f"{{size{n}}}", obj.size or "")
    text = re.sub(r"[ \t]+", " ", text).strip()  # lines kept: a frame of several lines is sent as written
    return re.sub(r"\{a\d\}(\s+)(\w)", lambda m: ("an" if m.group(2) in "aeiou" else "a") + m.group(1) + m.group(2),
                  text)


def _cell(text: str) -> str:
    """``text`` on one line of a markdown table: its lines joined, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def scenes_for(entry: dict, kind: str, count: int, rng: random.Random) -> list[Scene]:
    """``count`` stated scenes for a frame: what its filled text says (size only where the frame has a slot)."""
    scenes = []
    for _ in range(count):
        colours, shapes = rng.sample(COLORS, 2), rng.sample(SHAPES, 2)
        objects = [ShapeObject(shape=shapes[i], color=colours[i],
                               size=rng.choice(SIZES) if f"{{size{i + 1}}}" in entry["text"] else None)
                   for i in range(1 if kind == "one" else 2)]
        if kind == "one":
            scenes.append(Scene((ShapeObject(objects[0].shape, objects[0].color, objects[0].size, entry["place"]),)))
        else:
            scenes.append(Scene(tuple(objects), entry["relation"]))
    return scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes64-grounded")
    p.add_argument("--frames", type=Path, default=FRAMES, help="the frames (JSON: 'one' and 'two' lists)")
    p.add_argument("--per-frame", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="the scenes' seed")
    p.add_argument("--results", help="write the table (markdown) here")
    args = p.parse_args()
    frames = json.loads(args.frames.read_text())
    rng = random.Random(args.seed)
    rows = []  # (kind, frame text, prompts, stated scenes)
    for kind in ("one", "two"):
        for entry in frames[kind]:
            scenes = scenes_for(entry, kind, args.per_frame, rng)
            rows.append((kind, entry["text"], [fill(entry["text"], list(s.objects)) for s in scenes], scenes))
    prompts = [t for _, _, texts, _ in rows for t in texts]
    stated = [s for _, _, _, scenes in rows for s in scenes]
    templates = [caption_scene(s) for s in stated]
    pipe = load_pipeline(args.model)
    judge = AttributePredictor()

    def right(texts: list[str], as_written: bool = False) -> list[bool]:
        with read_as_written(pipe, as_written):
            readings = judge.read(generate_for_prompts(pipe, texts, SETTINGS))
        return [score_prompt(s, r.scene).all_right for s, r in zip(stated, readings)]

    marks = {"read": right(prompts), "written": right(prompts, as_written=True), "templates": right(templates)}
    read_as = pipe.model.in_known_words(prompts)

    def share(kind: str | None, way: str, frame: str | None = None) -> str:
        got, k = [], 0
        for row_kind, text, texts, _ in rows:
            if (kind is None or row_kind == kind) and (frame is None or text == frame):
                got += marks[way][k:k + len(texts)]
            k += len(texts)
        return f"{sum(got) / len(got):.1%}"

    lines = ["| objects | as the pipelines read it | as written | the same scenes in templates |",
             "|---|---:|---:|---:|"]
    for kind, name in (("one", "one"), ("two", "two"), (None, "all")):
        lines.append(f"| {name} | **{share(kind, 'read')}** | {share(kind, 'written')} | {share(kind, 'templates')} |")
    lines += ["", "| frame | states | as read | as written | templates | first prompt as the pipelines read it |",
              "|---|---|---:|---:|---:|---|"]
    k = 0
    for (kind, text, texts, _), entry in zip(rows, frames["one"] + frames["two"]):
        states = entry.get("place") or entry.get("relation") or "–"
        cell = _cell(text)  # a frame of several lines, on one row of the table
        lines.append(f"| `{cell}` | {states} | {share(None, 'read', text)} | {share(None, 'written', text)} | "
                     f"{share(None, 'templates', text)} | {_cell(read_as[k])} |")
        k += len(texts)
    head = (f"Model: `{args.model}`; frames `{args.frames.name}`, {args.per_frame} scenes per frame "
            f"({len(prompts)} prompts). "
            f"Command: `{command_line()}`")
    show_results("# Phrasings from neither part of the grammar (issue 21)\n\n" + __doc__.split("\n\n")[0].replace(
        "\n", " ") + "\n\n" + head + "\n\n" + "\n".join(lines) + "\n", args.results)


if __name__ == "__main__":
    main()
