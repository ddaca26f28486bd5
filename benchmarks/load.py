"""Loading a Stable Diffusion 1.5-sized single file: ldmkit against diffusers, time and peak memory.

    python benchmarks/load.py [--workdir runs/load-bench] [--results FILE] [--repeats N] [--copying] [--small]

The file: a random-weight SD-1.5-shaped model (``ldmkit/configs/models/sd-v1.yaml``: 860M-parameter
UNet, KL-f8 autoencoder, CLIP ViT-L/14 text tower) in fp32, written once with ldmkit's own exporter
(`ldmkit.convert.original.write_original`, the original CompVis/Stability layout, ~4.3 GB) into
``--workdir`` and reused by later runs. Beside it, a diffusers config folder without weights
(`ldmkit.convert.diffusers_folder.write_diffusers_configs`), which diffusers' ``from_single_file`` reads
instead of fetching configs from the Hub. ``--small`` uses the same layout with narrow widths (UNet
model_channels 64, autoencoder 32, text width 256, ~0.25 GB) to check the script quickly; its memory
ratios are dominated by the imports and say nothing about the target.

Each loader runs in a fresh subprocess, one at a time, the file already in the page cache (the parent
reads it once before the runs):

- ldmkit: ``LatentDiffusion.load(file)``;
- with ``--copying``, also ldmkit building the model with random weights and copying the file's tensors
  into it (``read_checkpoint`` + ``load_state_dict``), for reference;
- diffusers: ``StableDiffusionPipeline.from_single_file(file, config=<config folder>,
  local_files_only=True)`` (skipped, and said so, when diffusers is not importable).

Both workers import torch, transformers' CLIP model and their library's loading modules before the
clock starts. Measured: the load call ("load s"), then a pass reading every parameter and buffer once
("+ read s": a memory-mapped weight is only read from the page cache when first used, so the load call
alone can look cheaper than it is), and the child's peak RSS over its whole life
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at its end, after the read pass; the parent imports no
torch, so what a child inherits from it through fork is a few tens of MB). With ``--repeats N`` each
loader runs N times, alternating, and the row is the run with the median load + read time.

Target (issue 20, item 5): peak ≤ 1.2× the file size, and load time ≤ diffusers' in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_NAMES = {False: "sd15-random-fp32.safetensors", True: "sd15-small-random-fp32.safetensors"}
GB = 1e9


# --------------------------------------------------------------------------------------------------
# the file (made in a subprocess, so that the parent stays free of torch and of the model's memory)


def bench_config(small: bool):
    from dataclasses import replace

    from ldmkit.config import ModelConfig, load_yaml

    config = load_yaml(ModelConfig, ROOT / "ldmkit" / "configs" / "models" / "sd-v1.yaml")
    if small:
        config = replace(
            config,
            unet=replace(config.unet, model_channels=64, context_dim=256),
            autoencoder=replace(config.autoencoder, base_channels=32),
            text=replace(config.text, width=256, heads=4, ff_width=1024),
        )
    return config


def make_files(path: Path, config_dir: Path, small: bool) -> None:
    """Write the random-weight model as an original-layout file and the diffusers config folder."""
    import torch

    from ldmkit.convert.checkpoint import Checkpoint
    from ldmkit.convert.diffusers_folder import write_diffusers_configs
    from ldmkit.convert.infer import SD_SCALE_FACTOR
    from ldmkit.convert.original import write_original
    from ldmkit.model import LatentDiffusion

    config = bench_config(small)
    torch.manual_seed(0)
    model = LatentDiffusion(config)
    model.autoencoder.scale_factor.fill_(SD_SCALE_FACTOR)
    ckpt = Checkpoint(config=config, weights=dict(model.state_dict()), tokenizer=model.tokenizer)
    write_original(ckpt, path)
    write_diffusers_configs(config, model.tokenizer, SD_SCALE_FACTOR, config_dir)


def ensure_files(workdir: Path, small: bool) -> tuple[Path, Path]:
    path = workdir / FILE_NAMES[small]
    config_dir = workdir / (path.stem + "-diffusers-config")
    if path.is_file() and (config_dir / "model_index.json").is_file():
        print(f"using {path} ({path.stat().st_size / GB:.2f} GB, made earlier)", file=sys.stderr)
        return path, config_dir
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"writing {path} with ldmkit's exporter (once) …", file=sys.stderr, flush=True)
    start = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--make", str(path), "--config-dir", str(config_dir)]
    subprocess.run(cmd + (["--small"] if small else []), check=True, cwd=ROOT)
    print(f"  {path.stat().st_size / GB:.2f} GB in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return path, config_dir


def warm_page_cache(path: Path) -> None:
    """Read the file once in 16 MiB blocks (the parent's memory does not grow)."""
    with open(path, "rb", buffering=0) as f:
        block = bytearray(16 << 20)
        while f.readinto(block):
            pass


# --------------------------------------------------------------------------------------------------
# workers


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def read_every_tensor(modules) -> None:
    """Read each parameter and buffer once (a sum per tensor), as a first forward pass would."""
    import torch

    with torch.no_grad():
        for module in modules:
            for t in list(module.parameters()) + list(module.buffers()):
                if t.numel():
                    t.sum()


def worker(loader: str, path: Path, config_dir: Path) -> dict:
    import torch
    from transformers import CLIPTextModel  # noqa: F401  (both sides build one: imported before the clock)

    if loader == "ldmkit":
        import ldmkit.convert  # noqa: F401  (the loader's modules, imported before the clock as diffusers' are)
        import ldmkit.text.clip  # noqa: F401
        from ldmkit.model import LatentDiffusion

        def load():
            model = LatentDiffusion.load(path)
            return [model]
    elif loader == "ldmkit-copying":
        import ldmkit.text.clip  # noqa: F401
        from ldmkit.convert import read_checkpoint
        from ldmkit.model import LatentDiffusion

        def load():  # a model with random weights, the file's tensors copied in
            ckpt = read_checkpoint(path)
            model = LatentDiffusion(ckpt.config, ckpt.tokenizer)
            model.load_state_dict(ckpt.weights, strict=True)
            return [model.eval()]
    else:
        from diffusers import StableDiffusionPipeline
        from diffusers.loaders import single_file_utils  # noqa: F401

        def load():
            pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config_dir), local_files_only=True)
            return [pipe.unet, pipe.vae, pipe.text_encoder]

    rss_before = _status_kib("VmRSS")
    start = time.perf_counter()
    modules = load()
    loaded = time.perf_counter()
    read_every_tensor(modules)
    done = time.perf_counter()
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for m in modules for p in m.parameters()})
    params = sum(p.numel() for m in modules for p in m.parameters())
    return {
        "loader": loader,
        "load_s": loaded - start,
        "read_s": done - loaded,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "vmhwm_bytes": _status_kib("VmHWM") * 1024,
        "rss_before_load_bytes": rss_before * 1024,
        "parameters": params,
        "dtypes": dtypes,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "version": _version(loader),
    }


def _version(loader: str) -> str:
    if loader == "diffusers":
        import diffusers

        return diffusers.__version__
    if loader == "ldmkit-copying":
        return "(random init + copy)"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ldmkit")
    except PackageNotFoundError:
        return "source"


def run_worker(loader: str, path: Path, config_dir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", loader, "--file", str(path),
           "--config-dir", str(config_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"the {loader} worker failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def diffusers_importable() -> tuple[bool, str]:
    probe = subprocess.run([sys.executable, "-c", "import diffusers; print(diffusers.__version__)"],
                           capture_output=True, text=True, cwd=ROOT)
    if probe.returncode == 0:
        return True, probe.stdout.strip()
    return False, (probe.stderr.strip().splitlines() or ["not importable"])[-1]


def accelerate_importable() -> bool:
    return subprocess.run([sys.executable, "-c", "import accelerate"], capture_output=True, cwd=ROOT).returncode == 0


# --------------------------------------------------------------------------------------------------
# report


def processor() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def report(path: Path, rows: dict[str, dict], notes: list[str], small: bool) -> str:
    size = path.stat().st_size
    any_row = next(iter(rows.values()))
    lines = [
        f"# Loading an SD-1.5-shaped single file{' (--small: a narrow SD-shaped file, for checking the script)' if small else ''}",
        "",
        f"Machine: {processor()}; torch CPU capability {any_row['capability']}; torch threads {any_row['threads']} "
        f"({os.cpu_count()} logical CPUs); torch {any_row['torch']}, Python {platform.python_version()}.",
        f"File: `{path.name}`, {size / GB:.2f} GB, fp32, original SD layout, written by ldmkit's exporter; "
        "page cache warm.",
        "",
        "| loader | file GB | load s | + read every weight s | load + read s | RSS before load GB | peak RSS GB "
        "| peak / file | (peak − before) / file | load time / diffusers | load + read / diffusers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = rows.get("diffusers")
    for name, r in rows.items():
        total = r["load_s"] + r["read_s"]
        if reference is not None:
            ratio_load = f"{r['load_s'] / reference['load_s']:.2f}×"
            ratio_total = f"{total / (reference['load_s'] + reference['read_s']):.2f}×"
        else:
            ratio_load = ratio_total = "n/a (no diffusers)"
        label = f"{name} {r['version']}"
        lines.append(
            f"| {label} | {size / GB:.2f} | {r['load_s']:.2f} | {r['read_s']:.2f} | {total:.2f} "
            f"| {r['rss_before_load_bytes'] / GB:.2f} | {r['ru_maxrss_bytes'] / GB:.2f} "
            f"| {r['ru_maxrss_bytes'] / size:.2f} | {(r['ru_maxrss_bytes'] - r['rss_before_load_bytes']) / size:.2f} "
            f"| {ratio_load} | {ratio_total} |"
        )
    lines += ["", "Peak RSS: the child's `ru_maxrss` over its whole life, imports included (\"RSS before load\": "
              "the process after its imports; \"peak − before\" is what loading and reading the weights added), "
              "taken after a pass that reads every parameter and buffer once."]
    lines += [f"- {n}" for n in notes]
    targets = []
    ours = rows.get("ldmkit")
    if ours is not None:
        ratio = ours["ru_maxrss_bytes"] / size
        targets.append(f"peak ≤ 1.2× file: {'met' if ratio <= 1.2 else 'not met'} ({ratio:.2f}×)")
        if reference is not None:
            ok = ours["load_s"] <= reference["load_s"]
            targets.append(f"load time ≤ diffusers': {'met' if ok else 'not met'} "
                           f"({ours['load_s']:.2f} s vs {reference['load_s']:.2f} s)")
    if targets and not small:
        lines += ["", "Targets (issue 20, item 5): " + "; ".join(targets) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "load-bench",
                        help="where the random-weight file is made once and reused (default runs/load-bench)")
    parser.add_argument("--results", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--small", action="store_true", help="a narrow SD-shaped file (~0.25 GB), to check the script")
    parser.add_argument("--repeats", type=int, default=1, help="runs per loader; the median row is reported")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--copying", action="store_true",
                        help="add a row for ldmkit building a randomly initialised model and copying the file into it")
    parser.add_argument("--worker", choices=("ldmkit", "ldmkit-copying", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.make is not None:
        make_files(args.make, args.config_dir, args.small)
        return
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.file, args.config_dir)))
        return

    path, config_dir = ensure_files(args.workdir.resolve(), args.small)
    loaders = ["ldmkit"] + (["ldmkit-copying"] if args.copying else [])
    notes = []
    have_diffusers, diffusers_info = diffusers_importable()
    if have_diffusers:
        loaders.append("diffusers")
        if not accelerate_importable():
            notes.append("accelerate is not installed: diffusers builds its models with random weights, then "
                         "loads the file into them (its low_cpu_mem_usage path needs accelerate)")
    else:
        print(f"diffusers is not importable ({diffusers_info}): its row is skipped", file=sys.stderr)
        notes.append(f"diffusers not importable here ({diffusers_info}): no diffusers row")
    print("reading the file once into the page cache …", file=sys.stderr, flush=True)
    warm_page_cache(path)
    runs: dict[str, list[dict]] = {name: [] for name in loaders}
    for i in range(args.repeats):
        for name in loaders:
            print(f"run {i + 1}/{args.repeats}: {name} …", file=sys.stderr, flush=True)
            r = run_worker(name, path, config_dir)
            runs[name].append(r)
            print(f"  load {r['load_s']:.2f} s, read {r['read_s']:.2f} s, peak {r['ru_maxrss_bytes'] / GB:.2f} GB",
                  file=sys.stderr, flush=True)
    rows = {}
    for name, results in runs.items():
        totals = [r["load_s"] + r["read_s"] for r in results]
        median = statistics.median_low(totals)
        rows[name] = results[totals.index(median)]
    if args.repeats > 1:
        notes.append(f"{args.repeats} runs per loader, alternating; each row is the run with the median load + read time")
    for name, r in rows.items():
        notes.append(f"{name}: {r['parameters'] / 1e6:.0f}M parameters in {', '.join(r['dtypes'])}; "
                     f"VmHWM {r['vmhwm_bytes'] / GB:.2f} GB")
    text = report(path, rows, notes, args.small)
    print(text)
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text)


if __name__ == "__main__":
    main()
