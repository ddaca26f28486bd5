"""`ldmkit train-autoencoder`, `ldmkit train` and `ldmkit distill`.

Both run unchanged under ``torchrun --nproc_per_node=N -m ldmkit.cli train …`` (see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from ldmkit.bounds import MAX_GUIDANCE
from ldmkit.cli.common import (
    bounded_float, fraction, load_training_config, non_negative_float, positive_int, seed_int,
)
from ldmkit.cli.outputs import check_output_dir
from ldmkit.autoencoder.folder import first_stage
from ldmkit.config import AutoencoderConfig, Preset, preset_names
from ldmkit.errors import UsageError
from ldmkit.model import check_unet_in_channels
from ldmkit.pretrained import resolve_model
from ldmkit.storage import load_config
from ldmkit.train.autoencoder import train_autoencoder
from ldmkit.train.checkpoint import CHECKPOINT_DIR, list_checkpoints
from ldmkit.train.common import LR_SCHEDULES
from ldmkit.train.diffusion import train_diffusion
from ldmkit.train.distill import distill


# what a run has written before its first checkpoint (`ldmkit.train.logs`, the sample grids)
RUN_START = frozenset({"log.csv", "tensorboard", "samples", CHECKPOINT_DIR})


def check_run_folder(args) -> None:
    """--out as the folder of this run: new, empty, or holding checkpoints (which a fresh run refuses and
    ``--resume`` continues, `ldmkit.train.checkpoint.resume_state`). With ``--resume``, also a folder holding only
    what a run writes before its first checkpoint (`RUN_START`: the run starts over). Any other files are another
    run's or a finished model's, which training would overwrite: refused, in one line, before any work."""
    out = check_output_dir(args.out)
    if not out.is_dir() or list_checkpoints(out):
        return
    started = all(p.name in RUN_START for p in out.iterdir())
    if args.resume is not None and started:
        return
    remedy = ("choose a new folder, or pass --resume to start that run over (it wrote no checkpoint)" if started
              else "it holds no checkpoints to --resume from, and training would overwrite its files; choose a new "
                   "folder")
    check_output_dir(out, empty=True, remedy=remedy)


def _preset(args, section: str) -> Preset:
    """The preset or config file, with the checkpoint flags written into its ``section`` (the train config);
    --out is checked first (a folder that can be created and written, `check_run_folder`)."""
    check_run_folder(args)
    preset = load_training_config(args)
    overrides = {}
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    if args.keep_checkpoints is not None:
        overrides["checkpoint_keep"] = args.keep_checkpoints
    if args.seed is not None:
        overrides["seed"] = args.seed
    if overrides:
        preset = dataclasses.replace(preset, **{section: dataclasses.replace(getattr(preset, section), **overrides)})
    return preset


def _resume(value: str | None):
    """--resume absent: False; bare or "auto": "auto"; anything else: a checkpoint path."""
    return False if value is None else value


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"a built-in preset: {', '.join(preset_names())}")
    p.add_argument("--config", help="a YAML file in the preset layout (missing keys take defaults)")
    p.add_argument("--out", required=True, help="the output folder")
    p.add_argument("--steps", type=positive_int, help="total training steps (overrides the preset)")
    p.add_argument(
        "--resume", nargs="?", const="auto", metavar="auto|PATH",
        help="continue a run: 'auto' (the default when the flag is bare) takes the newest intact checkpoint "
             "in --out/checkpoints and starts fresh if there is none; PATH is a checkpoint file or folder",
    )
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="write a checkpoint every N steps (overrides the config)")
    p.add_argument("--keep-checkpoints", type=positive_int, metavar="K",
                   help="keep the newest K checkpoints (default: the config's checkpoint_keep, 3)")
    p.add_argument("--seed", type=seed_int, metavar="N",
                   help="the run's seed: its data order, noise and timesteps (overrides the config; e.g. a run "
                        "started with --init from a model trained on seed 0 sees other items with another)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda; under torchrun each rank takes "
                                                    "GPU LOCAL_RANK")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_train_autoencoder(args) -> None:
    preset = _preset(args, "autoencoder_train")
    if preset.autoencoder.kind == "identity":
        raise UsageError("this preset is pixel-space diffusion (autoencoder.kind identity, f = 1): it has no "
                         "autoencoder to train; run `ldmkit train` on it without --autoencoder")
    out = train_autoencoder(preset, args.out, args.steps, _resume(args.resume),
                            args.device, not args.no_progress)
    if _is_main():
        print(f"autoencoder written to {out}")


def _check_autoencoder_fits(preset: Preset, autoencoder: str | None) -> None:
    """The UNet's input channels must be the latent channels (the autoencoder folder's config; a pixel preset's
    image channels) plus the condition's; a pixel preset (autoencoder.kind identity) takes no --autoencoder and
    a latent one needs it. Checked before any data or model is built."""
    if preset.autoencoder.kind == "identity" or autoencoder is None:
        first_stage(preset.autoencoder, autoencoder)  # refuses --autoencoder for a pixel preset, none for a latent one
        latent = preset.autoencoder.in_channels
    else:
        latent = load_config(AutoencoderConfig, autoencoder).latent_channels
    check_unet_in_channels(preset.unet.in_channels, latent, preset.condition)


def cmd_train(args) -> None:
    preset = _preset(args, "train")
    _check_autoencoder_fits(preset, args.autoencoder)
    out = train_diffusion(
        preset, args.autoencoder, args.out, args.steps, _resume(args.resume), args.device,
        not args.no_progress, None if args.init is None else resolve_model(args.init),
    )
    if _is_main():
        print(f"model written to {out} (samples in {out / 'samples'})")


def cmd_distill(args) -> None:
    preset = _preset(args, "distill")
    given = {k: v for k, v in (("ema_decay", args.ema_decay), ("student_guidance", args.student_guidance),
                               ("lr", args.lr), ("lr_scheduler", args.lr_scheduler)) if v is not None}
    if given:
        preset = dataclasses.replace(preset, distill=dataclasses.replace(preset.distill, **given))
    out = distill(preset, resolve_model(args.teacher), args.out, args.steps, args.student_steps,
                  _resume(args.resume), args.device, not args.no_progress,
                  None if args.init is None else resolve_model(args.init))
    print(f"consistency student written to {out} (samples in {out / 'samples'}); "
          f"sample it with `ldmkit generate --model {out} PROMPT`")


def _is_main() -> bool:
    """Rank 0 of a torchrun launch (or a plain run): the one process that reports."""
    return os.environ.get("RANK", "0") == "0"


def add_parsers(sub) -> None:
    p = sub.add_parser("train-autoencoder", help="stage 1: train the autoencoder on images")
    _add_training_options(p)
    p.set_defaults(func=cmd_train_autoencoder)

    p = sub.add_parser("train", help="stage 2: train the UNet and text encoder on frozen latents")
    _add_training_options(p)
    p.add_argument("--autoencoder", help="folder written by `ldmkit train-autoencoder` (latent presets; a pixel "
                                         "preset such as shapes64-pixel takes none)")
    p.add_argument("--init", metavar="MODEL",
                   help="fine-tune: start from this trained model's prompt model, vocabulary and UNet (it must "
                        "use --autoencoder; the preset may change the prediction, the schedule and add input "
                        "channels, which start at zero); a resumed run takes its checkpoint instead")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="distil a text model into a few-step consistency student (LCM)")
    _add_training_options(p)
    p.add_argument("--teacher", required=True, metavar="MODEL",
                   help="the text-to-image model to distil (a folder written by `ldmkit train`, or shapes64, the "
                        "shipped one); the preset's data section should be the data it was trained on")
    p.add_argument("--student-steps", type=positive_int, metavar="N",
                   help="the student's default number of sampling steps (default: the config's "
                        "distill.student_steps, 4)")
    p.add_argument("--student-guidance", type=bounded_float(MAX_GUIDANCE, "guidance scale"), metavar="S",
                   help="the student's own guidance scale, used where a call gives none (default: the config's "
                        "distill.student_guidance; 0: the pipelines' 4); choose it on validation captions, e.g. "
                        "with experiments/student_settings.py")
    p.add_argument("--init", metavar="STUDENT",
                   help="distil on from a student of this teacher (e.g. shapes64-lcm, the shipped one): its "
                        "weights start the student and its target, with a fresh optimizer; a resumed run takes "
                        "its checkpoint instead")
    p.add_argument("--ema-decay", type=fraction, metavar="NU",
                   help="save (and sample the grids with) a slow EMA of the student's weights with this decay, "
                        "e.g. 0.999, instead of its target network (overrides distill.ema_decay; 0: the target)")
    p.add_argument("--lr", type=non_negative_float, help="the student's learning rate (default: the config's "
                                                         "distill.lr, 1e-4)")
    p.add_argument("--lr-scheduler", choices=LR_SCHEDULES,
                   help="the learning rate after the warm-up: constant (the default, LCM's), linear or cosine "
                        "(both decay to 0 at --steps)")
    p.set_defaults(func=cmd_distill)
