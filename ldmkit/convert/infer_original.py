"""The `ModelConfig` of an original (CompVis/Stability) single file, from its keys and tensor shapes and
the rules in `ldmkit.convert.infer`'s docstring, or from a YAML file beside it."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from ldmkit.config import AutoencoderConfig, DiffusionConfig, ModelConfig, TextEncoderConfig, UNetConfig
from ldmkit.convert.lora_keys import split_key
from ldmkit.storage import CheckpointError

SD_SCALE_FACTOR = 0.18215
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model."
OPENCLIP = "cond_stage_model.model."
LDM_BERT = "cond_stage_model.transformer."


def _indices(keys, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over ``keys``."""
    rx = re.compile(pattern)
    return sorted({int(m[1]) for k in keys if (m := rx.match(k))})


def _need(sd: dict, key: str, what: str):
    if key not in sd:
        raise CheckpointError(f"cannot infer the {what}: the checkpoint has no {key}")
    return sd[key]


# --------------------------------------------------------------------------------------------------
# single files


def infer_unet(sd: dict, heads: dict) -> UNetConfig:
    """UNetConfig from ``model.diffusion_model.*`` keys; ``heads`` is {"num_heads": …} or {"head_dim": …}."""
    p = UNET
    conv_in = _need(sd, p + "input_blocks.0.0.weight", "UNet")
    mc, in_channels = conv_in.shape[0], conv_in.shape[1]
    out_channels = _need(sd, p + "out.2.weight", "UNet").shape[0]
    blocks = _indices(sd, re.escape(p) + r"input_blocks\.(\d+)\.")
    downs = [k for k in blocks if p + f"input_blocks.{k}.0.op.weight" in sd]
    levels = len(downs) + 1
    n = (len(blocks) - 1 - len(downs)) // levels
    if n < 1 or 1 + levels * n + len(downs) != len(blocks):
        raise CheckpointError(f"cannot infer the UNet: {len(blocks)} input blocks do not form {levels} levels")
    mults, attention = [], []
    for level in range(levels):
        first = 1 + level * (n + 1)
        width = _need(sd, p + f"input_blocks.{first}.0.out_layers.3.weight", "UNet width").shape[0]
        if width % mc:
            raise CheckpointError(f"cannot infer the UNet: level width {width} is not a multiple of {mc}")
        mults.append(width // mc)
        if p + f"input_blocks.{first}.1.norm.weight" in sd:
            attention.append(level)
    if not attention:
        raise CheckpointError("cannot infer the UNet: it has no transformer blocks (not a text-to-image model)")
    first_attn = f"{p}input_blocks.{1 + attention[0] * (n + 1)}.1."
    context_dim = _need(sd, first_attn + "transformer_blocks.0.attn2.to_k.weight", "context width").shape[1]
    depth = len(_indices(sd, re.escape(first_attn) + r"transformer_blocks\.(\d+)\."))
    linear = _need(sd, first_attn + "proj_in.weight", "UNet projection").ndim == 2
    return UNetConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=mc,
        channel_mults=tuple(mults),
        num_res_blocks=n,
        attention_levels=tuple(attention),
        head_dim=heads.get("head_dim", 64),
        num_heads=heads.get("num_heads", 0),
        transformer_depth=depth,
        context_dim=context_dim,
        linear_projection=linear,
        norm_eps=1e-5,
    )


def infer_autoencoder(sd: dict) -> AutoencoderConfig:
    """AutoencoderConfig of the SD/LDM KL autoencoder from ``first_stage_model.*`` keys."""
    p = VAE
    if p + "quantize.embedding.weight" in sd:
        raise CheckpointError("this checkpoint has a VQ first stage; only KL autoencoders (SD, LDM-KL) convert")
    conv_in = _need(sd, p + "encoder.conv_in.weight", "autoencoder")
    base, in_channels = conv_in.shape[0], conv_in.shape[1]
    levels = _indices(sd, re.escape(p) + r"encoder\.down\.(\d+)\.")
    n = len(_indices(sd, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\."))
    mults = []
    for level in levels:
        width = _need(sd, p + f"encoder.down.{level}.block.0.conv2.weight", "autoencoder width").shape[0]
        mults.append(width // base)
    latent = _need(sd, p + "post_quant_conv.weight", "latent channels").shape[0]
    z = _need(sd, p + "decoder.conv_in.weight", "latent channels").shape[1]
    if z != latent:
        raise CheckpointError(f"autoencoder z_channels {z} != embed_dim {latent}; ldmkit needs them equal")
    return AutoencoderConfig(
        kind="kl",
        in_channels=in_channels,
        base_channels=base,
        channel_mults=tuple(mults),
        num_res_blocks=n,
        latent_channels=latent,
        attention=p + "encoder.mid.attn_1.q.weight" in sd,
        attention_bias=True,
        asymmetric_downsample=True,
    )


def text_heads(width: int) -> int:
    """CLIP and OpenCLIP text towers use heads of 64 channels."""
    return max(1, width // 64) if width % 64 == 0 else 1


def infer_text(sd: dict) -> TextEncoderConfig:
    """TextEncoderConfig from ``cond_stage_model.*`` keys: CLIP (SD 1.x), OpenCLIP (SD 2.x) or the LDM's BERT."""
    if CLIP + "embeddings.token_embedding.weight" in sd:
        vocab, width = sd[CLIP + "embeddings.token_embedding.weight"].shape
        layers = len(_indices(sd, re.escape(CLIP) + r"encoder\.layers\.(\d+)\."))
        return TextEncoderConfig(
            kind="clip", vocab_size=vocab, width=width, layers=layers, heads=text_heads(width),
            max_length=_need(sd, CLIP + "embeddings.position_embedding.weight", "CLIP length").shape[0],
            ff_width=_need(sd, CLIP + "encoder.layers.0.mlp.fc1.weight", "CLIP MLP").shape[0],
            activation="quick_gelu",
        )
    if OPENCLIP + "token_embedding.weight" in sd:
        vocab, width = sd[OPENCLIP + "token_embedding.weight"].shape
        blocks = len(_indices(sd, re.escape(OPENCLIP) + r"transformer\.resblocks\.(\d+)\."))
        if blocks < 2:
            raise CheckpointError(f"OpenCLIP text model with {blocks} blocks; SD 2 runs all but the last")
        return TextEncoderConfig(
            kind="openclip", vocab_size=vocab, width=width, layers=blocks - 1, heads=text_heads(width),
            max_length=_need(sd, OPENCLIP + "positional_embedding", "OpenCLIP length").shape[0],
            ff_width=_need(sd, OPENCLIP + "transformer.resblocks.0.mlp.c_fc.weight", "OpenCLIP MLP").shape[0],
            activation="gelu",
        )
    if LDM_BERT + "token_emb.weight" in sd:
        vocab, width = sd[LDM_BERT + "token_emb.weight"].shape
        layers = len(_indices(sd, re.escape(LDM_BERT) + r"attn_layers\.layers\.(\d+)\.")) // 2
        inner = _need(sd, LDM_BERT + "attn_layers.layers.0.1.to_q.weight", "LDM text attention").shape[0]
        head_dim = 64 if inner % 64 == 0 else inner
        heads = inner // head_dim
        return TextEncoderConfig(
            kind="ldm-bert", vocab_size=vocab, width=width, layers=layers, heads=heads,
            head_dim=0 if inner == width else head_dim,
            max_length=_need(sd, LDM_BERT + "pos_emb.emb.weight", "LDM text length").shape[0],
        )
    raise CheckpointError(
        "cannot infer the text encoder: no cond_stage_model.transformer.text_model.* (CLIP), "
        "cond_stage_model.model.* (OpenCLIP) or cond_stage_model.transformer.token_emb (LDM) keys"
    )


def infer_schedule(sd: dict) -> DiffusionConfig:
    """T and β from the file's ``betas`` buffer when present; SD's scaled-linear 0.00085 … 0.012 otherwise."""
    default = DiffusionConfig(num_timesteps=1000, schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    betas = sd.get("betas")
    if betas is None or betas.ndim != 1 or len(betas) < 2:
        return default
    # half-precision files round the buffer: fp16 to 2^-11 relative, bf16 to 2^-8
    rtol = {torch.float16: 2e-3, torch.bfloat16: 8e-3}.get(betas.dtype, 1e-5)
    betas = betas.double()
    T, b0, b1 = len(betas), float(betas[0]), float(betas[-1])
    candidates = [  # the standard endpoints first, so that a rounded buffer gives the exact config
        ("scaled_linear", 0.00085, 0.012), ("linear", 0.0001, 0.02),
        ("scaled_linear", round(b0, 8), round(b1, 8)), ("linear", round(b0, 8), round(b1, 8)),
    ]
    for schedule, start, end in candidates:
        if schedule == "scaled_linear":
            values = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
        else:
            values = torch.linspace(start, end, T, dtype=torch.float64)
        if torch.allclose(betas, values, rtol=rtol, atol=1e-8):
            return DiffusionConfig(num_timesteps=T, schedule=schedule, beta_start=start, beta_end=end)
    raise CheckpointError("the checkpoint's betas are neither a linear nor a scaled-linear schedule")


def prediction_for(kind: str, name: str, global_step: int | None) -> tuple[str, str]:
    """(prediction, why) for a single file without a config saying so.

    SD 1.x and the LDM predict ε. SD 2.x comes as 512-pixel ε models ("512-base-ema", "v2-1_512-…") and
    768-pixel v models ("768-v-ema", "v2-1_768-…"): a name with "768" or a "v" word means v, "512" or
    "base" means ε; a ``global_step`` of 875000 is SD 2.0-base (diffusers' rule); otherwise v, as diffusers
    assumes for SD 2. ``--prediction`` or a YAML beside the file settle it for certain.
    """
    if kind != "openclip":
        return "epsilon", "SD 1.x and LDM models predict ε"
    lowered = Path(name).name.lower()
    if "768" in lowered or re.search(r"(^|[-_.])v([-_.]|$)", lowered):
        return "v", f"SD 2.x: the name {Path(name).name!r} marks a 768-v model"
    if "512" in lowered or "base" in lowered:
        return "epsilon", f"SD 2.x: the name {Path(name).name!r} marks a 512-base ε model"
    if global_step == 875000:
        return "epsilon", "SD 2.x: global_step 875000 is SD 2.0-base"
    return "v", "SD 2.x: assumed v-prediction (pass --prediction epsilon for a 512-base model)"


SUPPORTED = "ldmkit runs Stable Diffusion 1.x and 2.x and the LDM text-to-image model (docs/stable_diffusion.md)"


def refuse_other_models(sd: dict, path: Path) -> None:
    """A one-line CheckpointError saying what ``sd``, a single file ldmkit does not run, is, from its keys: a LoRA
    (``lora_down``/``lora_up`` or ``lora_A``/``lora_B`` pairs, as `ldmkit.convert.lora` reads them), an SDXL model
    (``conditioner.embedders.*``: its two text encoders) or a Stable Diffusion 3 model (an MMDiT transformer:
    ``model.diffusion_model.joint_blocks.*``); nothing for any other file."""
    if any((part := split_key(key)) is not None and part[1] != "alpha" for key in sd):
        raise CheckpointError(f"{path}: this is a LoRA file, not a model: give it with --lora (in Python: "
                              "pipe.load_lora_weights), and the model it adapts as --model")
    if any(key.startswith("conditioner.embedders.") for key in sd):
        raise CheckpointError(f"{path}: this is an SDXL model (conditioner.embedders.* keys: two text encoders), "
                              f"which ldmkit does not run; {SUPPORTED}")
    if any(key.startswith(UNET + "joint_blocks.") for key in sd):
        raise CheckpointError(f"{path}: this is a Stable Diffusion 3 model (an MMDiT transformer: "
                              f"{UNET}joint_blocks.* keys), which ldmkit does not run; {SUPPORTED}")


def unet_condition(unet_channels: int, latent_channels: int) -> str:
    """What a text model's UNet takes beside the latent's c channels, from its input channels: "" (nothing, a
    text-to-image UNet), "inpainting" (2c + 1: the masked image's latent and the mask, Stable Diffusion's
    inpainting layout) or "image-conditioned" (more, as SD's depth model). ldmkit converts such a model but does
    not run it (`ldmkit.model.check_unet_inputs`)."""
    if unet_channels <= latent_channels:
        return ""
    return "inpainting" if unet_channels == 2 * latent_channels + 1 else "image-conditioned"


def with_condition(name: str, unet: UNetConfig, latent_channels: int) -> str:
    """``name`` ("Stable Diffusion 1.x (CLIP text encoder)") saying, before its first parenthesis, what its UNet
    takes beside the latent where it takes more (`unet_condition`): "Stable Diffusion 1.x inpainting UNet, 9 input
    channels (CLIP text encoder)", a model that converts but that no ldmkit pipeline runs."""
    condition = unet_condition(unet.in_channels, latent_channels)
    return name.replace(" (", f" {condition} UNet, {unet.in_channels} input channels (", 1) if condition else name


def read_sidecar(path: Path) -> dict:
    """The ``model.params`` of an original-repo YAML config next to ``path``, or {}."""
    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if candidate.is_file():
            try:
                data = yaml.safe_load(candidate.read_text()) or {}
            except yaml.YAMLError as e:
                raise CheckpointError(f"{candidate} is not valid YAML: {str(e).splitlines()[0]}") from None
            params = (data.get("model") or {}).get("params") or {}
            return params if isinstance(params, dict) else {}
    return {}


def infer_original(sd: dict, path: Path, global_step: int | None = None) -> tuple[ModelConfig, float, str]:
    """(config, scale_factor, description) of an original-layout state dict read from ``path``."""
    refuse_other_models(sd, path)
    params = read_sidecar(path)
    text = infer_text(sd)
    unet_yaml = ((params.get("unet_config") or {}).get("params")) or {}
    if unet_yaml.get("num_head_channels", -1) not in (-1, None):
        heads = {"head_dim": int(unet_yaml["num_head_channels"])}
    elif unet_yaml.get("num_heads", -1) not in (-1, None):
        heads = {"num_heads": int(unet_yaml["num_heads"])}
    else:
        heads = {"head_dim": 64} if text.kind == "openclip" else {"num_heads": 8}
    unet = infer_unet(sd, heads)
    autoencoder = infer_autoencoder(sd)
    diffusion = infer_schedule(sd)
    if "timesteps" in params or "linear_start" in params:
        diffusion = replace(
            diffusion,
            num_timesteps=int(params.get("timesteps", diffusion.num_timesteps)),
            beta_start=float(params.get("linear_start", diffusion.beta_start)),
            beta_end=float(params.get("linear_end", diffusion.beta_end)),
        )
    if "parameterization" in params:
        prediction = "v" if params["parameterization"] == "v" else "epsilon"
        why = f"parameterization {params['parameterization']!r} in the YAML beside the file"
    else:
        prediction, why = prediction_for(text.kind, str(path), global_step)
    diffusion = replace(diffusion, prediction=prediction)
    if text.width != unet.context_dim:
        raise CheckpointError(f"text encoder width {text.width} != UNet context width {unet.context_dim}")
    if text.kind == "ldm-bert":
        name, size = "LDM text-to-image (KL-f8, jointly trained BERT-like Transformer)", 256
    elif text.kind == "openclip":
        name, size = "Stable Diffusion 2.x (OpenCLIP text encoder)", 768 if prediction == "v" else 512
    else:
        name, size = "Stable Diffusion 1.x (CLIP text encoder)", 512
    name = with_condition(name, unet, autoencoder.latent_channels)
    scale = float(params.get("scale_factor", SD_SCALE_FACTOR))
    config = ModelConfig(autoencoder=autoencoder, text=text, unet=unet, diffusion=diffusion, image_size=size)
    return config, scale, f"{name}; {'v' if prediction == 'v' else 'ε'}-prediction ({why})"
