"""What bench_sampling.py and bench_training.py share: the two model configurations, one set of random
weights in ldmkit's and diffusers' layouts, the machine and its matmul peak, peak-memory readings,
fresh worker processes, FLOP counting and the results file.

Fairness rules both benchmarks follow:

- the same weights on both sides: ldmkit builds the networks from seeded random numbers, the library's
  own key rules (`ldmkit.convert.unet.unet_rules`, `ldmkit.convert.vae.vae_rules`) write them in
  diffusers' layout, and diffusers' models are built from the config.json ldmkit writes for a diffusers
  folder (`ldmkit.convert.diffusers_folder._diffusers_configs`); the parent process saves both to
  safetensors files and each side loads only its own;
- each side runs in a fresh subprocess (one at a time, never concurrently), so its peak RSS is its own
  and neither inherits the other's warmed-up allocator or oneDNN primitive caches;
- FLOPs are those `torch.utils.flop_counter.FlopCounterMode` counts (matmuls, convolutions, attention),
  measured on each side's own model during its untimed warm-up.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

SCALE_FACTOR = 0.18215  # the latent scale of both sides' autoencoders (SD's value; the timing does not care)
WEIGHT_SEED = 0
_T0 = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, with seconds since the process started."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# The two configurations


@dataclass(frozen=True)
class BenchModel:
    """One benchmarked configuration: the UNet, the latent it denoises, the context it attends to and
    the autoencoder in front of it, with the default workload of each benchmark."""

    name: str
    unet: object  # ldmkit.config.UNetConfig
    autoencoder: object  # ldmkit.config.AutoencoderConfig
    diffusion: object  # ldmkit.config.DiffusionConfig
    latent_size: int  # h = w of the latent
    context_length: int  # L of the context, B×L×d
    sample_steps: int
    sample_batch: int
    guidance: float
    train_batch: int

    @property
    def image_size(self) -> int:
        return self.latent_size * self.autoencoder.downsample_factor

    @property
    def ae_in_diffusers(self) -> bool:
        """Whether diffusers' AutoencoderKL can hold this autoencoder (SD's layout, widths of 32·k)."""
        a = self.autoencoder
        return a.kind == "kl" and a.attention and a.attention_bias and a.asymmetric_downsample and all(
            a.base_channels * m % 32 == 0 for m in a.channel_mults
        )


def bench_models() -> dict[str, BenchModel]:
    """``sd-small``: Stable Diffusion v1's shape at a CPU-sized width — three levels of widths
    128/256/256, two ResBlocks per level, cross-attention (8 heads, 1×1-conv projections) at the first
    two levels and the middle, CLIP-like context 77×256, latent 4×32×32, and an SD-layout KL-f8
    autoencoder of widths 32/64/128/128 (two ResBlocks per level, attention in the middle) that
    diffusers' AutoencoderKL holds too.
    ``shapes64``: the UNet, autoencoder and schedule of ``ldmkit/configs/shapes64.yaml`` (UNet widths
    64/128/128, context 24×128, latent 4×16×16). Its KL-f4 autoencoder (widths 24/48/48, no attention,
    symmetric downsampling) has no diffusers AutoencoderKL counterpart, so both sides encode with it.
    """
    from ldmkit.config import AutoencoderConfig, DiffusionConfig, UNetConfig, load_preset

    sd_unet = UNetConfig(
        in_channels=4, out_channels=4, model_channels=128, channel_mults=(1, 2, 2), num_res_blocks=2,
        attention_levels=(0, 1), num_heads=8, context_dim=256, linear_projection=False, norm_eps=1e-5,
    )
    sd_ae = AutoencoderConfig(
        kind="kl", base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=2, latent_channels=4,
        attention=True, attention_bias=True, asymmetric_downsample=True,
    )
    shapes = load_preset("shapes64")
    return {
        "sd-small": BenchModel(
            "sd-small", sd_unet, sd_ae, DiffusionConfig(), latent_size=32, context_length=77,
            sample_steps=20, sample_batch=4, guidance=7.5, train_batch=4,
        ),
        "shapes64": BenchModel(
            "shapes64", shapes.unet, shapes.autoencoder, shapes.diffusion,
            latent_size=shapes.data.image_size // shapes.autoencoder.downsample_factor,
            context_length=shapes.text.max_length, sample_steps=shapes.train.sample_steps, sample_batch=8,
            guidance=shapes.train.sample_guidance, train_batch=shapes.train.batch_size,
        ),
    }


def select_models(names: str) -> list[BenchModel]:
    models = bench_models()
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in models]
    if unknown or not chosen:
        raise SystemExit(f"unknown configuration {unknown or names!r}; allowed: {', '.join(models)}")
    return [models[n] for n in chosen]


def diffusers_configs(model: BenchModel) -> dict[str, dict]:
    """The ``unet`` and ``vae`` config.json dicts ldmkit writes for a diffusers folder of ``model``.

    `_diffusers_configs` describes a whole SD pipeline, so it is given a CLIP text encoder (its config
    is not used) and, for an autoencoder diffusers cannot hold, an SD-layout stand-in (its ``vae`` entry
    is then dropped)."""
    from ldmkit.config import AutoencoderConfig, ModelConfig, TextEncoderConfig
    from ldmkit.convert.diffusers_folder import _diffusers_configs

    ae = model.autoencoder
    if not model.ae_in_diffusers:
        ae = AutoencoderConfig(
            base_channels=32, channel_mults=(1,) * len(ae.channel_mults), attention=True, attention_bias=True,
            asymmetric_downsample=True,
        )
    config = ModelConfig(
        autoencoder=ae, text=TextEncoderConfig(kind="clip", vocab_size=49408, max_length=77, width=model.unet.context_dim,
                               layers=1, heads=1),
        unet=model.unet, diffusion=model.diffusion, image_size=model.latent_size * ae.downsample_factor,
    )
    configs = _diffusers_configs(config, SCALE_FACTOR)
    return {"unet": configs["unet"], "vae": configs["vae"] if model.ae_in_diffusers else None}


def _perturb(module: torch.nn.Module, generator: torch.Generator, scale: float) -> None:
    """Random weights everywhere: fresh models zero some layers (proj_out), which would make the
    parity check blind to them."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def make_weights(model: BenchModel, autoencoder: bool) -> dict[str, dict[str, torch.Tensor]]:
    """Seeded random weights of ``model``'s UNet (and autoencoder): {"ldmkit_unet", "diffusers_unet",
    "ldmkit_ae", "diffusers_vae"} state dicts (the last only when diffusers can hold the autoencoder)."""
    from ldmkit.autoencoder import build_autoencoder
    from ldmkit.convert.rules import apply_to_other
    from ldmkit.convert.unet import unet_rules
    from ldmkit.convert.vae import vae_rules
    from ldmkit.nn.unet import UNet

    torch.manual_seed(WEIGHT_SEED)
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    unet = UNet(model.unet)
    _perturb(unet, g, 0.02)
    ldm_unet = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    out = {"ldmkit_unet": unet.state_dict()}
    diff = apply_to_other(unet_rules(model.unet, list(ldm_unet), "diffusers"), ldm_unet, "UNet → diffusers")
    out["diffusers_unet"] = {k.removeprefix("unet/"): v for k, v in diff.items()}
    if autoencoder:
        ae = build_autoencoder(model.autoencoder)
        _perturb(ae, g, 0.02)
        ae.scale_factor.fill_(SCALE_FACTOR)
        out["ldmkit_ae"] = ae.state_dict()
        if model.ae_in_diffusers:
            ldm_ae = {f"autoencoder.{k}": v for k, v in ae.state_dict().items() if k != "scale_factor"}
            diff = apply_to_other(vae_rules(model.autoencoder, list(ldm_ae), "diffusers"), ldm_ae, "autoencoder → diffusers")
            out["diffusers_vae"] = {k.removeprefix("vae/"): v for k, v in diff.items()}
    return out


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def build_ldmkit_unet(model: BenchModel, weights_path: str) -> torch.nn.Module:
    from ldmkit.nn.unet import UNet

    unet = UNet(model.unet)
    unet.load_state_dict(load_tensors(weights_path), strict=True)
    return unet


def build_ldmkit_autoencoder(model: BenchModel, weights_path: str) -> torch.nn.Module:
    from ldmkit.autoencoder import build_autoencoder

    ae = build_autoencoder(model.autoencoder)
    ae.load_state_dict(load_tensors(weights_path), strict=True)
    return ae.eval().requires_grad_(False)


def build_diffusers_unet(config: dict, weights_path: str) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(load_tensors(weights_path), strict=True)
    return unet


def build_diffusers_vae(config: dict, weights_path: str) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(config)
    vae.load_state_dict(load_tensors(weights_path), strict=True)
    return vae.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# diffusers' stock CPU settings


DIFFUSERS_SETTINGS = ("fp32", "fp32+channels_last", "fp32+fused_qkv", "fp32+channels_last+fused_qkv")


def bf16_settings() -> tuple[str, ...]:
    return tuple(s.replace("fp32", "bf16") for s in DIFFUSERS_SETTINGS)


def apply_diffusers_setting(unet: torch.nn.Module, setting: str) -> None:
    """Put a freshly built diffusers UNet into ``setting``: its documented one-line CPU speed-ups,
    channels_last memory format and ``fuse_qkv_projections()``, as named; the dtype part (fp32, or bf16
    autocast) is applied around the calls by `diffusers_autocast`."""
    parts = setting.split("+")
    if "channels_last" in parts:
        unet.to(memory_format=torch.channels_last)
    if "fused_qkv" in parts:
        unet.fuse_qkv_projections()


def diffusers_autocast(setting: str):
    """bf16 autocast for a ``bf16+…`` setting (diffusers' and accelerate's CPU mixed precision), else none."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting.startswith("bf16"))


def pick_fastest(candidates: list[str], time_one, repeats: int = 1) -> tuple[str, dict[str, float]]:
    """The candidate whose ``time_one(candidate)`` (seconds, after one untimed call) is smallest."""
    times = {}
    for name in candidates:
        time_one(name)  # warm-up: oneDNN builds its primitives for this layout
        times[name] = min(time_one(name) for _ in range(repeats))
        log(f"  diffusers setting {name}: {times[name]:.3f} s per call")
    return min(times, key=times.get), times


# --------------------------------------------------------------------------------------------------
# The machine


def machine_info() -> dict[str, str]:
    """CPU model (lscpu), the CPU capability PyTorch dispatches to, threads and library versions."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    if not model and Path("/proc/cpuinfo").is_file():
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = m[1] if m else ""
    info = {
        "cpu": model or platform.processor() or "unknown",
        "logical CPUs": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch CPU capability": torch.backends.cpu.get_cpu_capability(),
        # set to run a lesser instruction set on this processor (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2:
        # an AVX2-only machine's kernels, bf16 included)
        **{name: os.environ[name] for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if name in os.environ},
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = "not installed"
    return info


def _matmul_rate(dtype: torch.dtype, size: int, min_time: float) -> float:
    """GFLOP/s of ``size``² × ``size``² matmuls (2 n³ FLOPs each): one untimed call, then calls until
    ``min_time`` seconds (at least 2)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < min_time:
        torch.mm(a, b)
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


@dataclass
class Peaks:
    """Matmul peaks measured in this run (GFLOP/s) and whether bf16 beats fp32 here."""

    fp32: float
    fp32_size: int
    bf16: float
    bf16_size: int
    note: str = ""

    @property
    def bf16_pays(self) -> bool:
        return self.bf16 > self.fp32


def measure_peaks(quick: bool = False) -> Peaks:
    """fp32 and bf16 2048² matmul GFLOP/s (512² with ``quick``). bf16 is probed at 256² first: where that runs below a
    quarter of fp32 (an AVX2 CPU's slow bf16 path, ~500× slower), the 2048² bf16 matmul would take
    about a minute, so the 256² rate is reported instead, and said so."""
    size = 512 if quick else 2048
    fp32 = _matmul_rate(torch.float32, size, 0.3 if quick else 1.0)
    probe = _matmul_rate(torch.bfloat16, 256, 0.1)
    if probe < fp32 / 4:
        note = f"{fp32 / probe:.0f}× below fp32, so 2048² not run"
        return Peaks(fp32, size, probe, 256, note)
    return Peaks(fp32, size, _matmul_rate(torch.bfloat16, size, 0.3 if quick else 1.0), size)


def bf16_decision(mode: str, peaks: Peaks) -> tuple[str, str]:
    """How diffusers' bf16 autocast is measured, from ``--bf16`` and the peaks:

    - "full": bf16 settings join diffusers' settings probe and may become its best setting
      (``on``, or ``auto`` where bf16 matmul beats fp32);
    - "capped": ``on`` where bf16 is slower: a separate, tiny run (1 image, 1 step) under a time cap;
    - "skip": ``off``, or ``auto`` where bf16 is slower (with the reason).
    """
    if mode == "off":
        return "skip", "bf16 not measured (--bf16 off)"
    if peaks.bf16_pays:
        return "full", f"bf16 matmul {peaks.bf16:.0f} GFLOP/s > fp32 {peaks.fp32:.0f} GFLOP/s: bf16 settings probed"
    reason = f"bf16 matmul {peaks.bf16:.2f} GFLOP/s < fp32 {peaks.fp32:.0f} GFLOP/s"
    if mode == "on":
        return "capped", reason + ": bf16 measured on a tiny run under a time cap, not a candidate for best"
    return "skip", reason + ": diffusers' bf16 autocast skipped (--bf16 on measures it anyway, capped)"


# --------------------------------------------------------------------------------------------------
# Memory, FLOPs, timing


def start_work_memory() -> dict[str, float]:
    """Mark the start of the measured work: note the process's RSS high-water mark so far (VmHWM),
    then reset it to the current RSS (Linux ≥ 4.0: ``/proc/self/clear_refs`` ← 5). Pass the mark to
    `memory_report`.

    VmHWM rather than getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a worker
    would report at least its parent's RSS; VmHWM belongs to the worker's own address space."""
    mark = {"hwm_before": _status_mib("VmHWM"), "rss": math.nan}
    try:
        Path("/proc/self/clear_refs").write_text("5")
        mark["rss"] = _status_mib("VmRSS")
    except OSError:
        pass
    return mark


def _status_mib(field_name: str) -> float:
    try:
        m = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        m = None
    if m:
        return int(m[1]) / 1024
    if field_name == "VmHWM":  # no /proc (macOS): getrusage's lifetime peak (bytes there, KiB on Linux)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return math.nan


def memory_report(mark: dict[str, float]) -> dict[str, float]:
    """{"peak_rss_mib": the worker's RSS high-water mark over its whole life (imports and weights
    included), "work_mib": how far RSS rose during the measured work, above its RSS at `start_work_memory`
    (NaN where the high-water mark cannot be reset)}."""
    hwm = _status_mib("VmHWM")
    return {"peak_rss_mib": max(mark["hwm_before"], hwm), "work_mib": hwm - mark["rss"]}


def _cpu_kernel_formulas() -> dict:
    """FLOP formulas for CPU kernels FlopCounterMode (as of torch 2.13) does not know: those of
    scaled_dot_product_attention (uncounted, the attention of every transformer block would be missing; the
    formulas it uses for the CUDA flash kernels, QKᵀ and AV, and their backward) and oneDNN's convolution on
    prepacked weights (uncounted, a bf16 pipeline's convolutions would be missing)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    formulas = {
        "_scaled_dot_product_flash_attention_for_cpu":
            lambda q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(q, k, v),
        "_scaled_dot_product_flash_attention_for_cpu_backward":
            lambda g, q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(g, q, k, v),
    }
    out = {}
    for name, formula in formulas.items():
        op = getattr(aten, name, None)
        if op is not None and op not in fc.flop_registry:
            out[op] = formula
    # oneDNN's convolution on weights reordered once (`ldmkit.nn.prepack`, a bf16 pipeline on an AVX-512 CPU):
    # the same convolution, 2 · out elements · C_in/groups · kH · kW
    pointwise = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    if pointwise is not None:
        out[pointwise] = lambda x, w, *args, out_shape=None, **kwargs: 2 * math.prod(out_shape) * math.prod(w[1:])
    return out


def count_flops(fn) -> tuple[object, int]:
    """(fn(), FLOPs FlopCounterMode counted while it ran: matmuls, convolutions and attention, forward,
    and backward if fn runs one)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_kernel_formulas()) as counter:
        result = fn()
    return result, counter.get_total_flops()


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def results_head(title: str, note: str = "") -> list[str]:
    """The opening lines of a results page: its title, the command that wrote it, the machine, and ``note`` (a line
    on the conditions of the run) where given."""
    return [f"# {title}", "", f"Command: `{command_line()}`", "",
            *(f"- {k}: {v}" for k, v in machine_info().items()), *([f"- {note}"] if note else []), ""]


def alternating(switch, call, rounds: int) -> tuple[float, float, object, object]:
    """A/B timing on one machine state: ``rounds`` rounds of ``switch(False)`` then ``switch(True)``, each side
    timed on its second ``call()`` after the switch (the first pays what the switch defers: weights reordered or
    rebuilt); returns (median s off, median s on, last output off, last output on). Leaves the switch on."""
    times: dict[bool, list[float]] = {False: [], True: []}
    outputs = {}
    for _ in range(rounds):
        for on in (False, True):
            switch(on)
            call()  # untimed, as a first call after the switch would be
            outputs[on], seconds = timed(call)
            times[on].append(seconds)
    switch(True)
    return median(times[False]), median(times[True]), outputs[False], outputs[True]


# --------------------------------------------------------------------------------------------------
# Worker processes


def run_worker(script: str, spec: dict, workdir: Path, name: str, timeout: float | None = None) -> dict:
    """Run ``script --worker SPEC`` in a fresh interpreter and return the JSON it writes to
    ``spec["result"]``; {"timed_out": True} after ``timeout`` seconds. Its stderr (progress) passes through."""
    spec = {**spec, "result": str(workdir / f"{name}.result.json")}
    spec_path = workdir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, script, "--worker", str(spec_path)], timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name}: stopped after the {timeout:.0f} s cap")
        return {"timed_out": True}
    if proc.returncode != 0:
        raise SystemExit(f"worker {name} failed with exit code {proc.returncode}")
    return json.loads(Path(spec["result"]).read_text())


def write_result(spec: dict, result: dict) -> None:
    Path(spec["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------------
# Results


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, quoted for a shell: ``python SCRIPT ARGS`` (``argv``: the
    arguments a ``main(argv)`` was called with, default ``sys.argv[1:]``)."""
    return "python " + shlex.join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)])


def unet_digest(model: Path) -> str:
    """The first 12 hex digits of the SHA-256 of the model folder ``model``'s UNet weights (from its SHA256SUMS
    where it has one): which model a result measured, and the key of results kept for it."""
    sums = model / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name.strip() == "unet.safetensors":
                return digest[:12]
    return hashlib.sha256((model / "unet.safetensors").read_bytes()).hexdigest()[:12]


def results_footer(argv: list[str] | None = None) -> list[str]:
    """The last lines of a results file: the machine on one line, then the command that regenerates it."""
    return ["- machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()), "",
            f"Regenerate: `{command_line(argv)}`", ""]


def diffusers_schedule_kwargs(d) -> dict:
    """The keyword arguments that give a diffusers scheduler ldmkit's forward process ``d`` (a
    `DiffusionConfig` with a linear or scaled_linear schedule)."""
    return dict(num_train_timesteps=d.num_timesteps, beta_schedule=d.schedule, beta_start=d.beta_start,
                beta_end=d.beta_end, prediction_type="v_prediction" if d.prediction == "v" else "epsilon",
                rescale_betas_zero_snr=d.zero_terminal_snr)


def machine_lines(info: dict[str, str], peaks: Peaks) -> list[str]:
    lines = [f"- {k}: {v}" for k, v in info.items()]
    lines.append(f"- matmul peak (this run): fp32 {peaks.fp32:.1f} GFLOP/s at {peaks.fp32_size}², "
                 f"bf16 {peaks.bf16:.2f} GFLOP/s at {peaks.bf16_size}²" + (f" ({peaks.note})" if peaks.note else ""))
    return lines


def show_results(text: str, path: str | Path | None) -> None:
    """Print a results file's text and, given a path, write it there (atomically)."""
    from ldmkit.storage import write_text_atomic

    print(text)
    if path:
        write_text_atomic(path, text)
        print(f"wrote {path}")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """`ldmkit.eval.tables.markdown_table`, imported when called: the worker processes import this module,
    and their peak memory is measured, so it imports no more of ldmkit than they need."""
    from ldmkit.eval.tables import markdown_table

    return markdown_table(header, rows)


def write_noted_table(out: str | Path, title: str, note_file: str | None, header: list[str],
                      rows: list[list[str]]) -> str:
    """Write ``out``: ``# title``, the paragraphs of ``note_file`` (if given), the table, and the command that
    made it (an experiment's results file); returns the text."""
    from ldmkit.storage import write_text_atomic

    note = Path(note_file).read_text().strip() if note_file else ""
    text = "\n".join([f"# {title}", "", note, "", markdown_table(header, rows), "", f"Table: `{command_line()}`", ""])
    write_text_atomic(out, text)
    return text


def write_results_section(path: str | Path, key: str, text: str) -> None:
    """Put ``text`` between ``<!-- KEY:start -->`` and ``<!-- KEY:end -->`` in ``path``, replacing that
    block if it is there and appending it otherwise, so both benchmarks can share one RESULTS.md."""
    path = Path(path)
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text(encoding="utf-8") if path.is_file() else "# ldmkit vs diffusers on CPU\n\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block.rstrip("\n") + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new, encoding="utf-8")


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"



def run_benchmark(name: str, args, bench_model, report) -> None:
    """What both benchmark scripts do: measure the matmul peaks, ``bench_model(model, args, peaks,
    bf16_mode, tmp)`` for each selected configuration, print ``report(results, args, info, peaks,
    bf16_note)`` and, with ``--results``, write it into that file's ``name`` section."""
    import tempfile

    models = select_models(args.models)
    info = machine_info()
    log("measuring the matmul peaks")
    peaks = measure_peaks(args.quick)
    bf16_mode, bf16_note = bf16_decision(args.bf16, peaks)
    log(f"fp32 {peaks.fp32:.1f} GFLOP/s, bf16 {peaks.bf16:.2f} GFLOP/s; {bf16_note}")
    with tempfile.TemporaryDirectory(prefix=f"{name}_") as tmp:
        results = [bench_model(m, args, peaks, bf16_mode, Path(tmp)) for m in models]
    text = report(results, args, info, peaks, bf16_note)
    print(text)
    if args.results:
        write_results_section(args.results, name, text)
        log(f"wrote the {name} section of {args.results}")
