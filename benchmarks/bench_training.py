"""Training speed, ldmkit vs a diffusers ``train_text_to_image``-style loop, with the same weights.

    # the measurement (about 3 minutes on a 2-core CPU with nothing else running):
    python benchmarks/bench_training.py --results benchmarks/RESULTS.md
    # a smoke run (seconds; the numbers mean nothing):
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/bench_training.py --quick --models shapes64

One optimizer step on a batch of ``--batch`` samples (default 4 sd-small, 32 shapes64 — its preset's
batch), in two modes (``--modes``):

- ``e2e``: end to end, the autoencoder encoding the batch's images (random, in [-1, 1]) at every step;
- ``cached``: the latents given (a fixed random tensor standing in for a latent cache): the UNet step alone.

ldmkit's step is its trainer's (`ldmkit.train.diffusion`): z_0 = scale_factor · (μ + σ ⊙ ξ) from the
frozen KL autoencoder, t and ε drawn, `ldmkit.diffusion.diffusion_loss` under the trainer's autocast
(bf16 where `bf16_pays`, fp32 here on AVX2), backward, gradient-norm clipping, AdamW, `EMA` update.
diffusers' step is ``examples/text_to_image/train_text_to_image.py``'s: ``vae.encode(x).latent_dist
.sample() * scaling_factor``, ``DDPMScheduler.add_noise``, ``unet(...).sample``, MSE in fp32, backward,
``clip_grad_norm_``, AdamW, ``EMAModel.step`` (``foreach=True``, its ``--foreach_ema``); fp32 (its
default ``--mixed_precision no``), and with bf16 autocast as a second row where bf16 matmul beats fp32
(``--bf16``). The text context is a fixed random tensor on both sides (the text encoder is not
compared); AdamW, learning rate, weight decay, clipping norm and EMA decay are the configuration's
``train`` settings on both sides (``--no-ema`` drops the EMA on both). sd-small's autoencoder exists on
both sides (diffusers' ``AutoencoderKL`` holds the converted weights); shapes64's has no diffusers
layout, so there both sides encode with ldmkit's.

Each side and mode runs in a fresh subprocess: ``--warmup`` untimed steps (the first also counts the
FLOPs: autoencoder encode, UNet forward and backward), then ``--steps`` timed steps; samples/s =
batch / median step time. Model GFLOP/s and its share of the fp32 (bf16 for a bf16 row) 2048² matmul
rate measured at the start; memory as in bench_sampling (peak RSS of the worker, and the rise during
the timed steps: activations, gradients, AdamW and EMA state).

``--results FILE`` writes the section between ``<!-- bench_training:start/end -->`` of FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import (  # noqa: E402
    bench_models, BenchModel, build_diffusers_unet, build_diffusers_vae, build_ldmkit_autoencoder,
    build_ldmkit_unet, command_line, count_flops, diffusers_autocast, diffusers_configs, diffusers_schedule_kwargs,
    fmt, load_tensors, log,
    machine_lines, make_weights, markdown_table, median, memory_report, run_benchmark, run_worker, save_tensors,
    start_work_memory, timed, write_result,
)

MODES = ("e2e", "cached")
TARGETS = {"e2e": 2.0, "cached": 1.3}
INPUT_SEED = 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sd-small,shapes64", help="configurations, comma-separated (sd-small, shapes64)")
    p.add_argument("--modes", default="e2e,cached", help="comma-separated: e2e (encode every step), cached (latents given)")
    p.add_argument("--batch", type=int, help="samples per step (default: 4 sd-small, 32 shapes64)")
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per side and mode; the median counts")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1: it counts the FLOPs)")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="no EMA update on either side")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="diffusers' bf16 mixed precision: auto = a full row where bf16 matmul beats fp32, skipped with "
                        "the reason elsewhere; on = also where it is slower, as one capped step at batch 1; off = never")
    p.add_argument("--bf16-timeout", type=float, default=120, help="seconds allowed to a capped bf16 run")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 1, 1 timed step, small matmul probe")
    p.add_argument("--results", help="write the markdown section into this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch = args.batch or 1
        args.steps = 1
    args.warmup = max(1, args.warmup)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        p.error(f"--modes: choose from {', '.join(MODES)}")
    return args


def train_config(model: BenchModel):
    """The configuration's ``train`` settings: shapes64's preset, ldmkit's defaults for sd-small."""
    from ldmkit.config import DiffusionTrainConfig, load_preset

    return load_preset("shapes64").train if model.name == "shapes64" else DiffusionTrainConfig()


# --------------------------------------------------------------------------------------------------
# Workers (one fresh process per side and mode)


def worker(spec_path: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision notices from diffusers' imports
    spec = json.loads(Path(spec_path).read_text())
    model = bench_models()[spec["model"]]
    log(f"{model.name} {spec['side']} {spec['mode']}: {torch.get_num_threads()} threads")
    step, setting = ldmkit_step(spec, model) if spec["side"] == "ldmkit" else diffusers_step(spec, model)
    write_result(spec, {"setting": setting, **time_steps(spec, step)})


def load_inputs(spec: dict) -> dict[str, torch.Tensor]:
    """images, latents and context for ``spec["batch"]`` samples."""
    return {k: v[: spec["batch"]] for k, v in load_tensors(spec["inputs"]).items()}


def time_steps(spec: dict, step) -> dict:
    """FLOPs of the first warm-up step, then ``spec["steps"]`` timed steps."""
    _, flops = count_flops(step)
    for _ in range(spec["warmup"] - 1):
        step()
    mark = start_work_memory()
    times = []
    for i in range(spec["steps"]):
        times.append(timed(step)[1])
        log(f"  {spec['side']} {spec['mode']} step {i + 1}/{spec['steps']}: {times[-1]:.2f} s")
    return {"flops_per_step": flops, "times": times, **memory_report(mark)}


def ldmkit_step(spec: dict, model: BenchModel):
    """One step of ldmkit's diffusion trainer (see `ldmkit.train.diffusion._train`), the text context fixed."""
    from ldmkit.diffusion import diffusion_loss, make_schedule
    from ldmkit.train.common import autocast, bf16_pays
    from ldmkit.train.ema import EMA

    tcfg = train_config(model)
    x = load_inputs(spec)
    unet = build_ldmkit_unet(model, spec["unet_weights"]).train()
    ae = build_ldmkit_autoencoder(model, spec["ae_weights"]) if spec["mode"] == "e2e" else None
    schedule = make_schedule(model.diffusion)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ema = EMA(unet, tcfg.ema_decay) if spec["ema"] else None
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(INPUT_SEED)
    batch, latent_shape = x["latents"].shape[0], x["latents"].shape[1:]

    def step() -> float:
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=g)
        noise = torch.randn((batch, *latent_shape), generator=g)
        opt.zero_grad(set_to_none=True)
        if ae is None:
            latents = x["latents"]
        else:
            with torch.no_grad():  # the trainer's encode_latents: z = μ + σ ⊙ ξ, times scale_factor
                posterior = ae.posterior(x["images"])
                latents = (posterior.mean + posterior.std * torch.randn(noise.shape, generator=g)) * ae.scale_factor
        with autocast(device, tcfg.bf16):
            loss = diffusion_loss(lambda z_t, tt: unet(z_t, tt, x["context"]), latents, schedule,
                                  prediction=model.diffusion.prediction, t=t, noise=noise)
        loss.backward()
        value = loss.item()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(unet)
        return value

    bf16 = tcfg.bf16 and bf16_pays(device)
    return step, "trainer: bf16 autocast" if bf16 else "trainer: fp32 (bf16 autocast only where it pays)"


def diffusers_step(spec: dict, model: BenchModel):
    """One step of diffusers' train_text_to_image.py (ε-prediction, no SNR weighting), accelerate left out."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    tcfg = train_config(model)
    x = load_inputs(spec)
    setting = spec["setting"]
    weight_dtype = torch.bfloat16 if setting.startswith("bf16") else torch.float32  # its vae.to(weight_dtype)
    unet = build_diffusers_unet(spec["unet_config"], spec["unet_weights"]).train()
    encode = diffusers_encoder(spec, model, x["images"], weight_dtype) if spec["mode"] == "e2e" else None
    d = model.diffusion
    noise_scheduler = DDPMScheduler(**diffusers_schedule_kwargs(d))
    opt = torch.optim.AdamW(unet.parameters(), lr=tcfg.lr, betas=(0.9, 0.999), weight_decay=tcfg.weight_decay, eps=1e-8)
    ema = EMAModel(unet.parameters(), decay=tcfg.ema_decay, foreach=True) if spec["ema"] else None
    context = x["context"]

    def step() -> float:
        latents = x["latents"] if encode is None else encode()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with diffusers_autocast(setting):  # accelerate's mixed precision wraps the UNet's forward
            pred = unet(noisy, timesteps, context, return_dict=False)[0]
        target = noise if d.prediction == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        if tcfg.grad_clip > 0:  # its --max_grad_norm, the same norm as ldmkit's
            torch.nn.utils.clip_grad_norm_(unet.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad()
        if ema is not None:
            ema.step(unet.parameters())
        return loss.item()

    return step, setting


def diffusers_encoder(spec: dict, model: BenchModel, images: torch.Tensor, weight_dtype: torch.dtype):
    """``encode()`` → z_0 of the batch, as train_text_to_image does it: ``vae.encode(x).latent_dist.sample()
    * scaling_factor`` with the VAE in the weight dtype; ldmkit's autoencoder where diffusers has no layout."""
    if spec["vae_config"] is None:
        ae = build_ldmkit_autoencoder(model, spec["ae_weights"])

        def encode_ldmkit() -> torch.Tensor:
            with torch.no_grad():
                return ae.encode(images, sample=True) * ae.scale_factor

        return encode_ldmkit
    vae = build_diffusers_vae(spec["vae_config"], spec["vae_weights"]).to(weight_dtype)
    pixels = images.to(weight_dtype)

    def encode_diffusers() -> torch.Tensor:
        return vae.encode(pixels).latent_dist.sample().float() * vae.config.scaling_factor

    return encode_diffusers


# --------------------------------------------------------------------------------------------------
# The parent


def prepare(model: BenchModel, batch: int, tmp: Path) -> dict:
    """Weights of both layouts and the inputs on disk; the spec fields every worker of ``model`` shares."""
    weights = make_weights(model, autoencoder=True)
    g = torch.Generator().manual_seed(INPUT_SEED)
    c, h, size = model.unet.in_channels, model.latent_size, model.image_size
    inputs = {
        "images": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
        "latents": torch.randn(batch, c, h, h, generator=g),
        "context": torch.randn(batch, model.context_length, model.unet.context_dim, generator=g),
    }
    configs = diffusers_configs(model)
    files = {name: save_tensors(w, tmp / f"{model.name}.{name}.safetensors") for name, w in weights.items()}
    return {
        "model": model.name, "inputs": save_tensors(inputs, tmp / f"{model.name}.inputs.safetensors"),
        "ae_weights": files["ldmkit_ae"], "ldmkit_unet": files["ldmkit_unet"], "diffusers_unet": files["diffusers_unet"],
        "vae_weights": files.get("diffusers_vae"), "unet_config": configs["unet"], "vae_config": configs["vae"],
    }


def bench_model(model: BenchModel, args, peaks, bf16_mode: str, tmp: Path) -> dict:
    batch = args.batch or model.train_batch
    log(f"{model.name}: batch {batch}, {args.warmup} warm-up + {args.steps} timed steps, modes {', '.join(args.modes)}")
    shared = prepare(model, batch, tmp)
    script = str(Path(__file__).resolve())
    base = {**shared, "batch": batch, "steps": args.steps, "warmup": args.warmup, "ema": args.ema}
    rows = {}
    for mode in args.modes:
        runs = {
            "ldmkit": {"side": "ldmkit", "setting": "", "unet_weights": shared["ldmkit_unet"]},
            "diffusers": {"side": "diffusers", "setting": "fp32", "unet_weights": shared["diffusers_unet"]},
        }
        if bf16_mode == "full":
            runs["diffusers bf16"] = {**runs["diffusers"], "setting": "bf16"}
        elif bf16_mode == "capped":
            runs["diffusers bf16"] = {**runs["diffusers"], "setting": "bf16", "batch": 1, "steps": 1, "warmup": 1}
        results = {}
        for name, extra in runs.items():
            capped = bf16_mode == "capped" and name == "diffusers bf16"
            spec = {**base, **extra, "mode": mode}
            result = run_worker(script, spec, tmp, f"{model.name}-{name.replace(' ', '-')}-{mode}",
                                timeout=args.bf16_timeout if capped else None)
            results[name] = summarise(result, spec, peaks, capped)
        rows[mode] = results
    ae_flops = "diffusers AutoencoderKL (converted weights) on the diffusers side" if model.ae_in_diffusers else \
        "ldmkit's autoencoder on both sides (no diffusers layout)"
    return {"model": model, "batch": batch, "rows": rows, "autoencoder": ae_flops}


def summarise(result: dict, spec: dict, peaks, capped: bool) -> dict:
    if result.get("timed_out"):
        return {"timed_out": True}
    seconds = median(result["times"])
    gflop = result["flops_per_step"] / 1e9
    bf16 = "bf16" in result["setting"] and "only where" not in result["setting"]
    setting = result["setting"] + ("; 1 step at batch 1" if capped else "")
    return {
        "samples_per_s": spec["batch"] / seconds, "seconds": seconds, "gflop": gflop, "gflops": gflop / seconds,
        "share": gflop / seconds / (peaks.bf16 if bf16 else peaks.fp32), "setting": setting,
        "peak_rss_mib": result["peak_rss_mib"], "work_mib": result["work_mib"],
    }


def report(results: list[dict], args, info: dict, peaks, bf16_note: str) -> str:
    header = ["config", "mode", "side", "setting", "samples/s", "ldmkit ÷ diffusers", "s per step", "model GFLOP per step",
              "model GFLOP/s", "% of matmul peak", "peak RSS MiB", "RSS rise MiB"]
    rows, lines = [], []
    for res in results:
        name = res["model"].name
        for mode, sides in res["rows"].items():
            full = [r for k, r in sides.items() if k != "ldmkit" and not r.get("timed_out") and "batch 1" not in r["setting"]]
            best = max(full, key=lambda r: r["samples_per_s"])
            ratio = sides["ldmkit"]["samples_per_s"] / best["samples_per_s"]
            for side, r in sides.items():
                if r.get("timed_out"):
                    rows.append([name, mode, side, "bf16; capped", f"stopped at the {args.bf16_timeout:.0f} s cap"] + [""] * 7)
                    continue
                rows.append([
                    name, mode, side, r["setting"], fmt(r["samples_per_s"], 3), fmt(ratio) if side == "ldmkit" else "",
                    fmt(r["seconds"]), fmt(r["gflop"], 1), fmt(r["gflops"], 1), fmt(100 * r["share"], 1),
                    fmt(r["peak_rss_mib"], 0), fmt(r["work_mib"], 0),
                ])
            target = TARGETS[mode]
            verdict = "meets" if ratio >= target else "does not meet"
            what = "end to end (encode every step)" if mode == "e2e" else "per UNet step (cached latents)"
            lines.append(f"- {name}, {what}: ldmkit {fmt(ratio)}× diffusers' best samples/s ({best['setting']}) "
                         f"({verdict} the ≥ {target}× target)")
        lines.append(f"- {name}: autoencoder: {res['autoencoder']}")
        if "e2e" in res["rows"] and "cached" in res["rows"]:
            e2e, cached = res["rows"]["e2e"]["ldmkit"], res["rows"]["cached"]["ldmkit"]
            share = (e2e["gflop"] - cached["gflop"]) / e2e["gflop"]
            lines.append(f"- {name}: the autoencoder encode is {100 * share:.0f}% of an end-to-end step's model FLOPs")
    workloads = "; ".join(
        f"{r['model'].name}: batch {r['batch']}, images 3×{r['model'].image_size}², latent 4×{r['model'].latent_size}², "
        f"context {r['model'].context_length}×{r['model'].unet.context_dim}" for r in results
    )
    ema = "with" if args.ema else "without"
    quick = "\n**Smoke run (--quick): these numbers measure nothing.**\n" if args.quick else ""
    return "\n".join([
        "## Training: ldmkit vs diffusers' train_text_to_image loop (`benchmarks/bench_training.py`)", quick,
        f"Command: `{command_line()}`", "",
        *machine_lines(info, peaks), f"- {bf16_note}", "",
        f"Workload: {workloads}. One optimizer step (AdamW, gradient clipping, {ema} EMA) per measurement; same "
        f"weights and inputs on both sides, each side and mode in a fresh process; median of {args.steps} timed "
        f"step(s) after {args.warmup} warm-up step(s). RSS rise: how far RSS grew during the timed steps.", "",
        markdown_table(header, rows), "", *lines, "",
    ])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    run_benchmark("bench_training", args, bench_model, report)

if __name__ == "__main__":
    main()
