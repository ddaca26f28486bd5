"""A consistency student's sampling settings (guidance scale s, the grid's spacing) chosen on validation
captions that no results file measures: held-out items from ``--start`` on (default 100000; the benchmarks
read items 0 … 1023), one image per caption, prompt accuracy and FID as `ldmkit eval generate` gives them.

    python experiments/student_settings.py --student ldmkit/pretrained/shapes64-lcm --steps 4 \\
        --guidance 3,4,5,6,7 --spacing trailing,linspace --num-images 512 --results experiments/STUDENT_SETTINGS.md

With ``--teacher MODEL`` the teacher's row (DDIM 25 steps, guidance ``--teacher-guidance``) is measured on the
same captions, so the student's gaps are read against it. ``--step-guidance "1,3.5,3.5,3.5;2,4,4,4"`` adds rows
that give the student another guidance scale at each of its steps (a forward hook on its UNet, keyed by the grid's
timesteps; trailing spacing), to see which steps the scale matters at.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import ldmkit
from ldmkit.diffusion.grids import sigma_grid
from ldmkit.eval import AttributePredictor, ShapesFeatures, heldout_shapes
from ldmkit.eval.generation import RealReference, generate_for_prompts, score_generated
from ldmkit.settings import GenerationSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import command_line, markdown_table  # noqa: E402


def measure(pipe, settings: GenerationSettings, reference, predictor, batch: int) -> dict:
    start = time.perf_counter()
    images = generate_for_prompts(pipe, reference.heldout.captions, settings, batch)
    seconds = time.perf_counter() - start
    report = score_generated(images, reference, predictor, batch)
    acc = report.prompt_accuracy
    return {"one": acc["one object"]["all"], "two": acc["two objects"]["all"],
            "fid": report["FID (shapes-cnn)"].value, "s": seconds / len(images)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", required=True, action="append",
                   help="a student model folder (repeat the option for several, measured on the same captions)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance", default="4", help="comma-separated guidance scales")
    p.add_argument("--spacing", default="trailing", help="comma-separated grid spacings (trailing, linspace, leading)")
    p.add_argument("--step-guidance", default="",
                   help="semicolon-separated schedules, each a comma-separated scale per step (trailing grid)")
    p.add_argument("--teacher", help="a teacher model folder to measure on the same captions")
    p.add_argument("--teacher-guidance", type=float, default=4.0)
    p.add_argument("--num-images", type=int, default=512)
    p.add_argument("--start", type=int, default=100_000, help="the first held-out item read (validation part)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--results", type=Path)
    args = p.parse_args(argv)
    guidances = [float(g) for g in args.guidance.split(",")]
    spacings = [s.strip() for s in args.spacing.split(",") if s.strip()]

    shapes = ShapesFeatures()
    reference = RealReference(heldout_shapes(args.num_images, 64, start=args.start), [shapes], args.batch)
    predictor = AttributePredictor(shapes.module)
    rows = []
    if args.teacher:
        teacher = ldmkit.load_pipeline(args.teacher, precision="auto")
        r = measure(teacher, GenerationSettings(sampler="ddim", num_inference_steps=25,
                                                guidance_scale=args.teacher_guidance), reference, predictor, args.batch)
        rows.append([f"teacher `{args.teacher}`, DDIM 25", "", f"{args.teacher_guidance:g}", r])
        print(rows[-1], flush=True)
    for folder in args.student:
        student = ldmkit.load_pipeline(folder, precision="auto")
        for spacing in spacings:
            for g in guidances:
                settings = GenerationSettings(sampler="lcm", num_inference_steps=args.steps, guidance_scale=g,
                                              spacing=spacing)
                rows.append([f"`{folder}`, {args.steps} steps", spacing, f"{g:g}",
                             measure(student, settings, reference, predictor, args.batch)])
                print(rows[-1], flush=True)
        for schedule in [s for s in args.step_guidance.split(";") if s.strip()]:
            scales = [float(g) for g in schedule.split(",")]
            if len(scales) != args.steps:
                raise SystemExit(f"--step-guidance {schedule!r}: one scale per step ({args.steps}) needed")
            timesteps = sigma_grid(student.model.schedule, args.steps, "trailing").timesteps
            per_t = dict(zip(timesteps, scales))
            hook = student.model.unet.register_forward_pre_hook(
                lambda m, a, k: (a, {**k, "guidance": per_t[int(a[1].reshape(-1)[0])]}), with_kwargs=True)
            settings = GenerationSettings(sampler="lcm", num_inference_steps=args.steps, guidance_scale=scales[0])
            rows.append([f"`{folder}`, {args.steps} steps, per step", "trailing", schedule.replace(",", " / "),
                         measure(student, settings, reference, predictor, args.batch)])
            hook.remove()
            print(rows[-1], flush=True)
    table = markdown_table(
        ["row", "spacing", "guidance", "one object", "two objects", "FID", "s / image"],
        [[name, spacing, g, f"{r['one']:.1%}", f"{r['two']:.1%}", f"{r['fid']:.1f}", f"{r['s']:.3f}"]
         for name, spacing, g, r in rows])
    text = (f"# Student settings on validation captions\n\nCommand: `{command_line()}`\n\n"
            f"Held-out items {args.start} … {args.start + args.num_images - 1} (no results file reads them), "
            f"{torch.get_num_threads()} torch thread(s); FID real-vs-real floor {reference.floor[shapes.name]:.1f}.\n\n"
            + table + "\n")
    print(text)
    if args.results:
        args.results.write_text(text)


if __name__ == "__main__":
    main()
