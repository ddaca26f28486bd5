"""ldmkit: latent diffusion models you can read, train from scratch and measure."""

__version__ = "0.1.0"


def load_pipeline(folder, device="cpu"):
    """The text-to-image pipeline of a model folder: ``pipe(prompt, steps=…, guidance=…, seed=…,
    num_images=…)`` returns a list of PIL images."""
    from ldmkit.pipelines.text_to_image import load_pipeline as _load

    return _load(folder, device)
