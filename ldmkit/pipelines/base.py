"""What every pipeline shares: the model on a device with its condition kind checked, inputs turned
into tensors, and one guided sampling loop (z_T or SDEdit's noised z_0 → sampler → z_0)."""

from __future__ import annotations

import inspect
import warnings
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ldmkit.bounds import MAX_GUIDANCE
from ldmkit.condition import check_images, check_mask
from ldmkit.images import image_to_tensor, mask_grey
from ldmkit.device import lay_out_unet, resolve_device, use_bf16
from ldmkit.diffusion import (
    DIFFUSERS_SCHEDULERS, DIFFUSERS_SPACING, MULTISTEP, SAMPLERS, check_grid_options, guided_denoiser, sample,
    sample_from, sampler_timesteps, start_index,
)
from ldmkit.diffusion.binding import BindingGuidance, binding_denoiser, binding_losses, choose_candidates
from ldmkit.model import LatentDiffusion
from ldmkit.errors import ConfigError, UsageError
from ldmkit.nn.feature_cache import FeatureCache
from ldmkit.nn.kv_cache import cached_text_kv
from ldmkit.nn.prepack import prepack
from ldmkit.pipelines.adapters import AdapterMixin
from ldmkit.pipelines.calling import OUTPUT_TYPES, ImagePipelineOutput, diffusers_call, image_output, step_end
from ldmkit.progress import tqdm
from ldmkit.settings import DEFAULT_GUIDANCE, check_cache_depth, check_cache_interval
from ldmkit.text.weighted import emphasis_contexts

ImageInput = Image.Image | Sequence[Image.Image] | torch.Tensor | np.ndarray


_NO_SCHEDULER = ("ldmkit pipelines have no scheduler object: the sampler is chosen per call, e.g. pipe(prompt, "
                 "sampler='dpmpp-2m', karras=True) (ddpm, ddim, plms, euler, euler-a, dpmpp-2m, unipc; lcm for a "
                 "student)")


def _a(word: str) -> str:
    """The indefinite article before ``word``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def prompt_list(prompt, what: str = "prompt") -> list[str]:
    """A prompt or a non-empty list of them, as a list; a `UsageError` naming ``what`` for anything else."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    shown = repr(prompt) if len(repr(prompt)) <= 60 else repr(prompt)[:57] + "..."
    raise UsageError(f"{what} = {shown}; give a string or a non-empty list of strings")


def negative_list(negative_prompt, count: int) -> str | list[str]:
    """``negative_prompt`` as the pipelines read it for ``count`` prompts: a string (shared by every prompt), or a
    list of one (shared) or of one per prompt, as diffusers' ``negative_prompt``; None (diffusers' default) is "",
    no negative prompt; a `UsageError` otherwise."""
    if negative_prompt is None:
        return ""
    if isinstance(negative_prompt, str):
        return negative_prompt
    negatives = prompt_list(negative_prompt, "negative_prompt")
    if len(negatives) == 1:
        return negatives[0]
    if len(negatives) != count:
        raise UsageError(f"{len(negatives)} negative prompts for {count} prompts; give one, or one per prompt")
    return negatives


def from_unit_range(unit: torch.Tensor, what: str = "image") -> torch.Tensor:
    """An image tensor as diffusers' ``VaeImageProcessor`` reads one, in ldmkit's [-1, 1]: values in [0, 1] become
    2x − 1; a tensor with a value below 0 is taken to be in [-1, 1] already, with a FutureWarning, as diffusers
    does (it deprecates that range)."""
    if unit.numel() and float(unit.min()) < 0:
        warnings.warn(f"the {what} holds values below 0, so it is read as in [-1, 1] (as diffusers reads it, which "
                      "deprecates that range); give image tensors and arrays in [0, 1]", FutureWarning, stacklevel=3)
        return unit
    return unit * 2 - 1


def diffusers_image(image, what: str = "image"):
    """A pipeline ``__call__``'s image input as its ``generate_tensors`` reads it: a tensor, which diffusers' calls
    read in [0, 1], made [-1, 1] (`from_unit_range`); anything else as given."""
    return from_unit_range(image.float(), what) if isinstance(image, torch.Tensor) else image


def pil_image_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as 3×H×W in [-1, 1], read as the command line and the server read a file
    (`ldmkit.images.load_image`): upright per its EXIF orientation, then `image_to_tensor` (transparent pixels
    over white, a grey image of more than 8 bits scaled to 8)."""
    return image_to_tensor(ImageOps.exif_transpose(image))


def pil_mask_tensor(mask: Image.Image) -> torch.Tensor:
    """A PIL mask as H×W grey levels in [0, 1], read as `ldmkit inpaint --mask` reads a file: upright per its EXIF
    orientation, a grey image of more than 8 bits (a 16-bit PNG) scaled to 8 (`to_8bit`), alpha ignored."""
    return torch.from_numpy(np.asarray(mask_grey(mask), dtype=np.float32) / 255.0)


def _unit_array_to_tensor(array: np.ndarray, what: str) -> torch.Tensor:
    """A NumPy image as diffusers takes one — H×W×3 or B×H×W×3, float in [0, 1] or uint8 — as B×3×H×W in
    [-1, 1] (a float array with a value below 0 is read as in [-1, 1], as diffusers reads it: `from_unit_range`)."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise UsageError(f"the {what} as a NumPy array must be H×W×3 or B×H×W×3 (RGB, channels last, as diffusers "
                         f"takes it); got shape {array.shape}")
    if array.dtype == np.uint8:
        unit = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif np.issubdtype(array.dtype, np.floating):
        unit = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        raise UsageError(f"the {what} as a NumPy array must be uint8 or float in [0, 1]; got {array.dtype}")
    return from_unit_range(unit.permute(0, 3, 1, 2), what)


def images_of(generate_latents: Callable) -> Callable:
    """A pipeline's ``generate_tensors`` made of its ``generate_latents``: x = D(z_0) (`Pipeline.decode`) of the z_0
    it samples, B×3×H×W in [-1, 1], taking the same arguments (its signature, which `diffusers_call` reads)."""

    @torch.inference_mode()
    def generate_tensors(self, *args, **options) -> torch.Tensor:
        return self.decode(generate_latents(self, *args, **options))

    generate_tensors.__signature__ = inspect.signature(generate_latents)
    generate_tensors.__module__ = generate_latents.__module__
    generate_tensors.__qualname__ = generate_latents.__qualname__.replace("generate_latents", "generate_tensors")
    generate_tensors.__doc__ = ("Images B×3×H×W in [-1, 1]: D(z_0) of `generate_latents`' z_0, which takes the "
                                "same arguments.")
    return generate_tensors


def noise_after_start(sampler: str, eta: float, steps: int) -> bool:
    """Whether ``sampler`` draws fresh noise after z_T: ddpm and euler-a at every step, ddim with η > 0, lcm
    between its steps."""
    return sampler in ("ddpm", "euler-a") or (sampler == "ddim" and eta > 0) or (sampler == "lcm" and steps > 1)


def per_image(inputs: torch.Tensor, num_images: int) -> torch.Tensor:
    """``inputs`` (B×…) with each row repeated ``num_images`` times in a row: the inputs of ``num_images`` images
    per input image (diffusers' ``num_images_per_prompt``: an input's images come together, as
    `Pipeline.prompt_contexts` orders their prompts)."""
    return inputs if num_images == 1 else inputs.repeat_interleave(num_images, dim=0)


class Pipeline(AdapterMixin):
    """A trained model of one of the condition ``kinds`` on ``device``; subclasses add ``__call__``. LoRA files and
    textual-inversion embeddings load onto its model as in diffusers (`AdapterMixin`: ``load_lora_weights`` …)."""

    kinds: tuple[str, ...] = ()
    output_types: tuple[str, ...] = OUTPUT_TYPES  # what ``__call__``'s output_type takes ("latent" where it can)
    generator_lists = False  # whether ``generator`` may be a list of torch.Generators, one per image

    def __init__(self, model: LatentDiffusion, device: str | torch.device = "cpu", precision: str = "fp32"):
        """``device``: auto, cpu, cuda or cuda:N (`resolve_device`: any other, or a CUDA device that is not
        here, is a one-line UsageError). ``precision``: fp32; bf16 (the UNet, the text encoder and the decoder
        under bf16 autocast, their outputs taken as float32; the sampler's state and the guidance combination stay
        float32); or auto (bf16 where it runs faster, `bf16_pays`). A model whose weights `from_folder` stored in
        bf16 (`LatentDiffusion.store_for_autocast`) takes bf16 only."""
        self.device = resolve_device(device, "device")
        kind = model.config.condition.kind
        if kind not in self.kinds:
            wanted = self.kinds[0]
            preset = "shapes64" if wanted == "text" else f"shapes64-{wanted}"
            raise UsageError(
                f"this is {_a(kind)} {kind!r} model (condition.kind); {type(self).__name__} needs {_a(wanted)} "
                f"{wanted!r} model, "
                f"as `ldmkit train --preset {preset}` trains"
            )
        self.bf16 = use_bf16(precision, self.device)
        if model.autocast_dtype is not None and not self.bf16:
            raise UsageError(
                f"precision {precision!r}: this model's weights are stored in bf16 for a bf16 pipeline "
                "(LatentDiffusion.store_for_autocast); give precision 'bf16', or load the model again for fp32"
            )
        self.model = model.to(device).eval()
        self.nhwc = False  # the autoencoder in channels-last layout (`from_folder` on a CPU)
        self.packed = False  # convolution weights reordered once for oneDNN (`from_folder`, bf16 on a CPU)

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device = "cpu", ema: bool = True,
                    prediction: str | None = None, precision: str = "fp32"):
        """The pipeline of a model folder written by `ldmkit train` (see `LatentDiffusion.load`). ``device`` and
        ``precision`` are checked before the model loads (as `__init__` reads them)."""
        device = resolve_device(device, "device")
        use_bf16(precision, device)
        pipe = cls(LatentDiffusion.load(folder, ema=ema, prediction=prediction), device, precision)
        if pipe.device.type == "cpu":  # oneDNN runs the decoder's convolutions ~1.3-1.6x faster in NHWC
            pipe.model.autoencoder.to(memory_format=torch.channels_last)
            pipe.nhwc = True
        lay_out_unet(pipe.model.unet, pipe.device, pipe.bf16)
        if pipe.bf16:  # the pipeline owns this model: weights cast once, not at every call (bit-identical)
            pipe.model.store_for_autocast(torch.bfloat16)
            if pipe.device.type == "cpu":  # and convolution weights reordered once for oneDNN (`prepack`)
                pipe.packed = prepack(pipe.model) > 0
        return pipe

    def to(self, device: str | torch.device) -> "Pipeline":
        """The pipeline, moved to ``device`` (diffusers' ``pipe.to("cuda")``): its model, and the device its
        inputs and latents go to. A device that is not here is a one-line UsageError (`resolve_device`), before
        anything moves. The precision stays; layouts chosen for the first device (channels-last, prepacked
        convolutions: `from_folder`) change results only by rounding, and run anywhere."""
        self.device = resolve_device(device, "device")
        self.model.to(self.device)
        return self

    # ---------------------------------------------------------------------------------------------
    # inputs

    def images(self, image: ImageInput, what: str = "image") -> torch.Tensor:
        """PIL image(s) (read as the command line reads a file: `pil_image_tensor`), a tensor (3×H×W or B×3×H×W in
        [-1, 1], as ``generate_tensors`` takes and returns images; a ``__call__`` reads tensors in [0, 1], as
        diffusers does: `diffusers_image`) or a NumPy array as diffusers takes one (H×W×3 or B×H×W×3 in [0, 1], or
        uint8) as B×3×H×W in [-1, 1] on the device; anything else is a one-line `UsageError`."""
        if isinstance(image, Image.Image):
            image = pil_image_tensor(image)
        elif isinstance(image, np.ndarray):
            image = _unit_array_to_tensor(image, what)
        elif isinstance(image, (list, tuple)) and image and all(isinstance(i, Image.Image) for i in image):
            tensors = [pil_image_tensor(i) for i in image]
            sizes = list(dict.fromkeys(f"{t.shape[-1]}×{t.shape[-2]}" for t in tensors))
            if len(sizes) > 1:
                raise UsageError(f"the {what} list holds images of different sizes, {', '.join(sizes)} "
                                 "(width×height); give images of one size")
            image = torch.stack(tensors)
        elif isinstance(image, (list, tuple)):
            held = next((type(i).__name__ for i in image if not isinstance(i, Image.Image)), None)
            what_list = f"a list holding a {held}" if held else "an empty list"
            raise UsageError(f"the {what} is {what_list}; give a PIL image, a non-empty list of PIL images, a tensor "
                             "B×3×H×W or a NumPy array B×H×W×3 in [0, 1]")
        elif not isinstance(image, torch.Tensor):
            order = f" ({type(self).__name__} takes the {what} first: pass {what}= by keyword)" \
                if isinstance(image, str) else ""
            raise UsageError(f"the {what} is a {type(image).__name__}{order}; give a PIL image, a list of them, a "
                             "tensor B×3×H×W or a NumPy array B×H×W×3 in [0, 1]")
        return check_images(image, what).float().to(self.device)

    def mask(self, mask: Image.Image | torch.Tensor | np.ndarray, images: torch.Tensor) -> torch.Tensor:
        """A mask image (white = repaint; read as grey levels, > ½ repaints, as the command line reads a file:
        `pil_mask_tensor`), a tensor in [0, 1] (H×W, 1×H×W or B×1×H×W) or such a NumPy array (uint8: 0 … 255) as
        B×1×H×W in {0, 1} matching ``images``."""
        if isinstance(mask, Image.Image):
            mask = pil_mask_tensor(mask)
        elif isinstance(mask, np.ndarray) and (mask.dtype == np.uint8 or np.issubdtype(mask.dtype, np.floating)
                                              or mask.dtype == bool):
            scale = 255.0 if mask.dtype == np.uint8 else 1.0
            mask = torch.from_numpy(mask.astype(np.float32) / scale)
        elif not isinstance(mask, torch.Tensor):
            raise UsageError(f"the mask is a {type(mask).__name__}; give a PIL image, a tensor in [0, 1] (H×W, 1×H×W or "
                             "B×1×H×W) or such a NumPy array")
        mask = check_mask(mask.float().to(self.device), images)
        return (mask > 0.5).to(images.dtype)

    def latent_size(self, height: int, width: int, factor: int = 1) -> tuple[int, int]:
        """(h, w) of z_0 for an image of ``factor`` · H × ``factor`` · W pixels (super-resolution's output of an
        H×W input; 1: the H×W image itself), after checking the model takes that size
        (`LatentDiffusion.check_image_size`, whose message names the H×W given)."""
        self.model.check_image_size(height, width, factor)
        f = self.model.autoencoder.downsample_factor
        return height * factor // f, width * factor // f

    def prompt_contexts(self, prompt: str | list[str], negative_prompt: str | list[str], batch: int,
                        num_images: int = 1, prompt_syntax: str = "plain") -> tuple[torch.Tensor, torch.Tensor]:
        """(τθ(y), τθ(negative prompt)) for ``batch`` input images, each drawn ``num_images`` times in a row (as
        `per_image` repeats the inputs): one prompt is shared by the batch, a list gives one per image; read in
        the words the model knows (`LatentDiffusion.in_known_words`), and in A1111's emphasis syntax with
        ``prompt_syntax`` "a1111" (`emphasis_contexts`). UsageError for a ``num_images`` that is not
        an integer ≥ 1 (a ``__call__`` checks it first, `checked_options`)."""
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise UsageError(f"num_images_per_prompt = {num_images!r}; must be an integer ≥ 1")
        prompts = prompt_list(prompt)
        prompts = prompts * batch if len(prompts) == 1 else prompts
        if len(prompts) != batch:
            raise UsageError(f"{len(prompts)} prompts for {batch} images; give one, or one per image")
        negatives = negative_list(negative_prompt, batch)
        if isinstance(negatives, list):
            negatives = [n for n in negatives for _ in range(num_images)]
        if prompt_syntax == "a1111":
            return self.emphasis_contexts(prompts, negatives, num_images)
        prompts = [p for p in self.model.in_known_words(prompts) for _ in range(num_images)]
        return self.encode(prompts), self.encode_null(negatives)

    def emphasis_contexts(self, prompts: list[str], negatives: str | list[str],
                          num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(τθ(prompts), τθ(negatives)) in A1111's emphasis syntax (`ldmkit.text.weighted.emphasis_contexts`),
        each prompt ``num_images`` times; ``negatives``: one shared, or one per row. Both in one call, so that a
        prompt and its negative prompt have as many chunks (the shorter padded with the empty prompt's)."""
        rows = [p for p in prompts for _ in range(num_images)]
        negatives = negatives if isinstance(negatives, list) else [negatives]
        both = emphasis_contexts(rows + negatives, self.encode, self.model.tokenizer, self.model.in_known_words)
        return both[:len(rows)], both[len(rows):]

    def check_strength(self, strength: float, sampler: str | None = None, steps: int | None = None,
                       karras: bool = False, spacing: str | None = None, steps_offset: int | None = None) -> None:
        """UsageError, before any work, unless ``strength`` is a number in (0, 1] with which SDEdit runs at
        least one step of the grid the call samples on (`start_index`: int(strength · n) of its n steps run)."""
        sampler, steps = self.sampling_defaults(sampler, steps)
        grid = self.grid_options(sampler, spacing, steps_offset, karras)
        start_index(len(sampler_timesteps(sampler, self.model.schedule, steps, **grid)), strength)

    def _autocast(self):
        """bf16 autocast on the device where the pipeline runs in bf16, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def precision(self) -> str:
        """"bf16" or "fp32": what this pipeline runs in (a pipeline sharing its model needs the same)."""
        return "bf16" if self.bf16 else "fp32"

    def unet_fn(self) -> Callable:
        """εθ(z_t, t, context): the UNet, under bf16 autocast in a bf16 pipeline."""
        return _in_bf16(self.model.unet, self.device) if self.bf16 else self.model.unet

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """τθ(y) of each prompt (`LatentDiffusion.encode_prompts`), float32, in the pipeline's precision."""
        with self._autocast():
            return self.model.encode_prompts(prompts).float()

    def encode_null(self, negative_prompt: str | list[str] = "") -> torch.Tensor:
        """τθ of the negative prompt, or ∅ (`LatentDiffusion.null_context`), 1×L×d; of a list of them (one per image,
        `negative_list`), B×L×d; float32, in the pipeline's precision."""
        with self._autocast():
            if isinstance(negative_prompt, list):
                return self.model.encode_prompts(negative_prompt).float()
            return self.model.null_context(negative_prompt).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """x = D(z_0 / s) in [-1, 1] (`LatentDiffusion.decode_latents`), float32 on the CPU, in the pipeline's
        precision (bf16 decodes the shipped model's latents within ~59 dB PSNR of fp32, in half the time)."""
        if self.nhwc:
            latents = latents.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.model.decode_latents(latents).float().contiguous().cpu()

    def latents_output(self, latents: torch.Tensor, output_type: str) -> ImagePipelineOutput:
        """A call's output of sampled z_0: z_0 itself for ``output_type`` "latent", else x = D(z_0) (`decode`) as
        ``output_type`` asks (`image_output`)."""
        return image_output(latents if output_type == "latent" else self.decode(latents), output_type)

    # ---------------------------------------------------------------------------------------------
    # sampling

    def sample_latents(
        self,
        context: torch.Tensor,
        null_context: torch.Tensor,
        latent_size: tuple[int, int],
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | torch.Generator | list[torch.Generator] = 0,
        sampler: str | None = None,
        eta: float = 0.0,
        concat: torch.Tensor | None = None,
        init_latents: torch.Tensor | None = None,
        strength: float = 1.0,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
        guidance_stop: float = 0.0,
        spacing: str | None = None,
        binding: BindingGuidance | None = None,
        cache_interval: int = 1,
        cache_depth: int = 1,
        karras: bool = False,
        steps_offset: int | None = None,
        latents: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> torch.Tensor:
        """z_0 for a batch of ``context``'s size, sampled with guidance scale ``guidance``:

            ε̂ = εθ(cat(z_t, c), t, ∅) + s (εθ(cat(z_t, c), t, τθ(y)) − εθ(cat(z_t, c), t, ∅))

        with c = ``concat`` (the image condition, in both branches) or nothing. From z_T ~ N(0, I), or,
        given ``init_latents`` z_0, from z_0 noised to ``strength`` (`sample_from`, SDEdit). ε is drawn
        from a CPU generator seeded with ``seed``, so a seed gives the same image on every device.
        ``guidance_stop`` ∈ [0, 1): the steps at timesteps t < guidance_stop · T (about that fraction
        of the steps, at the end) run unguided, one UNet pass instead of two. ``spacing``, ``steps_offset``,
        ``karras``: the sampler's grid (`ldmkit.diffusion.grids`; `grid_options` fills in the model's own). ``binding``:
        attribute-binding guidance on top (`ldmkit.diffusion.binding`), and, sampling from noise without
        ``concat``, each prompt with objects to bind goes on from the best of ``binding.candidates``
        starting noises after the first ``binding.select_step(steps)`` steps (the callback still sees
        each step once). ``cache_interval`` N: the whole UNet runs at every N-th step, the steps between
        reuse its deep features and recompute only the shallow branch (`ldmkit.nn.feature_cache`; 1, the
        default: every step in full); binding guidance's own passes always run the whole UNet. ``cache_depth`` k:
        the first-level blocks that branch recomputes (`check_cache_depth`: 0 … num_res_blocks; 1, DeepCache's
        branch 0, the default; 0 the shallowest, fastest branch).

        ``seed`` may be a list of CPU generators, one per row (diffusers' list): row i's z_T drawn from the i-th
        (a UsageError for a sampler that draws noise after z_T, which ldmkit draws from one generator).
        ``latents``: z_T itself, B×C×h×w ~ N(0, I) as diffusers' ``latents`` (ldmkit's samplers hold z_t at unit
        variance, so z_T needs no scaling by diffusers' ``init_noise_sigma``); later noise is drawn from ``seed``.
        ``callback_on_step_end(self, i, t, {"latents": z_t})``: diffusers' step-end callback (`step_end`), after
        each step i at timestep t, with z after the step; the latents it returns replace z. The sampler then runs
        one step at a time (the same numbers), or, a multistep one (plms, dpmpp-2m, unipc), hands it z through its
        ``on_step_end`` hook, its history of earlier outputs kept (as diffusers' schedulers keep theirs).

        ``sampler`` and ``steps`` None: the model's own (`sampling_defaults`); ``guidance`` None: the model's own
        (`default_guidance`: 4, or a consistency student's). A consistency student
        (`ldmkit distill`) runs one pass per step with the guidance scale as the UNet's input,
        ε̂ = εθ(z_t, t, τθ(y), s), and ``null_context`` unused.

        The text keys and values of cross-attention are computed once per call, not once per step
        (`ldmkit.nn.kv_cache`): the same numbers, fewer matrix products.
        """
        sampler, steps = self.sampling_defaults(sampler, steps)
        guidance = self.default_guidance if guidance is None else guidance
        if steps < 1:
            raise UsageError(f"steps must be at least 1, got {steps}")
        grid = self.grid_options(sampler, spacing, steps_offset, karras)
        check_cache_interval(cache_interval, steps)
        check_cache_depth(cache_depth, self.model.config.unet.num_res_blocks)
        student = self.is_student
        if student:
            check_student_options(cache_interval, binding, guidance_stop)
        if not 0.0 <= guidance_stop < 1.0:
            raise UsageError(f"guidance_stop = {guidance_stop}; must be in [0, 1)")
        fixed = "latents=" if latents is not None else "a generator list" if isinstance(seed, list) else \
            "callback_on_step_end" if callback_on_step_end is not None else None
        if fixed and binding is not None and binding.candidates > 1 and concat is None:
            raise UsageError(f"binding_candidates = {binding.candidates} picks z_T among several starting noises, "
                             f"which {fixed} does not allow; give binding_candidates=1 with it")
        if callback_on_step_end is not None and init_latents is not None:
            raise UsageError("callback_on_step_end is taken when sampling from noise (text-to-image), not from an "
                             "input image")
        model = self.model
        shape = (context.shape[0], model.config.unet.out_channels, *latent_size)
        if isinstance(seed, list):
            if len(seed) != shape[0]:
                raise UsageError(f"generator is a list of {len(seed)} torch.Generators for {shape[0]} images "
                                 "(inputs × num_images_per_prompt); give one per image, or one generator")
            if noise_after_start(sampler, eta, steps):
                noisy = f"{sampler} sampler" + (" with eta > 0" if sampler == "ddim" else "")
                raise UsageError(f"generator is a list: the {noisy} draws noise at every step, which ldmkit draws "
                                 "from one generator; give one "
                                 "generator or int seed, or a sampler without (ddim with eta=0, plms, euler, dpmpp-2m, unipc)")
            generator = None  # no noise is drawn after z_T
            z_T = torch.stack([torch.randn(shape[1:], generator=g) for g in seed]).to(self.device)
        else:
            generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() \
                    or tuple(latents.shape) != shape:
                shown = f"of shape {tuple(latents.shape)}" if isinstance(latents, torch.Tensor) else \
                    f"a {type(latents).__name__}"
                raise UsageError(f"latents {shown}; give z_T as a float tensor of shape {shape} (images × latent "
                                 f"channels × height/{model.autoencoder.downsample_factor} × "
                                 f"width/{model.autoencoder.downsample_factor}), e.g. torch.randn{shape}")
            z_T = latents.float().to(self.device)
        elif generator is not None:
            z_T = torch.randn(shape, generator=generator).to(self.device)

        def model_fn(core):
            """εθ as the sampler calls it: ``core`` (the UNet, or a FeatureCache over it) with the image
            condition concatenated and under bf16 autocast where asked."""
            fn = core if concat is None else _with_concat(core, concat)
            return _in_bf16(fn, self.device) if self.bf16 else fn

        unet = model_fn(partial(model.unet, guidance=float(guidance)) if student else model.unet)
        unguided_below = round(guidance_stop * model.schedule.num_timesteps)

        def denoiser(context: torch.Tensor, binding: BindingGuidance | None, null_context: torch.Tensor = null_context):
            if student:  # the guidance scale is the UNet's input: one conditional pass
                return guided_denoiser(unet, context, null_context, 1.0, model.config.diffusion.prediction,
                                       model.schedule)
            # One FeatureCache per run: a run's first step is a full UNet pass.
            reusing = unet if cache_interval == 1 else model_fn(FeatureCache(model.unet, cache_interval, cache_depth))
            denoise = guided_denoiser(reusing, context, null_context, guidance, model.config.diffusion.prediction,
                                      model.schedule, unguided_below=unguided_below)
            if binding is None:
                return denoise
            return binding_denoiser(denoise, unet, model.unet, context, model.schedule, binding)

        bar = tqdm(total=steps, desc="sampling", leave=False, disable=not progress)

        def on_step(i: int, n: int) -> None:
            bar.update(1)
            if callback is not None:
                callback(i, n)

        def run(z: torch.Tensor, context: torch.Tensor, binding: BindingGuidance | None, start: int = 0,
                stop: int | None = None, null_context: torch.Tensor = null_context) -> torch.Tensor:
            denoise = denoiser(context, binding, null_context)
            if callback_on_step_end is not None:  # the timesteps it is told
                timesteps = sampler_timesteps(sampler, model.schedule, steps, **grid)
            if callback_on_step_end is None or sampler in MULTISTEP:
                hook = {} if callback_on_step_end is None else {"on_step_end": lambda i, z: step_end(
                    self, callback_on_step_end, callback_on_step_end_tensor_inputs, start + i, timesteps[start + i], z)}
                return sample(sampler, denoise, z, model.schedule, num_steps=steps, eta=eta, generator=generator,
                              callback=lambda i, n: on_step(start + i, start + n), start=start, stop=stop, **grid,
                              **hook)
            for i in range(start, steps if stop is None else stop):  # one denoiser: its feature cache counts on
                z = sample(sampler, denoise, z, model.schedule, num_steps=steps, eta=eta, generator=generator,
                           start=i, stop=i + 1, **grid)
                z = step_end(self, callback_on_step_end, callback_on_step_end_tensor_inputs, i, timesteps[i], z)
                on_step(i, steps)
            return z

        try:
            with cached_text_kv(model.unet):
                if init_latents is not None:
                    return sample_from(sampler, denoiser(context, binding), init_latents, z_T, model.schedule, steps,
                                       strength, eta=eta, generator=generator, callback=on_step, **grid)
                start = binding.select_step(steps) if binding is not None and concat is None else 0
                rows = binding.candidate_rows() if start else []
                if len(rows) > len(z_T):
                    # Selection of z_T: the prompts' own starting noises and the rival ones of prompts with objects
                    # to bind run the first `start` steps as one batch; each prompt goes on from its smallest L.
                    extra = torch.randn((len(rows) - len(z_T), *shape[1:]), generator=generator).to(self.device)
                    index = torch.tensor(rows, device=context.device)
                    rows_context, rows_binding = context[index], binding.rows(rows)
                    rows_null = null_context if len(null_context) == 1 else null_context[index]
                    z_k = run(torch.cat([z_T, extra]), rows_context, rows_binding, stop=start, null_context=rows_null)
                    t_k = sampler_timesteps(sampler, model.schedule, steps, **grid)[start]
                    losses = binding_losses(unet, model.unet, z_k, torch.full((len(rows),), t_k, device=self.device),
                                            rows_context, rows_binding)
                    return run(z_k[choose_candidates(losses, rows, len(z_T))], context, binding, start=start)
                return run(z_T, context, binding)
        finally:
            bar.close()

    @property
    def scheduler(self):
        """diffusers swaps samplers by assigning ``pipe.scheduler``; ldmkit picks one per call. Reading or
        assigning it says so, rather than an assignment being silently ignored."""
        raise AttributeError(_NO_SCHEDULER)

    @scheduler.setter
    def scheduler(self, value) -> None:
        raise AttributeError(_NO_SCHEDULER)

    @property
    def is_student(self) -> bool:
        """Whether the model is a consistency student of `ldmkit distill` (it samples with lcm only)."""
        return self.model.config.diffusion.consistency_steps > 0

    @property
    def default_guidance(self) -> float:
        """The guidance scale s of a call that gives none: a consistency student's own (its config's
        ``consistency_guidance``, chosen on validation captions when it was distilled), else `DEFAULT_GUIDANCE`."""
        own = self.model.config.diffusion.consistency_guidance
        if not 0 <= own <= MAX_GUIDANCE:
            raise ConfigError(f"diffusion.consistency_guidance = {own} in the model's config.yaml; must be "
                              f"0 … {MAX_GUIDANCE:g} (0: the default {DEFAULT_GUIDANCE:g})")
        return own if self.is_student and own > 0 else DEFAULT_GUIDANCE

    def sampling_defaults(self, sampler: str | None, steps: int | None) -> tuple[str, int]:
        """(sampler, steps) of a call: the given ones, or the model's own where None: lcm at its
        ``consistency_steps`` for a consistency student; otherwise 25 steps of the sampler the model's diffusers
        scheduler config names (`LatentDiffusion.scheduler_grid`'s ``scheduler``, `DIFFUSERS_SCHEDULERS`: plms for Stable Diffusion 1.x's
        PNDMScheduler, as diffusers samples it), else ddim. UsageError for a sampler the model cannot run (a
        student runs lcm only; lcm needs a student)."""
        student = self.is_student
        own = DIFFUSERS_SCHEDULERS.get((getattr(self.model, "scheduler_grid", None) or {}).get("scheduler"))
        sampler = sampler if sampler is not None else ("lcm" if student else own or "ddim")
        steps = steps if steps is not None else (self.model.config.diffusion.consistency_steps if student else 25)
        if student and sampler != "lcm":
            raise UsageError(f"this model is a consistency student (made by `ldmkit distill`): it samples with the "
                             f"lcm sampler only, not {sampler!r} (leave --sampler out, or give lcm)")
        if not student and sampler == "lcm":
            raise UsageError("the lcm sampler needs a consistency student made by `ldmkit distill`; this model is "
                             f"not one (allowed: {', '.join(n for n in SAMPLERS if n != 'lcm')})")
        return sampler, steps

    def grid_options(self, sampler: str, spacing: str | None = None, steps_offset: int | None = None,
                     karras: bool = False) -> dict:
        """The grid keywords of `ldmkit.diffusion.sample` for a call: the given ones; with no ``spacing``, what
        the model's own scheduler config says (a diffusers folder's ``timestep_spacing`` and, for leading,
        ``steps_offset``, as diffusers samples it; `LatentDiffusion.scheduler_grid`), else the sampler's
        own grid. Karras σ (given, or the config's ``use_karras_sigmas``) take the sampler's own grid unless a
        spacing is given: diffusers' Karras σ span the schedule's whole range whatever its config's spacing.
        UsageError for options that mean nothing (`check_grid_options`)."""
        own = getattr(self.model, "scheduler_grid", None) or {}
        karras = karras or bool(own.get("karras")) and sampler != "lcm"
        if spacing is None and own and sampler != "lcm" and not karras:
            spacing = own["spacing"] or DIFFUSERS_SPACING[sampler]
            if steps_offset is None and spacing == "leading":
                steps_offset = own["steps_offset"]
        check_grid_options(sampler, 0.0, spacing, steps_offset)
        return dict(spacing=spacing, steps_offset=steps_offset, karras=karras)

    def input_start(self, estimate: torch.Tensor, start_from_input: bool) -> torch.Tensor | None:
        """The z_0 whose q(z_T | z_0) an image-conditioned sample starts from: E(x̃) for the input's own
        estimate x̃ of the output (the upsampled low-resolution image, the grey image, the image with
        its hole), or None for z_T ~ N(0, I) when ``start_from_input`` is False.

        Why: unless the schedule has zero terminal SNR, the UNet only ever saw z_T = √ᾱ_T z_0 +
        √(1 − ᾱ_T) ε in training (scaled_linear: √ᾱ_T ≈ 0.07), and on small latents it reads the layout
        from those few per cent. Pure noise then tells it a random layout that fights the condition;
        for some seeds the sample falls apart (`benchmarks/MODES.md` measures both starts)."""
        return self.model.encode_images(estimate) if start_from_input else None


class ImageConditionedPipeline(Pipeline):
    """A pipeline whose condition is one input image (super-resolution, colorization):
    ``pipe(image, prompt="")`` → list of PIL images, ``num_images_per_prompt`` per input image; a tensor input is
    read in [0, 1], as diffusers reads it (`diffusers_image`); ``prompt_syntax`` as text-to-image's; ``generator``
    may be a list, one per image (diffusers'); subclasses define ``generate_tensors``, which draws with
    `Pipeline.sample_latents`."""

    generator_lists = True

    @diffusers_call(inputs=2)
    @torch.inference_mode()
    def __call__(self, image: ImageInput, prompt: str | list[str] = "", steps: int = 25, guidance: float = 1.0,
                 seed: int | torch.Generator = 0, sampler: str = "ddim", eta: float = 0.0,
                 negative_prompt: str | list[str] = "",
                 progress: bool = False, callback: Callable[[int, int], None] | None = None,
                 start_from_input: bool = True, num_images: int = 1, output_type: str = "pil",
                 prompt_syntax: str = "plain") -> ImagePipelineOutput:
        return image_output(self.generate_tensors(
            diffusers_image(image), prompt, steps, guidance, seed, sampler, eta, negative_prompt, progress, callback,
            start_from_input=start_from_input, num_images=num_images, prompt_syntax=prompt_syntax), output_type)


def check_student_options(cache_interval: int, binding, guidance_stop: float) -> None:
    """UsageError for the options a consistency student does not take: feature reuse (its few steps are
    far apart, so no step's deep features resemble the next's), binding guidance and guidance_stop (its
    one pass per step has no unconditional half to steer or skip)."""
    if cache_interval != 1:
        raise UsageError(f"cache_interval = {cache_interval}: a consistency student runs every step in full "
                         "(its steps are too far apart to reuse features); leave it at 1")
    if binding is not None:
        raise UsageError("binding guidance needs a model sampled with classifier-free guidance; a consistency "
                         "student takes the guidance scale as an input (leave binding out)")
    if guidance_stop:
        raise UsageError("guidance_stop does not apply to a consistency student (one pass per step); leave it at 0")


def _in_bf16(unet, device: torch.device):
    """εθ run under bf16 autocast (matmuls and convolutions in bf16, normalisation and softmax in fp32)."""

    def model_fn(z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return unet(z_t, t, context)

    return model_fn


def _with_concat(unet, concat: torch.Tensor):
    """εθ(cat(z_t, c), t, context), with c repeated when guidance doubles the batch."""

    def model_fn(z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        c = concat if z_t.shape[0] == concat.shape[0] else concat.repeat(z_t.shape[0] // concat.shape[0], 1, 1, 1)
        return unet(torch.cat([z_t, c.to(z_t.dtype)], dim=1), t, context)

    return model_fn
