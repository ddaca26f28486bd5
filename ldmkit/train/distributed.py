"""Data-parallel training with torch.distributed, as launched by ``torchrun``.

Under ``torchrun --nproc_per_node=N`` every process runs the same training loop. `setup` reads the
launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK), joins the process group (NCCL on GPUs, gloo on
CPUs) and pins each process to its GPU. A plain ``python``/``ldmkit`` run is world size 1 and touches
nothing here, so the loops need no second code path.

Each optimizer step splits its global batch across ranks (see `ResumableBatchSampler`); DDP
averages the gradients, so every rank takes the same step and holds the same weights. Only rank 0
writes files.
"""

from __future__ import annotations

import datetime
import inspect
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ldmkit.device import resolve_device
from ldmkit.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # whether `setup` created the process group (and `teardown` should end it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs, samples and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Distributed:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; else a world of one.

    A process group that the caller already initialised is used as it is (and left to the caller).
    ``device`` is auto, cpu or cuda; with CUDA each process takes GPU LOCAL_RANK.
    """
    dev = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
    if world_size <= 1:
        return Distributed(0, 1, 0, dev, owns_group=False)

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        import_dynamo()
        # env:// reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE, which torchrun sets.
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=30),  # rank 0 alone writes samples and checkpoints meanwhile
        )
        owns = True
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=owns)


def import_dynamo() -> None:
    """Import ``torch._dynamo`` before the process group exists.

    DDP's constructor imports it; imported after ``init_process_group``, it keeps a reference to the
    group that ``destroy_process_group`` cannot drop (torch 2.13), so gloo's threads outlive the run
    and can abort a rank at interpreter exit ("terminate called without an active exception": exit
    status 1 after the model was written).
    """
    import torch._dynamo  # noqa: F401


def teardown(ctx: Distributed) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, ctx: Distributed, grad_accum_steps: int) -> int:
    """The micro-batch one rank feeds through the model: batch_size / (world_size · grad_accum_steps).

    ``batch_size`` is the global batch of one optimizer step; refusing sizes that do not divide keeps
    every step's global batch, and hence the result, independent of how many processes share it.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size}; must be at least 1")
    if grad_accum_steps < 1:
        raise ConfigError(f"grad_accum_steps = {grad_accum_steps}; must be at least 1")
    parts = ctx.world_size * grad_accum_steps
    if batch_size % parts:
        raise ConfigError(
            f"batch_size {batch_size} (the global batch) is not divisible by world size {ctx.world_size} "
            f"× grad_accum_steps {grad_accum_steps}; choose a multiple of {parts}"
        )
    return batch_size // parts


def wrap(module: nn.Module, ctx: Distributed) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several ranks, else unchanged.

    Buffers are not broadcast at each forward: the trained modules here hold none that change in
    training except the VQ codebook, which `broadcast_state` syncs explicitly.
    """
    if not ctx.active:
        return module
    # The switch was renamed in torch 2.13 (the old name warns); ldmkit supports torch >= 2.4.
    no_buffer_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None, **no_buffer_sync
    )


def sync_context(module: nn.Module, sync: bool):
    """DDP's ``no_sync()`` for the micro-batches of gradient accumulation before the last one, so the
    gradients are all-reduced once per optimizer step; a no-op for an unwrapped module."""
    if sync or not isinstance(module, DistributedDataParallel):
        return nullcontext()
    return module.no_sync()


def mean(values: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    """The element-wise mean of ``values`` over ranks (every rank gets it): the global-batch loss.

    Every rank then tests the same number for NaN and stops at the same step, instead of one rank
    stopping while the others wait for it in the next all-reduce.
    """
    if not ctx.active:
        return values
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size


@torch.no_grad()
def average_gradients(params: list[nn.Parameter], ctx: Distributed) -> None:
    """grad ← mean over ranks of grad, in one flat all-reduce.

    For modules DDP cannot follow: the PatchGAN discriminator runs inside the autoencoder's loss both
    frozen (generator term) and trained (its own term), which DDP's per-forward bookkeeping rejects.
    """
    if not ctx.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_state(module: nn.Module, ctx: Distributed) -> None:
    """Copy rank 0's buffers and untrained parameters into every rank.

    The VQ codebook moves by exponential moving averages of each rank's own batch, outside the
    gradients that DDP averages; broadcasting rank 0's codebook after each step keeps the ranks'
    models identical (the codebook then follows rank 0's share of each batch).
    """
    if not ctx.active:
        return
    for tensor in list(module.buffers()) + [p for p in module.parameters() if not p.requires_grad]:
        dist.broadcast(tensor.data, src=0)


def broadcast_object(obj, ctx: Distributed):
    """Rank 0's ``obj`` on every rank (a small picklable value: a path, a tokenizer's JSON)."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, ctx: Distributed) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not ctx.active:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Distributed) -> None:
    if ctx.active:
        dist.barrier()


@contextmanager
def process_group(device: str = "auto"):
    """`setup` … `teardown` around a training run."""
    ctx = setup(device)
    try:
        yield ctx
    finally:
        teardown(ctx)
