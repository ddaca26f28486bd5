"""Image-quality metrics: FID, KID, IS on features of a feature network; PSNR and SSIM on pixels.

Pixel metrics take ``images`` in [-1, 1] (NCHW), so the data range is R = 2; they give the numbers of the
same images in [0, 1] with R = 1, or as uint8 with R = 255 (up to rounding), as papers report them: PSNR
depends on differences only, and SSIM, whose luminance term depends on where zero is, reads the images
shifted to [0, R] first. Feature metrics take
N×d feature matrices and N×K class logits from a network in `ldmkit.eval.features`; they know
nothing of which network made them, so the caller names it next to every number it reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MeanStd:
    """A metric reported as mean ± std (over images, splits or subsets, as the metric says)."""

    mean: float
    std: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}"


# --------------------------------------------------------------------------------------------------
# Fréchet Inception Distance


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of N×d features, in float64: the mean and the unbiased (N−1) covariance."""
    x = _numpy(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_statistics needs an N×d matrix with N ≥ 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("feature_statistics: the features hold NaN or infinite values (images that were NaN?)")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix, via its eigenbasis.

    Eigenvalues that rounding pushed below zero are clipped to zero rather than made complex.
    """
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² = ‖μ₁ − μ₂‖² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁ Σ₂)^½)  (Fréchet distance of two Gaussians).

    tr((Σ₁Σ₂)^½) is computed as Σᵢ √λᵢ over the eigenvalues λᵢ of the symmetric PSD matrix
    Σ₁^½ Σ₂ Σ₁^½, which has the same eigenvalues as Σ₁Σ₂. This gives the value of pytorch-fid's
    `scipy.linalg.sqrtm(Σ₁Σ₂)` (a test checks it) without its failure modes: sqrtm of the
    non-symmetric product can come back complex or, for singular Σ, inaccurate enough that
    pytorch-fid adds εI and retries. Here everything stays real and symmetric in float64.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: μ {mu1.shape} vs {mu2.shape}, Σ {sigma1.shape} vs {sigma2.shape}")
    root1 = _sqrtm_psd(sigma1)
    product = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    tr_covmean = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(value, 0.0))  # rounding can leave -1e-12 for identical sets


def fid(features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of features (N₁×d, N₂×d): `frechet_distance` of their (μ, Σ)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def fid_sample_warning(num_images: int, feature_dim: int, recommended: int, network: str) -> str | None:
    """A warning when ``num_images`` is too few for a stable FID on ``feature_dim``-d features, else None.

    With N ≤ d the d×d covariance has rank at most N − 1 < d, so Σ is singular and the FID is
    dominated by which directions happen to be missing; above d it is defined but still biased
    upwards (the bias falls like 1/N), hence a recommended count well above d.
    """
    if num_images <= feature_dim:
        return (
            f"FID ({network}) from {num_images} images: its {feature_dim}-d features need more than "
            f"{feature_dim} images for a full-rank covariance; use at least {recommended} (--num-images)"
        )
    if num_images < recommended:
        return (
            f"FID ({network}) from {num_images} images is biased upwards and noisy; "
            f"use at least {recommended} (--num-images) for numbers you compare"
        )
    return None


# --------------------------------------------------------------------------------------------------
# Kernel Inception Distance


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³, the cubic kernel of Bińkowski et al. (2018), for all pairs."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of MMD² with `polynomial_kernel`, for m samples of each set:

        MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m²

    Leaving out the diagonal is what makes it unbiased: its mean over draws is the true MMD², so
    it is about 0 (and may be negative) for two samples of one distribution.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"mmd2_unbiased needs two sets of the same size m ≥ 2, got {x.shape[0]} and {y.shape[0]}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off = m * (m - 1)
    return float((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())


def kid(
    features1: torch.Tensor | np.ndarray,
    features2: torch.Tensor | np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> MeanStd:
    """KID: mean ± std of `mmd2_unbiased` over ``num_subsets`` random subsets of ``subset_size``
    drawn without replacement from each set (torch-fidelity's defaults; the subset size is capped
    by the smaller set). Each subset's value is `mmd2_unbiased` of the subsets; computed in float64."""
    x, y = _numpy(features1), _numpy(features2)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {x.shape[0]} and {y.shape[0]}")
    # The kernel matrices of the full sets, computed once; each subset reads its block of them.
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    rng = np.random.default_rng(seed)
    off = m * (m - 1)
    values = []
    for _ in range(num_subsets):
        i, j = rng.choice(x.shape[0], m, replace=False), rng.choice(y.shape[0], m, replace=False)
        sxx, syy = kxx[np.ix_(i, i)], kyy[np.ix_(j, j)]
        values.append((sxx.sum() - np.trace(sxx)) / off + (syy.sum() - np.trace(syy)) / off
                      - 2 * kxy[np.ix_(i, j)].mean())
    return MeanStd(float(np.mean(values)), float(np.std(values)))


def _numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    return np.asarray(features, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Inception Score


def inception_score(logits: torch.Tensor, splits: int = 10, min_split_size: int = 50) -> MeanStd:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))), p(y) the mean of p(y|x) over the split; mean ± std over
    ``splits`` equal splits (sizes differing by at most one image), as Salimans et al. (2016) report it.

    ``logits``: N×K class logits (p(y|x) = softmax). The score lies in [1, K]: 1 when every image
    gets the same distribution, K when each is sure of one class and the classes are balanced.
    Fewer splits are used when N is small, so that each holds ≥ ``min_split_size`` images (where
    N allows): p(y) of a handful of images is that handful, and their IS tends to 1.
    """
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"inception_score needs N×K logits, got shape {tuple(logits.shape)}")
    log_p = F.log_softmax(logits.double(), dim=1)
    splits = max(1, min(splits, logits.shape[0] // min_split_size))
    scores = []
    n = log_p.shape[0]
    for part in (log_p[k * n // splits:(k + 1) * n // splits] for k in range(splits)):
        log_marginal = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(dim=1)
        scores.append(math.exp(kl.mean().item()))
    return MeanStd(float(np.mean(scores)), float(np.std(scores)))


# --------------------------------------------------------------------------------------------------
# Pixel metrics


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two B×C×H×W tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR = 10 log₁₀(R² / MSE) in dB, one value per image (B,); MSE over C, H, W.

    R = 2 for ``images`` in [-1, 1]. Identical images give +inf.
    """
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian w(k) ∝ exp(−k² / 2σ²), k = −(size−1)/2 … (size−1)/2."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(k**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5,
    k1: float = 0.01, k2: float = 0.03,
) -> torch.Tensor:
    """SSIM of Wang et al. (2004), one value per image (B,):

        SSIM(x, y) = mean over pixels and channels of
                     (2 μₓμᵧ + C₁)(2 σₓᵧ + C₂) / ((μₓ² + μᵧ² + C₁)(σₓ² + σᵧ² + C₂)),
        C₁ = (k₁R)², C₂ = (k₂R)²,

    with local statistics under an 11×11 Gaussian window of σ = 1.5 (population variances), taken
    only where the window fits inside the image. ``x`` and ``y`` lie in [−R/2, R/2] (images in [-1, 1] for
    R = 2) and are read shifted by R/2 to [0, R]: the numbers of the same images in [0, 1] with R = 1 or as
    uint8 with R = 255, as papers report SSIM (μ enters the luminance term, so the shift matters). This is
    scikit-image's `structural_similarity` on those images with ``gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False`` and the channels averaged (a test checks the agreement).
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}×{window} pixels, got {tuple(x.shape[-2:])}")
    channels = x.shape[1]
    # float32: double-precision convolutions are ~10× slower on CPU, and the cancellation in
    # E[x²] − μ² costs ~1e-7 here, far below C₂ = 3.6·10⁻³ (the skimage test holds to 1e-5).
    w = gaussian_window(window, sigma).float()
    # Separable filter: rows then columns, one group per channel.
    kernel_h = w.view(1, 1, 1, window).repeat(channels, 1, 1, 1)
    kernel_v = w.view(1, 1, window, 1).repeat(channels, 1, 1, 1)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_v, groups=channels)

    x, y = x.float() + data_range / 2, y.float() + data_range / 2  # [−R/2, R/2] → [0, R]
    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).double().mean(dim=1)


def mean_std(values: torch.Tensor) -> MeanStd:
    """Mean ± population std of per-image values, as the lecture's Table 8 reports PSNR and SSIM."""
    v = values.double()
    return MeanStd(float(v.mean()), float(v.std(unbiased=False)))
