"""Evaluating an autoencoder as the lecture's Table 8 does: reconstructions x̂ = D(E(x)) of held-out
images, scored by PSNR and SSIM (mean ± std over images), R-FID (FID between the real images and
their reconstructions) and R-IS (IS of the reconstructions). On shapes one more question has an
answer: does x̂ still show what the caption of x says? The shapes judge reads each reconstruction
and the captions are scored as prompts (`prompt_accuracy`)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ldmkit.autoencoder.folder import load_autoencoder
from ldmkit.errors import UsageError
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.features import FeatureNetwork, ShapesFeatures, extract
from ldmkit.eval.folders import AUTOENCODER, folder_kind
from ldmkit.eval.heldout import HELDOUT_SEED, heldout_shapes
from ldmkit.eval.metrics import fid, fid_sample_warning, inception_score, mean_std, psnr, ssim
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.eval.report import EvalReport, Metric
from ldmkit.model import LatentDiffusion
from ldmkit.progress import tqdm


@torch.no_grad()
def reconstruct(autoencoder: nn.Module, images: torch.Tensor, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """x̂ = D(E(x)), clamped to [-1, 1]; E gives the posterior mean (KL) or z_e, quantised in D (VQ)."""
    device = autoencoder.post_quant_conv.weight.device
    out = []
    for batch in tqdm(images.split(batch_size), desc="reconstructing", disable=not progress, leave=False):
        batch = batch.to(device)
        out.append(autoencoder.decode(autoencoder.encode(batch)).clamp(-1, 1).float().cpu())
    return torch.cat(out)


def _warn_if_too_few(num_images: int, networks: list[FeatureNetwork]) -> list[str]:
    """Issue (before the long work starts) and return a warning per network too big for ``num_images``."""
    messages = [m for net in networks
                if (m := fid_sample_warning(num_images, net.feature_dim, net.recommended_images, net.name))]
    for message in messages:
        warnings.warn(message, stacklevel=3)
    return messages


def check_image_size(image_size: int, factor: int) -> None:
    """UsageError unless ``image_size`` S is a multiple of the autoencoder's downsampling factor f (an S×S image
    has an S/f × S/f latent; the CLI's option is named in the message)."""
    if image_size % factor:
        raise UsageError(f"--image-size {image_size} is not a multiple of the autoencoder's factor f={factor}")


def evaluate_autoencoder(
    model: str | Path | nn.Module,
    num_images: int = 1024,
    image_size: int = 64,
    networks: list[FeatureNetwork] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EvalReport:
    """PSNR, SSIM, R-FID and R-IS of an autoencoder on ``num_images`` held-out shapes of ``image_size``
    pixels: a folder written by `ldmkit train-autoencoder`, the frozen autoencoder of a text-to-image
    model (an ldmkit model folder, a Stable Diffusion file or a diffusers folder), or the module itself.

    ``networks``: the feature networks for R-FID and R-IS (default: the shapes CNN alone). An ``image_size`` the
    autoencoder cannot take is a UsageError once it is loaded, before any work (`check_image_size`).
    """
    if isinstance(model, (str, Path)):
        model = load_autoencoder(model) if folder_kind(model) == AUTOENCODER else LatentDiffusion.load(model).autoencoder
    if model.config.kind == "identity":
        raise UsageError("this is a pixel-space model: its first stage is the identity (x̂ = x), there is no "
                         "autoencoder to evaluate; `ldmkit eval generate` measures the model")
    f = model.downsample_factor
    check_image_size(image_size, f)
    model = model.to(device).eval()
    networks = networks if networks is not None else [ShapesFeatures()]
    sample_warnings = _warn_if_too_few(num_images, networks)

    heldout = heldout_shapes(num_images, image_size)
    real = heldout.images
    start = time.time()
    recon = reconstruct(model, real, batch_size, progress)
    seconds = time.time() - start

    report = EvalReport(f"autoencoder: {model.config.kind.upper()}, f={f}, c={model.latent_channels}"
                        + (f", |Z|={model.config.codebook_size}" if model.config.kind == "vq" else ""))
    p, s = mean_std(psnr(real, recon)), mean_std(ssim(real, recon))
    report.metrics += [Metric("PSNR (dB)", p.mean, p.std, better="higher"), Metric("SSIM", s.mean, s.std, better="higher")]
    for net in networks:
        net.to(device)
        real_f, real_l = extract(net, real, batch_size, progress, f"features of real ({net.name})")
        rec_f, rec_l = extract(net, recon, batch_size, progress, f"features of reconstructions ({net.name})")
        r_is, ref_is = inception_score(rec_l), inception_score(real_l)
        report.metrics += [
            Metric("R-FID", fid(real_f, rec_f), network=net.name, better="lower"),
            Metric("R-IS", r_is.mean, r_is.std, network=net.name, better="higher"),
            Metric("IS of the real images", ref_is.mean, ref_is.std, network=net.name),
        ]
    judge = AttributePredictor(next((n.module for n in networks if isinstance(n, ShapesFeatures)), None))
    kept = prompt_accuracy(heldout.captions, judge(recon))
    report.prompt_accuracy = kept.to_dict()
    report.metrics.append(Metric("captions still true of the reconstructions", kept.all_right["all"].share,
                                 network="shapes judge", better="higher"))
    report.warnings += sample_warnings
    report.settings = {"images": num_images, "image_size": image_size, "heldout_seed": HELDOUT_SEED,
                       "reconstruction_seconds": round(seconds, 1)}
    return report
