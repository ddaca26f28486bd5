"""Architecture inference: the `ModelConfig` of a checkpoint from its keys and tensor shapes (original
single files) or from its ``config.json`` files (diffusers folders).

What the weights say: every width, level count, block count, where the transformer blocks are, conv
or linear projections, context width, text-model depth and width, autoencoder layout. What they do not
say, and the rules used instead:

- attention heads: SD 1.x and the LDM use 8 heads per UNet level, SD 2.x heads of 64 channels (an
  OpenCLIP text encoder marks SD 2.x); text models use heads of 64 channels (CLIP ViT-L/14: 12,
  OpenCLIP ViT-H/14: 16), one head when narrower; the LDM's BERT 8 heads of 64;
- GroupNorm eps 1e-5 in the UNet's ResBlocks (PyTorch's default, which the original code keeps);
- SD 2.x uses the penultimate OpenCLIP block: all resblocks but the last run;
- ε- or v-prediction (SD 2.x only; see `prediction_for`), image size 512 (SD 1.x, SD 2.x ε), 768
  (SD 2.x v), 256 (LDM text-to-image);
- the noise schedule: scaled-linear 0.00085 … 0.012 over T = 1000 steps, checked against the file's
  ``betas`` buffer when it has one (a linear schedule there is recognised).

A YAML file next to a single file (``model.yaml`` beside ``model.safetensors``, in the original repo's
config layout) overrides these rules where it sets ``parameterization``, ``scale_factor``,
``linear_start``/``linear_end``/``timesteps``, ``num_heads``/``num_head_channels``.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from ldmkit.config import AutoencoderConfig, DiffusionConfig, ModelConfig, TextEncoderConfig, UNetConfig
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
    scale = float(params.get("scale_factor", SD_SCALE_FACTOR))
    config = ModelConfig(autoencoder=autoencoder, text=text, unet=unet, diffusion=diffusion, image_size=size)
    return config, scale, f"{name}; {'v' if prediction == 'v' else 'ε'}-prediction ({why})"


# --------------------------------------------------------------------------------------------------
# diffusers folders

UNET_FIXED = {  # diffusers UNet2DConditionModel options ldmkit implements only at these values
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "center_input_sample": False,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dual_cross_attention": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "time_cond_proj_dim": None,
    "encoder_hid_dim": None,
    "attention_type": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "cross_attention_norm": None,
    "num_class_embeds": None,
}
VAE_FIXED = {
    "act_fn": "silu",
    "norm_num_groups": 32,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
}


def _check_fixed(config: dict, fixed: dict, what: str) -> None:
    for key, value in fixed.items():
        if key in config and config[key] != value and not (value is None and config[key] in (None, False)):
            raise CheckpointError(f"{what}: {key} = {config[key]!r} is not supported (ldmkit implements {value!r})")


def _per_level(value, levels: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise CheckpointError(f"{what} has {len(value)} entries for {levels} levels")
        return list(value)
    return [value] * levels


def unet_from_diffusers(c: dict) -> UNetConfig:
    """UNetConfig of a diffusers ``UNet2DConditionModel`` config.json."""
    _check_fixed(c, UNET_FIXED, "unet/config.json")
    if c.get("only_cross_attention") not in (None, False) and c.get("only_cross_attention") != [False] * len(
        c["block_out_channels"]
    ):
        raise CheckpointError("unet/config.json: only_cross_attention is not supported")
    widths = list(c["block_out_channels"])
    levels = len(widths)
    mc = widths[0]
    if any(w % mc for w in widths):
        raise CheckpointError(f"unet/config.json: block_out_channels {widths} are not multiples of {widths[0]}")
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    attention = [i for i, t in enumerate(down) if t == "CrossAttnDownBlock2D"]
    if any(t not in ("CrossAttnDownBlock2D", "DownBlock2D") for t in down):
        raise CheckpointError(f"unet/config.json: down_block_types {down} are not supported")
    expected_up = ["CrossAttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(levels))]
    if up != expected_up:
        raise CheckpointError(f"unet/config.json: up_block_types {up} do not mirror the down blocks {down}")
    if c.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise CheckpointError(f"unet/config.json: mid_block_type {c.get('mid_block_type')!r} is not supported")
    n = _per_level(c.get("layers_per_block", 2), levels, "layers_per_block")
    if len(set(n)) != 1:
        raise CheckpointError("unet/config.json: a different layers_per_block per level is not supported")
    depth = _per_level(c.get("transformer_layers_per_block", 1), levels, "transformer_layers_per_block")
    if len(set(depth)) != 1:
        raise CheckpointError("unet/config.json: a different transformer depth per level is not supported")
    # diffusers' "attention_head_dim" is, for these UNets, the number of heads (a historical misnomer)
    heads = _per_level(c.get("num_attention_heads") or c.get("attention_head_dim", 8), levels, "attention heads")
    used = [(widths[i], heads[i]) for i in attention] + [(widths[-1], heads[-1])]  # + the middle block
    if len({h for _, h in used}) == 1:
        head_cfg = {"num_heads": used[0][1], "head_dim": 64}  # head_dim unused with num_heads (as inferred from files)
    elif len({w // h for w, h in used}) == 1 and all(w % h == 0 for w, h in used):
        head_cfg = {"num_heads": 0, "head_dim": used[0][0] // used[0][1]}
    else:
        raise CheckpointError(f"unet/config.json: heads {heads} are neither a fixed count nor a fixed width")
    cross = c.get("cross_attention_dim", 1280)
    if isinstance(cross, (list, tuple)):
        if len(set(cross)) != 1:
            raise CheckpointError("unet/config.json: a different cross_attention_dim per level is not supported")
        cross = cross[0]
    return UNetConfig(
        in_channels=c.get("in_channels", 4),
        out_channels=c.get("out_channels", 4),
        model_channels=mc,
        channel_mults=tuple(w // mc for w in widths),
        num_res_blocks=n[0],
        attention_levels=tuple(attention),
        transformer_depth=depth[0],
        context_dim=cross,
        linear_projection=bool(c.get("use_linear_projection", False)),
        norm_eps=float(c.get("norm_eps", 1e-5)),
        **head_cfg,
    )


def autoencoder_from_diffusers(c: dict) -> tuple[AutoencoderConfig, float]:
    """(AutoencoderConfig, scaling_factor) of a diffusers ``AutoencoderKL`` config.json."""
    _check_fixed(c, VAE_FIXED, "vae/config.json")
    widths = list(c["block_out_channels"])
    if any(t != "DownEncoderBlock2D" for t in c["down_block_types"]) or any(
        t != "UpDecoderBlock2D" for t in c["up_block_types"]
    ):
        raise CheckpointError("vae/config.json: only DownEncoderBlock2D / UpDecoderBlock2D autoencoders are supported")
    if c.get("out_channels", 3) != c.get("in_channels", 3):
        raise CheckpointError("vae/config.json: in_channels and out_channels must be equal")
    config = AutoencoderConfig(
        kind="kl",
        in_channels=c.get("in_channels", 3),
        base_channels=widths[0],
        channel_mults=tuple(w // widths[0] for w in widths),
        num_res_blocks=c.get("layers_per_block", 1),
        latent_channels=c.get("latent_channels", 4),
        attention=True,
        attention_bias=True,
        asymmetric_downsample=True,
    )
    return config, float(c.get("scaling_factor", SD_SCALE_FACTOR))


def text_from_diffusers(c: dict, pad_id: int) -> TextEncoderConfig:
    """TextEncoderConfig of a transformers ``CLIPTextModel`` config.json; ``pad_id`` 0 marks OpenCLIP."""
    archs = c.get("architectures") or ["CLIPTextModel"]
    if c.get("model_type", "clip_text_model") != "clip_text_model" or archs[0] != "CLIPTextModel":
        raise CheckpointError(f"text_encoder/config.json: {archs[0]} is not supported (CLIPTextModel is)")
    if not math.isclose(float(c.get("layer_norm_eps", 1e-5)), 1e-5):
        raise CheckpointError("text_encoder/config.json: layer_norm_eps other than 1e-5 is not supported")
    return TextEncoderConfig(
        kind="openclip" if pad_id == 0 else "clip",
        vocab_size=c.get("vocab_size", 49408),
        width=c.get("hidden_size", 512),
        layers=c.get("num_hidden_layers", 12),
        heads=c.get("num_attention_heads", 8),
        max_length=c.get("max_position_embeddings", 77),
        ff_width=c.get("intermediate_size", 2048),
        activation=c.get("hidden_act", "quick_gelu"),
    )


def schedule_from_diffusers(c: dict) -> DiffusionConfig:
    schedule = c.get("beta_schedule", "scaled_linear")
    if schedule not in ("linear", "scaled_linear"):
        raise CheckpointError(f"scheduler: beta_schedule {schedule!r} is not supported")
    if c.get("trained_betas") is not None:
        raise CheckpointError("scheduler: trained_betas are not supported")
    prediction = c.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise CheckpointError(f"scheduler: prediction_type {prediction!r} is not supported")
    return DiffusionConfig(
        num_timesteps=c.get("num_train_timesteps", 1000),
        schedule=schedule,
        beta_start=float(c.get("beta_start", 0.00085)),
        beta_end=float(c.get("beta_end", 0.012)),
        prediction="v" if prediction == "v_prediction" else "epsilon",
        zero_terminal_snr=bool(c.get("rescale_betas_zero_snr", False)),
    )
