"""Does compiling the UNet (torch.compile, TorchInductor with frozen weights) make ldmkit faster, or the 4-step
student's lead over its teacher larger? (issue 20)

For the shipped model (DDIM 25 steps, guidance 4: 25 guided passes at batch 2B) and its consistency student
(4 passes at batch B) in fp32 and bf16, this script times one B-image call of the pipeline, as `ldmkit generate`
runs it, eager and with ``pipe.model.unet = torch.compile(unet, dynamic=False, options={"freezing": True})``
(the text encoder and decoder eager in both), and reports the student's images/s ÷ the teacher's in each mode.
It also times one guided pass of the UNet alone, ldmkit's and diffusers' ``UNet2DConditionModel`` on the same
weights, eager and compiled the same way, so that the two libraries are compared under the same compiler.
The compiled call's first run (the compile) is reported apart; images are compared with the eager ones by PSNR.

    python experiments/compile_probe.py --results experiments/COMPILE.md     # ~10 min on one core
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import ldmkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _bench_common import (  # noqa: E402
    BenchModel, command_line, diffusers_configs, machine_info, machine_lines, markdown_table, measure_peaks,
)


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    return torch.compile(module, dynamic=False, options={"freezing": True})


def best_of(fn, repeats: int) -> float:
    """The least of ``repeats`` timed calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def pipeline_rows(folder: str, precision: str, prompts: list[str], repeats: int) -> dict:
    """{"eager": s, "compiled": s, "compile": s, "psnr": dB} of one call of ``folder``'s pipeline."""
    pipe = ldmkit.load_pipeline(folder, precision=precision)

    def call():
        return np.asarray(pipe(prompts, output_type="np").images)

    eager_images = call()
    eager = best_of(call, repeats)
    pipe.model.unet = compiled(pipe.model.unet)
    start = time.perf_counter()
    compiled_images = call()
    first = time.perf_counter() - start
    mse = float(np.mean((eager_images - compiled_images) ** 2))
    return {"eager": eager, "compiled": best_of(call, repeats), "compile": first - eager,
            "psnr": float("inf") if mse == 0 else 10 * np.log10(1 / mse)}


def unet_rows(batch: int, bf16: bool, repeats: int) -> dict:
    """{(library, mode): s} of one pass of the shipped UNet at ``batch`` (ldmkit's, and diffusers' on its weights)."""
    from diffusers import UNet2DConditionModel

    from ldmkit.convert.rules import apply_to_other
    from ldmkit.convert.unet import unet_rules
    from ldmkit.model import LatentDiffusion
    from ldmkit.pretrained import resolve_model

    model = LatentDiffusion.load(resolve_model(None))
    cfg = model.config
    latent = cfg.image_size // model.autoencoder.downsample_factor
    state = {f"unet.{k}": v for k, v in model.unet.state_dict().items()}
    converted = apply_to_other(unet_rules(cfg.unet, list(state), "diffusers"), state, "UNet → diffusers")
    bench = BenchModel("shipped", cfg.unet, cfg.autoencoder, cfg.diffusion, latent_size=latent,
                       context_length=cfg.text.max_length, sample_steps=25, sample_batch=batch // 2, guidance=4.0,
                       train_batch=0)
    theirs = UNet2DConditionModel.from_config(diffusers_configs(bench)["unet"])
    theirs.load_state_dict({k.removeprefix("unet/"): v for k, v in converted.items()})
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, cfg.unet.in_channels, latent, latent, generator=g)
    t = torch.full((batch,), 500)
    c = torch.randn(batch, cfg.text.max_length, cfg.unet.context_dim, generator=g)
    calls = {"ldmkit": lambda net: net(z, t, c), "diffusers": lambda net: net(z, t, encoder_hidden_states=c)}
    rows = {}
    for library, net in (("ldmkit", model.unet.eval()), ("diffusers", theirs.eval())):
        for mode in ("eager", "compiled"):
            run = net if mode == "eager" else compiled(net)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                calls[library](run)  # warm-up (and the compile)
                rows[library, mode] = best_of(lambda: calls[library](run), repeats)
        torch._dynamo.reset()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8, help="images per timed call (B)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--results", type=Path)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    from ldmkit.eval.heldout import heldout_shapes

    prompts = heldout_shapes(args.images, 64, start=10**7).captions
    lines = [f"Command: `{command_line()}`", "", *machine_lines(machine_info(), measure_peaks()), ""]
    rows, per_pass = [], []
    for precision in ("fp32", "bf16"):
        got = {name: pipeline_rows(folder, precision, prompts, args.repeats)
               for name, folder in (("teacher", "shapes64"), ("student", "shapes64-lcm"))}
        for name, r in got.items():
            rows.append([name, precision, f"{r['eager']:.3f}", f"{r['compiled']:.3f}", f"{r['eager'] / r['compiled']:.2f}",
                         f"{r['compile']:.0f}", f"{r['psnr']:.1f}"])
        rows.append(["student ÷ teacher (images/s)", precision,
                     f"{got['teacher']['eager'] / got['student']['eager']:.2f}×",
                     f"{got['teacher']['compiled'] / got['student']['compiled']:.2f}×", "", "", ""])
        print(rows[-3:], flush=True)
        for batch in (2, 2 * args.images):
            u = unet_rows(batch, precision == "bf16", args.repeats)
            per_pass.append([precision, str(batch), *(f"{1000 * u[lib, mode]:.1f}" for lib in ("ldmkit", "diffusers")
                                                     for mode in ("eager", "compiled")),
                             f"{u['diffusers', 'compiled'] / u['ldmkit', 'compiled']:.2f}"])
            print(per_pass[-1], flush=True)
    lines += [f"## One call of the pipeline, {args.images} images (text encoder and decoder eager in both)", "",
              markdown_table(["model", "precision", "eager, s", "compiled, s", "speed-up", "compile, s",
                              "PSNR vs eager, dB"], rows), "",
              "## One guided pass of the shipped UNet alone (ms)", "",
              markdown_table(["precision", "batch", "ldmkit eager", "ldmkit compiled", "diffusers eager",
                              "diffusers compiled", "compiled: ldmkit ÷ diffusers (speed)"], per_pass), ""]
    text = "\n".join(lines)
    print(text)
    if args.results:
        note = args.results.with_suffix(".note.txt")
        head = "# Compiling the UNet (issue 20)\n\n"
        args.results.write_text(head + text + ("\n" + note.read_text() if note.exists() else ""))


if __name__ == "__main__":
    main()
