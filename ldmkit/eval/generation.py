"""Evaluating text-to-image generation on shapes: generate one image for each held-out caption,
then compare the images with the real renders of those same captions (FID, KID), score their
spread (IS), and check each against its prompt with the shapes judge (prompt accuracy)."""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from ldmkit.diffusion.samplers import check_grid_options
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.features import FeatureNetwork, ShapesFeatures, extract
from ldmkit.eval.folders import TEXT_TO_IMAGE, require_kind
from ldmkit.eval.heldout import HELDOUT_SEED, HeldOut, heldout_shapes
from ldmkit.eval.metrics import fid, fid_sample_warning, inception_score, kid
from ldmkit.eval.prompt_accuracy import prompt_accuracy
from ldmkit.eval.report import EvalReport, Metric
from ldmkit.pipelines.base import check_student_options
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.progress import tqdm
from ldmkit.settings import (  # noqa: F401  (SamplerSettings: its earlier name)
    GenerationSettings, SamplerSettings, check_cache_depth, check_cache_interval, check_steps,
)


def generate_for_prompts(
    pipe, prompts: list[str], settings: GenerationSettings, batch_size: int = 32, progress: bool = False
) -> torch.Tensor:
    """One image per prompt (N×3×H×W in [-1, 1]; ``settings.num_images_per_prompt`` is not read); batch k is
    seeded with ``settings.seed + k``, so a run is reproducible for a given batch size."""
    out = []
    with tqdm(total=len(prompts), desc=f"generating ({settings.describe()})", disable=not progress,
              unit="img", leave=False) as bar:
        for k, start in enumerate(range(0, len(prompts), batch_size)):
            batch = prompts[start:start + batch_size]
            options = replace(settings, seed=settings.seed + k, num_images_per_prompt=1).generate_kwargs()
            out.append(pipe.generate_tensors(batch, **options))
            bar.update(len(batch))
    return torch.cat(out)


def check_sampling(pipe, settings: GenerationSettings) -> None:
    """UsageError for what sampling with ``settings`` (sampler and steps filled in, `Pipeline.sampling_defaults`)
    on ``pipe``'s model would refuse only once it starts, so that it is said before the held-out reference is
    rendered: more steps than the model's timesteps (`check_steps`), a grid option or an η its sampler does not
    take (`Pipeline.grid_options`, `check_grid_options`), a cache interval not below the steps
    (`check_cache_interval`), a cache depth beyond the UNet's blocks per level (`check_cache_depth`), and what a
    consistency student does not take (`check_student_options`)."""
    steps = settings.num_inference_steps
    check_steps(steps, pipe.model.schedule.num_timesteps)
    pipe.grid_options(settings.sampler, settings.spacing, settings.steps_offset, settings.karras)
    check_grid_options(settings.sampler, settings.eta)
    check_cache_interval(settings.cache_interval, steps)
    check_cache_depth(settings.cache_depth, pipe.model.config.unet.num_res_blocks)
    if pipe.is_student:
        check_student_options(settings.cache_interval, settings.binding or None, settings.guidance_stop)


@contextmanager
def read_as_written(pipe, as_written: bool):
    """Inside, with ``as_written``, ``pipe`` encodes prompts as given: its model's known words set aside, so that no
    never-seen word is read as the nearest known one (`LatentDiffusion.in_known_words`); after, as before."""
    known = pipe.model.known_words
    if as_written:
        pipe.model.known_words = None
    try:
        yield
    finally:
        pipe.model.known_words = known


class RealReference:
    """The held-out real images and their features under each network, computed once and reused
    when one set of real images is compared with many generated sets (the benchmark).

    It also measures the noise floor of FID: the FID between the held-out images and as many other
    real images (held-out items from `FLOOR_START` on). A perfect generator scores about this,
    not 0, because FID from N images is biased upwards (roughly like 1/N).
    """

    FLOOR_START = 10**6

    def __init__(self, heldout: HeldOut, networks: list[FeatureNetwork], batch_size: int = 64, progress: bool = False):
        self.heldout = heldout
        self.networks = networks
        n, size = len(heldout.images), heldout.images.shape[-1]
        others = heldout_shapes(n, size, start=self.FLOOR_START).images
        self.features, self.floor = {}, {}
        for net in networks:
            self.features[net.name] = extract(net, heldout.images, batch_size, progress, f"features of real ({net.name})")
            other = extract(net, others, batch_size, progress, f"features of other real ({net.name})")[0]
            self.floor[net.name] = fid(self.features[net.name][0], other) if n >= 2 else float("nan")


def score_generated(
    images: torch.Tensor,
    reference: RealReference,
    predictor: AttributePredictor,
    batch_size: int = 64,
    progress: bool = False,
) -> EvalReport:
    """FID, KID and IS per network, and prompt accuracy, of ``images`` generated from
    ``reference.heldout.captions`` (in that order)."""
    n = len(images)
    if n != len(reference.heldout.captions):
        raise ValueError(f"{n} images for {len(reference.heldout.captions)} held-out captions")
    report = EvalReport("text-to-image")
    for net in reference.networks:
        real_f, real_l = reference.features[net.name]
        gen_f, gen_l = extract(net, images, batch_size, progress, f"features of generated ({net.name})")
        k = kid(gen_f, real_f, subset_size=min(1000, max(2, n // 2)))
        gen_is, real_is = inception_score(gen_l), inception_score(real_l)
        report.metrics += [
            Metric("FID", fid(gen_f, real_f), network=net.name, better="lower"),
            Metric("FID floor, real vs real", reference.floor[net.name], network=net.name),
            Metric("KID", k.mean, k.std, network=net.name, better="lower"),
            Metric("IS", gen_is.mean, gen_is.std, network=net.name, better="higher"),
            Metric("IS of the real images", real_is.mean, real_is.std, network=net.name),
        ]
        if (message := fid_sample_warning(n, net.feature_dim, net.recommended_images, net.name)):
            report.warnings.append(message)
    heldout = reference.heldout
    readings = predictor.read(images)
    accuracy = prompt_accuracy(heldout.captions, [r.scene for r in readings], heldout.stated,
                               [r.malformed for r in readings])
    # The judge read on the real renders of the same captions: the ceiling it allows, and a check
    # that it is trustworthy at this image size.
    real = predictor.read(heldout.images)
    judge = prompt_accuracy(heldout.captions, [r.scene for r in real], heldout.stated, [r.malformed for r in real])
    report.prompt_accuracy = accuracy.to_dict()
    report.metrics += [
        Metric("prompt accuracy, all attributes right", accuracy.all_right["all"].share, network="shapes judge",
               better="higher"),
        Metric("same, on the real renders", judge.all_right["all"].share, network="shapes judge"),
    ]
    return report


def evaluate_generation(
    model,
    num_images: int = 1024,
    settings: GenerationSettings | None = None,
    networks: list[FeatureNetwork] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
    phrasing: str = "templates",
    as_written: bool = False,
) -> EvalReport:
    """FID, KID, IS and prompt accuracy of a text-to-image model (a folder written by `ldmkit train`,
    or a `TextToImagePipeline`) on ``num_images`` held-out shapes captions, phrased in the templates or
    the seen or unseen part of the broad grammar (``phrasing``, see `heldout_shapes`).

    ``networks``: the feature networks for FID/KID/IS (default: the shapes CNN alone); prompt
    accuracy always uses the shapes judge. ``settings``: how the images are drawn (default: the model's own
    sampler, steps and guidance, seed 0); a guidance scale left None is the model's (`Pipeline.default_guidance`:
    4, or a consistency student's own); what
    the model cannot sample with is a UsageError before any work (`check_sampling`). ``as_written``: the captions
    encoded as given (`read_as_written`), recorded in the report's settings.
    """
    settings = settings or GenerationSettings()
    if isinstance(model, (str, Path)):
        require_kind(model, TEXT_TO_IMAGE)
        pipe = load_pipeline(model, device)
    else:
        pipe = model
    sampler, steps = pipe.sampling_defaults(settings.sampler, settings.num_inference_steps)
    guidance = pipe.default_guidance if settings.guidance_scale is None else settings.guidance_scale
    settings = replace(settings, sampler=sampler, num_inference_steps=steps, guidance_scale=guidance)
    check_sampling(pipe, settings)
    image_size = pipe.model.config.image_size
    shapes = ShapesFeatures()
    networks = networks if networks is not None else [shapes]
    for net in networks:
        net.to(device)
    for net in networks:  # before the long work, so that a user can stop and ask for more images
        if (message := fid_sample_warning(num_images, net.feature_dim, net.recommended_images, net.name)):
            warnings.warn(message, stacklevel=2)
    predictor = AttributePredictor(next((n.module for n in networks if isinstance(n, ShapesFeatures)), shapes.module))

    reference = RealReference(heldout_shapes(num_images, image_size, phrasing=phrasing), networks, batch_size, progress)
    start = time.time()
    with read_as_written(pipe, as_written):
        images = generate_for_prompts(pipe, reference.heldout.captions, settings, batch_size, progress)
    seconds = time.time() - start
    report = score_generated(images, reference, predictor, batch_size, progress)
    report.title = f"text-to-image: {settings.describe()}"
    report.settings = {"images": num_images, "image_size": image_size, "sampler": settings.sampler,
                       "steps": settings.num_inference_steps,
                       "guidance": settings.guidance_scale, "eta": settings.eta, "seed": settings.seed,
                       "binding": settings.binding, "heldout_seed": HELDOUT_SEED, "phrasing": phrasing,
                       "generation_seconds": round(seconds, 1)}
    if settings.binding:
        report.settings["binding_candidates"] = settings.binding_candidates
    if settings.cache_interval != 1:
        report.settings["cache_interval"] = settings.cache_interval
        report.settings["cache_depth"] = settings.cache_depth
    if as_written:  # said, so that no captions_read_in_known_words does not read as "nothing needed rewriting"
        report.settings["as_written"] = True
    else:
        captions = reference.heldout.captions
        rewritten = sum(a != b for a, b in zip(pipe.model.in_known_words(captions), captions))
        if rewritten:  # captions the pipeline read with never-seen words as known ones (ldmkit.text.known_words)
            report.settings["captions_read_in_known_words"] = rewritten
    return report
