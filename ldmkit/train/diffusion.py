"""Stage two: train εθ and τθ jointly on latents of the frozen autoencoder (Algorithm 1).

    z_0 = scale_factor · E(x),  t ~ U{0..T−1},  ε ~ N(0, I),  z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε
    L_LDM = ‖ε − εθ(z_t, t, τθ(y))‖²,  with y replaced by "" at rate ``cond_drop_prob``

The output folder is a model folder (see `ldmkit.model`) holding the EMA weights, plus
``training_state.pt`` for ``--resume``, ``log.csv`` and sample grids in ``samples/``.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ldmkit.autoencoder.folder import load_autoencoder
from ldmkit.config import ModelConfig, Preset
from ldmkit.device import resolve_device
from ldmkit.data import build_dataset, save_grid
from ldmkit.diffusion import diffusion_loss
from ldmkit.model import LatentDiffusion
from ldmkit.pipelines.text_to_image import TextToImagePipeline
from ldmkit.storage import CheckpointError, load_config
from ldmkit.text import PromptTokenizer
from ldmkit.train.common import (
    CSVLog, autocast, check_finite, learning_rate, load_state, make_loader, report_skipped,
    save_state, step_generator,
)
from ldmkit.train.ema import EMA

TOKENIZER_CAPTIONS = 5000  # captions the tokenizer's vocabulary is trained on


def dataset_captions(dataset, limit: int) -> list[str]:
    """Up to ``limit`` captions, without decoding images where the dataset allows it."""
    n = min(len(dataset), limit)
    if hasattr(dataset, "captions"):  # an image folder knows its captions without decoding images
        return list(dataset.captions[:n])
    return [dataset[i]["caption"] for i in range(n)]


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the null prompt "" with probability p (for classifier-free guidance)."""
    keep = torch.rand(len(captions), generator=generator) >= p
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


def train_diffusion(
    preset: Preset, autoencoder_dir: str | Path, out: str | Path, steps: int | None = None,
    resume: bool = False, device: str = "auto", progress: bool = True,
) -> Path:
    out = Path(out)
    tcfg = preset.train
    total = steps if steps is not None else tcfg.steps
    dev = resolve_device(device)
    dataset = build_dataset(preset.data)
    autoencoder = load_autoencoder(autoencoder_dir)

    if resume:
        state = load_state(out)
        if state.get("kind") != "diffusion":
            raise CheckpointError(f"{out} holds a {state.get('kind')} training state, not a diffusion model's")
        config = load_config(ModelConfig, out)
        tokenizer = PromptTokenizer.load(out / "tokenizer.json")
    else:
        config = ModelConfig(
            autoencoder=autoencoder.config, text=preset.text, unet=preset.unet,
            diffusion=preset.diffusion, image_size=preset.data.image_size,
        )
        if config.unet.in_channels != autoencoder.latent_channels:
            raise ValueError(
                f"unet.in_channels ({config.unet.in_channels}) must equal the autoencoder's latent "
                f"channels ({autoencoder.latent_channels})"
            )
        tokenizer = PromptTokenizer.train(
            dataset_captions(dataset, TOKENIZER_CAPTIONS), preset.text.vocab_size, preset.text.max_length
        )
    torch.manual_seed(tcfg.seed)  # the initial weights are part of what a seed reproduces
    model = LatentDiffusion(config, tokenizer, autoencoder)
    model.check_image_size(preset.data.image_size, preset.data.image_size)
    model.to(dev)
    trainable = nn.ModuleDict({"text_encoder": model.text_encoder, "unet": model.unet})
    opt = torch.optim.AdamW(trainable.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ema = EMA(trainable, tcfg.ema_decay)
    start = 0
    if resume:
        trainable.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        start = int(state["step"])

    # the EMA weights live in a second copy of the model, which sampling and saving use
    ema_model = copy.deepcopy(model)
    ema_trainable = nn.ModuleDict({"text_encoder": ema_model.text_encoder, "unet": ema_model.unet})
    sample_prompts = dataset_captions(dataset, 8)

    out.mkdir(parents=True, exist_ok=True)
    log = CSVLog(out / "log.csv", ["loss", "lr"])

    def checkpoint(step: int) -> None:
        ema.copy_to(ema_trainable)
        ema_model.save(out)
        save_state(out, {
            "kind": "diffusion", "step": step, "model": trainable.state_dict(),
            "ema": ema.state_dict(), "optimizer": opt.state_dict(),
        })

    def write_samples(step: int) -> None:
        ema.copy_to(ema_trainable)
        images = TextToImagePipeline(ema_model, dev).generate_tensors(
            sample_prompts, steps=tcfg.sample_steps, guidance=tcfg.sample_guidance, seed=0
        )
        save_grid(images, out / "samples" / f"step_{step:06d}.png", nrow=4)

    loader = make_loader(dataset, tcfg.batch_size, tcfg.seed, start, total, tcfg.num_workers)
    bar = tqdm(total=total, initial=start, desc="diffusion", disable=not progress, dynamic_ncols=True)
    model.text_encoder.train()
    model.unet.train()
    for step, batch in zip(itertools.count(start), loader):
        gen = step_generator(tcfg.seed, step)
        captions = drop_captions(batch["caption"], tcfg.cond_drop_prob, gen)
        latents = model.encode_images(batch["images"].to(dev), sample=True, generator=gen)
        lr = learning_rate(step, tcfg.lr, tcfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast(dev, tcfg.bf16):
            context = model.encode_prompts(captions)
            loss = diffusion_loss(
                lambda z_t, t: model.unet(z_t, t, context), latents, model.schedule,
                prediction=config.diffusion.prediction, generator=gen,
            )
        check_finite(loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(trainable.parameters(), tcfg.grad_clip)
        opt.step()
        ema.update(trainable)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % tcfg.log_every == 0 or done == total:
            log.write(done, {"loss": loss.item(), "lr": lr})
        if done % tcfg.sample_every == 0 or done == total:
            write_samples(done)
        if done % tcfg.checkpoint_every == 0 and done < total:
            checkpoint(done)
    bar.close()
    checkpoint(total)
    report_skipped(dataset)
    return out
