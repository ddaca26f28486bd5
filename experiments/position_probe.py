"""Does the prompt or the seed decide where an object goes? For each model and seed, draw "a large red
circle" with each position phrase and report the centroid of the drawn object (x, y in [0, 1] from the
top left). A model that follows the prompt moves the object with the phrase; one that reads the layout
from the starting noise draws it in the same place for every phrase of a seed.

    python experiments/position_probe.py --model shipped=ldmkit/pretrained/shapes64 \\
        --model shapes64-v=runs/shapes64-v/model --out experiments/POSITION_PROBE.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.storage import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line  # noqa: E402

PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


def centroid(image) -> tuple[float, float] | None:
    """Centroid of the pixels that differ from the background colour (the top-left pixel)."""
    a = np.asarray(image).astype(float)
    ys, xs = np.nonzero(np.abs(a - a[0, 0]).sum(-1) > 60)
    return (xs.mean() / a.shape[1], ys.mean() / a.shape[0]) if len(xs) else None


def spread(points: list[tuple[float, float] | None]) -> float:
    """Largest distance between two of one seed's centroids: 0 when the phrase moves nothing."""
    pts = [p for p in points if p is not None]
    return max((np.hypot(a[0] - b[0], a[1] - b[1]) for a in pts for b in pts), default=0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--out", default="experiments/POSITION_PROBE.md")
    args = p.parse_args(argv)
    fmt = lambda c: "–" if c is None else f"({c[0]:.2f}, {c[1]:.2f})"  # noqa: E731
    lines = [
        "# Position probe: prompt or seed?", "",
        f"Made by `{command_line(argv)}`.",
        f"Prompt \"a large red circle PHRASE\"; ddim, {args.steps} steps, guidance {args.guidance}. Cells: the drawn "
        "object's centroid (x, y), 0 = left / top. *Spread*: the largest distance between one seed's centroids "
        "(0: the phrase moved nothing).", "",
    ]
    for spec in args.model:
        name, _, folder = spec.partition("=")
        pipe = load_pipeline(folder)
        lines += [f"## {name} (`{folder}`)", "", "| seed | " + " | ".join(PHRASES) + " | spread |",
                  "|---:|" + "---|" * len(PHRASES) + "---:|"]
        spreads = []
        for seed in range(args.seeds):
            points = [centroid(pipe(f"a large red circle {phrase}", steps=args.steps, guidance=args.guidance,
                                    seed=seed)[0]) for phrase in PHRASES.values()]
            spreads.append(spread(points))
            lines.append(f"| {seed} | " + " | ".join(fmt(c) for c in points) + f" | {spreads[-1]:.2f} |")
        lines += ["", f"Mean spread: {np.mean(spreads):.2f}", ""]
        print(f"{name}: mean spread {np.mean(spreads):.2f}")
    write_text_atomic(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
