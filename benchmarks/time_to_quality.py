"""Time to a good image: ldmkit with and without feature reuse against diffusers, on the same weights,
measured in one run, with the quality each row reaches.

    # the measurement, with the shipped 4-step student, on 1024 held-out captions (--num-images; 512 leave about
    # ±3 points of noise on a two-object gap; about 25 minutes on a quiet 2-core CPU):
    python benchmarks/time_to_quality.py --student ldmkit/pretrained/shapes64-lcm --student-steps 2,4,8 \
        --intervals 2,3,4 --cache-depths 1,0 --solvers unipc:10,dpmpp-2m:10 --results benchmarks/TIME_TO_QUALITY.md
    # the speed columns on an AVX2 machine's kernels (this processor told to use AVX2 only):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/time_to_quality.py --speed-only \
        --student ldmkit/pretrained/shapes64-lcm --intervals 3 --cache-depths 1,0 --solvers unipc:10 \
        --results benchmarks/TIME_TO_QUALITY_AVX2.md
    # a smoke run (minutes; the numbers mean nothing):
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/time_to_quality.py --quick

Two models (``--models``, default both):

- ``shipped``: a model shipped with ldmkit, ``--teacher`` (default shapes64, the default until 2026-12-07: 64×64
  images, MiniLM prompts; or another folder of the shipped kind, e.g. shapes64-grounded, the default now). Rows:
  ldmkit plain, ldmkit with the text K/V computed at every step (what the plain row saves by
  `ldmkit.nn.kv_cache`), ldmkit with feature reuse at each of ``--intervals`` (`ldmkit.nn.feature_cache`) and each
  of ``--cache-depths`` (the shallow branch's depth k, `ldmkit.settings.check_cache_depth`; 1 is DeepCache's branch 0),
  and diffusers: ``UNet2DConditionModel`` holding the same UNet weights (converted by ldmkit's key rules)
  in ``StableDiffusionPipeline`` with each of ``--diffusers-samplers``, in its fastest stock CPU setting
  (the fastest of fp32, channels_last, ``fuse_qkv_projections()`` and both, and their bf16-autocast
  forms where bf16 matmul beats fp32 here). The prompt is encoded by ldmkit's MiniLM and the latents
  decoded by ldmkit's autoencoder on both sides (diffusers has no counterpart of either), so the rows
  differ in the denoising loop alone. Each row also generates one image for each of ``--num-images``
  held-out captions and is scored as `ldmkit.eval.generation.evaluate_generation` scores a model
  (`RealReference`, `generate_for_prompts`, `score_generated`, the real renders' features computed once
  for all rows): prompt accuracy on one- and two-object prompts (the shapes judge) and FID (shapes-cnn).
  With ``--student DIR``: rows of that consistency student (`ldmkit distill`) at each of ``--student-steps``,
  its lcm sampler at its own guidance scale (`Pipeline.default_guidance`), one UNet pass per step. With ``--solvers NAME:STEPS,…`` (e.g. ``unipc:10``): training-free
  fewer-step rows, ldmkit's sampler NAME at STEPS and diffusers' scheduler of the same name (DPMSolverMultistep,
  UniPCMultistep at their defaults) at the same steps, each with guidance.
- ``sd-small``: Stable Diffusion v1's UNet shape at a CPU-sized width on seeded random weights
  (`_bench_common.bench_models`, as bench_sampling.py), latents only: random z_T, prompt embedding and
  null embedding, guided DDIM (ldmkit's pipeline loop: `guided_denoiser` over the UNet or a
  `FeatureCache` at each interval and depth, inside `cached_text_kv`) against diffusers' ``StableDiffusionPipeline`` from
  ``prompt_embeds`` to ``output_type="latent"``. No prompt accuracy or FID (random weights draw
  nothing); instead the PSNR of each row's z_0 against ldmkit plain's from the same z_T, over plain's
  range, and the stricter PSNR of the UNet's share: z_0 minus the z_0 that ε̂ ≡ 0 would give, over
  the range of plain's share (a random UNet's ε̂ does not cancel z_T, so most of z_0 is z_T itself).

Timing: ``--repeats`` rounds; each round runs every row on a batch of ``--batch`` images, repeating the row's
call until ``--min-time`` seconds have passed (timeit's autorange: a 4-step row's sample is several calls, not one
0.2 s call that one pause of a shared machine can double), a round of rows rather than one row's repeats in a row,
so that a change in the load of a shared machine hits all rows alike; a row's time is its median round, after one
untimed run per row (the one whose
UNet evaluations are counted and whose output the PSNR compares). All
rows run in this one process, with ``torch.get_num_threads()`` threads. UNet evaluations per image are
counted with forward hooks: full ones (the middle block ran) and shallow ones (the shallow branch alone);
GFLOP / image by ``torch.utils.flop_counter`` on the same run (matmuls, convolutions, attention: the UNet's,
and the text encoder's and decoder's for the shipped model).
Precision: ldmkit rows run with ``--precision`` (default auto: bf16 where `ldmkit.device.bf16_pays`,
else fp32; in bf16 with the weights stored in bf16 as a bf16 pipeline keeps them,
`LatentDiffusion.store_for_autocast`, and their convolutions packed for oneDNN, `ldmkit.nn.prepack`), diffusers
in its probed best setting; the table says which each took and why.

``--results FILE`` writes the markdown (machine, command, tables) to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ldmkit.pretrained import DEFAULT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import (  # noqa: E402
    DIFFUSERS_SETTINGS, BenchModel, apply_diffusers_setting, bench_models, bf16_decision, bf16_settings,
    command_line, count_flops, diffusers_autocast, diffusers_configs, diffusers_schedule_kwargs, fmt, log,
    machine_info, machine_lines, make_weights, markdown_table, measure_peaks, median, pick_fastest, show_results,
)

MODELS = ("shipped", "sd-small")
INPUT_SEED = 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: shipped, sd-small")
    p.add_argument("--intervals", default="2,3", help="feature-reuse intervals N, comma-separated")
    p.add_argument("--cache-depths", default="1",
                   help="feature-reuse rows at each of these depths k, comma-separated: blocks of the first level "
                        "the shallow branch recomputes (ldmkit generate --cache-depth; 1, DeepCache's branch 0, is "
                        "the default; 0 … 1 for the shipped models, 0 … 2 for sd-small)")
    p.add_argument("--teacher", metavar="MODEL", default="shapes64",
                   help="the text-to-image model of the first table (a folder or a shipped name; default shapes64, "
                        f"whose results file TIME_TO_QUALITY.md is; {DEFAULT}: what `ldmkit.load_pipeline()` loads)")
    p.add_argument("--student", metavar="DIR",
                   help="a consistency student of --teacher (`ldmkit distill`, e.g. `make shapes64-lcm`'s "
                        "runs/shapes64-lcm or the shipped shapes64-lcm): its rows join the teacher's table")
    p.add_argument("--student-steps", default="4", help="the student's rows: sampling steps, comma-separated")
    p.add_argument("--num-images", type=int, default=1024, help="held-out captions scored per row (shipped model)")
    p.add_argument("--steps", type=int, help="sampling steps (default: 25 shipped, 20 sd-small)")
    p.add_argument("--batch", type=int, help="images per timed run (default: 8 shipped, 2 sd-small)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; each row's median round counts")
    p.add_argument("--min-time", type=float, default=1.0, metavar="SECONDS",
                   help="a row's sample in a round: its call repeated until this long has passed (0: one call)")
    p.add_argument("--diffusers-samplers", default="ddim", help="diffusers' schedulers: ddim, dpmpp-2m (comma-separated)")
    p.add_argument("--solvers", default="", metavar="NAME:STEPS,…",
                   help="shipped model: ldmkit's and diffusers' NAME (dpmpp-2m, unipc) at STEPS, e.g. unipc:10,dpmpp-2m:10")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto", help="ldmkit's rows")
    p.add_argument("--bf16", choices=("auto", "off"), default="auto",
                   help="diffusers' bf16 autocast settings join its probe where bf16 matmul beats fp32 (auto) or never")
    p.add_argument("--speed-only", action="store_true",
                   help="the speed columns alone: no quality runs (for a second kind of processor; quality does not "
                        "depend on it beyond bf16 rounding)")
    p.add_argument("--eval-batch", type=int, default=32, help="images per batch in the quality runs")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 16 images, a few steps × 1 image per timed run, 1 round, diffusers in fp32, small probe")
    p.add_argument("--results", help="write the markdown to this file (e.g. benchmarks/TIME_TO_QUALITY.md)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or any(m not in MODELS for m in args.models):
        p.error(f"--models: choose from {', '.join(MODELS)}")
    args.intervals = [int(n) for n in args.intervals.split(",") if n.strip()]
    args.cache_depths = [int(k) for k in args.cache_depths.split(",") if k.strip()]
    if not args.cache_depths or any(k < 0 for k in args.cache_depths):
        p.error("--cache-depths: one or more integers ≥ 0")
    args.student_steps = [int(n) for n in args.student_steps.split(",") if n.strip()]
    if any(n < 1 for n in args.student_steps):
        p.error("--student-steps: each must be at least 1")
    if any(n < 2 for n in args.intervals):
        p.error("--intervals: each N must be at least 2 (1 is the plain row)")
    args.diffusers_samplers = [s.strip() for s in args.diffusers_samplers.split(",") if s.strip()]
    if not args.diffusers_samplers or any(s not in ("ddim", "dpmpp-2m") for s in args.diffusers_samplers):
        p.error("--diffusers-samplers: choose from ddim, dpmpp-2m")
    args.solvers = [s.strip().partition(":") for s in args.solvers.split(",") if s.strip()]
    if any(name not in ("dpmpp-2m", "unipc") or not steps.isdigit() or int(steps) < 1 for name, _, steps in args.solvers):
        p.error("--solvers: NAME:STEPS, NAME one of dpmpp-2m, unipc and STEPS a positive integer")
    args.solvers = [(name, int(steps)) for name, _, steps in args.solvers]
    if args.quick:
        args.num_images = min(args.num_images, 16)
        args.steps = args.steps or max(args.intervals, default=1) + 1  # reuse needs more steps than its interval
        args.batch = args.batch or 1
        args.repeats = 1
        args.min_time = 0.0
    if args.min_time < 0:
        p.error("--min-time: seconds, at least 0")
    if args.num_images < 2:
        p.error("--num-images: at least 2 (FID compares sets)")
    return args


# --------------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    """One way of sampling: ``run(batch_index)`` → images (or latents) of the timed batch;
    ``generate`` (shipped model) is the pipe-like object the quality run draws from."""

    name: str
    precision: str
    run: Callable[[int], torch.Tensor]
    generate: object = None
    cache_interval: int = 1
    cache_depth: int = 1
    steps: int | None = None  # None: the table's steps
    sampler: str = "ddim"  # the ldmkit sampler of its quality run (lcm for a student)
    guidance: float | None = None  # None: the table's guidance scale; a student's own otherwise
    counter: object = None  # the EvaluationCounter of this row's UNet (None: ldmkit's or diffusers' by name)
    times: list[float] = field(default_factory=list)
    evaluations: str = ""
    result: dict = field(default_factory=dict)


class EvaluationCounter:
    """UNet evaluations (batch rows) while counting: full ones through ``deep`` and all through ``every``."""

    def __init__(self, every: torch.nn.Module, deep: torch.nn.Module | None = None):
        self.rows = {"every": 0, "deep": 0}
        self.on = False
        every.register_forward_pre_hook(lambda m, a, k: self._add("every", a, k), with_kwargs=True)
        if deep is not None:
            deep.register_forward_pre_hook(lambda m, a, k: self._add("deep", a, k), with_kwargs=True)

    def _add(self, key, args, kwargs):
        if self.on:
            x = args[0] if args else next(iter(kwargs.values()))
            self.rows[key] += x.shape[0]

    @contextlib.contextmanager
    def counting(self):
        self.rows = {"every": 0, "deep": 0}
        self.on = True
        try:
            yield self
        finally:
            self.on = False

    def describe(self, images: int, deep_known: bool) -> str:
        every = self.rows["every"] / images
        if not deep_known:
            return f"{every:g}"
        deep = self.rows["deep"] / images
        return f"{every:g}" if deep == every else f"{deep:g} full + {every - deep:g} shallow"


def precision_note(precision: str, unet: torch.nn.Module) -> tuple[bool, str]:
    """(bf16?, why) for ldmkit's ``precision`` on this CPU, and ``unet``'s layout where it is channels-last."""
    from ldmkit.device import NHWC_MIN_GROUP_WIDTH, bf16_pays, unet_channels_last, use_bf16

    cpu = torch.device("cpu")
    bf16 = use_bf16(precision, cpu)
    capability = torch.backends.cpu.get_cpu_capability()
    layout = ""
    if unet_channels_last(cpu, bf16, unet):
        why = (f"bf16, ≥ {NHWC_MIN_GROUP_WIDTH} channels per GroupNorm group" if bf16 else "fp32 without AVX-512")
        layout = f", UNet channels-last ({why})"
    if precision != "auto":
        return bf16, f"{'bf16' if bf16 else 'fp32'} (--precision {precision}){layout}"
    why = "AVX-512: bf16 is faster" if bf16_pays(cpu) else f"{capability}: bf16 far slower than fp32 here"
    return bf16, f"{'bf16' if bf16 else 'fp32'} (auto; {why}){layout}"


def diffusers_best_setting(unet_config: dict, weights: dict, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                           candidates: list[str]) -> tuple[str, dict[str, float]]:
    """The fastest of ``candidates`` (diffusers settings) on one guided UNet call, a fresh UNet each."""
    if len(candidates) == 1:
        return candidates[0], {}
    held: dict = {}

    def time_one(setting: str) -> float:
        if held.get("setting") != setting:
            held.clear()
            unet = build_unet(unet_config, weights)
            apply_diffusers_setting(unet, setting)
            held.update(setting=setting, unet=unet)
        start = time.perf_counter()
        with torch.no_grad(), diffusers_autocast(setting):
            held["unet"](z, t, encoder_hidden_states=context)
        return time.perf_counter() - start

    best, probe = pick_fastest(candidates, time_one)
    held.clear()
    return best, probe


def build_unet(config: dict, weights: dict):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(weights, strict=True)
    return unet.eval().requires_grad_(False)


def diffusers_scheduler(sampler: str, diffusion):
    """diffusers' scheduler for ``sampler`` on ldmkit's β schedule (DDIM on ldmkit's trailing timesteps; DPM-Solver++
    and UniPC at their defaults)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = diffusers_schedule_kwargs(diffusion)
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=1,
                             timestep_spacing="trailing")
    if sampler == "unipc":
        return UniPCMultistepScheduler(**common)
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)


def diffusers_pipeline(unet, scheduler):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_latents(pipe, setting: str, z_T: torch.Tensor, context: torch.Tensor, null: torch.Tensor, guidance: float,
                      steps: int) -> torch.Tensor:
    """z_0 from diffusers' pipeline, from ``z_T`` and the embeddings (no text encoder, no decoder)."""
    size = z_T.shape[-1] * pipe.vae_scale_factor
    with diffusers_autocast(setting):
        out = pipe(prompt_embeds=context, negative_prompt_embeds=null.expand_as(context), guidance_scale=guidance,
                   num_inference_steps=steps, latents=z_T.clone(), height=size, width=size, output_type="latent")
    return out.images.float()


def diffusers_candidates(args, peaks) -> tuple[list[str], str]:
    if args.quick:
        return ["fp32"], "diffusers setting fixed to fp32 (--quick)"
    mode, note = bf16_decision("auto" if args.bf16 == "auto" else "off", peaks)
    return list(DIFFUSERS_SETTINGS) + (list(bf16_settings()) if mode == "full" else []), note


def time_rounds(rows: list[Row], repeats: int, images: int, min_time: float = 0.0) -> None:
    """``repeats`` rounds of every row (each row has run once already, untimed); times in s per image. A row's
    sample in a round is its call repeated until ``min_time`` seconds have passed (as timeit's autorange does), so
    a fast row's sample is not one short call that one pause of a shared machine can double."""
    for r in range(repeats):
        for row in rows:
            calls, start = 0, time.perf_counter()
            while True:
                row.run(r)
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            row.times.append(elapsed / (images * calls))
            log(f"  round {r + 1}/{repeats}: {row.name} {row.times[-1]:.3f} s/image ({calls} call(s))")


# --------------------------------------------------------------------------------------------------
# The shipped model


class DiffusersShapes:
    """diffusers' denoising loop between ldmkit's prompt encoder and decoder, pipe-like enough for
    `generate_for_prompts`: ``generate_tensors(prompts, steps, guidance, seed, …)`` → images in [-1, 1].
    z_T is drawn as ldmkit's pipelines draw it (a CPU generator seeded with ``seed``)."""

    def __init__(self, ldmkit_pipe, pipe, setting: str, sampler: str):
        self.ldmkit_pipe, self.pipe, self.setting, self.sampler = ldmkit_pipe, pipe, setting, sampler

    @torch.inference_mode()
    def generate_tensors(self, prompts: list[str], steps: int = 25, guidance: float = 4.0, seed: int = 0,
                         num_images: int = 1, **_) -> torch.Tensor:
        prompts = [p for p in prompts for _ in range(num_images)]
        ours, model = self.ldmkit_pipe, self.ldmkit_pipe.model
        context = ours.encode(prompts)  # ldmkit's encoder and decoder, in the ldmkit rows' precision
        size = model.config.image_size // model.autoencoder.downsample_factor
        shape = (len(prompts), model.config.unet.out_channels, size, size)
        z_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        z_0 = diffusers_latents(self.pipe, self.setting, z_T, context, ours.encode_null(""), guidance, steps)
        return ours.decode(z_0)


def shipped(args, peaks) -> dict:
    import ldmkit
    from ldmkit.convert.rules import apply_to_other
    from ldmkit.convert.unet import unet_rules
    from ldmkit.eval.attributes import AttributePredictor
    from ldmkit.eval.features import ShapesFeatures
    from ldmkit.eval.generation import RealReference, generate_for_prompts, score_generated
    from ldmkit.settings import GenerationSettings
    from ldmkit.eval.heldout import heldout_shapes
    from ldmkit.model import LatentDiffusion
    from ldmkit.pretrained import resolve_model

    pipe = ldmkit.load_pipeline(args.teacher, precision=args.precision)  # a bf16 pipeline stores its weights in bf16
    model = pipe.model
    fp32_unet = LatentDiffusion.load(resolve_model(args.teacher)).unet  # float32 weights: diffusers' copy, and parity
    cfg = model.config
    steps, batch, guidance = args.steps or 25, args.batch or 8, 4.0
    latent = cfg.image_size // model.autoencoder.downsample_factor
    bench = BenchModel("shipped", cfg.unet, cfg.autoencoder, cfg.diffusion, latent_size=latent,
                       context_length=cfg.text.max_length, sample_steps=steps, sample_batch=batch, guidance=guidance,
                       train_batch=0)
    log(f"shipped: {batch} images × {steps} steps, guidance {guidance}, latent 4×{latent}×{latent}")
    bf16, ldm_note = precision_note(args.precision, model.unet)

    # diffusers' UNet on the shipped weights, converted by ldmkit's own key rules
    state = {f"unet.{k}": v for k, v in fp32_unet.state_dict().items()}
    converted = apply_to_other(unet_rules(cfg.unet, list(state), "diffusers"), state, "UNet → diffusers")
    weights = {k.removeprefix("unet/"): v for k, v in converted.items()}
    unet_config = diffusers_configs(bench)["unet"]
    prompts = heldout_shapes(batch, cfg.image_size, start=10**7).captions  # timing prompts, apart from the scored ones
    with torch.inference_mode():
        context = pipe.encode(prompts)
        null = pipe.encode_null("").expand_as(context)
    g = torch.Generator().manual_seed(INPUT_SEED)
    z = torch.randn(2 * batch, cfg.unet.in_channels, latent, latent, generator=g)
    t = torch.full((2 * batch,), 500)
    both = torch.cat([null, context])
    candidates, dif_note = diffusers_candidates(args, peaks)
    best, probe = diffusers_best_setting(unet_config, weights, z, t, both, candidates)
    dif_unet = build_unet(unet_config, weights)
    apply_diffusers_setting(dif_unet, best)
    with torch.no_grad():
        parity = (dif_unet(z, t, encoder_hidden_states=both).sample - fp32_unet(z, t, both)).abs().max().item()
    del fp32_unet

    ldm_counter = EvaluationCounter(model.unet.conv_in, model.unet.middle)
    dif_counter = EvaluationCounter(dif_unet)
    rows = []

    def ldmkit_row(name: str, interval: int, kv: bool = True, depth: int = 1) -> Row:
        def run(r: int) -> torch.Tensor:
            with contextlib.ExitStack() as stack:
                if not kv:
                    import ldmkit.pipelines.base as base

                    stack.enter_context(_patched(base, "cached_text_kv", lambda unet: contextlib.nullcontext()))
                return pipe.generate_tensors(prompts, steps=steps, guidance=guidance, seed=r, cache_interval=interval,
                                             cache_depth=depth)

        return Row(name, ldm_note, run, pipe, interval, depth)

    rows.append(ldmkit_row("ldmkit plain", 1))
    rows.append(ldmkit_row("ldmkit plain, text K/V at every step", 1, kv=False))
    rows += [ldmkit_row(reuse_name(n, k), n, depth=k) for k in args.cache_depths for n in args.intervals]
    for sampler in args.diffusers_samplers:
        adapter = DiffusersShapes(pipe, diffusers_pipeline(dif_unet, diffusers_scheduler(sampler, cfg.diffusion)),
                                  best, sampler)
        rows.append(Row(f"diffusers {sampler}", f"{best} (probed fastest)",
                        lambda r, a=adapter: a.generate_tensors(prompts, steps, guidance, seed=r), adapter))
    for sampler, n in args.solvers:
        rows.append(Row(f"ldmkit {sampler}, {n} steps", ldm_note,
                        lambda r, s=sampler, n=n: pipe.generate_tensors(prompts, steps=n, guidance=guidance, seed=r,
                                                                        sampler=s),
                        pipe, steps=n, sampler=sampler))
        adapter = DiffusersShapes(pipe, diffusers_pipeline(dif_unet, diffusers_scheduler(sampler, cfg.diffusion)),
                                  best, sampler)
        rows.append(Row(f"diffusers {sampler}, {n} steps", f"{best} (probed fastest)",
                        lambda r, a=adapter, n=n: a.generate_tensors(prompts, n, guidance, seed=r), adapter, steps=n))
    if args.student:
        student = ldmkit.load_pipeline(args.student, precision=args.precision)
        student_counter = EvaluationCounter(student.model.unet.conv_in, student.model.unet.middle)
        own = student.default_guidance  # the student's own scale, what a call without one samples at
        for n in args.student_steps:
            rows.append(Row(f"ldmkit lcm student, {n} steps, s = {own:g}", ldm_note,
                            lambda r, n=n: student.generate_tensors(prompts, steps=n, guidance=own, seed=r),
                            student, steps=n, counter=student_counter, sampler="lcm", guidance=own))
    # UNet evaluations per image, counted on one run of each row
    for row in rows:
        counter = row.counter or (dif_counter if row.name.startswith("diffusers") else ldm_counter)
        with counter.counting():
            row.result["images"], flops = count_flops(lambda: row.run(0))
        row.evaluations = counter.describe(batch, counter is not dif_counter)
        row.result["gflop"] = flops / batch / 1e9
    plain = rows[0].result["images"]
    for row in rows:
        row.result["psnr"] = psnr(row.result["images"], plain, peak=2.0)
    time_rounds(rows, args.repeats, batch, args.min_time)

    if args.speed_only:
        return {"name": "shipped", "rows": rows, "steps": steps, "batch": batch, "guidance": guidance,
                "setting": best, "probe": probe, "parity": parity, "notes": [ldm_note, dif_note],
                "min_time": args.min_time, "floor": None, "latent": latent, "student": args.student, "teacher": args.teacher}
    # quality: one image per held-out caption
    shapes = ShapesFeatures()
    reference = RealReference(heldout_shapes(args.num_images, cfg.image_size), [shapes], args.eval_batch)
    predictor = AttributePredictor(shapes.module)
    seen = {}
    for row in rows:
        if row.generate is None:
            continue
        key = (id(row.generate), getattr(row.generate, "sampler", ""), row.sampler, row.cache_interval,
               row.cache_depth, row.steps, row.guidance)
        if key in seen:  # the K/V row draws the plain row's images bit for bit
            row.result.update(seen[key])
            continue
        settings = GenerationSettings(sampler=row.sampler, num_inference_steps=row.steps or steps,
                                      guidance_scale=row.guidance or guidance, cache_interval=row.cache_interval,
                                      cache_depth=row.cache_depth)
        log(f"shipped: quality of {row.name} on {args.num_images} held-out captions")
        start = time.perf_counter()
        images = generate_for_prompts(row.generate, reference.heldout.captions, settings, args.eval_batch)
        seconds = (time.perf_counter() - start) / args.num_images
        report = score_generated(images, reference, predictor, args.eval_batch)
        acc = report.prompt_accuracy
        seen[key] = {"one": acc["one object"]["all"], "two": acc["two objects"]["all"],
                     "fid": report["FID (shapes-cnn)"].value, "eval_s": seconds}
        row.result.update(seen[key])
    return {"name": "shipped", "rows": rows, "steps": steps, "batch": batch, "guidance": guidance,
            "setting": best, "probe": probe, "parity": parity, "notes": [ldm_note, dif_note],
            "min_time": args.min_time, "floor": reference.floor[shapes.name], "latent": latent, "student": args.student,
            "teacher": args.teacher}


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


# --------------------------------------------------------------------------------------------------
# The SD-shaped model


def sd_small(args, peaks) -> dict:
    from ldmkit.device import lay_out_unet, store_for_autocast
    from ldmkit.diffusion import guided_denoiser, make_schedule, sample
    from ldmkit.nn.feature_cache import FeatureCache
    from ldmkit.nn.kv_cache import cached_text_kv
    from ldmkit.nn.prepack import prepack
    from ldmkit.nn.unet import UNet
    from ldmkit.pipelines.base import _in_bf16

    bench = bench_models()["sd-small"]
    if any(k > bench.unet.num_res_blocks for k in args.cache_depths):
        raise SystemExit(f"--cache-depths {args.cache_depths}: 0 … {bench.unet.num_res_blocks} for sd-small")
    steps, batch, guidance = args.steps or bench.sample_steps, args.batch or 2, bench.guidance
    log(f"sd-small: {batch} images × {steps} steps, guidance {guidance}, latent 4×{bench.latent_size}×{bench.latent_size}")
    weights = make_weights(bench, autoencoder=False)
    unet = UNet(bench.unet).eval().requires_grad_(False)
    unet.load_state_dict(weights["ldmkit_unet"], strict=True)
    bf16, ldm_note = precision_note(args.precision, unet)
    if bf16:  # as `Pipeline.from_folder` keeps a bf16 pipeline's weights: stored in bf16, convolutions packed
        store_for_autocast(unet, torch.bfloat16)
        prepack(unet)  # (a no-op where oneDNN has no bf16 convolutions, as in the pipeline)
    lay_out_unet(unet, torch.device("cpu"), bf16)  # as a pipeline on this CPU lays it out
    g = torch.Generator().manual_seed(INPUT_SEED)
    c, h, d = bench.unet.in_channels, bench.latent_size, bench.unet.context_dim
    z_T = torch.randn(batch, c, h, h, generator=g)
    context = torch.randn(batch, bench.context_length, d, generator=g)
    null = torch.randn(1, bench.context_length, d, generator=g)
    schedule = make_schedule(bench.diffusion)

    unet_config = diffusers_configs(bench)["unet"]
    both = torch.cat([null.expand_as(context), context])
    candidates, dif_note = diffusers_candidates(args, peaks)
    best, probe = diffusers_best_setting(unet_config, weights["diffusers_unet"], torch.cat([z_T, z_T]),
                                         torch.tensor(500), both, candidates)
    dif_unet = build_unet(unet_config, weights["diffusers_unet"])
    apply_diffusers_setting(dif_unet, best)

    def ldmkit_run(interval: int, kv: bool = True, depth: int = 1) -> Callable[[int], torch.Tensor]:
        def run(r: int) -> torch.Tensor:
            core = unet if interval == 1 else FeatureCache(unet, interval, depth)
            model_fn = _in_bf16(core, torch.device("cpu")) if bf16 else core
            denoise = guided_denoiser(model_fn, context, null, guidance, bench.diffusion.prediction, schedule)
            with torch.inference_mode(), (cached_text_kv(unet) if kv else contextlib.nullcontext()):
                return sample("ddim", denoise, z_T, schedule, num_steps=steps)

        return run

    rows = [Row("ldmkit plain", ldm_note, ldmkit_run(1)),
            Row("ldmkit plain, text K/V at every step", ldm_note, ldmkit_run(1, kv=False))]
    rows += [Row(reuse_name(n, k), ldm_note, ldmkit_run(n, depth=k), cache_interval=n, cache_depth=k)
             for k in args.cache_depths for n in args.intervals]
    for sampler in args.diffusers_samplers:
        dpipe = diffusers_pipeline(dif_unet, diffusers_scheduler(sampler, bench.diffusion))
        rows.append(Row(f"diffusers {sampler}", f"{best} (probed fastest)",
                        lambda r, p=dpipe: diffusers_latents(p, best, z_T, context, null, guidance, steps)))
    ldm_counter = EvaluationCounter(unet.conv_in, unet.middle)
    dif_counter = EvaluationCounter(dif_unet)
    for row in rows:
        counter = dif_counter if row.name.startswith("diffusers") else ldm_counter
        with counter.counting():
            row.result["z0"], flops = count_flops(lambda: row.run(0))
        row.evaluations = counter.describe(batch, counter is ldm_counter)
        row.result["gflop"] = flops / batch / 1e9
    # the z_0 that ε̂ ≡ 0 gives from the same z_T: what of z_0 is not the UNet's doing
    with torch.inference_mode():
        no_model = sample("ddim", lambda z, t: torch.zeros_like(z), z_T, schedule, num_steps=steps)
    plain = rows[0].result["z0"]
    for row in rows:
        z0 = row.result["z0"]
        row.result["psnr"] = psnr(z0, plain)
        row.result["psnr_share"] = psnr(z0 - no_model, plain - no_model)
    time_rounds(rows, args.repeats, batch, args.min_time)
    return {"name": "sd-small", "rows": rows, "steps": steps, "batch": batch, "guidance": guidance, "setting": best,
            "probe": probe, "notes": [ldm_note, dif_note], "latent": bench.latent_size,
            "min_time": args.min_time}


def reuse_name(interval: int, depth: int) -> str:
    """A feature-reuse row's name: its interval N, and its depth k where it is not the default 1."""
    return f"ldmkit feature reuse, N = {interval}" + (f", k = {depth}" if depth != 1 else "")


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float | None = None) -> float:
    """PSNR in dB of ``a`` against ``b``: 10 log10(peak² / MSE), peak = b's range unless given."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    peak = (b.max() - b.min()).item() if peak is None else peak
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# --------------------------------------------------------------------------------------------------
# Report


def section(res: dict) -> list[str]:
    rows = res["rows"]
    reference = next(r for r in rows if r.name.startswith("diffusers"))
    ref_speed = 1 / median(reference.times)
    shipped_model = res["name"] == "shipped"
    plain_speed = 1 / median(rows[0].times)
    header = ["row", "precision", "UNet evaluations / image", "GFLOP / image", "s / image", "images/s",
              f"÷ {reference.name}", f"÷ {rows[0].name}"]
    header += (["one object", "two objects", "FID ↓", "s / image (quality run)", "PSNR vs plain, dB"] if shipped_model
               else ["PSNR of z_0 vs plain, dB", "PSNR of the UNet's share, dB"])
    table = []
    for r in rows:
        seconds = median(r.times)
        line = [r.name, r.precision, r.evaluations, fmt(r.result["gflop"], 1), fmt(seconds, 3), fmt(1 / seconds, 2),
                fmt((1 / seconds) / ref_speed), fmt((1 / seconds) / plain_speed)]
        if shipped_model:
            line += [pct(r.result.get("one")), pct(r.result.get("two")), fmt(r.result.get("fid"), 1),
                     fmt(r.result.get("eval_s"), 3), db(r.result["psnr"])]
        else:
            line += [db(r.result["psnr"]), db(r.result["psnr_share"])]
        table.append(line)
    if shipped_model:
        default = " (`ldmkit.load_pipeline()`)" if res["teacher"] == DEFAULT else ""
        title = f"The shipped model `{res['teacher']}`{default}"
    else:
        title = "SD-v1-shaped UNet on random weights (`sd-small`)"
    autorange = f", each row's call repeated in a round until {res['min_time']:g} s had passed" if res["min_time"] else ""
    lines = [f"## {title}", "",
             f"{res['batch']} image(s) per timed run, {res['steps']} steps, guidance {res['guidance']:g}, latent "
             f"4×{res['latent']}×{res['latent']}; median of {len(rows[0].times)} round(s){autorange}.", "",
             markdown_table(header, table), ""]
    lines += [f"- precision: ldmkit {res['notes'][0]}; {res['notes'][1]}"]
    if res["probe"]:
        lines.append("- diffusers settings probe (s per guided UNet call): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in res["probe"].items()))
    if shipped_model:
        lines.append(f"- diffusers' UNet against ldmkit's on one guided call of the shipped weights: max |difference| "
                     f"{res['parity']:.1e}")
        if res.get("student"):
            lines.append(f"- the lcm student rows: `{res['student']}` (a consistency student of `{res['teacher']}`, "
                         "`ldmkit distill`), one UNet pass per step with the guidance scale as its input, at its own "
                         "scale s (its config's `consistency_guidance`, chosen on validation captions; "
                         "experiments/STUDENT_SETTINGS.md)")
        floor = "no quality runs (--speed-only)" if res["floor"] is None else \
            f"the real-vs-real floor at this count is {res['floor']:.1f}"
        lines.append(f"- FID on shapes-cnn features; {floor}. "
                     "PSNR vs plain: the timed batch's images against ldmkit plain's from the same seeds (range 2).")
    return lines + [""]


def pct(share) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def db(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.1f}"


def report(results: list[dict], args, info: dict, peaks) -> str:
    quick = ["**Smoke run (--quick): these numbers measure nothing.**", ""] if args.quick else []
    return "\n".join([
        "# Time to quality: feature reuse and the text K/V cache against diffusers", "", *quick,
        f"Command: `{command_line()}`", "",
        *machine_lines(info, peaks), "",
        "Every row of a table ran in this one process, on the same weights; see the script's docstring for "
        "what each row runs. *UNet evaluations / image*: batch rows through the UNet per image (guidance: two per "
        "step); *full + shallow* for feature reuse, whose rows recompute DeepCache's branch 0 between full steps "
        "(cache depth k = 1, the default) unless they say *k = 0* (`--cache-depth 0`: conv_in and the last decoder "
        "block alone). *÷ diffusers*: images/s against the diffusers row in the same run.", "",
        *[line for res in results for line in section(res)],
    ])


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = parse_args(argv)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise SystemExit("time_to_quality.py needs diffusers (pip install 'ldmkit[sd]')") from None
    info = machine_info()
    log(f"machine: {info['cpu']}, {info['torch CPU capability']}, {info['torch threads']} threads")
    peaks = measure_peaks(quick=args.quick)
    results = [shipped(args, peaks) if name == "shipped" else sd_small(args, peaks) for name in args.models]
    show_results(report(results, args, info, peaks), args.results)


if __name__ == "__main__":
    main()
