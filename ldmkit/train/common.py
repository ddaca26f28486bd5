"""Pieces both training loops share: data order and its split across ranks, per-step randomness,
LR, mixed precision, the finiteness checks and the report of skipped images."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ldmkit.data import collate
from ldmkit.data.shards import mix_seed
from ldmkit.device import bf16_pays
from ldmkit.errors import ConfigError, TrainingDiverged
from ldmkit.progress import tqdm
from ldmkit.train.checkpoint import restore_rng
from ldmkit.train.distributed import Distributed, gather_objects


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """For steps ``start_step .. total_steps − 1``: this rank's share of each step's global batch.

    The global batch of step k holds positions k·B … k·B + B − 1 of an endless stream of epochs,
    epoch e being a permutation seeded by (seed, e). Rank r of W takes positions
    k·B + r·B/W … k·B + (r+1)·B/W − 1, so the union over ranks, and hence the step, does not depend
    on W. Items are (position, index) pairs: the position seeds the item's own randomness
    (`TrainingItems`). The order is a pure function of the step, so a resumed run reads exactly the
    batches the interrupted one would have.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ConfigError(f"batch size {batch_size} does not split into {world_size} equal parts")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size

    def _epoch(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self):
        share = self.batch_size // self.world_size
        perm_epoch, perm = -1, None
        for step in range(self.start_step, self.total_steps):
            first = step * self.batch_size + self.rank * share
            batch = []
            for pos in range(first, first + share):
                epoch, i = divmod(pos, self.num_items)
                if epoch != perm_epoch:
                    perm_epoch, perm = epoch, self._epoch(epoch)
                batch.append((pos, int(perm[i])))
            yield batch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


class TrainingItems(Dataset):
    """A map-style dataset read at (position, index) pairs, for two things the plain dataset lacks.

    - The torch RNG is seeded by (seed, position) before each item, so random augmentations (flips)
      are a function of where the item sits in the data stream: the same after a resume, with any
      number of DataLoader workers and any number of ranks.
    - Images the dataset finds unreadable (its ``skipped`` set) travel with the item under
      ``"skipped"``, so the main process learns of them even when a worker process read them.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self._reported: set = set()  # per process: each worker reports its own finds once

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        position, index = key
        torch.manual_seed(mix_seed(self.seed, position))
        item = dict(self.dataset[index])
        new = set(getattr(self.dataset, "skipped", ())) - self._reported
        self._reported |= new
        item["skipped"] = sorted(str(p) for p in new)
        return item


def check_readable(dataset) -> None:
    """`DataError` when the training data yields nothing to train on, said before a run creates its folder: a stream
    of shards needs one sample that decodes (`ShardDataset.check_readable`), a map-style dataset its first readable
    item (an image folder reads on past unreadable files, warning of each)."""
    if hasattr(dataset, "check_readable"):
        dataset.check_readable()
    elif len(dataset):
        dataset[0]


def make_loader(dataset, batch_size: int, seed: int, start_step: int, total_steps: int, num_workers: int,
                ctx: Distributed) -> Iterable[dict]:
    """Batches of this rank's share (``batch_size`` / world size items) of every step's global
    ``batch_size``, from ``start_step`` on. A map-style dataset is read in the `ResumableBatchSampler`
    order; a stream (`ldmkit.data.shards.ShardDataset`) splits its shards across ranks and workers."""
    # A dedicated generator: DataLoader otherwise draws its worker seed from the global RNG, which
    # would make the data depend on everything drawn before the loader starts.
    generator = torch.Generator().manual_seed(seed)
    if hasattr(dataset, "batches"):  # a stream knows how to split itself
        stream = dataset.batches(batch_size // ctx.world_size, seed, ctx.rank, ctx.world_size, start_step)
        return DataLoader(stream, batch_size=None, num_workers=num_workers, generator=generator)
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, start_step, total_steps, ctx.rank, ctx.world_size)
    return DataLoader(
        TrainingItems(dataset, seed), batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        persistent_workers=num_workers > 0, generator=generator,
    )


def stream_readers(ctx: Distributed, num_workers: int) -> int:
    """How many readers share a stream: one per DataLoader worker (or main process) per rank."""
    return ctx.world_size * max(1, num_workers)


def warn_if_stream_order_changed(dataset, state: dict | None, readers: int) -> None:
    """A stream's order depends on its number of readers: resuming with another number continues
    in a different order (a map-style dataset's order does not depend on it)."""
    if state is None or not hasattr(dataset, "batches") or state.get("readers", readers) == readers:
        return
    warnings.warn(
        f"the checkpoint was written by a run with {state['readers']} stream readers (processes × DataLoader "
        f"workers), this run has {readers}: the stream continues in a different order, so part of the "
        "interrupted epoch may be seen twice and part not at all",
        stacklevel=2,
    )


def resumed_loader(dataset, state: dict | None, tcfg, start: int, total: int, ctx: Distributed, desc: str,
                   progress: bool):
    """(the batches of steps ``start`` … ``total`` − 1, a progress bar over the run). A resumed run
    (``state``, its checkpoint) first gets back the random state it had saved, and a warning if its
    stream of shards would now be read in another order."""
    if state is not None:
        restore_rng(state.get("rng", {}))
    warn_if_stream_order_changed(dataset, state, stream_readers(ctx, tcfg.num_workers))
    loader = make_loader(dataset, tcfg.batch_size, tcfg.seed, start, total, tcfg.num_workers, ctx)
    bar = tqdm(total=total, initial=start, desc=desc, disable=not (progress and ctx.is_main), dynamic_ncols=True)
    return loader, bar


def micro_batches(batch: dict, count: int) -> list[dict]:
    """Split a batch (tensors and lists, all of length B) into ``count`` equal micro-batches."""
    n = len(next(iter(batch.values())))
    size = n // count
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(count)]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The CPU generator for one step's noise, timesteps and dropout: seeded by (seed, step), so
    that a resumed run draws the same numbers as an uninterrupted one.

    The returned generator is the same on every rank: the loops draw each step's numbers for the
    whole global batch from it and keep their rank's slice, so a sample gets the same noise however
    many ranks share the batch. The global torch RNG (dropout, VQ codebook restarts) is seeded per
    rank as well, so that ranks do not draw identical dropout masks for different samples.
    """
    torch.manual_seed(seed * 1_000_003 + step + rank * (1 << 40))
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


LR_SCHEDULES = ("constant", "linear", "cosine")  # diffusers' and kohya's --lr_scheduler names


def learning_rate(step: int, base_lr: float, warmup_steps: int, schedule: str = "constant",
                  total_steps: int = 0) -> float:
    """η at ``step`` (0-based): a linear warm-up to η₀ = ``base_lr`` over ``warmup_steps``, then

        constant: η = η₀ (as the LDM trains);   linear: η = η₀ (1 − p);   cosine: η = η₀ · ½ (1 + cos π p),

    p = (step − warmup) / (total_steps − warmup) ∈ [0, 1): the share of the steps after the warm-up done, so a
    decaying schedule reaches 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return base_lr
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if schedule == "linear":
        return base_lr * (1.0 - p)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"learning-rate schedule {schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")


def adamw(params: list[torch.Tensor] | list[dict], lr: float, weight_decay: float, fused: bool = True,
          betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors, or torch's parameter groups: dicts with "params"); with ``fused`` the update
    of all parameters runs as one kernel (torch's fused implementation, on CPU and CUDA) instead of a loop of
    per-tensor ops. The update is the same AdamW; only the order of floating-point operations differs."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fused = fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where it pays (`bf16_pays`); a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and bf16_pays(device))


def check_finite(loss: torch.Tensor | float, step: int) -> None:
    """Stop on a NaN or infinite loss, before the optimizer step that would spread it to the weights."""
    value = loss.item() if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss became {value} at step {step}; training stopped, the last checkpoint is kept "
            "(try a lower learning rate or bf16: false)"
        )


def check_weights_finite(params: Iterable[torch.Tensor], step: int) -> None:
    """Refuse to checkpoint non-finite weights: a finite loss can still precede a NaN update (an
    infinite gradient), and a poisoned checkpoint would replace the last good one."""
    for p in params:
        if not torch.isfinite(p).all():
            raise TrainingDiverged(
                f"the weights hold NaN or inf at step {step}; training stopped without writing a checkpoint, "
                "the last one is kept (try a lower learning rate or bf16: false)"
            )


class SkipReport:
    """Unreadable images met during training, collected from the batches' ``"skipped"`` lists."""

    def __init__(self):
        self.found: set[str] = set()

    def take(self, batch: dict) -> dict:
        """Record the batch's skips and return the batch without them."""
        for names in batch.pop("skipped", ()):
            self.found.update(names)
        return batch

    def report(self, dataset, ctx: Distributed) -> None:
        """Print, on rank 0, how many unreadable images all ranks skipped (and a few names)."""
        found = self.found | {str(p) for p in getattr(dataset, "skipped", ())}
        merged = set().union(*gather_objects(sorted(found), ctx))
        if merged and ctx.is_main:
            names = ", ".join(sorted(merged)[:5])
            print(f"skipped {len(merged)} unreadable image(s): {names}", file=sys.stderr)
