"""Bounds on what one sampling call may ask for, shared by `ldmkit generate` and `ldmkit serve`.

Time and memory grow with the images drawn together (one batch) and with the pixel count (attention's
with its square), so both the CLI and the server refuse more than these instead of running out of memory
part way through. No heavy imports: the CLI reads these before it loads a model.
"""

from __future__ import annotations

MAX_IMAGES = 8  # images drawn together as one batch
MAX_GUIDANCE = 30.0  # classifier-free guidance scale s: beyond it images saturate (SD uses 7.5, shapes 4)
MAX_BINDING = 5.0  # binding guidance λ (0.2 for the shipped models)
MAX_CANDIDATES = 8  # binding guidance's starting noises per two-object prompt
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 … 2**64 − 1
MAX_ETA = 1.0  # DDIM η is defined on [0, 1]: 0 deterministic, 1 DDPM's posterior noise
MAX_CACHE_INTERVAL = 10  # feature reuse: the whole UNet at every N-th step; beyond it the deep features go stale
MAX_CACHE_DEPTH = 4  # feature reuse: first-level blocks the shallow branch recomputes (the UNet's num_res_blocks is
# the real bound: 1 shipped, 2 Stable Diffusion)
DEFAULT_MAX_SIDE = 1024  # pixels; 4× a 512-px Stable Diffusion model would be 2048² images


def max_side(trained_size: int, max_size: int | None = None) -> int:
    """The largest height or width for a model trained at ``trained_size``: ``max_size`` when given,
    else 4× the trained size but no more than `DEFAULT_MAX_SIDE` (or the trained size, if larger)."""
    return max_size if max_size is not None else max(trained_size, min(4 * trained_size, DEFAULT_MAX_SIDE))
