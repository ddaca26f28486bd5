"""Stage one: train the autoencoder E, D on images alone, then measure its scale factor.

An autoencoder folder holds ``config.yaml`` (AutoencoderConfig), ``autoencoder.safetensors``
(weights and ``scale_factor``), ``checkpoints/`` (the newest ``checkpoint_keep`` training states,
for ``--resume``), ``log.csv``, ``tensorboard/`` and reconstruction grids in ``samples/``.

Runs unchanged under ``torchrun`` (see `ldmkit.train.distributed`). The PatchGAN discriminator's
gradients are averaged over ranks explicitly; a VQ codebook, which moves by moving averages rather
than gradients, is copied from rank 0 to the others after every step.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn

from ldmkit.autoencoder import AutoencoderLoss, KLAutoencoder, build_autoencoder, measure_scale_factor
from ldmkit.autoencoder.folder import save_autoencoder
from ldmkit.config import Preset, to_dict
from ldmkit.data import build_dataset, save_grid
from ldmkit.storage import CheckpointError
from ldmkit.train import distributed
from ldmkit.train.checkpoint import resume_state, rng_state, save_checkpoint
from ldmkit.train.common import (
    SkipReport, autocast, check_finite, check_readable, check_weights_finite, learning_rate, micro_batches,
    resumed_loader, step_generator, stream_readers,
)
from ldmkit.train.logs import RunLog
from ldmkit.errors import ConfigError


class Reconstruction(nn.Module):
    """x ↦ (x̂, aux), the autoencoder's training forward with the posterior noise given: the module DDP wraps.

    For a KL autoencoder x̂ = D(μ + σ ⊙ ε), as ``KLAutoencoder.forward`` computes it, except that ε
    comes in as the sample's own row of the step's global draw, so sample i gets the same ε however
    many ranks share the batch. A VQ autoencoder has no noise: its own forward runs.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, posterior_noise: torch.Tensor | None):
        if isinstance(self.model, KLAutoencoder):
            posterior = self.model.posterior(images)
            z = posterior.mean + posterior.std * posterior_noise
            return self.model.decode(z), {"kl": posterior.kl().mean()}
        return self.model(images)


def first_images(dataset, n: int):
    """The first ``n`` images of the dataset (in file order for a stream), one 1×3×H×W tensor each."""
    if hasattr(dataset, "batches"):  # a stream
        return (item["images"][None] for item in itertools.islice(iter(dataset), n))
    return (dataset[i]["images"][None] for i in range(min(len(dataset), n)))


def train_autoencoder(
    preset: Preset, out: str | Path, steps: int | None = None, resume: bool | str | Path = False,
    device: str = "auto", progress: bool = True,
) -> Path:
    """Train E, D with L_rec (+ KL or VQ loss, + optional perceptual and PatchGAN terms).

    ``resume`` and ``device`` as in `ldmkit.train.diffusion.train_diffusion`.
    """
    with distributed.process_group(device) as ctx:
        _train(preset, Path(out), steps, resume, ctx, progress)
    return Path(out)


def _train(preset: Preset, out: Path, steps: int | None, resume, ctx, progress: bool) -> None:
    cfg, tcfg = preset.autoencoder, preset.autoencoder_train
    total = steps if steps is not None else tcfg.steps
    dev = ctx.device
    micro = distributed.per_rank_batch(tcfg.batch_size, ctx, tcfg.grad_accum_steps)
    dataset = build_dataset(preset.data)
    if preset.data.image_size % cfg.downsample_factor:
        raise ConfigError(
            f"data.image_size {preset.data.image_size} is not a multiple of the autoencoder's "
            f"downsampling factor f={cfg.downsample_factor}"
        )
    check_readable(dataset)  # before the run's folder is made

    torch.manual_seed(tcfg.seed)  # the initial weights are part of what a seed reproduces
    model = build_autoencoder(cfg).to(dev)
    loss_fn = AutoencoderLoss(cfg).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, betas=(0.5, 0.9), weight_decay=tcfg.weight_decay)
    disc_params = [p for p in loss_fn.parameters() if p.requires_grad]
    opt_d = torch.optim.AdamW(disc_params, lr=tcfg.lr, betas=(0.5, 0.9)) if disc_params else None

    state = resume_state(resume, out, "autoencoder", ctx, preset=preset)
    start = 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            loss_fn.load_state_dict(state["loss"])
            opt.load_state_dict(state["optimizer"])
            if opt_d is not None:
                opt_d.load_state_dict(state["optimizer_d"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint does not fit this autoencoder: {str(e).splitlines()[0]}") from None
        start = int(state["step"])
        if start > total:
            raise CheckpointError(f"the checkpoint is at step {start}, beyond --steps {total}")
    ddp = distributed.wrap(Reconstruction(model), ctx)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, ["loss", "rec", "lr"], start, enabled=ctx.is_main, tensorboard=tcfg.tensorboard)

    def checkpoint(step: int) -> None:
        check_weights_finite(params, step)  # on every rank, so that all stop together
        if not ctx.is_main:
            return
        save_autoencoder(model, out)
        save_checkpoint(out, {
            "kind": "autoencoder", "step": step, "model": model.state_dict(), "loss": loss_fn.state_dict(),
            "optimizer": opt.state_dict(), **({"optimizer_d": opt_d.state_dict()} if opt_d else {}),
            "rng": rng_state(), "config": to_dict(cfg), "samples_seen": step * tcfg.batch_size,
            "world_size": ctx.world_size, "readers": stream_readers(ctx, tcfg.num_workers),
        }, tcfg.checkpoint_keep)

    f = cfg.downsample_factor
    latent_shape = (cfg.latent_channels, preset.data.image_size // f, preset.data.image_size // f)
    accum = tcfg.grad_accum_steps
    share = tcfg.batch_size // ctx.world_size  # this rank's samples per step
    posterior = isinstance(model, KLAutoencoder)
    skips = SkipReport()
    loader, bar = resumed_loader(dataset, state, tcfg, start, total, ctx, "autoencoder", progress)
    model.train()
    try:
        for step, batch in zip(range(start, total), loader):
            skips.take(batch)
            gen = step_generator(tcfg.seed, step, ctx.rank)  # also seeds VQ codebook restarts
            # ε for the whole global batch, from which each rank takes its samples' rows
            noise = torch.randn((tcfg.batch_size, *latent_shape), generator=gen) if posterior else None
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, tcfg.lr, tcfg.warmup_steps)
            opt.zero_grad(set_to_none=True)
            pairs = []  # (images, x̂) of each micro-batch, for the discriminator and the sample grid
            sums = torch.zeros(2, device=dev)  # loss, reconstruction term
            for k, mb in enumerate(micro_batches(batch, accum)):
                rows = slice(ctx.rank * share + k * micro, ctx.rank * share + (k + 1) * micro)
                images = mb["images"].to(dev)
                with distributed.sync_context(ddp, sync=k == accum - 1):
                    with autocast(dev, tcfg.bf16):
                        reconstruction, aux = ddp(images, noise[rows].to(dev) if posterior else None)
                        loss, logs = loss_fn.generator_loss(images, reconstruction, aux, step, model.last_layer_weight)
                    (loss / accum).backward()
                pairs.append((images, reconstruction.detach()))
                sums += torch.stack([loss.detach().float(), torch.tensor(logs["nll"], device=dev)])
            loss_value, rec_value = distributed.mean(sums / accum, ctx).tolist()  # the global batch's
            check_finite(loss_value, step)
            opt.step()
            if cfg.kind == "vq":
                distributed.broadcast_state(model, ctx)
            logs_d = {}
            if opt_d is not None and loss_fn.discriminator_active(step):
                opt_d.zero_grad(set_to_none=True)
                for images, reconstruction in pairs:
                    with autocast(dev, tcfg.bf16):
                        d_loss, logs_d = loss_fn.discriminator_loss(images, reconstruction, step)
                    (d_loss / accum).backward()
                distributed.average_gradients(disc_params, ctx)
                opt_d.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            done = step + 1
            if done % tcfg.log_every == 0 or done == total:
                log.write(done, {"loss": loss_value, "rec": rec_value, "lr": opt.param_groups[0]["lr"], **logs_d})
            if ctx.is_main and done % tcfg.sample_every == 0:
                images, reconstruction = pairs[0]
                save_grid(torch.cat([images[:8], reconstruction[:8].clamp(-1, 1)]).float().cpu(),
                          out / "samples" / f"step_{done:06d}.png", nrow=min(8, len(images)))
            if done % tcfg.checkpoint_every == 0 and done < total:
                checkpoint(done)
        bar.close()

        if ctx.is_main:  # the scale factor is measured once, on rank 0, which alone saves it
            model.eval()
            with torch.no_grad():
                batches = (b.to(dev) for b in first_images(dataset, tcfg.scale_samples))
                model.scale_factor.fill_(measure_scale_factor(model, batches, tcfg.scale_samples))
        checkpoint(total)
        skips.report(dataset, ctx)
    finally:
        log.close()
    distributed.barrier(ctx)  # every rank returns once rank 0 has written the autoencoder
