"""Pieces both training loops share: data order, per-step randomness, LR, state files, logs."""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ldmkit.data import collate
from ldmkit.storage import CheckpointError, atomic_path

STATE_FILE = "training_state.pt"


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices for steps ``start_step .. total_steps - 1``.

    Batch k holds positions k·B … k·B + B − 1 of an endless stream of epochs, epoch e being a
    permutation seeded by (seed, e). The order is a pure function of the step, so a resumed run
    reads exactly the batches the interrupted one would have.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, total_steps: int):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps

    def _epoch(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self):
        perm_epoch, perm = -1, None
        for step in range(self.start_step, self.total_steps):
            batch = []
            for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
                epoch, i = divmod(pos, self.num_items)
                if epoch != perm_epoch:
                    perm_epoch, perm = epoch, self._epoch(epoch)
                batch.append(int(perm[i]))
            yield batch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def make_loader(dataset: Dataset, batch_size: int, seed: int, start_step: int, total_steps: int, num_workers: int):
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, start_step, total_steps)
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator for one step's noise, timesteps and dropout: seeded by (seed, step), so
    that a resumed run draws the same numbers as an uninterrupted one."""
    torch.manual_seed(seed * 1_000_003 + step)  # for dropout layers, which use the global stream
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def learning_rate(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then constant (as the LDM trains)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 here: on GPUs with bf16, and on CPUs with AVX-512, where
    bf16 matmuls and convolutions run 4–5× faster. On an AVX2-only CPU bf16 convolutions take a
    slow path (measured 5–25× slower than fp32), so ``bf16: true`` in a config means "where it pays"."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where it pays (`bf16_pays`); a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and bf16_pays(device))


def save_state(folder: Path, state: dict) -> None:
    """Write the resumable training state atomically."""
    with atomic_path(folder / STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_state(folder: Path) -> dict:
    """The training state of ``folder``, read without unpickling code (``weights_only=True``)."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise CheckpointError(f"{path} is corrupt or not an ldmkit training state ({type(e).__name__})") from None


class CSVLog:
    """Appends one row per logged step to ``log.csv``; keeps earlier rows when a run resumes."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, ["step", "time"] + fields
        self.start = time.time()
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def write(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            row = [step, round(time.time() - self.start, 2)] + [values.get(k, "") for k in self.fields[2:]]
            csv.writer(f).writerow(row)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not math.isfinite(loss.item()):
        raise FloatingPointError(
            f"loss became {loss.item()} at step {step}; training stopped, the last checkpoint is kept "
            "(try a lower learning rate or bf16: false)"
        )


def report_skipped(dataset) -> None:
    """Say how many unreadable images training skipped (an image folder records them)."""
    skipped = getattr(dataset, "skipped", ())
    if skipped:
        names = ", ".join(sorted(str(p) for p in skipped)[:5])
        print(f"skipped {len(skipped)} unreadable image(s): {names}", file=sys.stderr)
