"""Upsampling by one 2×2 convolution at the input's resolution (`ldmkit.nn.layers.subpixel_convolution`) against
nearest-neighbour doubling then the 3×3 convolution, on the same weights in the same run.

Each row runs one call with every `Upsample` of its network on the sub-pixel path and on the plain path
(`use_subpixel(module, True/False)`), alternating over ``--rounds`` rounds, each side timed on its second call
after the switch (the first builds the 2×2 convolution), and reports the median seconds of each, their ratio, and
the largest difference of the outputs as a share of the plain output's range. Rows: the default model's
decoder D(z) on 8 latents, its 25-step guided image and its student's 4-step image at 8 images a call (the
pipelines' own precision); Stable Diffusion v1's autoencoder decoder (its widths, random weights) on one 64×64
latent (a 512×512 image) in fp32 and, where oneDNN runs bf16 convolutions, in bf16 as a bf16 pipeline holds it;
and one guided call of the CPU-sized SD-shaped UNet of the other benchmarks (``sd-small``, batch 4).

    python benchmarks/subpixel_upsampling.py --results benchmarks/SUBPIXEL_UPSAMPLING.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _bench_common import alternating, bench_models, make_weights, markdown_table, results_head, show_results
from ldmkit import load_pipeline
from ldmkit.autoencoder import build_autoencoder
from ldmkit.config import ModelConfig, load_yaml
from ldmkit.device import store_for_autocast
from ldmkit.nn.layers import use_subpixel
from ldmkit.nn.prepack import available, prepack
from ldmkit.nn.unet import UNet

PROMPTS = ["a red circle above a blue square", "a small green star on the left", "a yellow triangle",
           "a large white diamond at the top", "a purple cross below an orange circle", "a cyan square on the right",
           "a blue star", "a red diamond to the left of a green square"]


def shipped_rows(teacher, student) -> list[tuple[str, str, torch.nn.Module, object]]:
    """(row, precision, network switched, call)."""
    z = torch.randn(8, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return [
        ("default model: decoder D(z), 8 latents 4×16×16", teacher.precision, teacher.model,
         lambda: teacher.decode(z)),
        ("default model: 8 images, DDIM 25, CFG 4", teacher.precision, teacher.model,
         lambda: teacher.generate_tensors(PROMPTS, steps=25, guidance=4.0, seed=0)),
        ("its student: 8 images, 4 steps", student.precision, student.model,
         lambda: student.generate_tensors(PROMPTS, steps=4, seed=0)),
    ]


def sd_vae_rows() -> list[tuple[str, str, torch.nn.Module, object]]:
    """SD v1's decoder on a 64×64 latent: fp32 (channels-last, as a CPU pipeline lays it out), and bf16 with the
    weights stored and packed as a bf16 pipeline keeps them, where oneDNN has bf16 convolutions."""
    root = Path(__file__).resolve().parents[1]
    config = load_yaml(ModelConfig, root / "ldmkit" / "configs" / "models" / "sd-v1.yaml").autoencoder
    torch.manual_seed(0)
    z = torch.randn(1, 4, 64, 64)
    rows = []
    for precision in ("fp32", "bf16") if available() else ("fp32",):
        ae = build_autoencoder(config).eval().requires_grad_(False).to(memory_format=torch.channels_last)
        if precision == "bf16":
            store_for_autocast(ae.decoder, torch.bfloat16)
            store_for_autocast(ae.post_quant_conv, torch.bfloat16)
            prepack(ae)
        zc = z.contiguous(memory_format=torch.channels_last)

        def call(ae=ae, bf16=precision == "bf16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return ae.decode(zc).float()

        rows.append(("SD v1 autoencoder: decoder on 1 latent 4×64×64 (512×512 image)", precision, ae, call))
    return rows


def sd_small_row() -> tuple[str, str, torch.nn.Module, object]:
    bench = bench_models()["sd-small"]
    unet = UNet(bench.unet).eval().requires_grad_(False)
    unet.load_state_dict(make_weights(bench, autoencoder=False)["ldmkit_unet"])
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 4, bench.latent_size, bench.latent_size, generator=g)
    context = torch.randn(4, bench.context_length, bench.unet.context_dim, generator=g)
    return ("sd-small UNet: one guided call, batch 4 (2 images)", "fp32", unet,
            lambda: unet(z, torch.full((4,), 500), context))


@torch.inference_mode()
def measure(network, call, rounds: int) -> tuple[float, float, float]:
    """(median s plain, median s sub-pixel, max |difference| / range of the plain output)."""
    plain_s, subpixel_s, plain, subpixel = alternating(lambda on: use_subpixel(network, on), call, rounds)
    plain, subpixel = plain.float(), subpixel.float()
    spread = (plain.max() - plain.min()).item() or 1.0
    return plain_s, subpixel_s, (subpixel - plain).abs().max().item() / spread


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--precision", default="auto", help="of the default model's pipelines (auto: bf16 where it is "
                   "fast, as `ldmkit generate` picks)")
    p.add_argument("--skip-sd", action="store_true", help="the default model's rows only")
    p.add_argument("--results", help="write the table (markdown) to this file")
    p.add_argument("--note", default="", help="a line on the conditions of the run, written under the machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_pipeline(precision=args.precision)
    student = load_pipeline("shapes64-grounded-lcm", precision=args.precision)  # the default's student
    rows = shipped_rows(teacher, student) + ([] if args.skip_sd else [*sd_vae_rows(), sd_small_row()])
    table = []
    for name, precision, network, call in rows:
        plain, subpixel, difference = measure(network, call, args.rounds)
        table.append([name, precision, f"{plain * 1e3:.1f}", f"{subpixel * 1e3:.1f}", f"{plain / subpixel:.2f}",
                      f"{difference:.1e}"])
        print(" | ".join(table[-1]), flush=True)
    text = "\n".join([
        *results_head("Upsampling as one 2×2 convolution at the input's resolution", args.note),
        f"Median of {args.rounds} alternating rounds on the same weights, each side timed on its second call after "
        "the switch; plain = nearest-neighbour doubling then the 3×3 convolution (`use_subpixel(network, False)`), "
        "sub-pixel = the same map as one 2×2 convolution with four outputs per channel at the input's resolution "
        "(`ldmkit.nn.layers.subpixel_convolution`, the default at inference). *difference*: the largest "
        "|sub-pixel − plain| over the range of the plain output (float rounding: the 2×2 taps are sums of the 3×3 "
        "ones).", "",
        markdown_table(["call", "precision", "plain, ms", "sub-pixel, ms", "speed-up", "difference / range"], table),
        ""])
    show_results(text, args.results)


if __name__ == "__main__":
    main()
