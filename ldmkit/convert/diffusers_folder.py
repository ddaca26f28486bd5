"""diffusers folders (``model_index.json`` + ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``), read and written without importing diffusers: the configs are JSON and the weights
safetensors (``.bin`` files go through ``torch.load(weights_only=True)``).

Only the Stable Diffusion text-to-image pipeline's parts are read; a safety checker or feature extractor
in the folder is ignored and not written. The scheduler config's sampling grid (``timestep_spacing``,
``steps_offset``) is the model's `Checkpoint.scheduler_grid`, and a folder written here states the grid of the model
it was written from (`scheduler_config`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ldmkit.config import ModelConfig
from ldmkit.convert.checkpoint import (
    Checkpoint, LazyTensors, no_training_weights, read_tensors, scheduler_fields, with_prediction,
)
from ldmkit.convert.infer import (
    autoencoder_from_diffusers, grid_from_scheduler, schedule_from_diffusers, text_from_diffusers, unet_from_diffusers,
)
from ldmkit.convert.infer_original import SUPPORTED, with_condition
from ldmkit.convert.layout import expected_shapes, layout_rules
from ldmkit.convert.rules import apply_to_ldmkit, apply_to_other
from ldmkit.convert.vae import SCALE_FACTOR
from ldmkit.diffusion import DEFAULT_SPACING, DIFFUSERS_SCHEDULERS, DIFFUSERS_SPACING
from ldmkit.storage import CheckpointError, atomic_path
from ldmkit.text.clip import ClipTokenizer, clip_text_config

COMPONENTS = {  # folder → weight file stems, preferred first
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}
TEXT_MODEL = "text_encoder/text_model."
DIFFUSERS_VERSION = "0.30.0"  # written into configs; any diffusers since 0.20 reads these folders


def _json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a complete diffusers folder: {path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def _component_tensors(folder: Path) -> LazyTensors:
    """The weights of one component folder: safetensors (whole, fp16 variant, or sharded), else .bin;
    memory-mapped, nothing read yet (`read_tensors`)."""
    for stem in COMPONENTS[folder.name]:
        for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bin", f"{stem}.fp16.bin"):
            if (folder / name).is_file():
                return read_tensors(folder / name)[0]
        for name in (f"{stem}.safetensors.index.json", f"{stem}.bin.index.json"):
            if (folder / name).is_file():
                shards = sorted(set(_json(folder / name).get("weight_map", {}).values()))
                return LazyTensors.union(read_tensors(folder / shard)[0] for shard in shards)
    raise CheckpointError(f"{folder} has no weights file ({COMPONENTS[folder.name][0]}.safetensors)")


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").is_file()


def read_diffusers(folder: str | Path, prediction: str | None = None, cast: torch.dtype | None = None,
                   ema: bool = True) -> Checkpoint:
    """Read a diffusers Stable Diffusion folder into ldmkit's layout. The weights are views of the files'
    memory mappings where no cast is needed; ``cast`` reads floating-point weights as that dtype (see
    `apply_to_ldmkit`). ``ema=False`` (take training weights rather than EMA ones) is a `CheckpointError`:
    a diffusers folder holds one set of UNet weights."""
    folder = Path(folder)
    if not ema:
        raise no_training_weights(str(folder), "a diffusers folder holds one set of UNet weights")
    index = _json(folder / "model_index.json")
    if "transformer" in index and "unet" not in index:
        raise CheckpointError(f"{folder}: this is a Stable Diffusion 3 or another diffusion-transformer model "
                              f"({index.get('_class_name', 'its pipeline')} has a transformer in place of a UNet), "
                              f"which ldmkit does not run; {SUPPORTED}")
    missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer") if c not in index or not (folder / c).is_dir()]
    if missing:
        raise CheckpointError(f"{folder}: the diffusers pipeline has no {', '.join(missing)} (a text-to-image SD folder has)")
    unet = unet_from_diffusers(_json(folder / "unet" / "config.json"))
    autoencoder, scale = autoencoder_from_diffusers(_json(folder / "vae" / "config.json"))
    schedule_file = folder / "scheduler" / "scheduler_config.json"
    scheduler = _json(schedule_file) if schedule_file.is_file() else {}
    diffusion = schedule_from_diffusers(scheduler)
    text_config = _json(folder / "text_encoder" / "config.json")
    try:
        tokenizer = ClipTokenizer.from_vocab_files(folder / "tokenizer", text_config.get("max_position_embeddings", 77))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'tokenizer'}: cannot read the CLIP tokenizer ({e})") from None
    text = text_from_diffusers(text_config, tokenizer.pad_id)
    f = autoencoder.downsample_factor
    sample = _json(folder / "unet" / "config.json").get("sample_size", 64)
    config = ModelConfig(
        autoencoder=autoencoder, text=text, unet=unet, diffusion=diffusion,
        image_size=(sample[0] if isinstance(sample, (list, tuple)) else sample) * f,
    )
    if prediction is not None:
        config = with_prediction(config, prediction)
    source = LazyTensors.union(
        _component_tensors(folder / component).renamed(lambda k, c=component: f"{c}/{k}") for component in COMPONENTS
    )
    # transformers 5 saves CLIPTextModel without the "text_model." prefix that Hub folders have
    bare = not any(k.startswith(TEXT_MODEL) for k in source)
    if bare:
        source = source.renamed(
            lambda k: TEXT_MODEL + k.removeprefix("text_encoder/") if k.startswith("text_encoder/") else k
        )
    shapes = expected_shapes(config)
    rules = layout_rules(config, shapes, "diffusers")
    weights, rest = apply_to_ldmkit(
        rules, source, shapes, lambda key: key.endswith("embeddings.position_ids"), str(folder), cast
    )
    weights[SCALE_FACTOR] = torch.tensor(scale, dtype=torch.float32)
    what = "Stable Diffusion 2.x" if text.kind == "openclip" else "Stable Diffusion 1.x"
    what = with_condition(f"{what} (diffusers folder)", unet, autoencoder.latent_channels)
    p = "v" if config.diffusion.prediction == "v" else "ε"
    return Checkpoint(
        config=config, weights=weights, tokenizer=tokenizer, extras=rest,
        source={"layout": "diffusers", "text_encoder_keys": "bare" if bare else "text_model"},
        description=f"{what}; {p}-prediction (scheduler config)",
        scheduler_grid=grid_from_scheduler(_with_index_class(scheduler, index)),
    )


def _diffusers_configs(config: ModelConfig, scale: float, grid: dict | None = None) -> dict[str, dict]:
    """The config.json of unet, vae and text_encoder, and the scheduler config, for ``config`` and the sampling
    grid ``grid`` (`Checkpoint.scheduler_grid`; see `scheduler_config`)."""
    u, a = config.unet, config.autoencoder
    widths = [u.model_channels * m for m in u.channel_mults]
    ae_widths = [a.base_channels * m for m in a.channel_mults]
    problems = []
    if any(w % 32 for w in widths + ae_widths):
        problems.append("diffusers normalises with 32 GroupNorm groups: every width must be a multiple of 32")
    if not u.attention_levels:
        problems.append("diffusers' UNet has cross-attention in its middle block: attention_levels must not be empty")
    if not (a.attention and a.attention_bias and a.asymmetric_downsample):
        problems.append("diffusers' AutoencoderKL needs attention, attention_bias and asymmetric_downsample on")
    if config.text.kind not in ("clip", "openclip"):
        problems.append(f"a {config.text.kind!r} text encoder has no diffusers layout")
    if u.coordinate_channels:
        problems.append("diffusers' UNet2DConditionModel has no coordinate channels")
    if problems:
        raise CheckpointError("cannot write a diffusers folder: " + "; ".join(problems))
    levels = len(widths)
    heads = u.num_heads if u.num_heads > 0 else [max(1, w // u.head_dim) for w in widths]
    unet = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": config.image_size // a.downsample_factor,
        "in_channels": u.in_channels,
        "out_channels": u.out_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if i in u.attention_levels else "DownBlock2D" for i in range(levels)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": [
            "CrossAttnUpBlock2D" if i in u.attention_levels else "UpBlock2D" for i in reversed(range(levels))
        ],
        "block_out_channels": widths,
        "layers_per_block": u.num_res_blocks,
        "transformer_layers_per_block": u.transformer_depth,
        "cross_attention_dim": u.context_dim,
        "attention_head_dim": heads,  # diffusers reads this as the number of heads
        "use_linear_projection": u.linear_projection,
        "norm_num_groups": 32,
        "norm_eps": u.norm_eps,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "downsample_padding": 1,
        "dropout": u.dropout,
    }
    vae = {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": DIFFUSERS_VERSION,
        "in_channels": a.in_channels,
        "out_channels": a.in_channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(ae_widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(ae_widths),
        "block_out_channels": ae_widths,
        "layers_per_block": a.num_res_blocks,
        "latent_channels": a.latent_channels,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": config.image_size,
        "scaling_factor": scale,
    }
    text_cfg = clip_text_config(config.text)
    text_cfg.architectures = ["CLIPTextModel"]
    text = text_cfg.to_dict()
    d = config.diffusion
    if d.schedule not in ("linear", "scaled_linear"):
        raise CheckpointError(f"cannot write a diffusers folder: schedule {d.schedule!r} has no diffusers name here")
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": scheduler_config(config, grid or {})}


def _with_index_class(scheduler: dict, index: dict) -> dict:
    """The scheduler config with the class that ``model_index.json`` names for it (``"scheduler": ["diffusers",
    "PNDMScheduler"]``), which is the one diffusers' pipeline builds, over the config's own ``_class_name``."""
    entry = index.get("scheduler")
    if scheduler and isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
        return {**scheduler, "_class_name": entry[1]}
    return scheduler


def scheduler_config(config: ModelConfig, grid: dict) -> dict:
    """The scheduler config of a model with ``config`` that samples on ``grid`` (`Checkpoint.scheduler_grid`),
    so that diffusers, and ldmkit reading the folder back, sample where and with what the model does: ``grid``'s
    scheduler class (DDIMScheduler where it names none), spacing and offset (none named: the class's own default,
    as the source's config had it). {} (each sampler's own grid: a model trained by ldmkit, a single file) has no
    diffusers name; DDIM's own is written, trailing, ldmkit's default sampler's grid. DDIM and PLMS land on ᾱ = 1
    (``set_alpha_to_one``) except on the leading grid, where they land on ᾱ_0 (`ldmkit.diffusion.samplers.grid_for`);
    PNDMScheduler is PLMS with ``skip_prk_steps`` (`scheduler_fields` states it)."""
    d = config.diffusion
    fields = scheduler_fields(grid) or {"timestep_spacing": DEFAULT_SPACING["ddim"], "steps_offset": 0}
    name = fields.pop("_class_name", "DDIMScheduler")
    spacing = fields.get("timestep_spacing", DIFFUSERS_SPACING.get(DIFFUSERS_SCHEDULERS.get(name), "leading"))
    return {
        "_class_name": name,
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": d.num_timesteps,
        "beta_schedule": d.schedule,
        "beta_start": d.beta_start,
        "beta_end": d.beta_end,
        "prediction_type": "v_prediction" if d.prediction == "v" else "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": spacing != "leading",
        **fields,
        "rescale_betas_zero_snr": d.zero_terminal_snr,
    }


def to_diffusers(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The diffusers tensors of ``ckpt``, keyed ``unet/…``, ``vae/…``, ``text_encoder/…``."""
    shapes = expected_shapes(ckpt.config)
    weights = {k: v for k, v in ckpt.weights.items() if k != SCALE_FACTOR}
    out = apply_to_other(layout_rules(ckpt.config, shapes, "diffusers"), weights, "diffusers layout")
    if ckpt.source.get("layout") == "diffusers":
        out.update(ckpt.extras)
        if ckpt.source.get("text_encoder_keys") == "bare":
            out = {"text_encoder/" + k.removeprefix(TEXT_MODEL) if k.startswith(TEXT_MODEL) else k: v
                   for k, v in out.items()}
    return out


def write_diffusers(ckpt: Checkpoint, folder: str | Path) -> Path:
    """Write ``ckpt`` as a diffusers ``StableDiffusionPipeline`` folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"--out {folder} exists and is not a folder")
    configs = _diffusers_configs(ckpt.config, float(ckpt.weights[SCALE_FACTOR]), ckpt.scheduler_grid)  # refuses first
    tensors = to_diffusers(ckpt)
    files = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
             "text_encoder": "model.safetensors"}
    for component, name in files.items():
        part = {k.split("/", 1)[1]: v.detach().contiguous().cpu() for k, v in tensors.items() if k.startswith(component + "/")}
        (folder / component).mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / component / name) as tmp:
            save_file(part, str(tmp), metadata={"format": "pt"})
    return _write_configs(configs, ckpt.tokenizer, folder)


def write_diffusers_configs(config: ModelConfig, tokenizer, scale: float, folder: str | Path,
                            grid: dict | None = None) -> Path:
    """The files of a diffusers ``StableDiffusionPipeline`` folder for ``config`` except the weights:
    ``model_index.json``, each component's config, the scheduler config (for the sampling grid ``grid``, see
    `scheduler_config`) and the tokenizer's vocabulary (what diffusers' ``from_single_file(..., config=folder)``
    reads to load a single file offline)."""
    return _write_configs(_diffusers_configs(config, scale, grid), tokenizer, Path(folder))


def _write_configs(configs: dict[str, dict], tokenizer, folder: Path) -> Path:
    for component in ("unet", "vae", "text_encoder"):
        _write_json(folder / component / "config.json", configs[component])
    _write_json(folder / "scheduler" / "scheduler_config.json", configs["scheduler"])
    tokenizer.save_vocab_files(folder / "tokenizer")
    _write_json(
        folder / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": DIFFUSERS_VERSION,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", configs["scheduler"]["_class_name"]],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        },
    )
    return folder


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
