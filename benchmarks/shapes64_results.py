"""Results of a shipped shapes64 model, by default the default one (shapes64-grounded): prompt accuracy (also
with binding guidance), FID/KID, a sample grid, the time of one image and the training time. Writes
``benchmarks/SHAPES64_GROUNDED.md``, ``benchmarks/shapes64_grounded_grid.png`` and the results block of
``README.md`` (between its ``shapes64-results`` markers).

    make shapes64                        # trains every stage, packs the model, then runs this
    python benchmarks/shapes64_results.py --runs runs/shapes64-grounded   # only this (the default model)

``--runs`` is the training folder (a sub-folder per stage, each with its ``log.csv``: ``--stage NAME=FOLDER``,
by default the autoencoder and the default model's three UNet stages), read for the training time and the
number of steps; a stage without its log keeps the training line of the
results file this run replaces (marked as such), or, if that has none (an autoencoder taken from an
earlier run), is reported as not timed. The evaluations' reports are kept in ``--work``: a second run (on a
quiet machine, for the times) reuses them and draws only the grid and the timed images again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from ldmkit.data import save_grid
from ldmkit.eval.generation import evaluate_generation
from ldmkit.eval.report import EvalReport, failures_line, percent
from ldmkit.eval.tables import prompt_accuracy_table, training_lines
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import resolve_model
from ldmkit.settings import GenerationSettings
from ldmkit.storage import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GRID_PROMPTS = [
    "a red circle on the left",
    "a small blue square at the top",
    "a large green triangle in the centre",
    "a yellow star on the right",
    "a purple diamond at the bottom",
    "an orange cross on the left",
    "a red circle above a blue square",
    "a green star left of a yellow triangle",
    "a white diamond below a purple circle",
    "a blue cross right of an orange square",
]
# the default model's stages (`make shapes64`): the autoencoder, the UNet with the grounding loss, twice polished
DEFAULT_STAGES = (("autoencoder", "autoencoder"), ("LDM, grounding loss", "grounded"), ("LDM, first polish", "polish"),
                  ("LDM, second polish", "model"))
README_START, README_END = "<!-- shapes64-results:start -->", "<!-- shapes64-results:end -->"


def seconds_per_image(pipe, settings: GenerationSettings, repeats: int = 5) -> float:
    """Median wall time of generating one image (after one warm-up)."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        pipe("a red circle above a blue square", settings=dataclasses.replace(settings, seed=i))
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def kept_evaluation(pipe, model: Path, images: int, settings: GenerationSettings, work: Path):
    """`evaluate_generation` of ``pipe`` on ``images`` held-out captions, or the report an earlier run kept in
    ``work`` for the same model files (their SHA256SUMS) and settings."""
    sums = model / "SHA256SUMS"
    key = hashlib.sha256((sums.read_text() if sums.is_file() else str(model.resolve())).encode()
                         + f"{images} {settings!r}".encode()).hexdigest()[:16]
    path = work / f"evaluation-{key}.json"
    if path.is_file():
        print(f"kept: {path}")
        return EvalReport.from_dict(json.loads(path.read_text()))
    report = evaluate_generation(pipe, images, settings)
    work.mkdir(parents=True, exist_ok=True)
    report.save_json(path)
    return report


def guided_line(report, settings: GenerationSettings, per_image: float) -> str:
    """One line on the same captions sampled with binding guidance (``settings.binding`` = λ)."""
    acc = report.prompt_accuracy
    return (f"- with binding guidance λ = {settings.binding:g} and the best of {settings.binding_candidates} "
            f"starting noises ([docs/binding.md](../docs/binding.md); it reads "
            f"which words belong to which shape from the prompt): one object **{percent(acc['one object']['all'])}**, "
            f"two objects **{percent(acc['two objects']['all'])}** all right; {failures_line(acc) or 'no failures'}; "
            f"one image {per_image:.2f} s")


def markdown(report, settings: GenerationSettings, per_image: float, training: list[str], command: str, grid: str,
             guided: str = "") -> str:
    acc = report.prompt_accuracy
    fid, floor, kid = report["FID (shapes-cnn)"], report["FID floor, real vs real (shapes-cnn)"], report["KID (shapes-cnn)"]
    judge = report["same, on the real renders (shapes judge)"]
    lines = [
        f"Sampler: {settings.describe()}, on {report.settings['images']} held-out shapes captions "
        f"(seed {report.settings['heldout_seed']}).",
        "",
        prompt_accuracy_table(acc),
        "",
        f"- {failures_line(acc) or 'every two-object prompt all right'}",
        *([guided] if guided else []),
        f"- FID (shapes-cnn features) {fid.formatted()}; real-vs-real floor at this count {floor.formatted()}; "
        f"KID {kid.formatted()}",
        f"- the judge on the real renders of the same captions: {percent(judge.value)} all right",
        f"- one 64×64 image ({settings.describe()}): {per_image:.2f} s on this CPU ({torch.get_num_threads()} threads)",
        *training,
        "  (from the runs' log.csv; a stretch is one run of the command, resumed from the last one's checkpoint)",
        f"- machine: {machine_info()['cpu']}, torch {torch.__version__}",
        "",
        f"![shapes64 samples]({grid})",
        "",
        f"Regenerate: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder or shipped name (default: the default shipped model)")
    p.add_argument("--runs", default="runs/shapes64-grounded", help="the training folder, for the training time")
    p.add_argument("--stage", action="append", metavar="NAME=FOLDER",
                   help="a training stage and its sub-folder of --runs, in order (repeatable; default: "
                        + ", ".join(f"{n}={f}" for n, f in DEFAULT_STAGES) + ")")
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--binding", type=float, default=0.2,
                   help="also measure with binding guidance of this λ (default 0.2, tuned on shapes64; "
                        "0: not)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "SHAPES64_GROUNDED.md"))
    p.add_argument("--grid", default=str(ROOT / "benchmarks" / "shapes64_grounded_grid.png"))
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="README to update ('' to skip)")
    p.add_argument("--title", default="shapes64-grounded, the default model",
                   help="what the results file's heading calls the model")
    p.add_argument("--work", default="runs/shapes64-results",
                   help="where each evaluation's report is kept, and reused by the next run of the same model")
    p.add_argument("--note", default="", help="a line written under the training lines (where the model trained)")
    args = p.parse_args(argv)

    bad = [s for s in args.stage or [] if "=" not in s]
    if bad:
        p.error(f"--stage {bad[0]}: give NAME=FOLDER, e.g. LDM=model")
    model = Path(resolve_model(args.model))
    runs = Path(args.runs)
    stages = tuple(tuple(s.split("=", 1)) for s in args.stage) if args.stage else DEFAULT_STAGES
    training = training_lines(runs, Path(args.results), stages)

    settings = GenerationSettings(sampler=args.sampler, num_inference_steps=args.steps, guidance_scale=args.guidance)
    pipe = load_pipeline(model)
    images = [pipe(prompt, settings=dataclasses.replace(settings, seed=s))[0]
              for s in range(4) for prompt in GRID_PROMPTS]
    save_grid(images, args.grid, nrow=len(GRID_PROMPTS))
    per_image = seconds_per_image(pipe, settings)
    report = kept_evaluation(pipe, model, args.num_images, settings, Path(args.work))
    print(report.format())
    guided = ""
    if args.binding:
        bound = dataclasses.replace(settings, binding=args.binding)
        guided = guided_line(kept_evaluation(pipe, model, args.num_images, bound, Path(args.work)), bound,
                             seconds_per_image(pipe, bound))
        print(guided)
    if args.note:
        training = [*training, f"- {args.note}"]

    command = command_line(argv)
    grid_rel = Path(args.grid).name
    body = markdown(report, settings, per_image, training, command, grid_rel, guided)
    header = (f"# shapes64: {args.title}\n\nColumns of the grid: {'; '.join(GRID_PROMPTS)} "
              f"(rows: seeds 0–3).\n\n")
    write_text_atomic(args.results, header + body)
    print(f"wrote {args.results} and {args.grid}")
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        block = body.replace(f"]({grid_rel})", f"](benchmarks/{grid_rel})").replace("](../docs/", "](docs/")
        pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{readme} has no {README_START} … {README_END} block")
        write_text_atomic(readme, pattern.sub(lambda _: f"{README_START}\n{block}{README_END}", text))
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
