"""Training-free feature reuse across sampling steps (DeepCache, Ma et al. 2023).

Consecutive sampling steps see nearly the same z_t, and the UNet's deep features — everything below the
skip branch of its first level — change slowly from one step to the next, while the shallow branch that
writes the output follows z_t closely. `FeatureCache` runs the whole UNet at every N-th call and, in
between, only the shallow branch on the deep features D of the last full call (`UNet.forward_split`):

    call k = 0, 1, 2, …  of one sampling run, N = ``interval`` (a call whose inputs the stored D does not
    fit also runs in full, and the count starts again from it):
        k mod N = 0:   ε̂_k, D = S(z_k, t_k, c; Deep(z_k, t_k, c))      (exact, D stored)
        otherwise:     ε̂_k    = S(z_k, t_k, c; D)                     (the shallow branch alone)

so a run of n steps makes ⌈n / N⌉ full UNet evaluations, and n − ⌈n / N⌉ shallow ones. N = 1 is the
plain UNet. The samplers (`ldmkit.diffusion.samplers`) call the denoiser once per step (PLMS once more at its
first step), and classifier-free guidance (`guided_denoiser`) calls the UNet once per step on
[unconditional; conditional], so a call is a step and the cache holds both halves of the guided batch.
"""

from __future__ import annotations

import torch

from ldmkit.nn.unet import UNet


class FeatureCache:
    """``cache(z_t, t, context)`` → ε̂: ``unet`` with its deep features reused (see the module docstring).

    Contract: one instance per sampling run (it counts calls; `reset` starts over). ``interval`` N ≥ 1:
    a full UNet evaluation at the first call and at every N-th call after a full one. ``shallow_blocks``
    k: how many blocks of the first encoder level the shallow branch recomputes (`UNet.forward_split`;
    1, the default, is DeepCache's branch 0). A call whose batch, latent size, dtype or device differs from the
    stored D's (guidance switched off by ``guidance_stop``, a new set of starting noises) runs the full
    UNet and stores its D, so the cache is never read for inputs it was not made from.
    ``full_calls`` and ``calls`` count the evaluations.
    """

    def __init__(self, unet: UNet, interval: int, shallow_blocks: int = 1):
        if interval < 1:
            raise ValueError(f"cache interval = {interval}; must be at least 1 (1: no reuse)")
        if not 0 <= shallow_blocks <= unet.cfg.num_res_blocks:
            raise ValueError(f"shallow_blocks = {shallow_blocks}; must be 0 … {unet.cfg.num_res_blocks}")
        self.unet = unet
        self.interval = interval
        self.shallow_blocks = shallow_blocks
        self.reset()

    def reset(self) -> None:
        """Forget the stored features and the count: the next call runs the whole UNet."""
        self.deep: torch.Tensor | None = None
        self._inputs: tuple | None = None
        self._age = self.interval  # calls since the last full one
        self.calls = 0
        self.full_calls = 0

    def __call__(
        self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.calls += 1
        if self.interval == 1:
            self.full_calls += 1
            return self.unet(z_t, t, context, context_mask)
        inputs = (tuple(z_t.shape), z_t.dtype, z_t.device, torch.is_autocast_enabled(z_t.device.type))
        full = self._age >= self.interval or inputs != self._inputs
        eps, deep = self.unet.forward_split(z_t, t, context, context_mask, deep=None if full else self.deep,
                                            shallow_blocks=self.shallow_blocks)
        if full:
            self.full_calls += 1
            self.deep, self._inputs, self._age = deep, inputs, 0
        self._age += 1
        return eps
