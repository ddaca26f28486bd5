"""Convolution weights reordered once (`ldmkit.nn.prepack`) against the plain bf16 call, on the shipped models.

Each row runs the same call with the pipeline's convolutions packed and unpacked (`prepack` / `unpack` on the
same pipeline, so the same weights), alternating over ``--rounds`` rounds, each side timed on its second call
after the switch (the first reorders the weights for that input), and reports the median seconds of each,
their ratio, and whether the outputs are equal bit for bit. Rows: the shipped model's UNet alone at
batch 1, 2 and 16 (one guided step of 1 and 8 images), its 25-step guided image at 1 and 8 images a call, and
its 4-step student at 8 images. bf16 only: where oneDNN has no bf16 convolutions (`prepack.available`) it
says so and stops.

    python benchmarks/prepacked_convolutions.py --results benchmarks/PREPACK.md
"""

from __future__ import annotations

import argparse

import torch

from _bench_common import alternating, markdown_table, results_head, show_results
from ldmkit import load_pipeline
from ldmkit.nn.prepack import available, prepack, unpack

PROMPTS = ["a red circle above a blue square", "a small green star on the left", "a yellow triangle",
           "a large white diamond at the top", "a purple cross below an orange circle", "a cyan square on the right",
           "a blue star", "a red diamond to the left of a green square"]


def unet_call(pipe, batch: int):
    unet = pipe.unet_fn()
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(batch, 4, 16, 16, generator=g), torch.full((batch,), 500)
    context = pipe.encode((PROMPTS * 2)[:batch])
    return lambda: unet(z, t, context)


def rows(teacher, student) -> list[tuple[str, object, object]]:
    """(row, pipeline, call)."""
    return [
        ("UNet pass, batch 1", teacher, unet_call(teacher, 1)),
        ("UNet pass, batch 2 (one guided image)", teacher, unet_call(teacher, 2)),
        ("UNet pass, batch 16 (8 guided images)", teacher, unet_call(teacher, 16)),
        ("shipped model, 1 image, DDIM 25, CFG 4", teacher,
         lambda: teacher.generate_tensors(PROMPTS[0], steps=25, guidance=4.0, seed=0)),
        ("shipped model, 8 images, DDIM 25, CFG 4", teacher,
         lambda: teacher.generate_tensors(PROMPTS, steps=25, guidance=4.0, seed=0)),
        ("student, 8 images, 4 steps", student,
         lambda: student.generate_tensors(PROMPTS, steps=4, guidance=4.0, seed=0)),
    ]


@torch.inference_mode()
def measure(pipe, call, rounds: int) -> tuple[float, float, bool]:
    """(median s plain, median s packed, equal bit for bit)."""
    plain_s, packed_s, plain, packed = alternating(lambda on: (prepack if on else unpack)(pipe.model), call, rounds)
    return plain_s, packed_s, torch.equal(plain, packed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", help="write the table (markdown) to this file")
    p.add_argument("--note", default="", help="a line on the conditions of the run, written under the machine")
    args = p.parse_args()
    if not available():
        print(f"oneDNN has no bf16 convolutions on this CPU ({torch.backends.cpu.get_cpu_capability()}): "
              "nothing to compare (pipelines here run fp32, where ldmkit does not pack)")
        return
    torch.set_num_threads(args.threads)
    teacher = load_pipeline(precision="bf16")
    student = load_pipeline("shapes64-grounded-lcm", precision="bf16")  # the default's student
    table = []
    for name, pipe, call in rows(teacher, student):
        plain, packed, equal = measure(pipe, call, args.rounds)
        table.append([name, f"{plain * 1e3:.1f}", f"{packed * 1e3:.1f}", f"{plain / packed:.2f}",
                      "yes" if equal else "NO"])
        print(" | ".join(table[-1]), flush=True)
    text = "\n".join([
        *results_head("Convolution weights reordered once (bf16 on the CPU)", args.note),
        f"Median of {args.rounds} alternating rounds, each side timed on its second call after the switch (the first "
        "reorders the weights for that input); plain = the same pipeline with `ldmkit.nn.prepack.unpack`.", "",
        markdown_table(["call", "plain, ms", "packed, ms", "speed-up", "same output bit for bit"], table), ""])
    show_results(text, args.results)


if __name__ == "__main__":
    main()
