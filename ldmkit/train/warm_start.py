"""Fine-tuning: start a new LDM from a trained model's weights (``ldmkit train --init MODEL``).

What may change between the two models is what leaves every weight's meaning in place or lets a new
one start at zero: the prediction target (ε → v), the noise schedule (zero terminal SNR), and new input
channels at ``conv_in``. The UNet's input is cat(z_t, c, coordinates): z_t, the concatenated image
condition c of the model's condition kind, then the x/y maps of ``unet.coordinate_channels``. Each part
the trained model also had keeps its kernel slice; a new part starts from zero weights, so at the first
step the new model computes exactly what the trained one did (SD's inpainting model starts this way).

Everything else — the autoencoder, the widths and layout of the UNet, the prompt model and its
vocabulary (or the class list) — must be the trained model's.
"""

from __future__ import annotations

import torch

from ldmkit.model import LatentDiffusion
from ldmkit.storage import CheckpointError, first_keys


def input_parts(model: LatentDiffusion) -> list[tuple[str, int]]:
    """The UNet's input channels in order, as (part, channel count): z_t, the condition, coordinates."""
    config = model.config
    latent = model.autoencoder.latent_channels
    parts = [("z_t", latent)]
    extra = config.condition.concat_channels(latent)
    if extra:
        parts.append((f"{config.condition.kind} condition", extra))
    if config.unet.coordinate_channels:
        parts.append(("coordinates", 2))
    return parts


def conv_in_weight(old: torch.Tensor, old_parts: list[tuple[str, int]], new_parts: list[tuple[str, int]]) -> torch.Tensor:
    """conv_in's kernel for ``new_parts`` from one for ``old_parts``: the slices of shared parts copied,
    new parts zero. W[:, i] multiplies input channel i."""
    slices, start = {}, 0
    for name, count in old_parts:
        slices[name] = (start, count)
        start += count
    pieces = []
    for name, count in new_parts:
        if name in slices and slices[name][1] == count:
            begin, _ = slices[name]
            pieces.append(old[:, begin:begin + count])
        else:
            pieces.append(old.new_zeros(old.shape[0], count, *old.shape[2:]))
    return torch.cat(pieces, dim=1)


def _first_mismatches(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor], what: str) -> str:
    missing = [k for k in new if k not in old]
    unexpected = [k for k in old if k not in new]
    shapes = [f"{k} is {tuple(old[k].shape)} there, {tuple(v.shape)} here" for k, v in new.items()
              if k in old and old[k].shape != v.shape]
    problems = ([f"missing {first_keys(missing)}"] if missing else []) + \
               ([f"unexpected {first_keys(unexpected)}"] if unexpected else []) + \
               ([f"wrong shapes: {first_keys(shapes)}"] if shapes else [])
    return f"{what}: " + "; ".join(problems) if problems else ""


def warm_start(model: LatentDiffusion, source: LatentDiffusion, name: str = "the --init model") -> None:
    """Copy ``source``'s prompt model (text encoder or class embedding) and UNet into ``model`` in place,
    conv_in mapped part by part (`conv_in_weight`). A `CheckpointError` names the first parts that
    differ when the two do not fit."""
    if model.config.condition.uses_text != source.config.condition.uses_text or \
            model.config.condition.classes != source.config.condition.classes:
        raise CheckpointError(
            f"{name} is a {source.config.condition.kind!r} model with "
            + (f"classes {list(source.config.condition.classes)}" if not source.config.condition.uses_text
               else "a text encoder")
            + "; this preset needs the same prompt model"
            + ("" if model.config.condition.uses_text else f" (classes {list(model.config.condition.classes)})")
        )
    ae_new, ae_old = model.autoencoder.state_dict(), source.autoencoder.state_dict()  # equal up to fp16 storage
    if ae_new.keys() != ae_old.keys() or any(
            not torch.allclose(ae_new[k].float(), ae_old[k].float(), rtol=1e-3, atol=1e-6) for k in ae_new):
        raise CheckpointError(f"{name} was trained on another autoencoder than --autoencoder; "
                              "fine-tune on the autoencoder the model was trained with")
    prompt_new = model.text_encoder if model.text_encoder is not None else model.class_embedding
    prompt_old = source.text_encoder if source.text_encoder is not None else source.class_embedding
    unet = source.unet.state_dict()
    unet["conv_in.weight"] = conv_in_weight(unet["conv_in.weight"], input_parts(source), input_parts(model))
    problems = [p for p in (
        _first_mismatches(prompt_new.state_dict(), prompt_old.state_dict(), "prompt model"),
        _first_mismatches(model.unet.state_dict(), unet, "unet"),
    ) if p]
    if problems:
        raise CheckpointError(f"{name} does not fit this preset ({'; '.join(problems)})")
    prompt_new.load_state_dict(prompt_old.state_dict())
    model.unet.load_state_dict(unet)
