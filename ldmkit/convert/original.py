"""Stable Diffusion's original single-file layout (the CompVis/Stability ``LatentDiffusion`` state dict):

    model.diffusion_model.*     the UNet                  (see ldmkit.convert.unet)
    model_ema.*                 its EMA copy, names without dots; model_ema.decay, model_ema.num_updates
    first_stage_model.*         the KL autoencoder        (see ldmkit.convert.vae)
    cond_stage_model.*          the text encoder          (see ldmkit.convert.text)
    betas, alphas_cumprod, …    the schedule's buffers; scale_factor in some LDM files

Reading picks the EMA weights when the file has them (``ema=False`` takes the training weights);
the rest of the file travels in `Checkpoint.extras`, so that a model folder converted from the file can still
give the training weights (`with_training_unet`). Files written here carry the ldmkit config in
their safetensors metadata (``ldmkit_config``), so reading them back needs no inference, the words of
the training captions when the model records them (``ldmkit_known_words``: its folder's ``known_words.json``,
`ldmkit.text.known_words`), so that converting back to a folder keeps them, and the sampling grid of a model
that has one (``ldmkit_scheduler``: `Checkpoint.scheduler_grid`, from a diffusers folder's scheduler config),
so that the file draws the images its source draws.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from ldmkit.config import ConfigError, ModelConfig, from_dict, to_dict
from ldmkit.convert.checkpoint import (
    Checkpoint, grid_from_fields, no_training_weights, read_tensors, scheduler_fields, with_prediction,
)
from ldmkit.convert.infer import SD_SCALE_FACTOR, infer_original
from ldmkit.convert.layout import expected_shapes, layout_rules
from ldmkit.convert.rules import apply_to_ldmkit, apply_to_other
from ldmkit.convert.unet import ORIGINAL as UNET_PREFIX
from ldmkit.convert.unet import ema_key
from ldmkit.convert.vae import SCALE_FACTOR
from ldmkit.storage import CheckpointError, atomic_path
from ldmkit.text import pretrained_tokenizer
from ldmkit.text.known_words import KnownWords

METADATA_KEY = "ldmkit_config"
SCALE_KEY = "ldmkit_scale_factor"  # metadata: the scale factor when the file has no scale_factor tensor
KNOWN_WORDS_KEY = "ldmkit_known_words"  # metadata: the training captions' words (known_words.json)
# why a model folder `ldmkit train` wrote has no training weights for --no-ema (`with_training_unet`)
EMA_ONLY = "it holds the UNet's EMA weights only, as `ldmkit train` writes a model folder (the training weights stay " \
    "in the run's checkpoints)"
SCHEDULER_KEY = "ldmkit_scheduler"  # metadata: the sampling grid (`scheduler_fields`), where the model has one
# Buffers of the original LatentDiffusion that ldmkit recomputes from the config.
SCHEDULE_BUFFERS = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights",
}


def _passthrough(config: ModelConfig, unet_ema: bool):
    """Which unused keys of an original file are known extras rather than mistakes."""
    unused_blocks = None  # OpenCLIP resblocks from this index on are unused
    unused_text: tuple[str, ...] = ()
    if config.text.kind == "openclip":
        # SD 2 stops one block early; the blocks after it, the projection and logit scale go unused
        unused_blocks = config.text.layers
        unused_text = ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale")
    if config.text.kind == "ldm-bert":
        unused_text = ("cond_stage_model.transformer.to_logits.",)
    resblock = re.compile(r"cond_stage_model\.model\.transformer\.resblocks\.(\d+)\.")

    def known(key: str) -> bool:
        if key in SCHEDULE_BUFFERS or key == "scale_factor" or key.startswith(("model_ema.", "first_stage_model.loss.")):
            return True
        if unet_ema and key.startswith(UNET_PREFIX):
            return True  # the training weights, when the EMA copy was chosen
        if key.endswith("embeddings.position_ids"):  # an index buffer older transformers versions saved
            return True
        if key.startswith(unused_text):
            return True
        if unused_blocks is not None and (m := resblock.match(key)):
            return int(m[1]) >= unused_blocks
        return False

    return known


def read_original(
    path: str | Path,
    ema: bool = True,
    prediction: str | None = None,
    config: ModelConfig | None = None,
    cast: torch.dtype | None = None,
) -> Checkpoint:
    """Read a single ``.safetensors`` / ``.ckpt`` file in the original layout.

    The architecture comes from ``config``, else from the ``ldmkit_config`` metadata of files ldmkit
    wrote, else from the keys and shapes (`ldmkit.convert.infer`). ``prediction`` overrides ε/v.
    The weights are views of the file's memory mapping where no cast is needed (`read_tensors`);
    ``cast`` reads floating-point weights as that dtype (see `apply_to_ldmkit`).
    """
    path = Path(path)
    sd, metadata, top = read_tensors(path)
    scale = None
    if config is not None:
        description = "architecture given by the caller"
    elif METADATA_KEY in metadata:
        try:
            config = from_dict(ModelConfig, yaml.safe_load(metadata[METADATA_KEY]), "")
        except (ConfigError, yaml.YAMLError) as e:
            raise CheckpointError(f"{path}: its ldmkit_config metadata is invalid ({e})") from None
        description = "ldmkit model (config in the file's metadata)"
        if SCALE_KEY in metadata:
            scale = float(metadata[SCALE_KEY])
    else:
        step = top.get("global_step")
        config, scale, description = infer_original(sd, path, step if isinstance(step, int) else None)
    if prediction is not None:
        config = with_prediction(config, prediction)
        description += f"; prediction {prediction} (given)"

    known_words = None
    if KNOWN_WORDS_KEY in metadata:
        try:
            known_words = KnownWords.from_json(metadata[KNOWN_WORDS_KEY], f"{path}: its {KNOWN_WORDS_KEY} metadata")
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    grid = {}
    if SCHEDULER_KEY in metadata:
        grid = grid_from_fields(metadata[SCHEDULER_KEY], f"{path}: its {SCHEDULER_KEY} metadata")

    weights, rest, source = _from_original(sd, config, ema, scale, str(path), cast)
    if source["unet_weights"] == "model_ema":
        description += "; EMA weights"
    return Checkpoint(
        config=config,
        weights=weights,
        tokenizer=pretrained_tokenizer(config.text),
        extras=rest,
        source=source,
        description=description,
        scheduler_grid=grid,
        known_words=known_words,
    )


def _from_original(sd: Mapping[str, torch.Tensor], config: ModelConfig, ema: bool, scale: float | None, where: str,
                   cast: torch.dtype | None) -> tuple[dict, dict, dict]:
    """(weights, extras, source) of `Checkpoint` for the original-layout tensors ``sd`` of a model with ``config``:
    the UNet from its EMA copy when ``ema`` and ``sd`` has one, else from the training weights; the scale factor
    from ``sd``, else ``scale``, else SD's."""
    shapes = expected_shapes(config)
    first_unet = layout_rules(config, shapes, "original")[0].other[0]
    unet_ema = ema and ema_key(first_unet) in sd
    rules = layout_rules(config, shapes, "original", unet_ema)
    weights, rest = apply_to_ldmkit(rules, sd, shapes, _passthrough(config, unet_ema), where, cast)
    if "scale_factor" in rest:
        scale_tensor = rest.pop("scale_factor")
        weights[SCALE_FACTOR] = scale_tensor if cast is None else scale_tensor.to(cast)
        scale_key = "present"
    else:
        # not in the weights: from inference or ldmkit's metadata, else SD's (every LDM KL-f8 model uses it)
        weights[SCALE_FACTOR] = torch.tensor(scale if scale is not None else SD_SCALE_FACTOR, dtype=torch.float32)
        scale_key = "absent"
    source = {"layout": "original", "unet_weights": "model_ema" if unet_ema else "model", "scale_factor_key": scale_key}
    return weights, rest, source


def with_training_unet(ckpt: Checkpoint, where: str) -> Checkpoint:
    """``ckpt`` (a model folder's, `ldmkit.convert.folder.read_folder`) with the UNet's training weights instead
    of its EMA weights (``ema=False``, ``--no-ema``): what `read_original` with ``ema=False`` reads from the
    original single file the folder was converted from, whose training copy the folder keeps in its extras. A
    folder that already holds that file's training weights is returned as it is. `CheckpointError` for a folder
    with no training weights: one converted from elsewhere, or written by `ldmkit train` (its EMA weights only)."""
    if ckpt.source.get("layout") != "original":
        why = ("it was converted from a diffusers folder, which holds one set of UNet weights"
               if ckpt.source.get("layout") == "diffusers" else EMA_ONLY)
        raise no_training_weights(where, why)
    if ckpt.source.get("unet_weights") != "model_ema":
        return ckpt
    weights, rest, source = _from_original(to_original(ckpt), ckpt.config, False,
                                           float(ckpt.weights[SCALE_FACTOR]), where, None)
    return replace(ckpt, weights=weights, extras=rest, source=source,
                   description=ckpt.description + "; training weights, not the EMA copy")


def to_original(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The original-layout state dict of ``ckpt`` (with the source's extras when it came from one)."""
    from_original = ckpt.source.get("layout") == "original"
    unet_ema = from_original and ckpt.source.get("unet_weights") == "model_ema"
    shapes = expected_shapes(ckpt.config)
    rules = layout_rules(ckpt.config, shapes, "original", unet_ema)
    weights = {k: v for k, v in ckpt.weights.items() if k != SCALE_FACTOR}
    out = apply_to_other(rules, weights, "original layout")
    if not (from_original and ckpt.source.get("scale_factor_key") == "absent"):
        out["scale_factor"] = ckpt.weights[SCALE_FACTOR]
    if from_original:
        clash = sorted(set(out) & set(ckpt.extras))
        if clash:
            raise CheckpointError(f"extras clash with model weights: {clash[:5]}")
        out.update(ckpt.extras)
    return out


def write_original(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` as one original-layout ``.safetensors`` file, its ldmkit config (and known words, and sampling
    grid, where it has them) in the metadata."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"--out {path}: original-layout files are written as .safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in to_original(ckpt).items()}
    metadata = {
        "format": "pt",
        METADATA_KEY: yaml.safe_dump(to_dict(ckpt.config), sort_keys=False),
        SCALE_KEY: repr(float(ckpt.weights[SCALE_FACTOR])),
    }
    if ckpt.known_words is not None:
        metadata[KNOWN_WORDS_KEY] = ckpt.known_words.to_json()
    if ckpt.scheduler_grid:
        metadata[SCHEDULER_KEY] = json.dumps(scheduler_fields(ckpt.scheduler_grid))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
