"""Sampling speed, ldmkit vs diffusers, with the same UNet weights, and DDIM parity between the two.

    # the measurement (about 5 minutes on a 2-core CPU with nothing else running):
    python benchmarks/bench_sampling.py --results benchmarks/RESULTS.md
    # a smoke run (seconds; the numbers mean nothing):
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/bench_sampling.py --quick --models shapes64

For each configuration (``--models``, default ``sd-small,shapes64``; see `_bench_common.bench_models`)
and sampler (``--samplers``, default ``ddim``), both sides draw ``--batch`` images with ``--steps``
steps at guidance ``--guidance`` from the same z_T, context τθ(y) and null context τθ(""), both random:

- ldmkit: `ldmkit.diffusion.guided_denoiser` over `ldmkit.nn.unet.UNet` and `ldmkit.diffusion.sample`
  under ``torch.inference_mode``, as ldmkit's fp32 pipelines run it (the UNet channels-last on a CPU without
  AVX-512, `ldmkit.device.unet_channels_last`);
- diffusers: ``StableDiffusionPipeline`` (``prompt_embeds``/``negative_prompt_embeds``,
  ``output_type="latent"``, so no text encoder or decoder runs) over ``UNet2DConditionModel`` with
  ``DDIMScheduler`` (trailing spacing, ``set_alpha_to_one=True``: ldmkit's DDIM timesteps) or
  ``DPMSolverMultistepScheduler`` (DPM-Solver++ 2M, diffusers' default spacing), in diffusers' best
  stock CPU setting: the fastest of fp32, channels_last, ``fuse_qkv_projections()`` and both, each
  timed on one guided UNet call (bf16 autocast variants join where bf16 matmul beats fp32, see ``--bf16``).

Each side runs in a fresh subprocess. A side's time is the median of ``--repeats`` whole sampling
runs after one untimed warm-up UNet call; images/s = batch / that time. Model GFLOP/s = FLOPs of one
guided UNet call (FlopCounterMode) × steps / time, also as a share of the fp32 (or, for a bf16
setting, bf16) 2048² matmul rate measured at the start of the run. Memory: the worker's peak RSS over
its life (imports and weights included) and how far RSS rose during the timed runs.

Parity (DDIM only): the largest |difference| between the two sides' final latents, in fp32 (diffusers'
DDIM and ldmkit's visit the same timesteps when ``--steps`` divides T = 1000).

``--results FILE`` writes the section between ``<!-- bench_sampling:start/end -->`` of FILE (the
machine, the exact command, the numbers), leaving the rest of the file (bench_training's section) alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import (  # noqa: E402
    DIFFUSERS_SETTINGS, apply_diffusers_setting, bench_models, BenchModel, bf16_settings, build_diffusers_unet,
    build_ldmkit_unet, command_line, count_flops, diffusers_autocast, diffusers_configs, diffusers_schedule_kwargs,
    fmt, load_tensors, log,
    machine_lines, make_weights, markdown_table, median, memory_report, pick_fastest, run_benchmark, run_worker,
    save_tensors, start_work_memory, timed, write_result,
)

SAMPLERS = ("ddim", "dpmpp-2m")
PARITY_TOL = 1e-3
TARGET_RATIO = 1.5
INPUT_SEED = 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sd-small,shapes64", help="configurations, comma-separated (sd-small, shapes64)")
    p.add_argument("--samplers", default="ddim", help="comma-separated: ddim, dpmpp-2m (each adds a full run per side)")
    p.add_argument("--steps", type=int, help="sampling steps (default: 20 sd-small, 25 shapes64)")
    p.add_argument("--batch", type=int, help="images per run (default: 4 sd-small, 8 shapes64)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: 7.5 sd-small, 4 shapes64)")
    p.add_argument("--repeats", type=int, default=3, help="timed sampling runs per side; the median counts")
    p.add_argument("--diffusers-setting", choices=("auto", *DIFFUSERS_SETTINGS, *bf16_settings()),
                   help="diffusers' setting; auto (default) times each stock setting and keeps the fastest")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="diffusers' bf16 autocast: auto = probed where bf16 matmul beats fp32, skipped with the "
                        "reason elsewhere; on = also where it is slower, as a tiny capped run; off = never")
    p.add_argument("--bf16-timeout", type=float, default=120, help="seconds allowed to the capped bf16 run")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 steps, batch 1, 1 repeat, diffusers setting fp32 unless given, small matmul probe")
    p.add_argument("--results", help="write the markdown section into this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps = args.steps or 2
        args.batch = args.batch or 1
        args.repeats = 1
        args.diffusers_setting = args.diffusers_setting or "fp32"
    args.diffusers_setting = args.diffusers_setting or "auto"
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if not args.samplers or any(s not in SAMPLERS for s in args.samplers):
        p.error(f"--samplers: choose from {', '.join(SAMPLERS)}")
    return args


# --------------------------------------------------------------------------------------------------
# Workers (one fresh process per side)


def worker(spec_path: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision notices from diffusers' imports
    spec = json.loads(Path(spec_path).read_text())
    model = bench_models()[spec["model"]]
    log(f"{model.name} {spec['side']}: {torch.get_num_threads()} threads")
    result = ldmkit_side(spec, model) if spec["side"] == "ldmkit" else diffusers_side(spec, model)
    write_result(spec, result)


def load_inputs(spec: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_T, context, null context) for ``spec["batch"]`` images."""
    x = load_tensors(spec["inputs"])
    b = spec["batch"]
    return x["z_T"][:b], x["context"][:b], x["null_context"]


def time_runs(spec: dict, side: str, run) -> dict:
    """Time ``spec["repeats"]`` runs of ``run(sampler)`` per sampler; the DDIM latents go to a file."""
    mark = start_work_memory()
    samplers = {}
    latents = {}
    for sampler in spec["samplers"]:
        times = []
        for i in range(spec["repeats"]):
            latents[sampler], seconds = timed(lambda: run(sampler))
            times.append(seconds)
            log(f"  {side} {sampler} run {i + 1}/{spec['repeats']}: {seconds:.2f} s")
        samplers[sampler] = times
    result = {"times": samplers, **memory_report(mark)}
    if "ddim" in latents:
        result["ddim_latents"] = save_tensors({"z0": latents["ddim"]}, Path(spec["result"]).with_suffix(".ddim.safetensors"))
    return result


def ldmkit_side(spec: dict, model: BenchModel) -> dict:
    """ldmkit's sampling as its pipelines do it: guided_denoiser(UNet) into `sample`, inference mode."""
    from ldmkit.device import lay_out_unet
    from ldmkit.diffusion import guided_denoiser, make_schedule, sample

    unet = build_ldmkit_unet(model, spec["weights"]).eval()
    nhwc = lay_out_unet(unet, torch.device("cpu"), bf16=False)  # as an fp32 pipeline on this CPU lays it out
    z_T, context, null = load_inputs(spec)
    schedule = make_schedule(model.diffusion)
    denoise = guided_denoiser(unet, context, null, spec["guidance"], model.diffusion.prediction, schedule)
    t = torch.full((z_T.shape[0],), model.diffusion.num_timesteps - 1, dtype=torch.int64)
    with torch.inference_mode():
        _, flops = count_flops(lambda: denoise(z_T, t))  # also the warm-up

    def run(sampler: str) -> torch.Tensor:
        with torch.inference_mode():
            return sample(sampler, denoise, z_T, schedule, num_steps=spec["steps"])

    return {"setting": "fp32+channels_last (no AVX-512)" if nhwc else "fp32", "flops_per_step": flops,
            **time_runs(spec, "ldmkit", run)}


def diffusers_scheduler(sampler: str, model: BenchModel):
    """diffusers' scheduler for ``sampler`` on ldmkit's β schedule (DDIM on ldmkit's own timesteps)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    d = model.diffusion
    if d.schedule not in ("linear", "scaled_linear"):
        raise SystemExit(f"{model.name}: schedule {d.schedule!r} has no exact diffusers counterpart")
    common = diffusers_schedule_kwargs(d)
    if sampler == "ddim":
        # trailing spacing ignores steps_offset (kept at 1, the value StableDiffusionPipeline insists on)
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="trailing")
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)


def diffusers_side(spec: dict, model: BenchModel) -> dict:
    """diffusers' StableDiffusionPipeline from embeddings to latents, in its fastest stock setting."""
    from diffusers import StableDiffusionPipeline

    z_T, context, null = load_inputs(spec)
    guided = spec["guidance"] > 1
    z_in = torch.cat([z_T, z_T]) if guided else z_T
    both = torch.cat([null.expand_as(context), context]) if guided else context
    t = torch.tensor(model.diffusion.num_timesteps - 1)

    def make_unet(setting: str):
        unet = build_diffusers_unet(spec["unet_config"], spec["weights"]).eval()
        apply_diffusers_setting(unet, setting)
        return unet

    def call(unet, setting: str):
        with torch.no_grad(), diffusers_autocast(setting):
            return unet(z_in, t, encoder_hidden_states=both).sample

    settings = spec["settings"]
    probe = {}
    if len(settings) > 1:
        held: dict = {}

        def time_one(setting: str) -> float:
            if held.get("setting") != setting:  # a fresh model per setting
                held.clear()
                held.update(setting=setting, unet=make_unet(setting))
            return timed(lambda: call(held["unet"], setting))[1]

        best, probe = pick_fastest(settings, time_one)
        held.clear()
    else:
        best = settings[0]
    unet = make_unet(best)
    _, flops = count_flops(lambda: call(unet, best))  # also the warm-up
    pipe = StableDiffusionPipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=diffusers_scheduler("ddim", model),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    size = model.latent_size * pipe.vae_scale_factor
    negative = null.expand_as(context)

    def run(sampler: str, setting: str = best) -> torch.Tensor:
        pipe.scheduler = diffusers_scheduler(sampler, model)
        with diffusers_autocast(setting):
            out = pipe(prompt_embeds=context, negative_prompt_embeds=negative, guidance_scale=spec["guidance"],
                       num_inference_steps=spec["steps"], latents=z_T.clone(), height=size, width=size,
                       output_type="latent")
        return out.images.float()

    result = {"setting": best, "probe": probe, "flops_per_step": flops, **time_runs(spec, "diffusers", run)}
    if "ddim" in spec["samplers"] and not best.startswith("fp32") and spec.get("parity", True):
        log("  diffusers: an fp32 DDIM run for the parity check (untimed)")
        pipe.unet = make_unet("fp32")
        path = Path(spec["result"]).with_suffix(".ddim.safetensors")
        result["ddim_latents"] = save_tensors({"z0": run("ddim", "fp32")}, path)
    return result


# --------------------------------------------------------------------------------------------------
# The parent: prepare, run the workers, compare, report


def workload(model: BenchModel, args) -> dict:
    return {
        "steps": args.steps or model.sample_steps,
        "batch": args.batch or model.sample_batch,
        "guidance": args.guidance if args.guidance is not None else model.guidance,
    }


def diffusers_candidates(args, bf16_mode: str) -> list[str]:
    if args.diffusers_setting != "auto":
        return [args.diffusers_setting]
    return list(DIFFUSERS_SETTINGS) + (list(bf16_settings()) if bf16_mode == "full" else [])


def summarise(side: dict, work: dict, peaks, sampler: str) -> dict:
    """images/s, model GFLOP/s and its share of the matmul peak of one side's runs of ``sampler``."""
    if side.get("timed_out"):
        return {"timed_out": True}
    seconds = median(side["times"][sampler])
    gflop = side["flops_per_step"] * work["steps"] / 1e9
    peak = peaks.bf16 if side["setting"].startswith("bf16") else peaks.fp32
    return {
        "images_per_s": work["batch"] / seconds, "seconds": seconds, "gflop": gflop,
        "gflops": gflop / seconds, "share": gflop / seconds / peak, "setting": side["setting"],
        "peak_rss_mib": side["peak_rss_mib"], "work_mib": side["work_mib"],
    }


def bench_model(model: BenchModel, args, peaks, bf16_mode: str, tmp: Path) -> dict:
    """Both sides (and diffusers' capped bf16 run when asked) on ``model``; their numbers and parity."""
    work = workload(model, args)
    log(f"{model.name}: {work['batch']} images, {work['steps']} steps, guidance {work['guidance']}, "
        f"latent 4×{model.latent_size}×{model.latent_size}, samplers {', '.join(args.samplers)}")
    weights = make_weights(model, autoencoder=False)
    g = torch.Generator().manual_seed(INPUT_SEED)
    c, h, d = model.unet.in_channels, model.latent_size, model.unet.context_dim
    inputs = {
        "z_T": torch.randn(work["batch"], c, h, h, generator=g),
        "context": torch.randn(work["batch"], model.context_length, d, generator=g),
        "null_context": torch.randn(1, model.context_length, d, generator=g),
    }
    spec = {"model": model.name, **work, "repeats": args.repeats, "samplers": args.samplers,
            "inputs": save_tensors(inputs, tmp / f"{model.name}.inputs.safetensors")}
    script = str(Path(__file__).resolve())
    sides = {"ldmkit": run_worker(script, {**spec, "side": "ldmkit", "weights": save_tensors(
        weights["ldmkit_unet"], tmp / f"{model.name}.ldmkit.safetensors")}, tmp, f"{model.name}-ldmkit")}
    diffusers_spec = {**spec, "side": "diffusers", "unet_config": diffusers_configs(model)["unet"],
                      "weights": save_tensors(weights["diffusers_unet"], tmp / f"{model.name}.diffusers.safetensors")}
    sides["diffusers"] = run_worker(script, {**diffusers_spec, "settings": diffusers_candidates(args, bf16_mode)},
                                    tmp, f"{model.name}-diffusers")
    capped = None
    if bf16_mode == "capped":
        log(f"{model.name}: diffusers bf16 autocast, 1 image, 1 step, capped at {args.bf16_timeout:.0f} s")
        capped_spec = {**diffusers_spec, "settings": ["bf16"], "batch": 1, "steps": 1, "repeats": 1,
                       "samplers": args.samplers[:1], "parity": False}
        capped = run_worker(script, capped_spec, tmp, f"{model.name}-diffusers-bf16", timeout=args.bf16_timeout)
    out = {"model": model, "work": work, "probe": sides["diffusers"].get("probe", {}), "rows": {}}
    for sampler in args.samplers:
        out["rows"][sampler] = {name: summarise(side, work, peaks, sampler) for name, side in sides.items()}
        if capped is not None and sampler == args.samplers[0]:
            out["rows"][sampler]["diffusers bf16"] = capped_row(capped, work, peaks, sampler)
    if "ddim" in args.samplers:
        a = load_tensors(sides["ldmkit"]["ddim_latents"])["z0"]
        b = load_tensors(sides["diffusers"]["ddim_latents"])["z0"]
        out["parity"] = (a - b).abs().max().item()
        out["latent_scale"] = a.abs().max().item()
        setting = sides["diffusers"]["setting"]
        out["parity_setting"] = setting if setting.startswith("fp32") else "fp32"
    return out


def capped_row(capped: dict, work: dict, peaks, sampler: str) -> dict:
    """The capped bf16 run (1 image, 1 step) scaled to the workload's steps: images/s ≈ 1 / (steps × t_step)."""
    if capped.get("timed_out"):
        return {"timed_out": True}
    t_step = median(capped["times"][sampler])
    gflop = capped["flops_per_step"] / 1e9
    return {
        "images_per_s": 1 / (work["steps"] * t_step), "seconds": t_step * work["steps"], "gflop": gflop * work["steps"],
        "gflops": gflop / t_step, "share": gflop / t_step / peaks.bf16, "setting": "autocast; from 1 image × 1 step",
        "peak_rss_mib": capped["peak_rss_mib"], "work_mib": capped["work_mib"],
    }


def report(results: list[dict], args, info: dict, peaks, bf16_note: str) -> str:
    """The markdown section: machine, command, one table row per configuration × sampler × side."""
    header = ["config", "sampler", "side", "setting", "images/s", "ldmkit ÷ diffusers", "s per run", "model GFLOP/s",
              "% of matmul peak", "peak RSS MiB", "RSS rise MiB"]
    rows, lines = [], []
    for res in results:
        for sampler, sides in res["rows"].items():
            ldm, dif = sides["ldmkit"], sides["diffusers"]
            ratio = ldm["images_per_s"] / dif["images_per_s"] if not dif.get("timed_out") else math.nan
            for name, r in sides.items():
                if r.get("timed_out"):
                    rows.append([res["model"].name, sampler, name, "capped", f"stopped at the {args.bf16_timeout:.0f} s cap"] + [""] * 6)
                    continue
                rows.append([
                    res["model"].name, sampler, name, r["setting"], fmt(r["images_per_s"], 3),
                    fmt(ratio) if name == "ldmkit" else "", fmt(r["seconds"]), fmt(r["gflops"], 1),
                    fmt(100 * r["share"], 1), fmt(r["peak_rss_mib"], 0), fmt(r["work_mib"], 0),
                ])
            verdict = "meets" if ratio >= TARGET_RATIO else "does not meet"
            lines.append(f"- {res['model'].name}, {sampler}: ldmkit {fmt(ratio)}× diffusers' images/s "
                         f"({verdict} the ≥ {TARGET_RATIO}× target)")
        if "parity" in res:
            ok = "within" if res["parity"] <= PARITY_TOL else "NOT within"
            lines.append(f"- {res['model'].name}, DDIM parity (ldmkit fp32 vs diffusers {res['parity_setting']}): "
                         f"max |ldmkit − diffusers| of z_0 = {res['parity']:.2e}, {ok} {PARITY_TOL:g} (max |z_0| = "
                         f"{res['latent_scale']:.1f}: an untrained UNet's ε̂ does not cancel z_T, so ẑ_0 stays near "
                         f"z_T / √ᾱ_(T−1))")
        if res["probe"]:
            probe = ", ".join(f"{k} {v:.3f}" for k, v in res["probe"].items())
            lines.append(f"- {res['model'].name}, diffusers settings probe (s per guided UNet call): {probe}")
    workloads = "; ".join(
        f"{r['model'].name}: {r['work']['batch']} images × {r['work']['steps']} steps, guidance {r['work']['guidance']}, "
        f"latent 4×{r['model'].latent_size}×{r['model'].latent_size}, context {r['model'].context_length}×{r['model'].unet.context_dim}"
        for r in results
    )
    quick = "\n**Smoke run (--quick): these numbers measure nothing.**\n" if args.quick else ""
    return "\n".join([
        "## Sampling: ldmkit vs diffusers (`benchmarks/bench_sampling.py`)", quick,
        f"Command: `{command_line()}`", "",
        *machine_lines(info, peaks), f"- {bf16_note}", "",
        f"Workload: {workloads}. Same UNet weights, z_T and contexts on both sides; each side in a fresh process, "
        f"median of {args.repeats} run(s) after a warm-up UNet call. RSS rise: how far RSS grew during the timed runs.", "",
        markdown_table(header, rows), "", *lines, "",
    ])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    run_benchmark("bench_sampling", args, bench_model, report)

if __name__ == "__main__":
    main()
