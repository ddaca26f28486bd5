"""Stage one: train the autoencoder E, D on images alone, then measure its scale factor.

An autoencoder folder holds ``config.yaml`` (AutoencoderConfig), ``autoencoder.safetensors``
(weights and ``scale_factor``), ``training_state.pt`` (for ``--resume``), ``log.csv`` and
reconstruction grids in ``samples/``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ldmkit.autoencoder import AutoencoderLoss, build_autoencoder, measure_scale_factor
from ldmkit.autoencoder.folder import save_autoencoder
from ldmkit.config import Preset
from ldmkit.device import resolve_device
from ldmkit.data import build_dataset, save_grid
from ldmkit.storage import CheckpointError
from ldmkit.train.common import (
    CSVLog, autocast, check_finite, learning_rate, load_state, make_loader, report_skipped,
    save_state, step_generator,
)

def train_autoencoder(
    preset: Preset, out: str | Path, steps: int | None = None, resume: bool = False,
    device: str = "auto", progress: bool = True,
) -> Path:
    """Train E, D with L_rec (+ KL or VQ loss, + optional perceptual and PatchGAN terms)."""
    out = Path(out)
    cfg, tcfg = preset.autoencoder, preset.autoencoder_train
    total = steps if steps is not None else tcfg.steps
    dev = resolve_device(device)
    dataset = build_dataset(preset.data)
    if preset.data.image_size % cfg.downsample_factor:
        raise ValueError(
            f"data.image_size {preset.data.image_size} is not a multiple of the autoencoder's "
            f"downsampling factor f={cfg.downsample_factor}"
        )

    torch.manual_seed(tcfg.seed)  # the initial weights are part of what a seed reproduces
    model = build_autoencoder(cfg).to(dev)
    loss_fn = AutoencoderLoss(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(0.5, 0.9), weight_decay=tcfg.weight_decay)
    disc_params = [p for p in loss_fn.parameters() if p.requires_grad]
    opt_d = torch.optim.AdamW(disc_params, lr=tcfg.lr, betas=(0.5, 0.9)) if disc_params else None

    start = 0
    if resume:
        state = load_state(out)
        if state.get("kind") != "autoencoder":
            raise CheckpointError(f"{out} holds a {state.get('kind')} training state, not an autoencoder's")
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        opt.load_state_dict(state["optimizer"])
        if opt_d is not None:
            opt_d.load_state_dict(state["optimizer_d"])
        start = int(state["step"])
    out.mkdir(parents=True, exist_ok=True)
    log = CSVLog(out / "log.csv", ["loss", "rec", "lr"])

    def checkpoint(step: int) -> None:
        save_autoencoder(model, out)
        save_state(out, {
            "kind": "autoencoder", "step": step, "model": model.state_dict(), "loss": loss_fn.state_dict(),
            "optimizer": opt.state_dict(), **({"optimizer_d": opt_d.state_dict()} if opt_d else {}),
        })

    loader = make_loader(dataset, tcfg.batch_size, tcfg.seed, start, total, tcfg.num_workers)
    bar = tqdm(total=total, initial=start, desc="autoencoder", disable=not progress, dynamic_ncols=True)
    model.train()
    for step, batch in zip(itertools.count(start), loader):
        images = batch["images"].to(dev)
        step_generator(tcfg.seed, step)  # seeds the posterior samples of this step
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, tcfg.lr, tcfg.warmup_steps)
        with autocast(dev, tcfg.bf16):
            reconstruction, aux = model(images, sample_posterior=True)
            loss, logs = loss_fn.generator_loss(images, reconstruction, aux, step, model.last_layer_weight)
        check_finite(loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if opt_d is not None and loss_fn.discriminator_active(step):
            with autocast(dev, tcfg.bf16):
                d_loss, d_logs = loss_fn.discriminator_loss(images, reconstruction.detach(), step)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logs.update(d_logs)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % tcfg.log_every == 0 or done == total:
            log.write(done, {"loss": loss.item(), "rec": logs.get("rec", ""), "lr": opt.param_groups[0]["lr"]})
        if done % tcfg.sample_every == 0:
            save_grid(torch.cat([images[:8], reconstruction[:8].detach().clamp(-1, 1)]).float().cpu(),
                      out / "samples" / f"step_{done:06d}.png", nrow=min(8, len(images)))
        if done % tcfg.checkpoint_every == 0 and done < total:
            checkpoint(done)
    bar.close()

    model.eval()
    scale_batches = (dataset[i]["images"][None] for i in range(min(len(dataset), tcfg.scale_samples)))
    with torch.no_grad():
        model.scale_factor.fill_(measure_scale_factor(model, (b.to(dev) for b in scale_batches), tcfg.scale_samples))
    checkpoint(total)
    report_skipped(dataset)
    return out
