"""Data-parallel training: two torchrun processes (gloo, CPU) train the same weights as one process.

The comparison run uses the same global batch with ``grad_accum_steps: 2`` and one thread, so each
forward pass sees the same 4 samples as one rank does and float sums round alike; the weights
then agree to 1e-5 (in practice bit for bit). With one forward pass of all 8 samples instead, the
first loss agrees to 1e-5, but the weights of parameters whose true gradient is zero (biases right
before a per-channel GroupNorm) drift apart by up to lr per step: Adam divides their float-noise
gradients by their own size. That run is compared on its losses, the later ones to 1e-3 relative
(measured: up to 2.6e-4 on a CI machine whose float sums round differently from this one's).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ldmkit.config import load_preset, save_yaml
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.checkpoint import load_state
from ldmkit.train.common import ResumableBatchSampler
from ldmkit.train.diffusion import train_diffusion
from ldmkit.train.distributed import Distributed, per_rank_batch

STEPS = 3


def config(tmp: Path, accum: int) -> Path:
    """The tiny preset with ``grad_accum_steps`` = accum in both stages, logging every step, fewer
    shapes for the tokenizer and no TensorBoard (both only cost time here)."""
    p = load_preset("tiny")
    p = dataclasses.replace(
        p,
        data=dataclasses.replace(p.data, num_samples=256),
        autoencoder_train=dataclasses.replace(p.autoencoder_train, grad_accum_steps=accum, log_every=1,
                                              tensorboard=False),
        train=dataclasses.replace(p.train, grad_accum_steps=accum, log_every=1, tensorboard=False),
    )
    path = tmp / f"tiny_accum{accum}.yaml"
    save_yaml(p, path)
    return path


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ldmkit.cli", *args, "--steps", str(STEPS), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as torchrun's workers run (OMP_NUM_THREADS=1): reductions split over
    threads round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def losses(folder: Path) -> list[float]:
    with open(folder / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both stages trained by 2 torchrun processes, and by 1 process with the same global batch."""
    tmp = tmp_path_factory.mktemp("ddp")
    two, one = tmp / "two", tmp / "one"
    torchrun("train-autoencoder", "--config", str(config(tmp, 1)), "--out", str(two / "ae"))
    torchrun("train", "--config", str(config(tmp, 1)), "--autoencoder", str(two / "ae"), "--out", str(two / "ldm"))
    from ldmkit.config import Preset, load_yaml

    accum2 = load_yaml(Preset, config(tmp, 2))
    train_autoencoder(accum2, one / "ae", steps=STEPS, progress=False)
    train_diffusion(accum2, one / "ae", one / "ldm", steps=STEPS, progress=False)
    return tmp, one, two


@pytest.mark.slow
def test_two_processes_train_the_same_autoencoder(runs):
    _, one, two = runs
    assert max_diff(load_state(one / "ae")["model"], load_state(two / "ae")["model"]) <= 1e-5
    a, b = load_file(one / "ae" / "autoencoder.safetensors"), load_file(two / "ae" / "autoencoder.safetensors")
    assert max_diff(a, b) <= 1e-5  # the scale factor too, measured by rank 0


@pytest.mark.slow
def test_two_processes_train_the_same_diffusion_model(runs):
    _, one, two = runs
    a, b = load_state(one / "ldm"), load_state(two / "ldm")
    assert a["step"] == b["step"] == STEPS
    assert max_diff(a["model"], b["model"]) <= 1e-5
    assert max_diff(a["ema"]["shadow"], b["ema"]["shadow"]) <= 1e-5
    assert losses(one / "ldm") == pytest.approx(losses(two / "ldm"), abs=1e-5)


@pytest.mark.slow
def test_one_forward_pass_of_the_global_batch_gives_the_same_losses(runs):
    tmp, _, two = runs
    from ldmkit.config import Preset, load_yaml

    out = tmp / "one_pass"
    train_diffusion(load_yaml(Preset, config(tmp, 1)), two / "ae", out, steps=STEPS, progress=False)
    first, *later = losses(out)
    expected_first, *expected_later = losses(two / "ldm")
    assert first == pytest.approx(expected_first, abs=1e-5)  # the same weights, the same batch
    assert later == pytest.approx(expected_later, rel=1e-3)  # after Adam steps on float-noise gradients


@pytest.mark.slow
def test_only_rank_zero_writes(runs):
    _, _, two = runs
    ldm = two / "ldm"
    steps = [int(r["step"]) for r in csv.DictReader(open(ldm / "log.csv"))]
    assert steps == list(range(1, STEPS + 1)), "each step logged once, not once per rank"
    assert len(list((ldm / "samples").glob("*.png"))) == 1
    assert load_state(ldm)["world_size"] == 2


def test_ranks_split_each_global_batch():
    whole = list(ResumableBatchSampler(10, 8, seed=3, start_step=0, total_steps=4))
    parts = [list(ResumableBatchSampler(10, 8, 3, 0, 4, rank=r, world_size=2)) for r in range(2)]
    for step in range(4):
        assert parts[0][step] + parts[1][step] == whole[step]
    resumed = list(ResumableBatchSampler(10, 8, 3, start_step=2, total_steps=4, rank=1, world_size=2))
    assert resumed == parts[1][2:]


def test_global_batch_must_split_evenly():
    ctx = Distributed(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), owns_group=False)
    assert per_rank_batch(16, ctx, grad_accum_steps=2) == 4
    with pytest.raises(ValueError, match="not divisible by world size 2 × grad_accum_steps 3"):
        per_rank_batch(16, ctx, grad_accum_steps=3)


def test_no_process_group_without_torchrun(monkeypatch):
    from ldmkit.train.distributed import setup

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.active) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()
    assert os.environ.get("WORLD_SIZE") is None


ENDED_GROUP = """
import os, sys, torch
from ldmkit.train import distributed
with distributed.process_group("cpu") as ctx:
    model = distributed.wrap(torch.nn.Linear(3, 3), ctx)
    model(torch.ones(2, 3)).sum().backward()
    del model
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(os.path.join(sys.argv[1], f"threads-{ctx.rank}.txt"), "w") as f:
    f.write(" ".join(names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process's threads from /proc")
def test_the_process_group_ends_with_the_run(tmp_path):
    """Once a DDP run's process group is destroyed, none of gloo's threads are left to race the
    interpreter's exit (a rank then aborted now and then with exit status 1 after the model was
    written)."""
    script = tmp_path / "run.py"
    script.write_text(ENDED_GROUP)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # one file per rank: the two ranks' prints to a shared stdout can interleave mid-line
    threads = {rank: (tmp_path / f"threads-{rank}.txt").read_text() for rank in (0, 1)}
    assert not any("gloo" in names for names in threads.values()), threads
