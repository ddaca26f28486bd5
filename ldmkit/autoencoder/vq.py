"""The vector-quantised autoencoder: latents snap to the nearest entry of a learned codebook Z."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.autoencoder.networks import LatentAutoencoder
from ldmkit.config import AutoencoderConfig


class VectorQuantizer(nn.Module):
    """z_q = argmin_{e_k ∈ Z} ‖z_e − e_k‖₂ at every latent pixel, with the straight-through estimator
    z_e + sg(z_q − z_e) so the decoder's gradient reaches the encoder unchanged.

    Loss: β ‖z_e − sg(z_q)‖² (commitment), plus ‖sg(z_e) − z_q‖² (codebook) when ``ema_decay`` = 0.
    With ``ema_decay`` = γ > 0 the codebook is not learned by gradient but moved by exponential moving
    averages (VQ-VAE-2 / Sonnet): N_k ← γ N_k + (1−γ) n_k, m_k ← γ m_k + (1−γ) Σ_{i→k} z_e,i and
    e_k = m_k / Ñ_k, with Laplace-smoothed counts Ñ_k = (N_k + ε) / (Σ N + K ε) · Σ N.

    Dead-code restarts: N_k is also the code's usage (an EMA of how many latent vectors it won per
    batch). In training, a code with N_k < ``dead_code_threshold`` is re-initialised to a random
    encoder output of the current batch and given N_k = 1, one vector's worth of grace before it can
    be declared dead again. Without EMA updates the counts are still tracked, with γ = 0.99.

    Single-process: under DDP the per-batch counts/sums and the restarts would need an all-reduce and
    a broadcast (see `_update`).
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1e-3,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.ema_decay = ema_decay
        self.usage_decay = ema_decay if ema_decay > 0 else 0.99
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if self.use_ema:
            self.embedding.weight.requires_grad_(False)
        # Counts start at 1 with m_k = e_k so that e_k = m_k / Ñ_k holds from the first step; starting
        # them at 0 would blow up every code that misses the first batch (m_k / ε).
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", self.embedding.weight.detach().clone())

    @property
    def use_ema(self) -> bool:
        return self.ema_decay > 0

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """argmin_k ‖z_e − e_k‖² for each latent pixel: (B, C, H, W) → int64 indices (B, H, W)."""
        b, _, h, w = z_e.shape
        return self._nearest(_flatten(z_e)).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for indices (B, H, W) → z_q (B, C, H, W)."""
        return self.embedding(indices).permute(0, 3, 1, 2)

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e + sg(z_q − z_e): the quantised latent, with no loss and no codebook update (decoding)."""
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            return _straight_through(z, self.lookup(self.nearest(z)).float())

    @torch.no_grad()
    def _nearest(self, flat: torch.Tensor) -> torch.Tensor:
        codebook = self.embedding.weight.float()
        # ‖z‖² − 2 z·e + ‖e‖², in fp32: bf16 rounding would pick the wrong code between near neighbours.
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
        return distances.argmin(dim=1)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(straight-through z_q, {"vq_loss", "perplexity", "codes_used"}); updates the codebook in training.

        perplexity = exp(−Σ_k p_k log p_k) over this batch's code frequencies p (1 … K);
        codes_used = fraction of the K codes chosen at least once in this batch.
        """
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            flat = _flatten(z)
            indices = self._nearest(flat)
            z_q = self.lookup(indices.view(z.shape[0], *z.shape[2:])).float()

            loss = self.beta * F.mse_loss(z, z_q.detach())
            if not self.use_ema:
                loss = loss + F.mse_loss(z_q, z.detach())

            counts = torch.bincount(indices, minlength=self.codebook_size).float()
            if self.training:
                self._update(flat.detach(), indices, counts)

            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
            codes_used = (counts > 0).float().mean()
            z_st = _straight_through(z, z_q)
        return z_st, {"vq_loss": loss, "perplexity": perplexity, "codes_used": codes_used}

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        # Under DDP, `counts` and `sums` are where an all-reduce would go, and the restart below
        # would have to draw the same vectors on every rank (broadcast from rank 0).
        gamma = self.usage_decay
        self.ema_count.mul_(gamma).add_(counts, alpha=1 - gamma)
        if self.use_ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)
            self.ema_sum.mul_(gamma).add_(sums, alpha=1 - gamma)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
            self.embedding.weight.copy_(self.ema_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = (self.ema_count < self.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        n = flat.shape[0]
        if n >= dead.numel():  # distinct vectors where the batch has enough, so restarts do not collide
            pick = torch.randperm(n, device=flat.device)[: dead.numel()]
        else:
            pick = torch.randint(n, (dead.numel(),), device=flat.device)
        new = flat[pick].to(self.embedding.weight.dtype)
        self.embedding.weight[dead] = new
        self.ema_sum[dead] = new.to(self.ema_sum.dtype)
        self.ema_count[dead] = 1.0


def _straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Forward value z_q, gradient identity to z_e. Written sg(z_q) + (z_e − sg(z_e)) rather than
    z_e + sg(z_q − z_e) because the added term is exactly 0, so the value is z_q bit for bit."""
    return z_q.detach() + (z_e - z_e.detach())


def _flatten(z: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B·H·W, C): one row per latent pixel."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


class VQAutoencoder(LatentAutoencoder):
    """x̂ = D(q(E(x))) with q the `VectorQuantizer` over |Z| = ``codebook_size`` codes of dimension c.

    As in the lecture and the original LDM's VQModelInterface, quantisation lives in the decoder:
    `encode` returns the continuous pre-quantisation latent z_e (after the 1×1 ``quant_conv``), the
    diffusion model works on those continuous latents, and `decode` snaps them to the codebook first.
    """

    def __init__(self, cfg: AutoencoderConfig):
        c = cfg.latent_channels
        super().__init__(cfg, encoder_channels=c)
        self.quant_conv = nn.Conv2d(c, c, 1)
        self.quantizer = VectorQuantizer(
            cfg.codebook_size,
            c,
            beta=cfg.commitment_weight,
            ema_decay=cfg.codebook_ema_decay,
            dead_code_threshold=cfg.dead_code_threshold,
        )

    def encode(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z_e = quant_conv(E(x)), unquantised and unscaled: (B, c, H/f, W/f), fp32.

        ``sample`` and ``generator`` are accepted for a common interface; VQ encoding is deterministic.
        """
        self._check_size(images)
        images = images.to(self.quant_conv.weight.dtype)
        return self.quant_conv(self.encoder(images)).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = D(post_quant_conv(q(z))): quantise the continuous latent, then decode."""
        return self._decode_latent(self.quantizer.quantize(z))

    def forward(
        self, images: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(x̂, {"vq_loss", "perplexity", "codes_used"}) for training; updates the codebook in train mode."""
        z_q, aux = self.quantizer(self.encode(images))
        return self._decode_latent(z_q), aux
