"""Teacher and 4-step student side by side: the same prompts and seeds, one row per model.

    python experiments/student_grid.py --model shapes64-grounded --model shapes64-grounded-lcm \\
        --out experiments/grounded_student_grid.png

Each model samples at its own defaults (a teacher: DDIM 25 steps, guidance 4; a consistency student: lcm at its
own steps and scale), from the same z_T of each seed. The prompts are two-object ones of the shapes grammar, in
the order written in ``PROMPTS``; the picture's columns follow them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ldmkit
from ldmkit.images import save_grid

PROMPTS = [
    "a red circle above a blue square",
    "a small yellow star to the left of a large green triangle",
    "a large purple diamond below a small white cross",
    "a cyan square to the right of an orange circle",
    "a small blue triangle above a large red star",
    "a green cross to the left of a yellow diamond",
    "a white circle below a purple square",
    "a large orange star to the right of a small cyan triangle",
]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="a model folder or shipped name; one row each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="the picture (.png)")
    args = p.parse_args(argv)
    rows = []
    for model in args.model:
        pipe = ldmkit.load_pipeline(model, precision="auto")
        rows.append(pipe.generate_tensors(PROMPTS, seed=args.seed))
    save_grid(torch.cat(rows), args.out, nrow=len(PROMPTS))
    print(f"wrote {args.out}: rows {', '.join(args.model)}; columns: {' | '.join(PROMPTS)}")


if __name__ == "__main__":
    main()
