"""Text-to-image: prompt → τθ(y) → sampler over εθ with classifier-free guidance → D(z_0)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from tqdm.auto import tqdm

from ldmkit.data.images import tensor_to_pil
from ldmkit.diffusion import guided_denoiser, sample
from ldmkit.model import LatentDiffusion


class TextToImagePipeline:
    """``pipe(prompt, steps=…, guidance=…, seed=…, num_images=…)`` → list of PIL images.

    The same seed, settings and model give bit-identical images: z_T is drawn from a CPU generator
    seeded with ``seed``, so the result does not depend on the device's random stream.
    """

    def __init__(self, model: LatentDiffusion, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @classmethod
    def from_folder(
        cls, folder: str | Path, device: str | torch.device = "cpu", ema: bool = True, prediction: str | None = None
    ) -> "TextToImagePipeline":
        """The pipeline of an ldmkit model folder, a Stable Diffusion single file (.safetensors/.ckpt) or
        a diffusers folder; ``ema=False`` takes a single file's training weights instead of its EMA copy,
        ``prediction`` ("epsilon"/"v") overrides the model's (see `LatentDiffusion.load`)."""
        return cls(LatentDiffusion.load(folder, ema=ema, prediction=prediction), device)

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        steps: int = 25,
        guidance: float = 4.0,
        seed: int = 0,
        num_images: int = 1,
        sampler: str = "ddim",
        negative_prompt: str = "",
        eta: float = 0.0,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> list[Image.Image]:
        return [tensor_to_pil(x) for x in self.generate_tensors(
            prompt, steps, guidance, seed, num_images, sampler, negative_prompt, eta, height, width, progress,
            callback,
        )]

    @torch.inference_mode()
    def generate_tensors(
        self,
        prompt: str | list[str],
        steps: int = 25,
        guidance: float = 4.0,
        seed: int = 0,
        num_images: int = 1,
        sampler: str = "ddim",
        negative_prompt: str = "",
        eta: float = 0.0,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Images B×3×H×W in [-1, 1]; a list of prompts gives one image per prompt per ``num_images``.

        ``callback(i, n)`` runs after sampler step i = 0 … n−1; an exception it raises stops sampling
        there (the server cancels a job this way) and propagates to the caller.
        """
        model = self.model
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        prompts = [p for p in prompts for _ in range(num_images)]
        height = height or model.config.image_size
        width = width or model.config.image_size
        model.check_image_size(height, width)

        context = model.encode_prompts(prompts)
        null_context = model.encode_prompts([negative_prompt])
        f = model.autoencoder.downsample_factor
        shape = (len(prompts), model.config.unet.out_channels, height // f, width // f)
        generator = torch.Generator().manual_seed(seed)
        z_T = torch.randn(shape, generator=generator).to(self.device)

        denoise = guided_denoiser(
            model.unet, context, null_context, guidance, model.config.diffusion.prediction, model.schedule
        )
        bar = tqdm(total=steps, desc="sampling", leave=False, disable=not progress)

        def on_step(i: int, n: int) -> None:
            bar.update(1)
            if callback is not None:
                callback(i, n)

        try:
            latents = sample(
                sampler, denoise, z_T, model.schedule, num_steps=steps, eta=eta, generator=generator,
                callback=on_step,
            )
        finally:
            bar.close()
        return model.decode_latents(latents).float().cpu()


def load_pipeline(
    folder: str | Path | None = None, device: str | torch.device = "cpu", ema: bool = True, prediction: str | None = None
) -> TextToImagePipeline:
    """The text-to-image pipeline of a model folder written by `ldmkit train`, a Stable Diffusion single
    file or a diffusers folder (see `TextToImagePipeline.from_folder`); by default the shipped shapes64 model."""
    if folder is None:
        from ldmkit.pretrained import shipped_model

        folder = shipped_model()
    return TextToImagePipeline.from_folder(folder, device, ema=ema, prediction=prediction)
