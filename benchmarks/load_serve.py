"""Load test for `ldmkit serve`: N concurrent POST /v1/generate (or, --api a1111, /sdapi/v1/txt2img) on
loopback, counted and timed.

For each scenario (a queue length and a per-job timeout) this starts a fresh `ldmkit serve --port 0`
in a subprocess, fires N requests at once (asyncio + httpx, one connection each, no retries), and sorts every request into
exactly one of:

    completed   200 with every PNG decoding
    rejected    503 (queue full), with a Retry-After header
    timed out   504 (the job missed the server's deadline)
    errors      any other HTTP answer
    lost        no HTTP answer at all (reset, client timeout, or still open at the wall-clock bound)

Lost must be 0: a loaded server answers everyone, with images or with a refusal. Latency percentiles
are over completed requests (and, separately, over rejections, which should be immediate).

    python benchmarks/load_serve.py                       # tiny random-weight model, 3 scenarios
    python benchmarks/load_serve.py --model runs/ldm --steps 25 --scenario 8:300

The numbers and the command go to benchmarks/SERVE_RESULTS.md (``--results``; ``--no-write`` to skip).
The exit code is 1 if any request was lost or the server misbehaved.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import platform
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from ldmkit.storage import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red circle on the left", "a blue square above a yellow star", "a green triangle",
           "a small purple star on the right", "a large orange circle below a white square"]


def build_tiny_model(folder: Path) -> Path:
    """The `tiny` preset with seeded random weights: the size of a real tiny model, so the time per job
    is real, without minutes of training (what it draws does not matter for a load test)."""
    from ldmkit.config import ModelConfig, load_preset
    from ldmkit.model import LatentDiffusion
    from ldmkit.text import PromptTokenizer

    preset = load_preset("tiny")
    config = ModelConfig(autoencoder=preset.autoencoder, text=preset.text, unet=preset.unet,
                         diffusion=preset.diffusion, image_size=preset.data.image_size)
    tokenizer = PromptTokenizer.train(PROMPTS * 20, preset.text.vocab_size, preset.text.max_length)
    torch.manual_seed(0)
    LatentDiffusion(config, tokenizer).save(folder)
    return folder


class Server:
    """`ldmkit serve` in a subprocess on a free loopback port."""

    def __init__(self, model: Path, max_queue: int, timeout: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ldmkit.cli", "serve", "--model", str(model), "--port", "0",
             "--max-queue", str(max_queue), "--timeout", str(timeout), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(s) for s in self.proc.stdout], daemon=True).start()
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 120.0) -> str:
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if " at http://" in line:
                return line.split(" at ", 1)[1].split()[0].rstrip("/")
        self.stop()
        raise RuntimeError("the server did not start:\n" + "".join(seen))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Outcome:
    kind: str  # completed, rejected, timed_out, error, lost
    latency_s: float
    detail: str = ""
    retry_after: int | None = None


@dataclass
class Scenario:
    max_queue: int
    timeout: float
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.outcomes)

    def latencies(self, kind: str) -> list[float]:
        return [o.latency_s for o in self.outcomes if o.kind == kind]


# The route each API's requests go to, its body, and where its answer keeps the base64 PNGs.
ROUTES = {
    "ldmkit": ("/v1/generate", lambda prompt, steps, seed, n: {"prompt": prompt, "steps": steps, "seed": seed,
                                                                "num_images": n},
               lambda answer: [image["png_base64"] for image in answer["images"]]),
    "a1111": ("/sdapi/v1/txt2img", lambda prompt, steps, seed, n: {"prompt": prompt, "steps": steps, "seed": seed,
                                                                    "batch_size": n, "sampler_name": "DDIM"},
              lambda answer: answer["images"]),
}


async def one_request(client: httpx.AsyncClient, url: str, body: dict, start: float, api: str = "ldmkit") -> Outcome:
    route, _, pngs_of = ROUTES[api]
    try:
        r = await client.post(url + route, json=body)
    except httpx.HTTPError as e:
        return Outcome("lost", time.monotonic() - start, f"{type(e).__name__}: {e}")
    latency = time.monotonic() - start
    if r.status_code == 200:
        images = pngs_of(r.json())
        for image in images:  # a completed request must carry real PNGs of the asked number and size
            png = Image.open(io.BytesIO(base64.b64decode(image)))
            png.load()
        wanted = body.get("num_images", body.get("batch_size"))
        if len(images) != wanted:
            return Outcome("error", latency, f"{len(images)} images for {wanted} asked")
        return Outcome("completed", latency)
    if r.status_code == 503:
        retry = r.headers.get("retry-after")
        return Outcome("rejected" if retry else "error", latency, "503 without Retry-After" if not retry else "",
                       int(retry) if retry else None)
    if r.status_code == 504:
        return Outcome("timed_out", latency)
    return Outcome("error", latency, f"{r.status_code}: {r.text[:200]}")


async def fire(url: str, n: int, steps: int, num_images: int, bound_s: float,
               api: str = "ldmkit") -> tuple[list[Outcome], float]:
    """N requests at once through ``api`` (a key of `ROUTES`); whatever has no answer after ``bound_s``
    seconds is lost."""
    body_of = ROUTES[api][1]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(bound_s)) as client:
        start = time.monotonic()
        tasks = [asyncio.create_task(one_request(client, url, body_of(PROMPTS[i % len(PROMPTS)], steps, i, num_images),
                                                 start, api)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=bound_s)
        for task in pending:
            task.cancel()
        outcomes = [t.result() for t in done] + [Outcome("lost", bound_s, "no answer within the bound")] * len(pending)
        return outcomes, time.monotonic() - start


def scenario_arg(text: str) -> tuple[int, float]:
    try:
        queue_len, timeout = text.split(":")
        return int(queue_len), float(timeout)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected QUEUE:TIMEOUT such as 8:120, got {text!r}") from None


def percentiles(values: list[float]) -> str:
    if not values:
        return "–"
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"{p50:.2f} / {p90:.2f} / {p99:.2f}"


def report(scenarios: list[Scenario], args, command: str) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# `ldmkit serve` under load",
        "",
        "Made by `benchmarks/load_serve.py`:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"{args.requests} concurrent `POST {ROUTES[args.api][0]}` requests on loopback (one connection each, no "
        f"retries), {args.steps} steps, {args.num_images} image(s) of the model's default size each, "
        f"ddim; every request bounded by {args.bound:g} s. Model: {args.model_label}. Machine: "
        f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, fp32; load average "
        f"{args.load_before:.1f} before the run (the machine is shared: other work slows jobs down). "
        f"Each row is a fresh server with that `--max-queue` (one job runs, that many wait) and "
        f"`--timeout` (seconds from submission to the end of the job).",
        "",
        "| max queue | timeout (s) | completed | rejected (503) | timed out (504) | errors | **lost** | latency p50 / p90 / p99 (s), completed | 503 latency p50 / p99 (s) | Retry-After (s) | wall (s) | images/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for s in scenarios:
        rejected = s.latencies("rejected")
        rej = f"{np.percentile(rejected, 50):.3f} / {np.percentile(rejected, 99):.3f}" if rejected else "–"
        retry = sorted({o.retry_after for o in s.outcomes if o.retry_after is not None})
        retry_text = "–" if not retry else (str(retry[0]) if len(retry) == 1 else f"{retry[0]}–{retry[-1]}")
        rate = s.count("completed") * args.num_images / s.wall_s
        lines.append(
            f"| {s.max_queue} | {s.timeout:g} | {s.count('completed')} | {s.count('rejected')} | {s.count('timed_out')} | "
            f"{s.count('error')} | **{s.count('lost')}** | {percentiles(s.latencies('completed'))} | {rej} | "
            f"{retry_text} | {s.wall_s:.1f} | {rate:.2f} |"
        )
    lines += [
        "",
        "Reading it: with a short queue most of the burst is refused at once with 503 and Retry-After "
        "(about one job's time; 1 s before any job has finished), and the accepted requests finish within "
        "about (queue length + 1) job times. With a queue as long as the burst every request completes, "
        "and latency grows linearly with the position in the queue (p99 ≈ the whole burst's time), since "
        "one worker runs one job at a time. With a short timeout the jobs that would finish too late are "
        "answered 504 at their deadline instead. Lost must be 0 in every row: every request gets an answer.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder (default: the tiny preset with random weights)")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--num-images", type=int, default=1)
    parser.add_argument("--scenario", nargs="+", type=scenario_arg, default=["8:120", "64:120", "64:5"],
                        metavar="QUEUE:TIMEOUT", help="`--max-queue` and `--timeout` of the server, one "
                        "fresh server each (default: 8:120 64:120 64:5)")
    parser.add_argument("--bound", type=float, default=300.0, help="seconds every request may take in all")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "SERVE_RESULTS.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--api", choices=sorted(ROUTES), default="ldmkit",
                        help="ldmkit: POST /v1/generate (default); a1111: POST /sdapi/v1/txt2img (AUTOMATIC1111's API)")
    args = parser.parse_args(argv)
    args.scenario = [scenario_arg(s) if isinstance(s, str) else s for s in args.scenario]
    args.load_before = os.getloadavg()[0]
    command = shlex.join(["python", "benchmarks/load_serve.py", *(sys.argv[1:] if argv is None else argv)])

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, args.model_label = Path(args.model), f"`{args.model}`"
        else:
            model = build_tiny_model(Path(tmp) / "tiny")
            args.model_label = "the `tiny` preset (32×32, latent 8×8×4) with seeded random weights"
        scenarios = []
        for max_queue, timeout in args.scenario:
            server = Server(model, max_queue, timeout)
            try:
                outcomes, wall = asyncio.run(fire(server.url, args.requests, args.steps, args.num_images, args.bound,
                                                 args.api))
                health = httpx.get(server.url + "/healthz", timeout=10).json()
            finally:
                server.stop()
            scenario = Scenario(max_queue, timeout, outcomes, wall)
            scenarios.append(scenario)
            print(f"max_queue={max_queue} timeout={timeout:g}: completed {scenario.count('completed')}, rejected (503) "
                  f"{scenario.count('rejected')}, timed out {scenario.count('timed_out')}, errors "
                  f"{scenario.count('error')}, lost {scenario.count('lost')}; latency p50/p90/p99 "
                  f"{percentiles(scenario.latencies('completed'))} s; wall {wall:.1f} s; after: {health}")
            for o in outcomes:
                if o.kind in ("error", "lost"):
                    print(f"  {o.kind}: {o.detail}")

    text = report(scenarios, args, command)
    if not args.no_write:
        write_text_atomic(args.results, text)
        print(f"wrote {args.results}")
    bad = sum(s.count("lost") + s.count("error") for s in scenarios)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
