"""`ldmkit distill`: a few-step consistency student of a trained text model (latent consistency
distillation, Luo et al. 2023, Alg. 1; the teacher's guided DDIM step is the ODE solver).

The student is the teacher's UNet plus a guidance input (`UNetConfig.guidance_embedding`, zero at the
start); the autoencoder and the prompt model are the teacher's, frozen. Each step, for latents z_0 of
the teacher's data and their captions y:

    t ~ U{1 … T−1},  t' = max(t − k, 0),  s ~ U[s_min, s_max],  ε ~ N(0, I),
    z_t  = √ᾱ_t z_0 + √(1 − ᾱ_t) ε
    ε̃    = ε_T(z_t, t, ∅) + s (ε_T(z_t, t, τ(y)) − ε_T(z_t, t, ∅))            (the teacher, guided)
    z_t' = √ᾱ_t' ẑ_0 + √(1 − ᾱ_t') ε̃,   ẑ_0 = (z_t − √(1 − ᾱ_t) ε̃) / √ᾱ_t      (one DDIM step)
    L    = d(f_θ(z_t, t, y, s), f_θ⁻(z_t', t', y, s)),   d(a, b) = mean(√((a − b)² + c²) − c)

with f the consistency function of `ldmkit.diffusion.consistency` and θ⁻ ← μ θ⁻ + (1 − μ) θ after each
optimizer step (the target network; with ``distill.ema_decay`` 0 its weights are the student that is
saved, LCM's choice). The skipping step k (``distill.skip``, LCM's 20) makes each solver step span k
timesteps. With ``distill.ema_decay`` = ν > 0 the saved student is instead a slow average
θ_ema ← ν θ_ema + (1 − ν) θ (`ldmkit.train.ema.EMA`, as the consistency-model papers evaluate): μ is
short (a target that keeps up with θ), ν long (weights that average out the last steps' noise).

The output folder is a model folder (the student: `generate`, `eval generate`, `serve` and the Python
API run it with the lcm sampler) plus ``checkpoints/`` (for ``--resume``: the same step, weights,
optimizer and random state as an uninterrupted run), ``log.csv``, ``tensorboard/`` and ``samples/``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn

from ldmkit.autoencoder import KLAutoencoder
from ldmkit.config import DistillConfig, ModelConfig, Preset, from_dict, to_dict
from ldmkit.data import build_dataset, save_grid
from ldmkit.data.dataset import dataset_captions
from ldmkit.diffusion.consistency import consistency_output
from ldmkit.diffusion.schedule import NoiseSchedule
from ldmkit.errors import ConfigError, UsageError
from ldmkit.model import LatentDiffusion
from ldmkit.pipelines import preview_samples
from ldmkit.storage import CheckpointError
from ldmkit.train import distributed
from ldmkit.train.checkpoint import resume_state, rng_state, save_checkpoint
from ldmkit.train.common import (
    SkipReport, adamw, autocast, check_finite, check_readable, check_weights_finite, learning_rate, resumed_loader,
    step_generator,
)
from ldmkit.train.diffusion import encode_latents
from ldmkit.train.ema import EMA
from ldmkit.train.logs import RunLog


def student_config(teacher: ModelConfig, student_steps: int, student_guidance: float = 0.0) -> ModelConfig:
    """The teacher's config with a guidance input on the UNet, ``consistency_steps`` and ``consistency_guidance``
    (the student's own guidance scale; 0: the pipelines' default) set."""
    return dataclasses.replace(
        teacher,
        unet=dataclasses.replace(teacher.unet, guidance_embedding=True),
        diffusion=dataclasses.replace(teacher.diffusion, consistency_steps=student_steps,
                                      consistency_guidance=student_guidance),
    )


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """mean(√((a − b)² + c²) − c): L2 near zero, L1 far from it (Song & Dhariwal 2023)."""
    return ((a.float() - b.float()) ** 2 + c * c).sqrt().sub(c).mean()


@dataclasses.dataclass
class DistillDraws:
    """Everything random in one step, drawn from the step's generator (so a resumed run draws the same)."""

    posterior_noise: torch.Tensor | None
    t: torch.Tensor  # int64 [B], 1 … T−1
    noise: torch.Tensor
    guidance: torch.Tensor  # float32 [B]


def draw_distill_step(generator: torch.Generator, batch: int, latent_shape: tuple[int, ...], num_timesteps: int,
                      cfg: DistillConfig, posterior: bool) -> DistillDraws:
    posterior_noise = torch.randn((batch, *latent_shape), generator=generator) if posterior else None
    t = torch.randint(1, num_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, *latent_shape), generator=generator)
    guidance = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(batch, generator=generator)
    return DistillDraws(posterior_noise, t, noise, guidance)


class ConsistencyLoss(nn.Module):
    """L of the module docstring for one batch; its only trained submodule is the student UNet."""

    def __init__(self, student: nn.Module, target: nn.Module, teacher: nn.Module, schedule: NoiseSchedule,
                 prediction: str, skip: int, huber_c: float):
        super().__init__()
        if prediction != "epsilon":
            raise ConfigError(f"ldmkit distill takes ε-prediction teachers; this one predicts {prediction!r}")
        self.unet = student
        self._target, self._teacher = target, teacher  # not submodules: neither is trained or saved here
        self._schedule, self._skip, self._c = schedule, skip, huber_c

    def forward(self, z_0: torch.Tensor, context: torch.Tensor, null_context: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        ac = self._schedule.alphas_cumprod.to(z_0.device)
        t_prev = (t - self._skip).clamp(min=0)
        a_t = ac[t].view(-1, 1, 1, 1)
        a_prev = ac[t_prev].view(-1, 1, 1, 1)
        z_t = a_t.sqrt() * z_0 + (1 - a_t).sqrt() * noise
        with torch.no_grad():
            both = self._teacher(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([null_context, context])).float()
            eps_uncond, eps_cond = both.chunk(2)
            s = guidance.view(-1, 1, 1, 1)
            eps = eps_uncond + s * (eps_cond - eps_uncond)
            z0_hat = (z_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            z_prev = a_prev.sqrt() * z0_hat + (1 - a_prev).sqrt() * eps
            target = consistency_output(z_prev, self._target(z_prev, t_prev, context, guidance=guidance),
                                        t_prev, self._schedule)
        prediction = consistency_output(z_t, self.unet(z_t, t, context, guidance=guidance), t, self._schedule)
        return pseudo_huber(prediction, target, self._c)


@torch.no_grad()
def update_target(target: nn.Module, online: nn.Module, decay: float) -> None:
    """θ⁻ ← μ θ⁻ + (1 − μ) θ (buffers copied)."""
    for p_t, p in zip(target.parameters(), online.parameters()):
        p_t.lerp_(p.detach().to(p_t.dtype), 1 - decay)
    for b_t, b in zip(target.buffers(), online.buffers()):
        b_t.copy_(b)


def distill(preset: Preset, teacher: str | Path, out: str | Path, steps: int | None = None,
            student_steps: int | None = None, resume: bool | str | Path = False, device: str = "auto",
            progress: bool = True, init: str | Path | None = None) -> Path:
    """Train a consistency student of ``teacher`` (a text model) on ``preset.data`` for ``steps``
    (default ``preset.distill.steps``) optimizer steps into ``out``; ``student_steps`` (default
    ``preset.distill.student_steps``) is its default number of sampling steps. ``resume``: as
    `ldmkit.train.diffusion.train_diffusion`'s (False: fresh, refusing an ``out`` with checkpoints).
    ``init``: a student of this teacher (a folder this function wrote, e.g. a shipped one whose
    checkpoints are gone) whose UNet starts both θ and θ⁻, with a fresh optimizer; a resumed run takes
    its checkpoint instead."""
    with distributed.process_group(device) as ctx:
        if ctx.world_size > 1:
            raise UsageError("ldmkit distill runs in one process; launch it without torchrun")
        _distill(preset, Path(teacher), Path(out), steps, student_steps, resume, ctx, progress,
                 None if init is None else Path(init))
    return Path(out)


def _initial_student(init: Path, teacher: LatentDiffusion) -> LatentDiffusion:
    """The student in ``init``, checked to be a consistency student of ``teacher``'s architecture."""
    source = LatentDiffusion.load(init)
    if not source.config.diffusion.consistency_steps:
        raise UsageError(f"--init {init} is not a consistency student; give a folder `ldmkit distill` wrote "
                         "(to distil a trained model, give it as --teacher)")
    own = source.config.diffusion
    expected = student_config(teacher.config, own.consistency_steps, own.consistency_guidance)
    if source.config.unet != expected.unet or source.config.diffusion != expected.diffusion:
        raise UsageError(f"--init {init} is a student of another architecture than --teacher; give a student "
                         "distilled from this teacher")
    return source


def _distill(preset: Preset, teacher_path: Path, out: Path, steps: int | None, student_steps: int | None, resume,
             ctx, progress: bool, init: Path | None = None) -> None:
    dcfg = preset.distill
    total = steps if steps is not None else dcfg.steps
    dev = ctx.device
    teacher = LatentDiffusion.load(teacher_path)
    if teacher.config.condition.kind != "text":
        raise UsageError(f"--teacher {teacher_path} is a {teacher.config.condition.kind!r} model; ldmkit distill "
                         "takes text-to-image models")
    if teacher.config.diffusion.consistency_steps:
        raise UsageError(f"--teacher {teacher_path} is already a consistency student; give the model it was "
                         "distilled from")
    state = resume_state(resume, out, "distill", ctx, preset=preset)
    if state is not None and Path(state.get("teacher", teacher_path)).resolve() != teacher_path.resolve():
        raise CheckpointError(f"the checkpoint was distilled from --teacher {state['teacher']}, not {teacher_path}; "
                              "give that teacher, or choose another --out")
    source = _initial_student(init, teacher) if init is not None and state is None else None
    if state is not None:
        config = from_dict(ModelConfig, state["config"], "config")
    elif source is not None:
        own = source.config.diffusion
        config = student_config(teacher.config, student_steps or own.consistency_steps,
                                dcfg.student_guidance or own.consistency_guidance)
    else:
        config = student_config(teacher.config, student_steps or dcfg.student_steps, dcfg.student_guidance)
    start = int(state["step"]) if state is not None else 0
    if start > total:
        raise CheckpointError(f"the checkpoint is at step {start}, beyond --steps {total}")

    # The student: the teacher's autoencoder and prompt model (shared, frozen) and a copy of its UNet.
    student = LatentDiffusion(config, teacher.tokenizer, teacher.autoencoder)
    student.text_encoder = teacher.text_encoder
    missing, unexpected = student.unet.load_state_dict(teacher.unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("guidance_embed") for k in missing):
        raise ConfigError(f"the teacher's UNet does not fit the student: missing {missing}, unexpected {unexpected}")
    if source is not None:
        student.unet.load_state_dict(source.unet.state_dict())
    teacher.to(dev).eval().requires_grad_(False)
    student.to(dev)
    student.autoencoder.requires_grad_(False)
    student.text_encoder.requires_grad_(False)
    target = copy.deepcopy(student.unet).requires_grad_(False).eval()
    objective = ConsistencyLoss(student.unet, target, teacher.unet, teacher.schedule,
                                teacher.config.diffusion.prediction, dcfg.skip, dcfg.huber_c)
    params = [p for p in student.unet.parameters() if p.requires_grad]
    opt = adamw(params, dcfg.lr, dcfg.weight_decay)
    ema = EMA(student.unet, dcfg.ema_decay) if dcfg.ema_decay > 0 else None
    if state is not None:
        try:
            student.unet.load_state_dict(state["model"])
            target.load_state_dict(state["target"])
            opt.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint does not fit this student: {str(e).splitlines()[0]}") from None

    dataset = build_dataset(preset.data)
    check_readable(dataset)  # before the run's folder is made
    prompts = dataset_captions(dataset, 8)
    saved = LatentDiffusion(config, teacher.tokenizer, teacher.autoencoder)  # what is written: θ⁻ or θ_ema
    saved.text_encoder = teacher.text_encoder
    saved.unet = target if ema is None else copy.deepcopy(target)
    saved.known_words = teacher.known_words  # the teacher's training words: the student learnt from its data
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, ["loss", "lr"], start, enabled=True, tensorboard=dcfg.tensorboard)

    def refresh_saved() -> None:
        if ema is not None:
            ema.copy_to(saved.unet)

    def checkpoint(step: int) -> None:
        check_weights_finite(params, step)
        refresh_saved()
        saved.save(out)
        save_checkpoint(out, {
            "kind": "distill", "step": step, "model": student.unet.state_dict(), "target": target.state_dict(),
            "optimizer": opt.state_dict(), "rng": rng_state(), "config": to_dict(config),
            "teacher": str(teacher_path), **({} if ema is None else {"ema": ema.state_dict()}),
        }, dcfg.checkpoint_keep)

    def write_samples(step: int) -> None:
        refresh_saved()
        images = preview_samples(saved, dev, prompts, None, None, dcfg.sample_guidance)
        save_grid(images, out / "samples" / f"step_{step:06d}.png", nrow=4)
        student.unet.train()

    autoencoder = teacher.autoencoder
    f = autoencoder.downsample_factor
    latent_shape = (autoencoder.latent_channels, preset.data.image_size // f, preset.data.image_size // f)
    posterior = isinstance(autoencoder, KLAutoencoder)
    with torch.no_grad():
        null_context = teacher.null_context("").to(dev)
    skips = SkipReport()
    loader, bar = resumed_loader(dataset, state, dcfg, start, total, ctx, "distill", progress)
    student.unet.train()
    try:
        for step, batch in zip(range(start, total), loader):
            skips.take(batch)
            draws = draw_distill_step(step_generator(dcfg.seed, step), dcfg.batch_size, latent_shape,
                                      teacher.schedule.num_timesteps, dcfg, posterior)
            lr = learning_rate(step, dcfg.lr, dcfg.warmup_steps, dcfg.lr_scheduler, total)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                images = batch["images"].to(dev)
                noise = draws.posterior_noise.to(dev) if posterior else None
                z_0 = encode_latents(autoencoder, images, noise)
                context = teacher.encode_prompts(list(batch["caption"]))
            with autocast(dev, dcfg.bf16):
                loss = objective(z_0, context, null_context.expand_as(context), draws.t.to(dev),
                                 draws.noise.to(dev), draws.guidance.to(dev))
            loss.backward()
            loss_value = loss.item()
            check_finite(loss_value, step)
            if dcfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, dcfg.grad_clip)
            opt.step()
            update_target(target, student.unet, dcfg.target_decay)
            if ema is not None:
                ema.update(student.unet)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            done = step + 1
            if done % dcfg.log_every == 0 or done == total:
                log.write(done, {"loss": loss_value, "lr": lr})
            if done % dcfg.sample_every == 0 or done == total:
                write_samples(done)
            if done % dcfg.checkpoint_every == 0 and done < total:
                checkpoint(done)
        bar.close()
        checkpoint(total)
        skips.report(dataset, ctx)
    finally:
        log.close()
