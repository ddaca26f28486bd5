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

from ldmkit.storage import CheckpointError, atomic_path, sha256_file
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
    """Write ``state`` (which holds ``"step"``) atomically as a new checkpoint; keep the newest ``keep``."""
    path = checkpoint_path(out, int(state["step"]))
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


def resume_state(resume: bool | str | Path | None, out: str | Path, kind: str, ctx: Distributed) -> dict | None:
    """The state a run continues from, or None for a fresh start.

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
            discard_newer(out, int(state["step"]))
    choice = broadcast_object(choice, ctx)
    if choice is not None and state is None:  # the other ranks read the file rank 0 chose
        state = read_checkpoint(choice, kind)
    return state


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
