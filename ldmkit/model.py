"""The latent diffusion model as one object: frozen autoencoder, prompt model, UNet and schedule.

A model folder (written by `ldmkit train`) holds::

    config.yaml                 ModelConfig
    autoencoder.safetensors     E, D and scale_factor (frozen); absent for a pixel-space model
                                (``autoencoder.kind: identity``: z = x, no weights)
    text_encoder.safetensors    τθ (EMA weights; empty for the frozen MiniLM, which its package provides)
    unet.safetensors            εθ (EMA weights)
    tokenizer.json              the vocabulary (trained on the captions, or the pretrained encoder's)
    known_words.json            the words of the training captions (`ldmkit.text.known_words`; optional)

A class-conditional model (``condition.kind: class``) has ``class_embedding.safetensors`` (τθ: the
class table, EMA weights) in place of the text encoder and tokenizer.

`LatentDiffusion.load` also reads Stable Diffusion single files and diffusers folders (`ldmkit.convert`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from ldmkit.autoencoder import build_autoencoder, has_weights
from ldmkit.condition import ClassEmbedding, class_index, concat_condition
from ldmkit.config import ModelConfig
from ldmkit.convert import detect_format, read_checkpoint
from ldmkit.convert.checkpoint import with_prediction
from ldmkit.convert.folder import read_scheduler_grid, write_scheduler_grid
from ldmkit.convert.infer_original import unet_condition
from ldmkit.convert.meta import assign_weights, empty_parameters
from ldmkit.device import store_for_autocast
from ldmkit.diffusion import NoiseSchedule, make_schedule
from ldmkit.nn.unet import UNet
from ldmkit.storage import CheckpointError, load_config, load_weights, save_config, save_weights
from ldmkit.text import PromptTokenizer, build_text_encoder, load_tokenizer, pretrained_tokenizer
from ldmkit.text.colour_words import colour_context
from ldmkit.text.known_words import FILE as KNOWN_WORDS, KnownWords
from ldmkit.text.wordnet import default_wordnet
from ldmkit.errors import ConfigError, UsageError


class LatentDiffusion(nn.Module):
    """E, D (frozen) + τθ + εθ + the noise schedule, and the conversions between their spaces.

    τθ is ``text_encoder`` (with ``tokenizer``) for every condition kind but "class", whose τθ is
    ``class_embedding``; the other is None.
    """

    def __init__(self, config: ModelConfig, tokenizer=None, autoencoder: nn.Module | None = None):
        """``tokenizer``: the `PromptTokenizer` of a "transformer" text encoder; the pretrained kinds
        (CLIP, MiniLM, LDM-BERT) bring their own vocabulary, built here when ``tokenizer`` is None or a
        `PromptTokenizer` (whose ids the pretrained text encoder could not read). A class model needs none."""
        super().__init__()
        # A diffusers folder's timestep spacing and offset, which its samples default to (`grid_from_scheduler`).
        self.scheduler_grid: dict = {}
        uses_text = config.condition.uses_text
        if uses_text and config.text.width != config.unet.context_dim:
            raise ConfigError(
                f"text.width ({config.text.width}) must equal unet.context_dim ({config.unet.context_dim})"
            )
        if not uses_text:
            tokenizer = None
        elif config.text.kind != "transformer" and (tokenizer is None or isinstance(tokenizer, PromptTokenizer)):
            tokenizer = pretrained_tokenizer(config.text)
        if uses_text and tokenizer is None:
            raise ValueError("a 'transformer' text encoder needs the PromptTokenizer trained on its captions")
        self.config = config
        self.tokenizer = tokenizer
        self.autoencoder = autoencoder if autoencoder is not None else build_autoencoder(config.autoencoder)
        self.autoencoder.requires_grad_(False).eval()
        self.text_encoder = build_text_encoder(config.text) if uses_text else None
        self.class_embedding = (
            None if uses_text else ClassEmbedding(len(config.condition.classes), config.unet.context_dim)
        )
        self.unet = UNet(config.unet)
        self.schedule: NoiseSchedule = make_schedule(config.diffusion)
        self.autocast_dtype: torch.dtype | None = None  # set by `store_for_autocast`
        # the words of the training captions (`ldmkit.text.known_words`; `ldmkit train` records them)
        self.known_words: KnownWords | None = None
        self._warned_wordnet = False
        # the words each loaded LoRA was trained on (None: its file does not say; `ldmkit.pipelines.adapters`), and
        # what taught it words no file lists ("fused", "embedding")
        self.adapter_words: dict[str, KnownWords | None] = {}
        self.taught: set[str] = set()
        self._known_with_adapters: tuple[tuple, KnownWords | None] = ((), None)

    @property
    def latent_factor(self) -> int:
        """f times the UNet's own downsampling: an image side over its UNet's lowest level's side, for sides that
        are multiples of it (`size_multiple` is what sides must be multiples of)."""
        return self.autoencoder.downsample_factor * self.unet.downsample_factor

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the autoencoder's factor f. The UNet takes a latent of any size
        (each level going up is upsampled to its skip's size, as diffusers' UNet is), so, as in diffusers and
        A1111, a side need not be a multiple of `latent_factor` (SD: 8, not 64)."""
        return self.autoencoder.downsample_factor

    def check_image_size(self, height: int, width: int, factor: int = 1) -> None:
        """UsageError unless the model draws an image of ``factor`` · ``height`` × ``factor`` · ``width`` pixels
        (super-resolution's output of an H×W input; 1: the H×W image itself): sides that are positive multiples
        of `size_multiple`, not so small that the UNet's lowest level is 1×1 with one value per GroupNorm group
        (`UNet.too_small`). The message names the size given, width × height, as every other message does."""
        f = self.size_multiple
        step = f // math.gcd(f, factor)  # the input sides whose output sides are multiples of f
        given = f"image size {width}x{height}"
        output = f" (×{factor}: {width * factor}x{height * factor}, the output)" if factor > 1 else ""
        if height <= 0 or width <= 0 or height % step or width % step:
            raise UsageError(
                f"{given}{output} is not allowed: height and width must be positive multiples of {step} "
                + (f"(the output's of {f}: " if factor > 1 else "(") + f"the autoencoder's factor f={f})"
            )
        if self.unet.too_small(height * factor // f, width * factor // f):
            k = self.latent_factor
            larger = step * (k // (step * factor) + 1)  # the least input side whose output side is above k
            raise UsageError(
                f"{given}{output} is too small for this model: its UNet's lowest level would be 1x1, one value per "
                f"GroupNorm group; the smallest sizes allowed are {step}x{larger} and {larger}x{step}"
            )

    def encode_prompts(self, prompts: list[str], neutral_colours: list[bool] | None = None) -> torch.Tensor:
        """τθ(y) for each prompt: context B×L×d.

        The text encoder masks padding among its own tokens; the UNet's cross-attention then sees
        all L positions, as in Stable Diffusion, so that a conditional and an unconditional context
        batch together without masks. With ``text.zero_padding`` the padding positions' vectors are 0 (and where
        no real token's vector depends on the padding, ``sees_padding`` False, the encoder runs over the positions
        up to the batch's longest prompt only: the same context, with less work);
        with ``text.colour_lexicon`` colour names are read by their colour (`ldmkit.text.colour_words`), and
        ``neutral_colours`` (per prompt; training's ``colour_word_dropout``) hides them from the text encoder.
        """
        added = None
        if self.config.text.colour_lexicon != "off":
            prompts, added = colour_context(list(prompts), self.tokenizer, self.tokenizer.max_length,
                                            self.config.unet.context_dim, self.config.text.colour_lexicon,
                                            neutral_colours)
        token_ids, mask = self.tokenizer(prompts)
        device = next(self.unet.parameters()).device  # the frozen MiniLM encoder has no parameters() of its own
        if self.config.text.zero_padding and not getattr(self.text_encoder, "sees_padding", True):
            # padding's vectors become 0 and no real token sees them: encode up to the longest prompt only
            n = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
            context = self.text_encoder(token_ids[:, :n].to(device), mask[:, :n].to(device))
            context = torch.nn.functional.pad(context, (0, 0, 0, token_ids.shape[1] - n))
        else:
            context = self.text_encoder(token_ids.to(device), mask.to(device))
        if added is not None:
            context = context + added.to(device=device, dtype=context.dtype)
        if self.config.text.zero_padding:
            context = context * mask.to(device=device, dtype=context.dtype)[..., None]
        return context

    def in_known_words(self, prompts: list[str]) -> list[str]:
        """The prompts as the pipelines read them: each word of a noun phrase that the training captions never held
        (nor those of a loaded LoRA that lists them) replaced by the nearest word they did, by WordNet, and a prompt
        whose other words hold one they never did, or whose objects have no article, said again in their phrasing
        (`ldmkit.text.known_words`), each prompt on its own whatever the others of the batch are; as
        written for a model without recorded words, one that a LoRA or an embedding has taught words no file lists
        (``adapter_words`` None, ``taught``), or where WordNet is not installed (said once, as a warning)."""
        known = self.known_words
        if known is None or self.taught or None in self.adapter_words.values():
            return list(prompts)
        if self.adapter_words:  # the union kept while the same lists are loaded, so its nearest words stay cached
            key = tuple(sorted(self.adapter_words.items()))  # the lists themselves: equal only if the same objects
            if self._known_with_adapters[0] != key:
                for words in self.adapter_words.values():
                    known = known.union(words)
                self._known_with_adapters = (key, known)
            known = self._known_with_adapters[1]
        wordnet = default_wordnet()  # its files are read at the first word it is asked about
        if wordnet is None:
            if all(known.knows(p) for p in prompts):
                return list(prompts)
            if not self._warned_wordnet:
                warnings.warn("this model records its training words, but WordNet is not installed, so words it "
                              "never saw are read as written: pip install 'ldmkit[words]'", stacklevel=2)
                self._warned_wordnet = True
            return list(prompts)
        return [known.rewrite(p, wordnet) for p in prompts]

    def encode_classes(self, classes: list[str] | torch.Tensor) -> torch.Tensor:
        """τθ(y) = E[y] for class names (or indices, the null class ∅ being K): context B×1×d.
        A name the model does not know is a ValueError listing the ones it does."""
        if self.class_embedding is None:
            raise ValueError(f"this is a {self.config.condition.kind!r} model, not a class-conditional one")
        device = next(self.unet.parameters()).device
        if not isinstance(classes, torch.Tensor):
            names = self.config.condition.classes
            classes = torch.tensor([class_index(names, c) for c in classes], dtype=torch.int64)
        return self.class_embedding(classes.to(device))

    def null_context(self, negative_prompt: str = "") -> torch.Tensor:
        """The context of the dropped condition, 1×L×d: τθ(negative prompt) (the null prompt "" by
        default), or the null class ∅ of a class model."""
        if self.class_embedding is not None:
            return self.encode_classes(torch.tensor([self.class_embedding.null_class]))
        return self.encode_prompts([negative_prompt])

    def image_condition(
        self, source: torch.Tensor, latent_size: tuple[int, int], mask: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """c, concatenated to z_t of size ``latent_size`` (see `ldmkit.condition.concat_condition`);
        None for text and class models."""
        return concat_condition(self.config.condition, self.encode_images, source, latent_size, mask)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """z_0 = scale_factor · E(x)."""
        return self.autoencoder.encode(images, sample=sample, generator=generator) * self.autoencoder.scale_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """x = D(z_0 / scale_factor), clamped to [-1, 1]."""
        return self.autoencoder.decode(latents / self.autoencoder.scale_factor).clamp(-1, 1)

    def store_for_autocast(self, dtype: torch.dtype = torch.bfloat16) -> None:
        """Keep the linear and convolution weights of the UNet, τθ and the decoder D in ``dtype``
        (`ldmkit.device.store_for_autocast`), for a model that from now on runs them only under autocast to
        ``dtype`` (a bf16 pipeline): the same outputs bit for bit, without casting the weights at every call.
        The encoder E stays float32 (images are encoded outside autocast). Sets ``autocast_dtype``."""
        parts = (self.unet, self.text_encoder, self.autoencoder.decoder, self.autoencoder.post_quant_conv)
        for part in parts:
            if part is not None:
                store_for_autocast(part, dtype)
        self.autocast_dtype = dtype

    # ---------------------------------------------------------------------------------------------
    # folders

    def save(self, folder: str | Path) -> None:
        """Write the model folder (every file atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if has_weights(self.config.autoencoder):
            save_weights(self.autoencoder.state_dict(), folder / "autoencoder.safetensors")
        if self.class_embedding is not None:
            save_weights(self.class_embedding.state_dict(), folder / "class_embedding.safetensors")
        else:
            save_weights(self.text_encoder.state_dict(), folder / "text_encoder.safetensors")
            self.tokenizer.save(folder / "tokenizer.json")
            if self.known_words is not None:
                self.known_words.save(folder / KNOWN_WORDS)
        save_weights(self.unet.state_dict(), folder / "unet.safetensors")
        write_scheduler_grid(folder, self.scheduler_grid)
        save_config(self.config, folder / "config.yaml")

    @classmethod
    def load(cls, folder: str | Path, ema: bool = True, prediction: str | None = None) -> "LatentDiffusion":
        """The model at ``folder``: an ldmkit model folder, a Stable Diffusion single file
        (``.safetensors``/``.ckpt``, architecture inferred) or a diffusers folder.

        ``ema``: use a single file's EMA weights when it has them; ``ema=False`` takes its training weights, also
        from a folder converted from such a file (`ldmkit.convert.folder.read_folder`; refused for a model without).
        ``prediction`` ("epsilon"/"v") overrides what the model's config says or inference assumes.
        Single files and diffusers folders load without a second copy of the weights, memory-mapped
        from the file (see `load_model`).
        """
        folder = Path(folder)
        if folder.exists() and (not ema or not (folder / "config.yaml").is_file()):
            return load_model(folder, ema=ema, prediction=prediction)
        config = load_config(ModelConfig, folder)
        check_unet_inputs(config, folder)
        if prediction is not None:
            config = with_prediction(config, prediction)
        tokenizer = None
        if config.condition.uses_text:
            try:
                tokenizer = load_tokenizer(config.text, folder / "tokenizer.json")
            except (ValueError, OSError) as e:
                raise CheckpointError(f"{folder}: {e}") from None
        model = cls(config, tokenizer)
        if has_weights(config.autoencoder):
            load_weights(model.autoencoder, folder / "autoencoder.safetensors")
        if model.class_embedding is not None:
            load_weights(model.class_embedding, folder / "class_embedding.safetensors")
        else:
            load_weights(model.text_encoder, folder / "text_encoder.safetensors")
            if (folder / KNOWN_WORDS).is_file():
                try:
                    model.known_words = KnownWords.load(folder / KNOWN_WORDS)
                except ValueError as e:
                    raise CheckpointError(str(e)) from None
        load_weights(model.unet, folder / "unet.safetensors")
        model.scheduler_grid = read_scheduler_grid(folder)
        return model.eval()


def check_unet_in_channels(in_channels: int, latent: int, condition) -> None:
    """A ConfigError naming ``unet.in_channels`` unless it is ``latent`` channels plus those of ``condition`` (a
    `ConditionConfig`; `ConditionConfig.concat_channels`): what `ldmkit train` says of a config before it trains."""
    extra = condition.concat_channels(latent)
    if in_channels != latent + extra:
        raise ConfigError(
            f"unet.in_channels = {in_channels}; must equal the autoencoder's latent channels ({latent})"
            + (f" + the {extra} channels of the {condition.kind!r} condition" if extra else "") + f" = {latent + extra}"
        )


def check_unet_inputs(config: ModelConfig, where: str | Path | None = None) -> None:
    """Unless the UNet takes the input channels ldmkit gives it for the model's condition kind — the latent's c,
    plus the image condition's (`ConditionConfig.concat_channels`) — a one-line error before any weights are read
    or any training starts. ``where``: the model file or folder being loaded (a CheckpointError naming it; a text
    model whose UNet takes more is a Stable Diffusion inpainting (2c + 1) or other image-conditioned model, which
    `ldmkit convert` converts but no ldmkit pipeline runs, `unet_condition`: it would fail mid-sampling); None: a
    config about to be trained (a ConfigError naming ``unet.in_channels``, as `ldmkit train` says it)."""
    c, got = config.autoencoder.latent_channels, config.unet.in_channels
    kind = config.condition.kind
    expected = c + config.condition.concat_channels(c)
    if got == expected:
        return
    if where is None:
        check_unet_in_channels(got, c, config.condition)
    if kind == "text" and unet_condition(got, c) == "inpainting":
        raise CheckpointError(
            f"{where} is a Stable Diffusion inpainting model (its UNet takes {got} input channels: the latent's {c}, "
            f"the masked image's latent's {c} and the mask), which ldmkit does not run (`ldmkit convert` converts it; "
            f"docs/stable_diffusion.md); ldmkit runs text-to-image models, whose UNet takes the latent's {c} channels, "
            "and its own inpainting models (`ldmkit train --preset shapes64-inpaint`)"
        )
    takes = f"the latent's {c}" + (f" + {expected - c} of the condition" if expected > c else " alone")
    more = ("; a UNet that takes more is conditioned on an image, as Stable Diffusion's depth model, which ldmkit "
            "does not run") if kind == "text" and got > c else ""
    raise CheckpointError(f"{where}: its UNet takes {got} input channels, but the UNet of a {kind!r} model takes "
                          f"{expected} ({takes}){more}")


# what a run folder holds for each kind of training state (``OUT/checkpoints/step_XXXXXXX.pt``, `ldmkit.train`)
_RUN_PRODUCTS = {
    "diffusion": "the model `ldmkit train` wrote there (load the folder)",
    "distill": "the student `ldmkit distill` wrote there (load the folder)",
    "finetune": "what `ldmkit finetune` wrote there (a LoRA or embedding file: load its --model, then the file; "
                "--method full: load the folder)",
    "autoencoder": "an autoencoder, not a text-to-image model (give the folder to `ldmkit train --autoencoder`)",
}


def check_not_training_state(path: str | Path) -> None:
    """A CheckpointError when ``path`` is a training checkpoint (``RUN/checkpoints/step_XXXXXXX.pt``: a run's
    weights, optimizer and RNG, which ``--resume`` reads), naming the run folder and what it holds instead."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".pt", ".pth", ".ckpt"):
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file, or not loadable as weights: not ldmkit's
        return
    if not (isinstance(state, dict) and "step" in state and "model" in state and isinstance(state.get("kind"), str)):
        return
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    product = _RUN_PRODUCTS.get(state["kind"], "what the run wrote there")
    raise CheckpointError(f"{path} is a training checkpoint (the {state['kind']} run's state at step "
                          f"{state['step']}, for --resume), not a model: its run folder {run} holds {product}")


def load_model(path: str | Path, ema: bool = True, prediction: str | None = None) -> LatentDiffusion:
    """The `LatentDiffusion` of a model in any format, in eval mode, weights in fp32.

    A Stable Diffusion single file or diffusers folder loads without a second copy of its weights: the
    model is built with its parameters on the meta device (`meta.empty_parameters`: no memory, no random
    initialisation), and the file's tensors, converted key by key to ldmkit's names, become the model's
    parameters (`meta.assign_weights`). The weights are bit-identical to those of copying the file into
    a randomly initialised model.

    Memory: an fp32 tensor of a ``.safetensors`` file (or of a ``.ckpt`` that torch can memory-map) stays
    in the file's private, copy-on-write memory mapping, so the process grows by the pages of the weights
    it uses as they are first read, to about the model's fp32 size, and never holds them twice. Writing
    into a parameter copies the pages written; the file is never written. The file must stay unchanged
    while the model is in use: replacing it by a rename (as ldmkit writes files) is safe, overwriting it
    in place is not. An fp16/bf16 ``.safetensors`` tensor is read into a buffer of its own and cast to
    fp32 one tensor at a time, so the peak is the fp32 model plus one tensor (a ``.ckpt``'s half-precision
    tensors are cast from its mapping, whose pages stay resident until the load returns). An ldmkit
    folder's model is built as usual and its weights copied in.
    """
    if detect_format(path) == "ldmkit":
        ckpt = read_checkpoint(path, ema, prediction)
        check_unet_inputs(ckpt.config, path)
        model = LatentDiffusion(ckpt.config, ckpt.tokenizer)
        missing, unexpected = model.load_state_dict(ckpt.weights, strict=False)
        if missing or unexpected:  # read_checkpoint validated the keys; this guards the two against drifting
            raise CheckpointError(f"{path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        model.known_words = ckpt.known_words
        model.scheduler_grid = dict(ckpt.scheduler_grid)
        return model.eval()
    try:
        ckpt = read_checkpoint(path, ema, prediction, cast=torch.float32)
    except CheckpointError:
        check_not_training_state(path)
        raise
    check_unet_inputs(ckpt.config, path)
    with empty_parameters():
        model = LatentDiffusion(ckpt.config, ckpt.tokenizer)
    assign_weights(model, ckpt.weights, str(path))
    model.scheduler_grid = dict(ckpt.scheduler_grid)
    model.known_words = ckpt.known_words  # an ldmkit-written single file carries them (`ldmkit.convert.original`)
    return model.eval()
