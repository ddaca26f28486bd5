"""Stage two: train εθ and τθ jointly on latents of the frozen autoencoder (Algorithm 1).

    z_0 = scale_factor · E(x),  t ~ U{0..T−1},  ε ~ N(0, I),  z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε
    L_LDM = ‖ε − εθ(z_t, t, τθ(y))‖²,  with y replaced by "" at rate ``cond_drop_prob``

The condition kind (`ldmkit.config.ConditionConfig`) decides y: the caption; a class label (dropped to
the null class ∅); or the caption plus an image condition c made from x itself and concatenated,
εθ(cat(z_t, c), t, τθ(y)) — x shrunk ``sr_factor`` times (super-resolution), x with a random mask
(inpainting, uncropping), gray(x) (colorization). c is never dropped: it is always there at sampling.

The output folder is a model folder (see `ldmkit.model`) holding the EMA weights, plus
``checkpoints/`` (the newest ``checkpoint_keep`` training states, for ``--resume``), ``log.csv``,
``tensorboard/`` and sample grids in ``samples/``.

With ``data.latent_cache`` set (text models only) the images are not read: z_0 = s·(μ + σ ε) is formed
from the cached posterior moments (`ldmkit.data.latent_cache`) with the same ε, flips and order.

Runs unchanged under ``torchrun``: each rank trains on its share of every global batch, DDP
averages the gradients, and rank 0 alone writes files (see `ldmkit.train.distributed`).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ldmkit.autoencoder import KLAutoencoder
from ldmkit.autoencoder.folder import first_stage
from ldmkit.condition import class_labels, condition_source, data_classes, random_masks
from ldmkit.config import GroundingConfig, ModelConfig, Preset, TextEncoderConfig, from_dict, to_dict
from ldmkit.data import build_dataset, save_grid
from ldmkit.data.dataset import dataset_captions, dataset_word_colours
from ldmkit.data.latent_cache import autoencoder_checksum, cached_latents, open_latent_cache
from ldmkit.diffusion import diffusion_loss
from ldmkit.model import LatentDiffusion, check_unet_inputs
from ldmkit.nn.cross_attention_maps import CrossAttentionRecorder, recording
from ldmkit.pipelines import preview_samples
from ldmkit.errors import ConfigError
from ldmkit.storage import CheckpointError
from ldmkit.text import PromptTokenizer, load_tokenizer, uses_pretrained_tokenizer
from ldmkit.text.known_words import CAPTIONS_READ, KnownWords
from ldmkit.train import distributed
from ldmkit.train.checkpoint import resume_state, rng_state, save_checkpoint
from ldmkit.train.common import (
    SkipReport, adamw, autocast, check_finite, check_readable, check_weights_finite, learning_rate, micro_batches,
    resumed_loader, step_generator, stream_readers,
)
from ldmkit.train.ema import EMA
from ldmkit.train.grounding import GroundingTargets, grounding_losses, grounding_targets
from ldmkit.train.logs import RunLog
from ldmkit.train.warm_start import warm_start

TOKENIZER_CAPTIONS = 5000  # captions the tokenizer's vocabulary is trained on
PREVIEW_ITEMS = 8  # items of the data set the preview grids show (prompts, or image conditions' inputs)


def check_colour_word_dropout(share: float, colour_lexicon: str) -> None:
    """A ConfigError unless ``train.colour_word_dropout`` is 0, or a share in (0, 1] of an "add" lexicon model."""
    if share and (colour_lexicon != "add" or not 0 < share <= 1):
        raise ConfigError(f"train.colour_word_dropout = {share}: a share in (0, 1] with text.colour_lexicon: add "
                          f"(this model has {colour_lexicon!r}), or 0")


def warn_if_uncaptioned(captions: list[str], source: str) -> None:
    """A one-line warning when none of a text model's training captions (those read, up to `CAPTIONS_READ`) holds
    text: every item would train the empty caption, a model that ignores its prompts."""
    if captions and not any(c.strip() for c in captions):
        shown = f"none of the {len(captions)} images" if len(captions) < CAPTIONS_READ else \
            f"none of the first {len(captions)} images"
        warnings.warn(f"{shown} in {source} has a caption: the text model learns to ignore prompts; give each "
                      "image a caption (a sidecar .txt or metadata.jsonl, see docs/usage.md)", stacklevel=2)


def caption_keep_mask(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """n booleans, each False (drop the caption) with probability p."""
    return torch.rand(n, generator=generator) >= p


@dataclass
class StepDraws:
    """Everything random in one step, for each of the B samples of the global batch.

    Drawn whole on every rank from the step's generator; a rank uses the rows of its own samples,
    so sample i gets the same timestep and noise whether one process or many share the batch.
    """

    keep_caption: torch.Tensor  # bool [B]
    posterior_noise: torch.Tensor | None  # [B, c, h, w] for a KL autoencoder's z = μ + σ ε
    t: torch.Tensor  # int64 [B]
    noise: torch.Tensor  # ε, [B, c, h, w]
    mask: torch.Tensor | None = None  # inpainting: m, [B, 1, H, W] (1 = repaint)
    neutral_colours: torch.Tensor | None = None  # bool [B]: colour names hidden from the text encoder


def draw_step(generator: torch.Generator, batch_size: int, latent_shape: tuple[int, int, int],
              num_timesteps: int, drop_prob: float, posterior: bool,
              mask_size: tuple[int, int] | None = None, colour_dropout: float = 0.0) -> StepDraws:
    """``mask_size`` (H, W): draw inpainting masks too, after everything else, so that the draws of
    the other kinds stay what they were; ``colour_dropout`` > 0: then which captions' colour names the
    text encoder does not read (`DiffusionTrainConfig.colour_word_dropout`)."""
    keep = caption_keep_mask(batch_size, drop_prob, generator)
    posterior_noise = torch.randn((batch_size, *latent_shape), generator=generator) if posterior else None
    t = torch.randint(0, num_timesteps, (batch_size,), generator=generator)
    noise = torch.randn((batch_size, *latent_shape), generator=generator)
    mask = random_masks(batch_size, *mask_size, generator) if mask_size is not None else None
    neutral = torch.rand(batch_size, generator=generator) < colour_dropout if colour_dropout > 0 else None
    return StepDraws(keep, posterior_noise, t, noise, mask, neutral)


def batch_condition(model: LatentDiffusion, batch: dict, keep: torch.Tensor, images: torch.Tensor,
                    mask: torch.Tensor | None, latent_size: tuple[int, int]):
    """(y, c) of a training micro-batch: y the captions ("" where ``keep`` is False) or the class labels
    (∅ where dropped); c the image condition, or None."""
    condition = model.config.condition
    if condition.kind == "class":
        labels = class_labels(batch, condition.classes, model.class_embedding.null_class)
        y = torch.where(keep, labels, torch.full_like(labels, model.class_embedding.null_class))
    else:
        y = [c if k else "" for c, k in zip(batch["caption"], keep.tolist())]
    concat = model.image_condition(condition_source(condition, images), latent_size, mask)
    return y, concat


@torch.no_grad()
def encode_latents(autoencoder: nn.Module, images: torch.Tensor, posterior_noise: torch.Tensor | None) -> torch.Tensor:
    """z_0 = scale_factor · z with z = μ(x) + σ(x) ⊙ ε for a KL autoencoder (ε given), z = E(x) for VQ.

    The posterior sample is formed here rather than by ``encode(sample=True)`` so that its noise is
    the sample's own row of the global draw (`StepDraws`), not the next numbers of a stream.
    """
    if isinstance(autoencoder, KLAutoencoder):
        posterior = autoencoder.posterior(images)
        z = posterior.mean + posterior.std * posterior_noise
    else:
        z = autoencoder.encode(images)
    return z * autoencoder.scale_factor


class DenoisingLoss(nn.Module):
    """L_LDM for a batch of latents, conditions, timesteps and noise: the module DDP wraps.

    Its only submodules are the trained ones, τθ (``text_encoder``, or ``class_embedding`` for a
    class model) and εθ (``unet``), so its state dict is exactly what a checkpoint stores as
    ``"model"``; y goes through the model's own `encode_prompts` / `encode_classes`, which call the
    same modules.
    """

    def __init__(self, model: LatentDiffusion, min_snr_gamma: float = 0.0, grounding: GroundingConfig | None = None):
        super().__init__()
        self.text_encoder = model.text_encoder
        self.class_embedding = model.class_embedding
        self.unet = model.unet
        self._encode = model.encode_prompts if model.class_embedding is None else model.encode_classes
        self._schedule = model.schedule
        self._prediction = model.config.diffusion.prediction
        self._min_snr_gamma = min_snr_gamma if min_snr_gamma > 0 else None
        self._grounding = grounding if grounding is not None and grounding.enabled else None
        self.terms: dict[str, torch.Tensor] = {}  # the last forward's loss terms, detached, for the log

    def forward(self, latents: torch.Tensor, y: list[str] | torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                concat: torch.Tensor | None = None, grounding: GroundingTargets | None = None,
                neutral_colours: list[bool] | None = None) -> torch.Tensor:
        """y: captions, or class labels (int64 [B]); concat: c for εθ(cat(z_t, c), t, τθ(y)), or None;
        grounding: the targets of `ldmkit.train.grounding` (used when the config weighs them), or None;
        neutral_colours: per caption, its colour names hidden from the text encoder (`colour_word_dropout`)."""
        context = self._encode(y) if neutral_colours is None else self._encode(y, neutral_colours)

        def eps(z_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            z_in = z_t if concat is None else torch.cat([z_t, concat.to(z_t.dtype)], dim=1)
            return self.unet(z_in, tt, context)

        def denoising() -> torch.Tensor:
            return diffusion_loss(eps, latents, self._schedule, prediction=self._prediction,
                                  min_snr_gamma=self._min_snr_gamma, t=t, noise=noise)

        cfg = self._grounding
        if cfg is None or grounding is None:
            loss = denoising()
            self.terms = {"loss": loss.detach()}
            return loss
        recorder = CrossAttentionRecorder(tuple(latents.shape[-2:]))
        with recording(self.unet, recorder):
            loss = denoising()
        token, pixel = grounding_losses(recorder.layers, grounding, tuple(latents.shape[-2:]), cfg.levels)
        self.terms = {"loss": loss.detach(), "grounding_token": token.detach(), "grounding_pixel": pixel.detach()}
        return loss + cfg.weight_token * token + cfg.weight_pixel * pixel


def tokenizer_to_json(tokenizer: PromptTokenizer) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return tokenizer.save(Path(tmp) / "tokenizer.json").read_text(encoding="utf-8")


def tokenizer_from_json(text: str, cfg: TextEncoderConfig | None = None):
    """The tokenizer of `tokenizer_to_json`'s text: of the kind a model of ``cfg`` saves (a fine-tune of a
    MiniLM or CLIP model keeps that model's vocabulary), or a caption-trained `PromptTokenizer`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return load_tokenizer(cfg, path) if cfg is not None else PromptTokenizer.load(path)


def train_diffusion(
    preset: Preset, autoencoder_dir: str | Path | None, out: str | Path, steps: int | None = None,
    resume: bool | str | Path = False, device: str = "auto", progress: bool = True,
    init: str | Path | None = None,
) -> Path:
    """Train τθ and εθ for ``steps`` (default ``preset.train.steps``) optimizer steps into ``out``.

    ``resume``: False (fresh; refuses an ``out`` with checkpoints), True or "auto" (the newest intact
    checkpoint of ``out``, fresh if none), or a checkpoint file or folder. ``device``: auto, cpu or
    cuda. ``init``: a trained model to fine-tune, whose prompt model, vocabulary and UNet weights a
    fresh run starts from (`ldmkit.train.warm_start`; a resumed run takes its checkpoint's instead).
    ``autoencoder_dir``: the frozen autoencoder's folder; None for a pixel preset (`first_stage`).
    Under torchrun every rank calls this; the return value is ``out`` on all of them.
    """
    with distributed.process_group(device) as ctx:
        ae_dir = Path(autoencoder_dir) if autoencoder_dir is not None else None
        _train(preset, ae_dir, Path(out), steps, resume, ctx, progress, init)
    return Path(out)


def check_same_autoencoder(state: dict, config: ModelConfig, autoencoder, digest: str,
                           autoencoder_dir: Path | None) -> None:
    """`CheckpointError` when a resumed run is given another frozen autoencoder than the one its UNet was trained
    on: another architecture (the model folder would not load), or other weights (another latent space) where
    the checkpoint records its autoencoder's sha256 (checkpoints written before it was recorded are not checked
    for weights)."""
    where = f"--autoencoder {autoencoder_dir}" if autoencoder_dir is not None else "the pixel-space first stage"
    if to_dict(autoencoder.config) != to_dict(config.autoencoder):
        raise CheckpointError(f"cannot resume: the checkpoint's UNet was trained on another autoencoder than {where} "
                              "(another architecture); resume with the run's own --autoencoder, or train into "
                              "another --out")
    recorded = state.get("autoencoder_sha256")
    if recorded and recorded != digest:
        raise CheckpointError(f"cannot resume: {where} holds other weights than the autoencoder the checkpoint's UNet "
                              "was trained on (its latents differ); resume with the run's own --autoencoder, or "
                              "train into another --out")


def _train(preset: Preset, autoencoder_dir: Path | None, out: Path, steps: int | None, resume, ctx, progress: bool,
           init: str | Path | None = None) -> None:
    tcfg = preset.train
    total = steps if steps is not None else tcfg.steps
    dev = ctx.device
    micro = distributed.per_rank_batch(tcfg.batch_size, ctx, tcfg.grad_accum_steps)
    autoencoder = first_stage(preset.autoencoder, autoencoder_dir)
    cached = bool(preset.data.latent_cache)
    if cached and autoencoder_dir is None:
        raise ConfigError("data.latent_cache: a pixel-space model (autoencoder.kind identity) trains on the images")
    check_colour_word_dropout(tcfg.colour_word_dropout, preset.text.colour_lexicon)
    dataset = open_latent_cache(preset.data, autoencoder_dir, preset.condition.kind) if cached \
        else build_dataset(preset.data)
    if not cached:
        check_readable(dataset)  # before the run's folder is made

    state = resume_state(resume, out, "diffusion", ctx, preset=preset)
    source = LatentDiffusion.load(init) if init is not None and state is None else None
    ae_digest = autoencoder_checksum(autoencoder_dir) if autoencoder_dir is not None else ""
    if state is not None:
        config = from_dict(ModelConfig, state["config"], "config")
        check_same_autoencoder(state, config, autoencoder, ae_digest, autoencoder_dir)
        # a pretrained text kind reads prompts with its package's vocabulary (LatentDiffusion builds it)
        tokenizer = tokenizer_from_json(state["tokenizer"], config.text) \
            if config.condition.uses_text and not uses_pretrained_tokenizer(config.text) else None
    else:
        condition = preset.condition
        if condition.kind == "class":
            condition = dataclasses.replace(condition, classes=data_classes(condition, preset.data, dataset))
        config = ModelConfig(
            autoencoder=autoencoder.config, text=preset.text, unet=preset.unet,
            diffusion=preset.diffusion, image_size=preset.data.image_size, condition=condition,
        )
        check_unet_inputs(config)
        tokenizer = source.tokenizer if source is not None else None
        if condition.uses_text and tokenizer is None and not uses_pretrained_tokenizer(config.text):
            # Rank 0 trains the vocabulary and hands it to the others: one tokenizer, however the
            # captions were split. A pretrained kind's vocabulary comes with it (LatentDiffusion builds it).
            vocab = None
            if ctx.is_main:
                vocab = tokenizer_to_json(PromptTokenizer.train(
                    dataset_captions(dataset, TOKENIZER_CAPTIONS), preset.text.vocab_size, preset.text.max_length
                ))
            tokenizer = tokenizer_from_json(distributed.broadcast_object(vocab, ctx))
    start = int(state["step"]) if state is not None else 0
    if start > total:
        raise CheckpointError(f"the checkpoint is at step {start}, beyond --steps {total}")

    # the words of the captions, which prompts are read in (ldmkit.text.known_words); read before the seed, as the
    # tokenizer's captions are, so that no dataset's own random draws move what the seed reproduces
    captions = dataset_captions(dataset, CAPTIONS_READ) if config.condition.uses_text else None
    if ctx.is_main and config.condition.kind == "text":
        warn_if_uncaptioned(captions, preset.data.source)
    known = None
    if captions is not None:  # and the colours their words name in the images, where the data has grounding targets
        known = KnownWords.from_captions(captions, dataset_word_colours(dataset, CAPTIONS_READ))
    if known is not None and source is not None and source.known_words is not None:
        known = known.union(source.known_words)

    torch.manual_seed(tcfg.seed)  # the initial weights are part of what a seed reproduces
    model = LatentDiffusion(config, tokenizer, autoencoder)
    model.check_image_size(preset.data.image_size, preset.data.image_size)
    model.known_words = known
    if source is not None:
        warm_start(model, source, f"--init {init}")
        del source
    model.to(dev)
    objective = DenoisingLoss(model, tcfg.min_snr_gamma, tcfg.grounding)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = adamw(params, tcfg.lr, tcfg.weight_decay, tcfg.fused_adamw)
    ema = EMA(objective, tcfg.ema_decay) if ctx.is_main else None  # only rank 0 saves or samples
    if state is not None:
        try:
            objective.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint does not fit this model: {str(e).splitlines()[0]}") from None
        if ema is not None:
            ema.load_state_dict(state["ema"])
    ddp = distributed.wrap(objective, ctx)

    ema_model = ema_trainable = sample_prompts = None
    if ctx.is_main:
        # the EMA weights live in a second copy of the model, which sampling and saving use
        ema_model = copy.deepcopy(model)
        trained = {"text_encoder": ema_model.text_encoder, "class_embedding": ema_model.class_embedding,
                   "unet": ema_model.unet}
        ema_trainable = nn.ModuleDict({k: m for k, m in trained.items() if m is not None})
        # the preview grid: the first 8 items, or all of a smaller data set
        sample_prompts = dataset_captions(dataset, PREVIEW_ITEMS) if config.condition.uses_text else None
        sample_images = torch.stack([dataset[i]["images"] for i in range(min(PREVIEW_ITEMS, len(dataset)))]) \
            if not (cached or hasattr(dataset, "batches")) else None
        out.mkdir(parents=True, exist_ok=True)
    grounded = tcfg.grounding.enabled
    log_fields = ["loss", "lr"] + (["grounding_token", "grounding_pixel"] if grounded else [])
    log = RunLog(out, log_fields, start, enabled=ctx.is_main, tensorboard=tcfg.tensorboard)

    def checkpoint(step: int) -> None:
        check_weights_finite(params, step)  # on every rank, so that all stop together
        if not ctx.is_main:
            return
        ema.copy_to(ema_trainable)
        ema_model.save(out)
        save_checkpoint(out, {
            "kind": "diffusion", "step": step, "model": objective.state_dict(), "ema": ema.state_dict(),
            "optimizer": opt.state_dict(), "rng": rng_state(), "config": to_dict(config),
            "autoencoder_sha256": ae_digest,  # the frozen E and D the latents came from (checked on resume)
            # the tokenizer the model reads prompts with (a pretrained kind's own, not the caption BPE)
            "tokenizer": tokenizer_to_json(model.tokenizer) if model.tokenizer is not None else "",
            "samples_seen": step * tcfg.batch_size,
            "world_size": ctx.world_size, "readers": stream_readers(ctx, tcfg.num_workers),
        }, tcfg.checkpoint_keep)

    def write_samples(step: int) -> None:
        ema.copy_to(ema_trainable)
        images = preview_samples(ema_model, dev, sample_prompts, sample_images, tcfg.sample_steps, tcfg.sample_guidance)
        if images is not None:
            save_grid(images, out / "samples" / f"step_{step:06d}.png", nrow=4)

    f = autoencoder.downsample_factor
    latent_shape = (autoencoder.latent_channels, preset.data.image_size // f, preset.data.image_size // f)
    mask_size = (preset.data.image_size,) * 2 if config.condition.kind == "inpaint" else None
    accum = tcfg.grad_accum_steps
    share = tcfg.batch_size // ctx.world_size  # this rank's samples per step
    posterior = isinstance(autoencoder, KLAutoencoder)
    skips = SkipReport()
    loader, bar = resumed_loader(dataset, state, tcfg, start, total, ctx, "diffusion", progress)
    objective.train()
    try:
        for step, batch in zip(range(start, total), loader):
            skips.take(batch)
            draws = draw_step(step_generator(tcfg.seed, step, ctx.rank), tcfg.batch_size, latent_shape,
                              config.diffusion.num_timesteps, tcfg.cond_drop_prob, posterior, mask_size,
                              tcfg.colour_word_dropout)
            lr = learning_rate(step, tcfg.lr, tcfg.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=dev)
            term_sums: dict[str, torch.Tensor] = {}
            for k, mb in enumerate(micro_batches(batch, accum)):
                rows = slice(ctx.rank * share + k * micro, ctx.rank * share + (k + 1) * micro)
                noise = draws.posterior_noise[rows].to(dev) if posterior else None
                if cached:
                    images = None  # a text model needs no image condition
                    latents = cached_latents(mb, noise, model.autoencoder.scale_factor, dev)
                else:
                    images = mb["images"].to(dev)
                    latents = encode_latents(model.autoencoder, images, noise)
                mask = draws.mask[rows].to(dev) if draws.mask is not None else None
                y, concat = batch_condition(model, mb, draws.keep_caption[rows], images, mask, latent_shape[1:])
                if isinstance(y, torch.Tensor):
                    y = y.to(dev)
                targets = grounding_targets(mb["grounding"], y, model.tokenizer, tcfg.grounding.words) \
                    if grounded and "grounding" in mb else None
                with distributed.sync_context(ddp, sync=k == accum - 1):
                    with autocast(dev, tcfg.bf16):
                        loss = ddp(latents, y, draws.t[rows].to(dev), draws.noise[rows].to(dev), concat,
                                   targets.to(dev) if targets is not None else None,
                                   draws.neutral_colours[rows].tolist() if draws.neutral_colours is not None else None)
                    (loss / accum).backward()
                loss_sum += loss.detach().float()
                for name, value in objective.terms.items():
                    term_sums[name] = term_sums.get(name, 0.0) + value.float()
            loss_value = distributed.mean(loss_sum / accum, ctx).item()  # the global batch's loss
            check_finite(loss_value, step)
            if tcfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(objective)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            done = step + 1
            if done % tcfg.log_every == 0 or done == total:
                values = {"loss": loss_value, "lr": lr}
                if grounded:  # the denoising loss alone under "loss", the grounding terms beside it
                    values |= {name: distributed.mean(torch.as_tensor(term_sums.get(name, 0.0), device=dev) / accum,
                                                      ctx).item() for name in ("loss", "grounding_token", "grounding_pixel")}
                log.write(done, values)
            if ctx.is_main and (done % tcfg.sample_every == 0 or done == total):
                write_samples(done)
            if done % tcfg.checkpoint_every == 0 and done < total:
                checkpoint(done)
        bar.close()
        checkpoint(total)
        skips.report(dataset, ctx)
    finally:
        log.close()
    distributed.barrier(ctx)  # every rank returns once rank 0 has written the model
