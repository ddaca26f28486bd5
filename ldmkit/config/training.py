"""The configuration of a training run: the data, each stage's optimisation, and the `Preset` that holds
one run's whole setup (the model's parts from `ldmkit.config.model` included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ldmkit.config.model import (
    AutoencoderConfig, ConditionConfig, DiffusionConfig, TextEncoderConfig, UNetConfig,
)


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
    # "all": every word that names an object; "nouns": only the head nouns among them (TokenCompose's choice)
    words: Literal["all", "nouns"] = "all"

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
    # text.colour_lexicon "add": the share of captions whose colour names the text encoder reads as the neutral
    # word (their colour reaching the UNet through the lexicon alone), so that the UNet learns to read it there
    colour_word_dropout: float = 0.0


@dataclass(frozen=True)
class DistillConfig:
    """How `ldmkit distill` trains a consistency student from a teacher (latent consistency
    distillation, Luo et al. 2023; see `ldmkit.train.distill`). ``batch_size`` is the global batch."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-4
    # η after the warm-up: constant (LCM's), or linear / cosine decay to 0 at the run's last step
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    weight_decay: float = 0.0
    warmup_steps: int = 100
    target_decay: float = 0.95  # the target network θ⁻ ← μ θ⁻ + (1 − μ) θ
    # > 0: the student saved (and sampled in the grids) is a slow EMA of θ with this decay, not θ⁻
    ema_decay: float = 0.0
    skip: int = 20  # k: the teacher's solver step goes from t to t − k
    guidance_min: float = 1.0  # the guidance scale s is drawn uniformly from [guidance_min, guidance_max]
    guidance_max: float = 7.0
    huber_c: float = 1e-3  # pseudo-Huber distance √(‖a − b‖² + c²) − c
    student_steps: int = 4  # the student's default number of sampling steps (and its sample grids')
    # > 0: the student's own guidance scale s, written to its config (diffusion.consistency_guidance) for calls
    # that give none; 0: the pipelines' default (4)
    student_guidance: float = 0.0
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
