"""Does the training command retrace a run? The first steps of both stages trained again from scratch,
their logged losses compared with those of a reference run at the same steps.

    python experiments/retrace.py --reference runs/shapes64-repro --results experiments/SHAPES64_RETRACE.md

Training is seeded (initialisation, data order, augmentation, the noise of each step) and its learning
rate depends on the step alone (warm-up, then constant), so the first N steps of a run are the same
whatever its length: a rerun of ``--ae-steps`` autoencoder steps and ``--ldm-steps`` diffusion steps
should log the losses the reference logged there, up to floating-point differences between machines.
The diffusion stage trains on the reference's own autoencoder, so that the two stages are checked apart.
Writes the rerun under --out (replacing what is there) and a table of both runs' losses to --results.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, markdown_table, show_results  # noqa: E402


def losses(log: Path) -> dict[int, float]:
    """{step: loss} of a training log.csv."""
    if not log.is_file():
        raise SystemExit(f"no training log at {log}")
    with log.open() as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}


def train(stage: str, preset: str, out: Path, steps: int, autoencoder: Path | None = None) -> None:
    command = [sys.executable, "-m", "ldmkit.cli", stage, "--preset", preset, "--out", str(out),
               "--steps", str(steps), "--no-progress"]
    if autoencoder is not None:
        command += ["--autoencoder", str(autoencoder)]
    subprocess.run(command, check=True)


def compare(name: str, reference: dict[int, float], rerun: dict[int, float]) -> tuple[list[list[str]], float]:
    """Table rows (stage, step, both losses, relative difference) and the largest relative difference."""
    steps = sorted(set(reference) & set(rerun))
    if not steps:
        raise SystemExit(f"{name}: the rerun logged no step the reference logged")
    rows, worst = [], 0.0
    for step in steps:
        diff = abs(rerun[step] - reference[step]) / abs(reference[step])
        worst = max(worst, diff)
        rows.append([name, str(step), f"{reference[step]:.6f}", f"{rerun[step]:.6f}", f"{diff:.1e}"])
    return rows, worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, required=True, help="a training folder with autoencoder/ and model/")
    p.add_argument("--preset", default="shapes64-minilm", help="the preset the reference was trained with")
    p.add_argument("--out", type=Path, default=Path("runs/retrace"), help="folder for the rerun (replaced)")
    p.add_argument("--ae-steps", type=int, default=600)
    p.add_argument("--ldm-steps", type=int, default=400)
    p.add_argument("--results", type=Path, default=None, help="write the markdown table here")
    args = p.parse_args(argv)

    stages = {"autoencoder": "autoencoder", "LDM": "model"}
    reference = {name: losses(args.reference / stage / "log.csv") for name, stage in stages.items()}
    if args.out.exists():
        shutil.rmtree(args.out)
    train("train-autoencoder", args.preset, args.out / "autoencoder", args.ae_steps)
    train("train", args.preset, args.out / "model", args.ldm_steps, autoencoder=args.reference / "autoencoder")
    rows, worst = [], {}
    for name, stage in stages.items():
        stage_rows, worst[name] = compare(name, reference[name], losses(args.out / stage / "log.csv"))
        rows += stage_rows
    summary = "; ".join(f"{name}: largest relative difference {value:.1e}" for name, value in worst.items())
    text = "\n".join([
        f"# Retracing a training run: {args.reference}",
        "",
        f"The first {args.ae_steps} autoencoder steps and {args.ldm_steps} diffusion steps of preset "
        f"`{args.preset}` trained again from scratch (the diffusion stage on {args.reference}/autoencoder), "
        "their logged training losses against the reference run's at the same steps.",
        "",
        f"{summary}.",
        "",
        markdown_table(["stage", "step", "reference loss", "rerun loss", "relative difference"], rows),
        "",
        f"Regenerate: `{command_line(argv)}`",
        "",
    ])
    show_results(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
