"""Crash-safe training checkpoints: ``OUT/checkpoints/step_XXXXXXX.pt``, the newest K kept.

A checkpoint is one ``torch.save`` dict holding everything a run needs to continue as if it had
never stopped: the weights, the EMA weights, the optimizer state, the step (which fixes the learning
rate, the data position and the per-step randomness, all pure functions of it), the RNG states, and
whatever describes the model (its config, the tokenizer).

Writing is atomic (temporary file, fsync, rename; then the folder is fsynced), so a SIGKILL or power
cut leaves either the old checkpoint set or the new one. A ``.sha256`` file beside each checkpoint
catches what atomic writes cannot: a file damaged later (a truncated copy, a flipped bit). Reading
uses ``torch.load(weights_only=True)``: no code is unpickled.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

from ldmkit.config import to_dict
from ldmkit.storage import CheckpointError, atomic_path, sha256_file
from ldmkit.text import uses_pretrained_tokenizer
from ldmkit.train.distributed import Distributed, broadcast_object

CHECKPOINT_DIR = "checkpoints"
FORMAT = 1  # bumped when the layout of the state dict changes
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def checkpoint_path(out: str | Path, step: int) -> Path:
    return checkpoint_dir(out) / f"step_{step:07d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint files in ``folder`` (a run folder or its checkpoints/), oldest first."""
    folder = Path(folder)
    if (folder / CHECKPOINT_DIR).is_dir():
        folder = folder / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _fsync_dir(folder: Path) -> None:
    # The rename that publishes a checkpoint is durable only once the folder entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(out: str | Path, state: dict, keep: int) -> Path:
    """Write ``state`` (which holds ``"step"``) atomically as a new checkpoint; keep the newest ``keep``.

    The run's settings, as `resume_state` was given them for ``out``, go in too (``"preset"``), so that
    a resumed run can be compared with the one that wrote the checkpoint."""
    path = checkpoint_path(out, int(state["step"]))
    settings = _RUN_SETTINGS.get(_run_key(out))
    if settings is not None and "preset" not in state:
        state = {**state, "preset": settings}
    with atomic_path(path) as tmp:
        torch.save({**state, "format": FORMAT}, tmp)
    # Hashed after the rename, from the file itself: the digest vouches for what is on disk.
    with atomic_path(_digest_path(path)) as tmp:
        tmp.write_text(f"{sha256_file(path)}  {path.name}\n")
    _fsync_dir(path.parent)
    prune(out, keep)
    return path


def prune(out: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep`` ≥ 1), and leftovers of killed writes."""
    keep = max(1, keep)
    folder = checkpoint_dir(out)
    for _, path in list_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
        _digest_path(path).unlink(missing_ok=True)
    for tmp in folder.glob(".step_*.tmp"):  # atomic_path's temporary files, orphaned by a SIGKILL
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """The state in checkpoint file ``path``; `CheckpointError` when it is missing, truncated, fails
    its checksum, or is not an ldmkit training state of ``kind`` ("autoencoder" or "diffusion")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    digest = _digest_path(path)
    if digest.is_file():
        expected = digest.read_text().split()[:1]
        if expected != [sha256_file(path)]:
            raise CheckpointError(f"{path} does not match its checksum {digest.name}: the file is damaged")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise CheckpointError(f"{path} is corrupt or not an ldmkit training state ({type(e).__name__})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not an ldmkit training state")
    if int(state.get("format", 1)) > FORMAT:
        raise CheckpointError(f"{path} was written by a newer ldmkit (checkpoint format {state['format']})")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {state.get('kind')} training state, not a {kind} one")
    return state


def latest_checkpoint(folder: str | Path, kind: str | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``folder`` that reads back intact, as (path, state).

    Damaged newer ones are passed over with a warning each. None when there is no checkpoint at all;
    `CheckpointError` when there are some and none is readable.
    """
    found = list_checkpoints(folder)
    errors = []
    for _, path in reversed(found):
        try:
            return path, read_checkpoint(path, kind)
        except CheckpointError as e:
            errors.append(str(e))
            warnings.warn(f"skipping checkpoint {path.name}: {e}; falling back to the previous one", stacklevel=2)
    if found:
        raise CheckpointError(f"no usable checkpoint in {folder}: {errors[0]}")
    return None


def load_state(folder: str | Path, kind: str | None = None) -> dict:
    """The training state of the newest intact checkpoint of run folder ``folder``."""
    found = latest_checkpoint(folder, kind)
    if found is None:
        raise CheckpointError(f"nothing to resume: {checkpoint_dir(folder)} holds no checkpoint")
    return found[1]


def resume_state(resume: bool | str | Path | None, out: str | Path, kind: str, ctx: Distributed,
                 preset=None) -> dict | None:
    """The state a run continues from, or None for a fresh start.

    ``preset``: the run's `Preset`. It is recorded for the checkpoints this run writes to ``out``, and
    a checkpoint to resume from must have been trained with the same settings (`check_same_settings`):
    resuming under another preset or config would continue the checkpoint's model with the new batch
    size, learning rate and data, a mix of two runs, so it is refused with the differences listed.

    ``resume``: False/None: start fresh, refusing an ``out`` that already holds checkpoints (that
    would interleave two runs' checkpoints); True or "auto": the newest intact checkpoint in
    ``out``, or a fresh start when there is none yet (so a job scheduler or ``torchrun
    --max-restarts`` can rerun one command line); a path: that checkpoint file, or the newest
    checkpoint in that folder.

    Rank 0 chooses and the others read the same file, so all ranks start from one step.
    """
    out = Path(out)
    choice, state = None, None
    if ctx.is_main:
        if resume is None or resume is False:
            existing = list_checkpoints(out)
            if existing:
                raise CheckpointError(
                    f"{checkpoint_dir(out)} already holds checkpoints (newest: step {existing[-1][0]}); "
                    "pass --resume to continue that run, or choose another --out"
                )
            found = None
        elif resume is True or resume == "auto":
            found = latest_checkpoint(out, kind)
        elif Path(resume).is_dir():
            found = latest_checkpoint(resume, kind)
            if found is None:
                raise CheckpointError(f"nothing to resume: {resume} holds no checkpoint")
        else:
            found = Path(resume), read_checkpoint(resume, kind)
        if found is not None:
            choice, state = str(found[0]), found[1]
            if preset is not None:
                check_same_settings(state, preset, kind, found[0])
            discard_newer(out, int(state["step"]))
    choice = broadcast_object(choice, ctx)
    if choice is not None and state is None:  # the other ranks read the file rank 0 chose
        state = read_checkpoint(choice, kind)
    if preset is not None:
        _RUN_SETTINGS[_run_key(out)] = _settings(preset, kind)
    return state


# --------------------------------------------------------------------------------------------------
# the settings a resumed run must share with the run it continues

_RUN_SETTINGS: dict[str, dict] = {}  # run folder -> the settings `save_checkpoint` records for it

# The sections of a Preset each stage trains from (stage two reads its autoencoder from a folder), and
# the keys that may change between the stretches of one run: how often it logs, samples and
# checkpoints, how many loader workers it uses, and the step count it is aiming for (--steps).
STAGE_SECTIONS = {"autoencoder": ("data", "autoencoder", "autoencoder_train"), "distill": ("data", "distill")}
FREE_KEYS = {"log_every", "sample_every", "checkpoint_every", "checkpoint_keep", "num_workers", "tensorboard",
             "steps"}


def _run_key(out: str | Path) -> str:
    return os.path.abspath(out)


def _settings(preset, kind: str) -> dict:
    """The parts of ``preset`` that decide what a ``kind`` run computes, as a plain nested dict."""
    full = to_dict(preset)
    other_stages = ("autoencoder", "autoencoder_train", "distill")
    sections = STAGE_SECTIONS.get(kind) or [s for s in full if s not in other_stages]
    return {s: {k: v for k, v in full[s].items() if k not in FREE_KEYS} if isinstance(full[s], dict) else full[s]
            for s in sections if s in full}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _recorded_settings(state: dict, preset, kind: str) -> tuple[dict, dict]:
    """(the checkpoint's settings, this run's) to compare: the recorded preset when the checkpoint has
    one, else (checkpoints written before it was recorded) the model config every checkpoint holds."""
    mine = _settings(preset, kind)
    if isinstance(state.get("preset"), dict):
        return state["preset"], mine
    config = state.get("config")
    if not isinstance(config, dict):
        return {}, {}
    if kind == "autoencoder":
        return {"autoencoder": config}, {"autoencoder": mine.get("autoencoder", {})}
    theirs, ours = {}, {}
    for section in ("text", "unet", "diffusion"):
        if isinstance(config.get(section), dict) and section in mine:
            theirs[section], ours[section] = config[section], mine[section]
    if "image_size" in config:
        theirs["data"], ours["data"] = {"image_size": config["image_size"]}, {"image_size": mine["data"]["image_size"]}
    if isinstance(config.get("condition"), dict) and "condition" in mine:
        theirs["condition"] = {"kind": config["condition"].get("kind")}
        ours["condition"] = {"kind": mine["condition"]["kind"]}
    return theirs, ours


def check_same_settings(state: dict, preset, kind: str, path: str | Path) -> None:
    """`CheckpointError` listing the settings in which ``preset`` differs from the run that wrote
    ``state`` (the keys in `FREE_KEYS` may differ; a setting the checkpoint does not record, added to
    ldmkit after it was written, matches its default)."""
    theirs, ours = (_flatten(t) for t in _recorded_settings(state, preset, kind))
    unset = "(unset)"
    defaults = _flatten(_settings(type(preset)(), kind))
    theirs.update({k: defaults[k] for k in ours if k not in theirs and k in defaults})
    # a pretrained text encoder brings its own vocabulary: text.vocab_size is not read (once presets set it)
    unread = {"text.vocab_size"} if uses_pretrained_tokenizer(preset.text) else set()
    differ = [k for k in sorted(set(theirs) | set(ours)) if k.rsplit(".", 1)[-1] not in FREE_KEYS
              and k not in unread and _plain(theirs.get(k, unset)) != _plain(ours.get(k, unset))]
    if not differ:
        return
    shown = [f"{k} {theirs.get(k, unset)!r} → {ours.get(k, unset)!r}" for k in differ[:5]]
    more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
    raise CheckpointError(
        f"cannot resume from {Path(path).name}: it was trained with other settings than this --preset/--config "
        f"({'; '.join(shown)}{more}); resume with the run's own preset or config, or train into another --out"
    )


def _plain(value):
    """Lists and tuples compare alike (YAML and to_dict give lists), ints and equal floats too."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def discard_newer(out: str | Path, step: int) -> None:
    """Rename checkpoints of ``out`` newer than ``step`` to ``*.discarded``: the run continues from
    ``step`` on a new timeline, and ``--resume auto`` must never pick up the old one's later states."""
    for s, path in list_checkpoints(out):
        if s > step:
            warnings.warn(f"{path.name} is newer than the resumed step {step}; renamed to {path.name}.discarded",
                          stacklevel=2)
            os.replace(path, path.with_name(path.name + ".discarded"))
            _digest_path(path).unlink(missing_ok=True)


def rng_state() -> dict:
    """The global torch RNG states (CPU and every GPU), for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
