"""The colour-lexicon fine-tune's measurements as one table: for each ``NAME=DIR``, DIR's
``eval-{templates,seen,unseen}-512.json`` (`ldmkit eval generate --json`, the same 512 held-out scenes).

    python experiments/colour_lexicon/table.py --out experiments/COLOUR_LEXICON.md \\
        --note-file experiments/colour_lexicon/note.txt shipped=runs/colour-lexicon-shipped …
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _bench_common
from _bench_common import write_noted_table  # noqa: E402

PHRASINGS = ("templates", "seen", "unseen")


def pct(share) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def row(name: str, phrasing: str, report: dict) -> list[str]:
    accuracy, metrics = report["prompt_accuracy"], report["metrics"]
    one, two = accuracy["one object"], accuracy["two objects"]
    return [name, phrasing, f"**{pct(one['all'])}**", pct(one["color"]), pct(one["shape"]), pct(one["size"]),
            pct(one["position"]), f"**{pct(two['all'])}**", pct(two["color"]), pct(accuracy["all"]["malformed"]),
            f"{metrics['FID (shapes-cnn)']['value']:.1f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--note-file", help="a text file whose paragraphs are written under the heading")
    args = p.parse_args()
    rows = []
    for phrasing in PHRASINGS:
        for spec in args.runs:
            name, _, folder = spec.partition("=")
            path = Path(folder) / f"eval-{phrasing}-512.json"
            if not name or not path.is_file():
                p.error(f"{spec!r}: give NAME=DIR with {path.name} in DIR")
            rows.append(row(name, phrasing, json.loads(path.read_text())))
    text = write_noted_table(
        args.out, "Colour words read by their colour: a fine-tune of the shipped model with `text.colour_lexicon`",
        args.note_file, ["model", "captions", "one object", "colour", "shape", "size", "position", "two objects",
                         "two-object colour", "malformed", "FID"], rows)
    print(text)


if __name__ == "__main__":
    main()
