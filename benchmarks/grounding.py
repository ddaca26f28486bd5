"""Prompt following, before and after grounded training: each model without and with binding guidance on
the held-out captions in the dataset's templates, and without it on the same scenes told in the seen
and the unseen part of the broad caption grammar. Writes ``benchmarks/GROUNDING.md``.

    python benchmarks/grounding.py --model before=runs/base-shipped --model grounded=runs/shapes64-grounded

Each row is one `ldmkit eval generate` run (ddim, 25 steps, guidance 4), kept as JSON under ``--work``, so
a stopped run goes on where it stopped and a finished row is not measured again (delete its JSON to redo it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ldmkit.eval.generation import evaluate_generation
from ldmkit.eval.report import percent
from ldmkit.settings import GenerationSettings
from ldmkit.storage import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import results_footer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAILURE_KEYS = ("number of objects", "relation", "attributes swapped", "attribute missing")


def rows_to_run(args) -> list[tuple[str, str, str, float, int]]:
    """(model name, folder, phrasing, binding λ, images) of every row, in the order of the table."""
    rows = []
    for name, folder in args.model:
        rows += [(name, folder, "templates", 0.0, args.images), (name, folder, "templates", args.binding, args.images),
                 (name, folder, "seen", 0.0, args.phrasing_images), (name, folder, "unseen", 0.0, args.phrasing_images),
                 (name, folder, "unseen", args.binding, args.phrasing_images)]
    return rows


def measure(row, work: Path, progress: bool, device: str = "cpu") -> dict:
    name, folder, phrasing, binding, images = row
    path = work / f"{name}-{phrasing}-binding{binding:g}-{images}.json"
    if path.is_file():
        return json.loads(path.read_text())
    settings = GenerationSettings(binding=binding)
    report = evaluate_generation(folder, images, settings, device=device, progress=progress, phrasing=phrasing)
    result = report.to_dict()
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return result


def table_row(row, result: dict) -> str:
    name, _, phrasing, binding, images = row
    acc = result["prompt_accuracy"]
    failures = acc["two-object failures"]
    total = sum(failures.values())
    why = ", ".join(f"{k} {failures[k]}" for k in FAILURE_KEYS) if total else "–"
    seconds = result["settings"]["generation_seconds"] / images
    fid = result["metrics"]["FID (shapes-cnn)"]["value"]
    return (f"| {name} | {phrasing} | {'λ = %g' % binding if binding else '–'} | {images} | "
            f"{percent(acc['one object']['all'])} | **{percent(acc['two objects']['all'])}** | {why} | "
            f"{percent(acc['all'].get('malformed'))} | {fid:.1f} | {seconds:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                   type=lambda s: tuple(s.split("=", 1)) if "=" in s else p.error(f"--model {s}: give NAME=DIR"))
    p.add_argument("--images", type=int, default=1024, help="held-out template captions (default 1024)")
    p.add_argument("--phrasing-images", type=int, default=512, help="held-out captions per grammar part (default 512)")
    p.add_argument("--binding", type=float, default=0.3, help="binding guidance λ of the guided rows (default 0.3)")
    p.add_argument("--work", default="runs/grounding-eval", help="where each row's JSON is kept")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "GROUNDING.md"))
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the images are drawn")
    p.add_argument("--note", default="", help="what the models are, written under the heading")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    lines = []
    for row in rows_to_run(args):
        result = measure(row, Path(args.work), not args.no_progress, args.device)
        lines.append(table_row(row, result))
        print(lines[-1], flush=True)
    models = ", ".join(f"{name} = `{folder}`" for name, folder in args.model)
    text = "\n".join([
        "# Prompt following: grounded training, binding guidance, phrasings",
        "",
        *([args.note, ""] if args.note else []),
        f"Models: {models}. Sampler ddim, 25 steps, guidance 4; binding guidance λ = {args.binding:g} with the best "
        "of 2 starting noises where the row says so (its groups from the general noun-phrase rule, "
        "`ldmkit.text.phrases`). Captions: the held-out scenes of `ldmkit eval generate` (seed 1000003) told in "
        "the dataset's templates, or in the seen or the unseen (never trained on) part of the broad grammar "
        "(`ldmkit.data.shapes_captions`; the same scenes and real images in every phrasing). The judge counts "
        "objects by connected regions; malformed = share of the objects it finds that fit no clean shape "
        "(`ldmkit.eval.components`). FID on shapes-cnn features against the same held-out renders. s / image: "
        "the row's generation time divided by its images, on whatever else the machine ran at the time (rows "
        "measured in separate runs are not comparable in time; `benchmarks/SHAPES64.md` times one image alone).",
        "",
        "| model | phrasing | binding | prompts | one object | two objects | two-object failures | malformed | "
        "FID | s / image |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|",
        *lines,
        "",
        *results_footer(argv),
    ])
    write_text_atomic(Path(args.results), text)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
