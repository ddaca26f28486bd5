"""The `ModelConfig` parts of a diffusers folder, from its ``config.json`` files: each option either maps
to an ldmkit setting or must have the one value ldmkit implements (`UNET_FIXED`, `VAE_FIXED`)."""

from __future__ import annotations

import json
import math
import warnings

from ldmkit.config import AutoencoderConfig, DiffusionConfig, TextEncoderConfig, UNetConfig
from ldmkit.convert.infer_original import SD_SCALE_FACTOR, SUPPORTED
from ldmkit.storage import CheckpointError


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


MARKS = {  # option values that say which model, one ldmkit does not run, a config belongs to
    ("addition_embed_type", "text_time"): "an SDXL model (addition_embed_type = 'text_time': SDXL's image-size and "
                                          "pooled-text conditioning)",
}


def _check_fixed(config: dict, fixed: dict, what: str) -> None:
    """A one-line CheckpointError naming the first option of ``config`` (the config.json ``what``) that is not at
    the value ``fixed`` gives it, or, where that value marks a model ldmkit does not run (`MARKS`), saying which."""
    for key, value in fixed.items():
        if key in config and config[key] != value and not (value is None and config[key] in (None, False)):
            mark = MARKS.get((key, config[key])) if isinstance(config[key], str) else None
            if mark is not None:
                raise CheckpointError(f"{what}: this is {mark}, which ldmkit does not run; {SUPPORTED}")
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


SPACINGS = ("trailing", "leading", "linspace")  # diffusers' timestep_spacing values (ldmkit.diffusion.grids)


def grid_from_scheduler(c: dict) -> dict:
    """The sampling grid a diffusers scheduler config asks for: ``{"spacing": its timestep_spacing, or None
    where it has none (each diffusers scheduler then takes its own default), "steps_offset": n}``, and
    ``"scheduler"``: its ``_class_name`` where it names one, ``"karras": True`` for ``use_karras_sigmas``; {} for
    no config. `Pipeline.grid_options` samples with it, and `Pipeline.sampling_defaults` with the class's sampler,
    as diffusers does. A setting of the config that ldmkit's sampler for the class does not follow (PNDM's PRK
    warm-up, another solver order or type) is warned of: the images then differ from diffusers' default."""
    if not c:
        return {}
    spacing = c.get("timestep_spacing")
    if spacing is not None and spacing not in SPACINGS:
        raise CheckpointError(f"scheduler: timestep_spacing {spacing!r} is not supported; allowed: {', '.join(SPACINGS)}")
    offset = c.get("steps_offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise CheckpointError(f"scheduler: steps_offset {offset!r} must be an integer ≥ 0")
    grid = {"spacing": spacing, "steps_offset": offset}
    name = c.get("_class_name")
    if name is not None and not isinstance(name, str):
        raise CheckpointError(f"scheduler: _class_name {name!r} must be a string")
    followed = FOLLOWED.get(name, {})
    unfollowed = {key: c.get(key, CLASS_DEFAULTS.get(key, value)) for key, value in followed.items()}
    unfollowed = {key: value for key, value in unfollowed.items() if value != followed[key]}
    if unfollowed:
        ours, said = (", ".join(f"{key} {json.dumps(value)}" for key, value in settings.items())
                      for settings in (followed, unfollowed))
        warnings.warn(f"scheduler: ldmkit samples {name} with {ours}, not this config's {said}, so its images "
                      "differ from diffusers' default ones")
    if name:
        grid["scheduler"] = name
    if c.get("use_karras_sigmas"):
        grid["karras"] = True
    return grid


# The settings of a diffusers scheduler class that ldmkit's sampler for it takes as they are here (another value,
# or a class default that differs where the config names none, is warned of by `grid_from_scheduler`).
CLASS_DEFAULTS = {"skip_prk_steps": False}  # PNDMScheduler's, which SD 1.x's config overrides
FOLLOWED = {
    "PNDMScheduler": {"skip_prk_steps": True},
    "DPMSolverMultistepScheduler": {"solver_order": 2, "algorithm_type": "dpmsolver++"},
    "UniPCMultistepScheduler": {"solver_order": 2, "solver_type": "bh2", "predict_x0": True},
}
