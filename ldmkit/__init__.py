"""ldmkit: latent diffusion models you can read, train from scratch and measure."""

__version__ = "0.1.0"


def load_pipeline(folder=None, device="cpu", ema=True, prediction=None, precision="fp32"):
    """The text-to-image pipeline of a model folder (default: the shipped shapes64-grounded model):
    ``pipe(prompt, num_inference_steps=…, guidance_scale=…, generator=…, num_images_per_prompt=…).images`` are
    PIL images (diffusers' names, `ldmkit.pipelines.calling`).
    See `ldmkit.pipelines.text_to_image.load_pipeline` for the arguments."""
    from ldmkit.pipelines.text_to_image import load_pipeline as _load

    return _load(folder, device, ema=ema, prediction=prediction, precision=precision)
