"""The grounded fine-tune's measurements as one table: each ``NAME=JSON`` an `ldmkit eval generate --json` report
(or `benchmarks/shapes64_results.py`'s kept evaluations, the same format) on the same held-out captions.

    python experiments/grounded_finetune/table.py --out experiments/GROUNDED_FINETUNE_SHIPPED.md \\
        --note-file experiments/grounded_finetune/note.txt "control=runs/gft-control/eval-binding0.json" …
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _bench_common
from _bench_common import write_noted_table  # noqa: E402


def row(name: str, report: dict) -> list[str]:
    accuracy, metrics = report["prompt_accuracy"], report["metrics"]
    one, two = accuracy["one object"], accuracy["two objects"]
    failures = ", ".join(f"{k} {v}" for k, v in accuracy["two-object failures"].items())
    return [name, report["title"], str(one["prompts"] + two["prompts"]), f"{100 * one['all']:.1f}%",
            f"**{100 * two['all']:.1f}%**", failures, f"{100 * accuracy['all']['malformed']:.1f}%",
            f"{metrics['FID (shapes-cnn)']['value']:.1f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="NAME=JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--note-file", help="a text file whose paragraphs are written under the heading")
    args = p.parse_args()
    rows = []
    for spec in args.reports:
        name, _, path = spec.partition("=")
        if not name or not Path(path).is_file():
            p.error(f"{spec!r}: give NAME=JSON with an existing report file")
        rows.append(row(name, json.loads(Path(path).read_text())))
    text = write_noted_table(
        args.out, "A grounded fine-tune of the shipped model, against its ungrounded control", args.note_file,
        ["model", "sampling", "prompts", "one object", "two objects", "two-object failures", "malformed", "FID"],
        rows)
    print(text)


if __name__ == "__main__":
    main()
