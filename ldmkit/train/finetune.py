"""`ldmkit finetune`: teach a trained text-to-image model a new concept from a few captioned images.

Each step draws, for a batch of the images' latents z_0 and captions y (y → "" at rate ``cond_drop_prob``),

    t ~ p(t),  ε ~ N(0, I),  z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε,   L = ‖ε − εθ(z_t, t, τθ(y))‖²

with p uniform on {0..T−1}, or (``timestep_bias``, diffusers' ``timestep_bias_strategy``) ``multiplier`` times
as likely on the ``portion`` of the timesteps nearest t = 0 ("earlier": the low-noise steps that draw edges and
corners) or nearest T ("later": the steps that place the composition; `biased_timesteps`) — for every row, or
(``timestep_bias_scope`` "new") for the new images' rows only, the prior half's t staying uniform; v is the target
for a v-model. It trains only the part the method names, everything else frozen:

- ``lora``: adapters B A on the UNet's attention projections W_Q, W_K, W_V, W_out (``lora_targets``
  "attention+conv": and on the two 3×3 convolutions of every ResBlock, W ⋆ x + (α/r) B ⋆ (A ⋆ x), LoCon; with
  ``text_encoder_lora`` on a CLIP text encoder's projections too), W x + (α/r) B A x with B = 0 at the start
  (`ldmkit.nn.lora`); written as ``OUT/lora.safetensors`` in diffusers' (or kohya's) layout, in
  ``save_dtype``; with a ``token`` too, pivotal tuning: the new word's vectors (as textual inversion's) are
  trained with the adapters, at their own rate ``embedding_lr``, and written beside them as textual inversion
  writes them, so the concept has a word of its own for the adapters to read;
- ``textual-inversion``: the k vectors of a new word ``token`` (`ldmkit.text.inversion`), started from
  ``init_word``'s; written as ``OUT/learned_embeds.safetensors`` (diffusers) and ``OUT/NAME.safetensors`` (A1111);
- ``full``: every UNet weight; written as a model folder in ``OUT``.

The images are encoded once, at the start (the posterior's μ, σ of each; z_0 = s (μ + σ ε) with the step's
own ε, as `ldmkit.train.diffusion` draws it), so a step costs the UNet alone; with ``flip_aug`` each image's
mirror image is encoded too and drawn as one more image, captioned with "left" and "right" swapped (kohya's
``--flip_aug``, with captions that stay true). The batch order and every
random draw are functions of the step (`ldmkit.train.prior.batch_order`, `step_generator`), and a checkpoint holds
the trained tensors, the optimizer and the RNG: ``resume`` continues exactly as an uninterrupted run.
``OUT`` also gets ``log.csv``, ``samples/step_XXXXXX.png`` (the sample prompts, seed 0; step 0 is the model
before fine-tuning) and ``checkpoints/``. Prior preservation (``prior_images``: half of each batch is the model's
own drawings of ``prior_prompts``, trained toward the noise or toward the frozen model's prediction) is
`ldmkit.train.prior`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ldmkit.autoencoder import KLAutoencoder
from ldmkit.config import to_dict
from ldmkit.convert import lora as lora_files
from ldmkit.data import save_grid
from ldmkit.data.imagefolder import ImageFolderDataset, mirror_caption
from ldmkit.diffusion import diffusion_loss
from ldmkit.errors import CheckpointError, UsageError
from ldmkit.progress import tqdm
from ldmkit.storage import sha256_file
from ldmkit.model import LatentDiffusion
from ldmkit.nn import lora
from ldmkit.pipelines import preview_samples
from ldmkit.text import inversion
from ldmkit.text.known_words import KnownWords
from ldmkit.train import distributed
from ldmkit.train.checkpoint import restore_rng, resume_state, rng_state, save_checkpoint
from ldmkit.train.common import (
    LR_SCHEDULES, adamw, autocast, check_finite, check_weights_finite, learning_rate, step_generator,
)
from ldmkit.train.diffusion import draw_step
from ldmkit.train.logs import RunLog
from ldmkit.train.prior import PRIOR_LOSSES, batch_order, halves, split_loss

METHODS = ("lora", "textual-inversion", "full")
TIMESTEP_BIASES = ("none", "earlier", "later")
TIMESTEP_BIAS_SCOPES = ("all", "new")  # which rows the bias draws: every row, or the new images' (prior rows uniform)
DEFAULT_LR = {"lora": 5e-4, "textual-inversion": 5e-3, "full": 2e-5}
ADAPTER = "default"
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# settings a resumed run may change (how long, how often it logs, samples and checkpoints, how it saves)
FREE_KEYS = {"steps", "log_every", "sample_every", "checkpoint_every", "checkpoint_keep", "save_dtype"}


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run. ``lr`` None and ``alpha`` None take the defaults (`DEFAULT_LR`; α = r); 0 is refused
    (`check_config`: η = 0 trains nothing, α = 0 scales the LoRA's (α/r) B A to nothing)."""

    method: Literal["lora", "textual-inversion", "full"] = "lora"
    rank: int = 8
    alpha: float | None = None
    text_encoder_lora: bool = False  # LoRA on a CLIP text encoder's attention too
    lora_targets: Literal["attention", "attention+conv"] = "attention"  # + the ResBlocks' 3×3 convolutions (LoCon)
    save_dtype: Literal["float32", "float16"] = "float32"  # the LoRA file's tensors (float16: half the size)
    token: str = ""  # textual inversion (and LoRA's pivotal tuning): the new word, e.g. "<hexagon>"
    embedding_lr: float | None = None  # pivotal tuning: the token vectors' rate (None: textual inversion's default)
    loraplus_lr_ratio: float = 1.0  # LoRA+ (Hayou et al. 2024): the B matrices train at this multiple of the A's rate
    init_word: str = ""  # its vectors start from this word's ("" = the token without brackets)
    num_vectors: int = 1
    prompt: str = ""  # the caption of images without a sidecar .txt (or metadata.jsonl entry)
    flip_aug: bool = False  # each image also mirrored left to right, its caption's "left"/"right" swapped
    steps: int = 500
    batch_size: int = 4
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"  # η after the warm-up (`learning_rate`)
    cond_drop_prob: float = 0.1  # captions → "" at this rate, so the unconditional branch keeps up
    grad_clip: float = 1.0
    seed: int = 0
    bf16: bool = True
    log_every: int = 10
    sample_every: int = 100
    checkpoint_every: int = 100
    checkpoint_keep: int = 2
    sample_prompts: tuple[str, ...] = ()  # () = the first 4 captions
    prior_images: int = 0  # prior preservation: this many images drawn by the model itself, half of each batch
    prior_prompts: tuple[str, ...] = ()  # their captions (cycled), e.g. "a red square" for a new shape
    prior_loss: Literal["images", "model"] = "images"  # the prior half's target (`ldmkit.train.prior`)
    prior_loss_weight: float = 1.0  # λ, the prior half's weight in the loss (`ldmkit.train.prior.halves`)
    sample_steps: int = 25
    sample_guidance: float = 4.0
    layout: Literal["diffusers", "kohya"] = "diffusers"
    timestep_bias: Literal["none", "earlier", "later"] = "none"  # p(t) weighted toward one end (module docstring)
    timestep_bias_multiplier: float = 1.0
    timestep_bias_portion: float = 0.25
    timestep_bias_scope: Literal["all", "new"] = "all"  # "new": the prior half keeps uniform t (`ldmkit.train.prior`)

    @property
    def learning_rate(self) -> float:
        """η₀: ``lr``, or the method's default (`DEFAULT_LR`)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def token_learning_rate(self) -> float:
        """η₀ of the token's vectors: ``lr`` for textual inversion; for LoRA's pivotal tuning ``embedding_lr``, or
        textual inversion's default."""
        if self.method == "textual-inversion":
            return self.learning_rate
        return self.embedding_lr if self.embedding_lr is not None else DEFAULT_LR["textual-inversion"]

    @property
    def lora_alpha(self) -> float:
        """α: ``alpha``, or the rank r (α/r = 1)."""
        return self.alpha if self.alpha is not None else self.rank


def check_config(cfg: FinetuneConfig) -> None:
    """UsageError (one line) for values that cannot work together, before anything is loaded."""
    if cfg.method not in METHODS:
        raise UsageError(f"--method {cfg.method!r}; allowed: {', '.join(METHODS)}")
    if cfg.method == "textual-inversion" and not cfg.token:
        raise UsageError("--method textual-inversion needs --token, the new word to learn (e.g. \"<hexagon>\")")
    if cfg.method != "lora" and (cfg.text_encoder_lora or cfg.alpha is not None or cfg.lora_targets != "attention"
                                 or cfg.save_dtype != "float32"):
        raise UsageError("--alpha, --text-encoder, --lora-targets and --save-dtype apply to --method lora only")
    if cfg.token and cfg.method == "full":
        raise UsageError("--token applies to --method textual-inversion and lora (pivotal tuning), not full (a full "
                         "run learns from the captions as written: put the new word in them, or in --prompt)")
    if cfg.embedding_lr is not None and not (cfg.method == "lora" and cfg.token):
        raise UsageError("--embedding-lr is the rate of a LoRA run's --token vectors (pivotal tuning): it needs "
                         "--method lora and --token (textual inversion's rate is --lr)")
    if cfg.embedding_lr is not None and not (math.isfinite(cfg.embedding_lr) and cfg.embedding_lr > 0):
        raise UsageError(f"--embedding-lr {cfg.embedding_lr} trains nothing: give a rate above 0 (default "
                         f"{DEFAULT_LR['textual-inversion']:g})")
    if cfg.loraplus_lr_ratio != 1.0 and cfg.method != "lora":
        raise UsageError("--loraplus-lr-ratio sets the rate of a LoRA's B matrices: it needs --method lora")
    if not (math.isfinite(cfg.loraplus_lr_ratio) and cfg.loraplus_lr_ratio > 0):
        raise UsageError(f"--loraplus-lr-ratio {cfg.loraplus_lr_ratio}: give a number above 0 (1: B at A's rate, "
                         "the default; LoRA+ suggests 16)")
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UsageError(f"--lr {cfg.lr} trains nothing: give a learning rate above 0 (default for {cfg.method}: "
                         f"{DEFAULT_LR.get(cfg.method, DEFAULT_LR['lora']):g})")
    if cfg.alpha is not None and not (math.isfinite(cfg.alpha) and cfg.alpha > 0):
        raise UsageError(f"--alpha {cfg.alpha} scales the LoRA (α/r) B A to nothing: give α above 0 (default: the "
                         "rank r, so α/r = 1)")
    if cfg.lora_targets not in lora_files.TARGETS:
        raise UsageError(f"--lora-targets {cfg.lora_targets!r}; allowed: {', '.join(lora_files.TARGETS)}")
    if cfg.lr_scheduler not in LR_SCHEDULES:
        raise UsageError(f"--lr-scheduler {cfg.lr_scheduler!r}; allowed: {', '.join(LR_SCHEDULES)}")
    if cfg.save_dtype not in SAVE_DTYPES:
        raise UsageError(f"--save-dtype {cfg.save_dtype!r}; allowed: {', '.join(SAVE_DTYPES)}")
    if cfg.rank < 1 or cfg.num_vectors < 1 or cfg.batch_size < 1 or cfg.steps < 1:
        raise UsageError("--rank, --num-vectors, --batch-size and --steps must be at least 1")
    if cfg.prior_images < 0 or (cfg.prior_images and not cfg.prior_prompts):
        raise UsageError("--prior-images N needs --prior-prompt (the captions of the images the model draws itself)")
    if cfg.prior_loss not in PRIOR_LOSSES:
        raise UsageError(f"--prior-loss {cfg.prior_loss!r}; allowed: {', '.join(PRIOR_LOSSES)}")
    if cfg.prior_loss == "model" and (cfg.method != "lora" or not cfg.prior_images):
        raise UsageError("--prior-loss model needs --method lora and --prior-images (the frozen model is the LoRA "
                         "switched off)")
    if not (math.isfinite(cfg.prior_loss_weight) and cfg.prior_loss_weight >= 0):
        raise UsageError(f"--prior-loss-weight {cfg.prior_loss_weight}: give a number of 0 or more (default 1)")
    if cfg.prior_loss_weight != 1.0 and not cfg.prior_images:
        raise UsageError("--prior-loss-weight weighs the prior images: it needs --prior-images")
    if cfg.prior_images and cfg.batch_size < 2:
        raise UsageError(f"--prior-images needs --batch-size of at least 2 (half of each batch is prior images), "
                         f"got {cfg.batch_size}")
    if cfg.layout not in lora_files.LAYOUTS:
        raise UsageError(f"--layout {cfg.layout!r}; allowed: {', '.join(lora_files.LAYOUTS)}")
    if cfg.timestep_bias not in TIMESTEP_BIASES:
        raise UsageError(f"--timestep-bias {cfg.timestep_bias!r}; allowed: {', '.join(TIMESTEP_BIASES)}")
    if cfg.timestep_bias_scope not in TIMESTEP_BIAS_SCOPES:
        raise UsageError(f"--timestep-bias-scope {cfg.timestep_bias_scope!r}; allowed: "
                         f"{', '.join(TIMESTEP_BIAS_SCOPES)}")
    if cfg.timestep_bias_scope == "new" and (not cfg.prior_images or cfg.timestep_bias == "none"):
        raise UsageError("--timestep-bias-scope new biases the new images' t apart from the prior images': it needs "
                         "--timestep-bias and --prior-images")
    if not cfg.timestep_bias_multiplier > 0 or not 0 < cfg.timestep_bias_portion <= 1:
        raise UsageError(f"--timestep-bias-multiplier must be > 0 and --timestep-bias-portion in (0, 1]; got "
                         f"{cfg.timestep_bias_multiplier} and {cfg.timestep_bias_portion}")


def biased_timesteps(generator: torch.Generator, batch_size: int, num_timesteps: int, bias: str,
                     multiplier: float, portion: float) -> torch.Tensor:
    """int64[batch_size] timesteps drawn with p(t) ∝ w(t): w = ``multiplier`` on the ⌈portion·T⌉ timesteps
    nearest t = 0 (``bias`` "earlier") or nearest T − 1 ("later"), 1 elsewhere."""
    weights = torch.ones(num_timesteps, dtype=torch.float64)
    span = max(1, math.ceil(portion * num_timesteps))
    if bias == "earlier":
        weights[:span] = multiplier
    elif bias == "later":
        weights[-span:] = multiplier
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)


@dataclass
class Prepared:
    """Everything checked and built before the first file is written."""

    model: LatentDiffusion
    captions: list[str]
    moments: tuple[torch.Tensor, torch.Tensor | None]  # (μ, σ) of each image's posterior; (z, None) for VQ
    params: list[nn.Parameter]
    images_sha256: str = ""  # the images and captions trained on (`images_digest`), checked on resume


def images_digest(paths: list[Path], captions: list[str]) -> str:
    """sha256 of the training set as read: each image file's bytes and its caption, in the dataset's order (the
    images trained on: `prepare` leaves out those it could not read)."""
    digest = hashlib.sha256()
    for path, caption in zip(paths, captions):
        digest.update(sha256_file(path).encode())
        digest.update(hashlib.sha256(caption.encode("utf-8")).hexdigest().encode())
    return digest.hexdigest()


def read_captions(images: Path, image_size: int, cfg: FinetuneConfig) -> tuple[ImageFolderDataset, list[str]]:
    dataset = ImageFolderDataset(images, image_size)  # DataError for a missing or empty folder
    captions = [c or cfg.prompt for c in dataset.captions]
    if not all(captions):
        first = dataset.paths[captions.index("")]
        raise UsageError(f"{first} has no caption (no sidecar .txt, or an empty one): give each image a caption, "
                         "or --prompt for all that have none")
    if cfg.token:
        missing = [(p, own) for p, c, own in zip(dataset.paths, captions, dataset.captions) if cfg.token not in c]
        if missing:
            path, own = missing[0]
            remedy = (f"write the token into its caption ({own!r}: --prompt captions only images that have none)"
                      if own else f"give --prompt \"a photo of {cfg.token}\"")
            raise UsageError(f"the caption of {path} does not contain the token {cfg.token!r}; every caption must "
                             f"name it: {remedy}")
    return dataset, captions


@torch.no_grad()
def encode_images(model: LatentDiffusion, dataset: ImageFolderDataset, device: torch.device, mirror: bool = False):
    """(μ, σ) of every image's posterior (a KL autoencoder), or (E(x), None) (VQ), on ``device``; with ``mirror``
    of every image mirrored left to right (encoded as such: E(flip(x)) is not flip(E(x)))."""
    means, stds = [], []
    for start in range(0, len(dataset), 16):
        images = torch.stack([dataset[i]["images"] for i in range(start, min(start + 16, len(dataset)))]).to(device)
        if mirror:
            images = images.flip(-1)
        if isinstance(model.autoencoder, KLAutoencoder):
            posterior = model.autoencoder.posterior(images)
            means.append(posterior.mean)
            stds.append(posterior.std)
        else:
            means.append(model.autoencoder.encode(images))
    return torch.cat(means), (torch.cat(stds) if stds else None)


def prepare(model_path: Path, images: Path, cfg: FinetuneConfig, device: torch.device) -> Prepared:
    """Load the model, read and check the images and captions, add what the method trains; writes nothing."""
    check_config(cfg)
    model = LatentDiffusion.load(model_path)
    if model.config.condition.kind != "text":
        raise UsageError(f"--model {model_path} is a {model.config.condition.kind!r} model; ldmkit finetune takes "
                         "text-to-image models")
    if model.config.diffusion.consistency_steps:
        raise UsageError(f"--model {model_path} is a consistency student; fine-tune the model it was distilled from")
    if cfg.token:
        inversion.check_new_token(model, cfg.token)
    dataset, captions = read_captions(images, model.config.image_size, cfg)
    if model.known_words is not None:  # what it is taught it knows: its previews read the new words as written
        model.known_words = model.known_words.union(KnownWords.from_captions(captions))
    model.requires_grad_(False)
    torch.manual_seed(cfg.seed)  # the adapters' initial A is part of what a seed reproduces
    if cfg.method == "lora":
        targets = lora_files.training_targets(model, cfg.text_encoder_lora, cfg.lora_targets)
        lora.inject(model, targets, cfg.rank, cfg.lora_alpha, ADAPTER)
        params = lora.adapter_parameters(model, ADAPTER)
    elif cfg.method == "textual-inversion":
        params = []
    else:
        params = list(model.unet.parameters())
        model.unet.requires_grad_(True)
    if cfg.token:  # the token's vectors last: `write_result` and `param_groups` find them there
        start = inversion.initial_vectors(model, cfg.token, cfg.init_word or None, cfg.num_vectors)
        params.append(inversion.add_token(model, cfg.token, start))
    model.to(device)
    mean, std = encode_images(model, dataset, device)
    if cfg.flip_aug:  # the mirror images after the originals (the sample grids' first captions stay the images')
        mirror_mean, mirror_std = encode_images(model, dataset, device, mirror=True)
    # an unreadable image (warned of as it was met) is left out: its row holds the next readable image
    readable = [i for i, path in enumerate(dataset.paths) if path not in dataset.skipped]
    paths, captions = [dataset.paths[i] for i in readable], [captions[i] for i in readable]
    mean, std = mean[readable], (None if std is None else std[readable])
    if cfg.flip_aug:
        mean = torch.cat([mean, mirror_mean[readable]])
        std = None if std is None else torch.cat([std, mirror_std[readable]])
        captions = captions + [mirror_caption(c) for c in captions]
    return Prepared(model, captions, (mean, std), params, images_digest(paths, captions))


def _trained_state(prep: Prepared, cfg: FinetuneConfig) -> dict[str, torch.Tensor]:
    if cfg.method == "full":
        return dict(prep.model.unet.state_dict())
    return {str(i): p.detach() for i, p in enumerate(prep.params)}


def _load_trained_state(prep: Prepared, cfg: FinetuneConfig, state: dict) -> None:
    if cfg.method == "full":
        prep.model.unet.load_state_dict(state)
        return
    if len(state) != len(prep.params) or any(state[str(i)].shape != p.shape for i, p in enumerate(prep.params)):
        raise CheckpointError("the checkpoint's trained tensors do not fit this run (another model or rank?)")
    with torch.no_grad():
        for i, p in enumerate(prep.params):
            p.copy_(state[str(i)])


def check_resumable(state: dict, cfg: FinetuneConfig, model_path: Path) -> None:
    """CheckpointError listing the settings in which this run differs from the one that wrote ``state``."""
    ours = _used(to_dict(cfg))
    # older runs lack newer fields: those take their defaults
    theirs = _used(to_dict(FinetuneConfig(method=cfg.method)) | state.get("settings", {}))
    differ = [f"{k} {theirs.get(k)!r} → {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
              if k not in FREE_KEYS and _plain(theirs.get(k)) != _plain(ours.get(k))]
    if Path(str(state.get("base_model"))).resolve() != model_path.resolve():  # the same folder, however written
        differ.insert(0, f"--model {state.get('base_model')} → {model_path}")
    if differ:
        shown = "; ".join(differ[:4])
        raise CheckpointError(f"cannot resume: the checkpoint was fine-tuned with other settings ({shown}); "
                              "resume with the same options, or choose another --out")


def _used(settings: dict) -> dict:
    """``settings`` with ``lr`` and ``alpha`` as the values the run trains with: a default (None, or 0 in
    checkpoints of older versions, which meant the default) is written out (`DEFAULT_LR`; α = r for LoRA)."""
    method = settings.get("method", "lora")
    lr, alpha = settings.get("lr") or DEFAULT_LR.get(method), settings.get("alpha")
    alpha = (alpha or settings.get("rank", 8)) if method == "lora" else None
    return {**settings, "lr": None if lr is None else float(lr), "alpha": None if alpha is None else float(alpha)}


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def write_result(prep: Prepared, cfg: FinetuneConfig, out: Path, model_path: Path, step: int) -> list[Path]:
    """The run's product: the LoRA file, the embedding files, or the model folder."""
    model = prep.model
    embeddings = inversion.save_embedding(out, cfg.token, prep.params[-1]) if cfg.token else []
    if cfg.method == "lora":
        meta = {"ldmkit.base_model": str(model_path), "ldmkit.steps": str(step),
                lora_files.WORDS_KEY: KnownWords.from_captions(prep.captions).to_json()}
        return [lora_files.save_lora(model, out / "lora.safetensors", ADAPTER, cfg.layout, meta,
                                     SAVE_DTYPES[cfg.save_dtype]), *embeddings]
    if cfg.method == "textual-inversion":
        return embeddings
    model.save(out)
    return [out / "config.yaml"]


def finetune(model_path: str | Path, images: str | Path, out: str | Path, cfg: FinetuneConfig,
             resume: bool | str | Path = False, device: str = "auto", progress: bool = True) -> list[Path]:
    """Fine-tune ``model_path`` on the captioned ``images`` into ``out`` (see the module docstring); returns the
    files of the result. ``resume``: as `ldmkit.train.diffusion.train_diffusion`'s."""
    model_path, images, out = Path(model_path), Path(images), Path(out)
    check_config(cfg)
    with distributed.process_group(device) as ctx:
        if ctx.world_size > 1:
            raise UsageError("ldmkit finetune runs in one process; launch it without torchrun")
        state = resume_state(resume, out, "finetune", ctx)
        if state is not None:
            check_resumable(state, cfg, model_path)
        prep = prepare(model_path, images, cfg, ctx.device)
        if state is not None and state.get("images_sha256", prep.images_sha256) != prep.images_sha256:
            raise CheckpointError(f"cannot resume: --images {images} holds other images or captions than the run "
                                  "was fine-tuned on; resume with the same images, or choose another --out")
        return _train(prep, cfg, model_path, out, state, ctx.device, progress)


def _train(prep: Prepared, cfg: FinetuneConfig, model_path: Path, out: Path, state: dict | None,
           dev: torch.device, progress: bool) -> list[Path]:
    model = prep.model
    total = cfg.steps
    start = int(state["step"]) if state is not None else 0
    if start > total:
        raise CheckpointError(f"the checkpoint is at step {start}, beyond --steps {total}")
    groups = param_groups(prep.params, cfg)
    ratios = [group["lr_ratio"] for group in groups]  # kept here: a checkpoint's groups replace the optimizer's
    opt = adamw(groups, cfg.learning_rate, cfg.weight_decay)
    if state is not None:
        try:
            _load_trained_state(prep, cfg, state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint does not fit this run: {str(e).splitlines()[0]}") from None
        restore_rng(state.get("rng", {}))
    new_images = len(prep.captions)
    if cfg.prior_images:  # before anything is trained: the images of the model as it was
        prep.captions = prep.captions + prior_preservation(prep, cfg, out, state is None, dev)
    mean, std = prep.moments
    posterior = std is not None
    scale = model.autoencoder.scale_factor
    prompts = list(cfg.sample_prompts) or list(dict.fromkeys(prep.captions))[:4]
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, ["loss", "lr"], start, enabled=True, tensorboard=False)
    text_trained = bool(cfg.token) or cfg.text_encoder_lora

    def write_samples(step: int) -> None:
        images = preview_samples(model, dev, prompts, None, cfg.sample_steps, cfg.sample_guidance)
        save_grid(images, out / "samples" / f"step_{step:06d}.png", nrow=4)

    def checkpoint(step: int) -> list[Path]:
        check_weights_finite(prep.params, step)
        written = write_result(prep, cfg, out, model_path, step)
        save_checkpoint(out, {"kind": "finetune", "step": step, "model": _trained_state(prep, cfg),
                              "optimizer": opt.state_dict(), "rng": rng_state(), "settings": to_dict(cfg),
                              "base_model": str(model_path), "images_sha256": prep.images_sha256},
                        cfg.checkpoint_keep)
        return written

    if start == 0:
        write_samples(0)  # the model before fine-tuning, for comparison
    model.unet.train()
    sampler = batch_order(new_images, cfg.prior_images, cfg.batch_size, cfg.seed, start, total)
    new_rows = cfg.batch_size - cfg.batch_size // 2
    prediction = model.config.diffusion.prediction
    bar = tqdm(total=total, initial=start, desc=f"finetune ({cfg.method})", disable=not progress, dynamic_ncols=True)
    latent_shape = tuple(mean.shape[1:])
    try:
        for step, items in zip(range(start, total), sampler):
            index = torch.tensor([i for _, i in items], device=mean.device)
            generator = step_generator(cfg.seed, step)
            draws = draw_step(generator, cfg.batch_size, latent_shape, model.config.diffusion.num_timesteps,
                              cfg.cond_drop_prob, posterior)
            if cfg.timestep_bias != "none":  # drawn after the others, which stay as an unbiased run's
                biased = biased_timesteps(generator, cfg.batch_size, model.config.diffusion.num_timesteps,
                                          cfg.timestep_bias, cfg.timestep_bias_multiplier, cfg.timestep_bias_portion)
                if cfg.timestep_bias_scope == "new":  # `check_config`: only with prior images
                    biased = torch.cat([biased[:new_rows], draws.t[new_rows:]])
                draws = dataclasses.replace(draws, t=biased)
            lr = learning_rate(step, cfg.learning_rate, cfg.warmup_steps, cfg.lr_scheduler, total)
            for group, ratio in zip(opt.param_groups, ratios):
                group["lr"] = lr * ratio
            opt.zero_grad(set_to_none=True)
            z = mean[index] + std[index] * draws.posterior_noise.to(dev) if posterior else mean[index]
            captions = [prep.captions[i] if keep else "" for (_, i), keep in zip(items, draws.keep_caption.tolist())]
            with autocast(dev, cfg.bf16):
                with torch.set_grad_enabled(text_trained):
                    context = model.encode_prompts(captions)
                if cfg.prior_loss == "model":
                    loss = split_loss(model.unet, ADAPTER, z * scale, draws.t.to(dev), draws.noise.to(dev), context,
                                      model.schedule, prediction, new_rows, cfg.prior_loss_weight)
                else:
                    weighted = cfg.prior_loss_weight != 1.0
                    loss = diffusion_loss(lambda z_t, t: model.unet(z_t, t, context), z * scale, model.schedule,
                                          prediction, t=draws.t.to(dev), noise=draws.noise.to(dev),
                                          reduction="none" if weighted else "mean")
                    if weighted:
                        loss = halves(loss, new_rows, cfg.prior_loss_weight)
            loss.backward()
            loss_value = loss.item()
            check_finite(loss_value, step)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(prep.params, cfg.grad_clip)
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            done = step + 1
            if done % cfg.log_every == 0 or done == total:
                log.write(done, {"loss": loss_value, "lr": lr})
            if done % cfg.sample_every == 0 or done == total:
                write_samples(done)
                model.unet.train()
            if done % cfg.checkpoint_every == 0 and done < total:
                checkpoint(done)
        bar.close()
        return checkpoint(total)
    finally:
        log.close()


def param_groups(params: list[nn.Parameter], cfg: FinetuneConfig) -> list[dict]:
    """The optimizer's groups, each with ``lr_ratio``, its rate over ``cfg.learning_rate`` (the schedule scales
    them alike). A LoRA run's ``params`` are A₁, B₁, A₂, B₂, … (`lora.adapter_parameters`), then a pivotal-tuning
    run's token vectors: the A's train at the run's rate η, the B's at ``cfg.loraplus_lr_ratio`` · η (LoRA+;
    1 by default), the token vectors at ``cfg.token_learning_rate``."""
    if cfg.method != "lora":
        return [{"params": params, "lr_ratio": 1.0}]
    adapters = params[:-1] if cfg.token else params
    if cfg.loraplus_lr_ratio == 1.0:
        groups = [{"params": adapters, "lr_ratio": 1.0}]
    else:
        groups = [{"params": adapters[0::2], "lr_ratio": 1.0},
                  {"params": adapters[1::2], "lr_ratio": cfg.loraplus_lr_ratio}]
    if cfg.token:
        groups.append({"params": params[-1:], "lr_ratio": cfg.token_learning_rate / cfg.learning_rate})
    return groups


def settings_from(cfg: FinetuneConfig, **changes) -> FinetuneConfig:
    """``cfg`` with ``changes`` (None values ignored): how the CLI applies its options."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


PRIOR_DIR = "prior"


def prior_preservation(prep: Prepared, cfg: FinetuneConfig, out: Path, fresh: bool, dev: torch.device) -> list[str]:
    """DreamBooth's prior preservation: ``cfg.prior_images`` images of ``cfg.prior_prompts`` (cycled) drawn by the
    model before fine-tuning (in batches of 16, seed 0), written to ``OUT/prior/`` with sidecar captions by a fresh run
    and read back from there by a resumed one (so both train on the same pixels), then encoded and appended to
    ``prep.moments``; returns their captions. Training on them beside the new images keeps what the model drew
    for those prompts (what it would otherwise forget)."""
    folder = out / PRIOR_DIR
    if fresh:
        prompts = [cfg.prior_prompts[k % len(cfg.prior_prompts)] for k in range(cfg.prior_images)]
        for start in range(0, len(prompts), 16):  # one batch of up to 16, its own noise per image
            images = preview_samples(prep.model, dev, prompts[start:start + 16], None, cfg.sample_steps,
                                     cfg.sample_guidance)
            for k, image in enumerate(images, start):
                save_grid(image[None], folder / f"{k:05d}.png", nrow=1, padding=0)
                (folder / f"{k:05d}.txt").write_text(prompts[k], encoding="utf-8")
    dataset = ImageFolderDataset(folder, prep.model.config.image_size)
    if len(dataset) != cfg.prior_images:
        raise CheckpointError(f"{folder} holds {len(dataset)} prior images, the run {cfg.prior_images}: it was changed")
    mean, std = encode_images(prep.model, dataset, dev)
    old_mean, old_std = prep.moments
    prep.moments = (torch.cat([old_mean, mean]), None if old_std is None else torch.cat([old_std, std]))
    return list(dataset.captions)
