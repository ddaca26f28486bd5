"""Two-object prompts against training steps and guidance: prompt accuracy of several text-to-image
models (or one model at several guidance scales) on the same held-out captions, with the
two-object prompts that are not all right sorted by why (`two_object_failure`).

    python experiments/two_objects.py --out runs/sweep --num-images 256 \\
        --row 4k=runs/shapes64-minilm/model@4 --row 6k=runs/shapes64-minilm-6k@4 \\
        --row 8k=runs/shapes64-minilm-8k/model@4 --row 8k=runs/shapes64-minilm-8k/model@6 \\
        --row 8k=runs/shapes64-minilm-8k/model@8 --results experiments/TWO_OBJECTS.md

Each row is ``NAME=MODEL_FOLDER@GUIDANCE`` (DDIM, 25 steps), or ``NAME=MODEL_FOLDER@GUIDANCE@BINDING``
with attribute-binding guidance of scale BINDING (`ldmkit.diffusion.binding`), each two-object prompt
starting from the best of 2 noises, or ``…@BINDING@CANDIDATES`` for another number of them. Its report is
saved as ``OUT/NAME-gGUIDANCE[-bBINDING-cCANDIDATES].json`` (what ``ldmkit eval generate --json`` writes) and
reused when the file
is there, so a stopped run goes on where it was and the table can be re-rendered without
regenerating; delete the JSON files to measure again.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ldmkit.diffusion.binding import BindingGuidance
from ldmkit.eval.generation import evaluate_generation
from ldmkit.eval.prompt_accuracy import FAILURES
from ldmkit.eval.report import percent
from ldmkit.settings import GenerationSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, markdown_table, show_results  # noqa: E402


@dataclass
class Row:
    name: str
    model: Path
    guidance: float
    binding: float = 0.0
    candidates: int = BindingGuidance.candidates

    @property
    def stem(self) -> str:
        return f"{self.name}-g{self.guidance:g}" + (f"-b{self.binding:g}-c{self.candidates}" if self.binding else "")


def parse_row(text: str) -> Row:
    """``NAME=FOLDER@GUIDANCE[@BINDING[@CANDIDATES]]`` → Row; anything else is an argparse error naming the form."""
    name, eq, rest = text.partition("=")
    folder, *numbers = rest.split("@")
    try:
        values = [float(v) for v in numbers]
    except ValueError:
        values = []
    if len(values) == 3 and not (values[2].is_integer() and values[2] >= 1):
        values = []
    if not (eq and name and folder and 1 <= len(values) <= 3 and min(values) >= 0):
        raise argparse.ArgumentTypeError(
            f"--row {text!r}: expected NAME=MODEL_FOLDER@GUIDANCE[@BINDING[@CANDIDATES]], e.g. 8k=runs/ldm@4, "
            "8k=runs/ldm@4@0.3 or 8k=runs/ldm@4@0.3@1")
    return Row(name, Path(folder), *values[:2], *(int(v) for v in values[2:]))


def measure(row: Row, out: Path, num_images: int) -> dict:
    """The row's report as a dict: read from ``out`` when there, else measured and saved there."""
    path = out / f"{row.stem}.json"
    settings = GenerationSettings(sampler="ddim", num_inference_steps=25, guidance_scale=row.guidance,
                                  binding=row.binding, binding_candidates=row.candidates)
    if path.exists():
        report = json.loads(path.read_text())
        wanted = {"images": num_images, "sampler": settings.sampler, "steps": settings.num_inference_steps,
                  "guidance": settings.guidance_scale, "binding": settings.binding}
        if settings.binding:
            wanted["binding_candidates"] = settings.binding_candidates
        missing = {"binding": 0.0, "binding_candidates": 1}  # what reports from before these settings had
        if any(report["settings"].get(k, missing.get(k)) != v for k, v in wanted.items()):
            raise SystemExit(f"{path} holds another measurement ({report['settings']}); delete it or change --out")
        return report
    report = evaluate_generation(row.model, num_images, settings, progress=True)
    print(report.format())
    report.save_json(path)
    return report.to_dict()


TITLE = "Two-object prompts: training steps and guidance"


def markdown(rows: list[Row], reports: list[dict], command: str, note: str = "", title: str = TITLE) -> str:
    header = ["model", "guidance", "binding λ", "starting noises", "1-object all right", "2-object all right",
              "shape", "colour", "size", "relation", *(f"not right: {f}" for f in FAILURES), "FID (shapes-cnn)"]
    body = []
    for row, report in zip(rows, reports):
        one, two = report["prompt_accuracy"]["one object"], report["prompt_accuracy"]["two objects"]
        failures = report["prompt_accuracy"]["two-object failures"]
        body.append([f"{row.name} (`{row.model}`)", f"{row.guidance:g}", f"{row.binding:g}" if row.binding else "–",
                     f"best of {row.candidates}" if row.binding and row.candidates > 1 else "1",
                     percent(one["all"]),
                     f"**{percent(two['all'])}**",
                     percent(two["shape"]), percent(two["color"]), percent(two["size"]), percent(two["relation"]),
                     *(str(failures[f]) for f in FAILURES),
                     f"{report['metrics']['FID (shapes-cnn)']['value']:.1f}"])
    settings = reports[0]["settings"]
    two = reports[0]["prompt_accuracy"]["two objects"]["prompts"]
    return "\n".join([
        f"# {title}",
        "",
        f"ddim, 25 steps, on the first {settings['images']} held-out shapes captions ({two} of them two-object; "
        f"seed {settings['heldout_seed']}), the same captions and seeds for every row. The *not right* columns "
        "count the two-object prompts that are not all right by why (docs/evaluation.md): the image shows "
        "another number of objects; both objects right but another relation; every stated attribute shown "
        "but some on the other object (attributes swapped); a stated attribute on neither object. "
        "FID from this few images is far above its floor and only compares rows.",
        *(["", note] if note else []),
        "",
        markdown_table(header, body),
        "",
        f"Regenerate: `{command}`",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", type=parse_row, action="append", required=True,
                   help="NAME=MODEL_FOLDER@GUIDANCE[@BINDING[@CANDIDATES]] (repeat); NAME labels the row and "
                        "its JSON file")
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--out", type=Path, required=True, help="folder for each row's JSON report")
    p.add_argument("--results", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--note", default="", help="a paragraph under the heading: what the models are")
    p.add_argument("--title", default=TITLE, help="the results file's heading")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reports = [measure(row, args.out, args.num_images) for row in args.row]
    text = markdown(args.row, reports, command_line(argv), args.note, args.title)
    show_results(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
