"""Measuring models: FID, KID, IS, PSNR, SSIM, prompt accuracy on shapes, and the two evaluations
built from them (`evaluate_autoencoder`, `evaluate_generation`). See docs/evaluation.md.

Every number computed on network features is reported with the network's name ("FID (shapes-cnn)",
"FID (inception-v3)"): the default network is the project's own shapes judge (`ShapesNet`,
shipped in ``weights/``), Inception-v3 is used only from a local weights file.
"""

from ldmkit.eval.attributes import AttributePredictor
from ldmkit.eval.autoencoder import evaluate_autoencoder
from ldmkit.eval.features import FeatureNetwork, InceptionV3Features, ShapesFeatures, extract
from ldmkit.eval.generation import GenerationSettings, SamplerSettings, evaluate_generation
from ldmkit.eval.heldout import HELDOUT_SEED, heldout_shapes
from ldmkit.eval.metrics import (
    MeanStd, feature_statistics, fid, fid_sample_warning, frechet_distance, inception_score, kid, psnr, ssim,
)
from ldmkit.eval.prompt_accuracy import PromptAccuracy, prompt_accuracy, score_prompt
from ldmkit.eval.report import EvalReport, Metric
from ldmkit.eval.shapes_net import ShapesNet, load_shapes_net

__all__ = [
    "AttributePredictor",
    "EvalReport",
    "FeatureNetwork",
    "GenerationSettings",
    "HELDOUT_SEED",
    "InceptionV3Features",
    "MeanStd",
    "Metric",
    "PromptAccuracy",
    "SamplerSettings",
    "ShapesFeatures",
    "ShapesNet",
    "evaluate_autoencoder",
    "evaluate_generation",
    "extract",
    "feature_statistics",
    "fid",
    "fid_sample_warning",
    "frechet_distance",
    "heldout_shapes",
    "inception_score",
    "kid",
    "load_shapes_net",
    "prompt_accuracy",
    "psnr",
    "score_prompt",
    "ssim",
]
