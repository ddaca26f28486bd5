"""Where the 4-step student's time goes, and so why it is ~7–9× the 25-step guided teacher rather than 12.5×
(issue 20's ≥ 8× target): the parts of one batch drawn by the shipped teacher and student, timed in one process.

    python experiments/student_time_split.py --results experiments/STUDENT_TIME_SPLIT.md

Rows (median of ``--rounds`` interleaved rounds, after one untimed run each, the pipelines' own precision):
the UNet alone at each batch of ``--unet-batches`` (the student's UNet, 16×16 latent, its guidance input), the
prompt encoder on ``--batch`` prompts, the decoder on ``--batch`` latents, and the student's and the teacher's
whole call on ``--batch`` prompts. From them: the fixed cost of a UNet call and its cost per batch row (a line
through the UNet rows), the share of each call that encoding and decoding take, and the teacher-to-student
ratio each part leaves: measured, with encoding and decoding free, and with the UNet's fixed per-call cost free.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import ldmkit
from ldmkit.eval import heldout_shapes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # _bench_common
from _bench_common import (  # noqa: E402
    command_line, machine_info, machine_lines, markdown_table, measure_peaks, median, show_results,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="ldmkit/pretrained/shapes64-lcm")
    p.add_argument("--batch", type=int, default=8, help="prompts per call (time_to_quality.py's timed batch)")
    p.add_argument("--student-steps", type=int, default=4)
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--unet-batches", default="1,2,4,8,16")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--results", help="write the markdown here")
    args = p.parse_args(argv)
    args.unet_batches = [int(b) for b in args.unet_batches.split(",")]
    return args


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of the least-squares line y = a + b·x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv=None) -> None:
    args = parse_args(argv)
    teacher = ldmkit.load_pipeline(precision="auto")
    student = ldmkit.load_pipeline(args.student, precision="auto")
    model = student.model
    prompts = heldout_shapes(args.batch, model.config.image_size, start=10**7).captions
    side = model.config.image_size // model.autoencoder.downsample_factor
    own = student.default_guidance
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(args.batch, model.config.unet.in_channels, side, side, generator=g)

    def unet_call(b: int):
        z, t = torch.randn(b, model.config.unet.in_channels, side, side, generator=g), torch.full((b,), 500)
        context = student.encode(prompts[:1] * b)

        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=student.bf16):
                model.unet(z, t, context, guidance=own)
        return run

    rows = {f"UNet call, batch {b}": unet_call(b) for b in args.unet_batches}
    rows["prompt encoder, batch"] = lambda: student.encode(prompts)
    rows["decoder, batch"] = lambda: student.decode(latents)
    rows["student call"] = lambda: student.generate_tensors(prompts, steps=args.student_steps, guidance=own)
    rows["teacher call"] = lambda: teacher.generate_tensors(prompts, steps=args.teacher_steps, guidance=4.0)
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.inference_mode():
        for run in rows.values():
            run()
        for _ in range(args.rounds):
            for name, run in rows.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * median(v) for name, v in times.items()}

    a, b = fit_line(args.unet_batches, [ms[f"UNet call, batch {n}"] for n in args.unet_batches])
    enc, dec, s_call, t_call = (ms["prompt encoder, batch"], ms["decoder, batch"], ms["student call"],
                                ms["teacher call"])
    fixed = enc + dec
    n_s, n_t = args.student_steps, args.teacher_steps
    rows_of = {f"UNet call, batch {n}": n for n in args.unet_batches}  # the other parts draw ``--batch`` images
    table = [[name, f"{value:.1f}", f"{value / rows_of.get(name, args.batch):.2f}"] for name, value in ms.items()]
    ratios = [
        ["measured", f"{t_call / s_call:.2f}"],
        ["encoding and decoding free", f"{(t_call - fixed) / (s_call - fixed):.2f}"],
        ["the UNet's fixed per-call cost free", f"{(t_call - n_t * a) / (s_call - n_s * a):.2f}"],
        ["both free", f"{(t_call - fixed - n_t * a) / (s_call - fixed - n_s * a):.2f}"],
    ]
    info = machine_info()
    text = "\n".join([
        "# Where the 4-step student's time goes (issue 20)", "",
        f"Command: `{command_line()}`", "",
        *machine_lines(info, measure_peaks()), "",
        f"{args.batch} prompts per call; the student at {n_s} steps (one UNet pass each, guidance {own:g} as its "
        f"input), the teacher at {n_t} DDIM steps with guidance 4 (one UNet pass of {2 * args.batch} rows each); "
        f"median of {args.rounds} interleaved rounds; precision {student.precision}.", "",
        markdown_table(["part", "ms", "ms / image (batch row)"], table), "",
        f"- a UNet call costs {a:.1f} ms + {b:.2f} ms per batch row (least squares over batches "
        f"{', '.join(map(str, args.unet_batches))})",
        f"- encoding and decoding take {100 * fixed / s_call:.0f}% of the student's call and {100 * fixed / t_call:.0f}% "
        f"of the teacher's; the UNet's fixed per-call cost {100 * n_s * a / s_call:.0f}% and "
        f"{100 * n_t * a / t_call:.0f}%", "",
        markdown_table(["teacher ÷ student images/s", "ratio"], ratios), "",
    ])
    show_results(text, args.results)


if __name__ == "__main__":
    main()
