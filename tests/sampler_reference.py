"""The shipped model ``shapes64``'s samples for fixed seeds, one per sampler setting, as a regression reference
(named, not the default, so that the reference outlives a change of default model).

`render` draws them through the public API that existed before the samplers were rebuilt over one σ grid
(`pipe(...)`, `ImageToImagePipeline`, `ldmkit.diffusion.sample` with karras), so the same function runs
against the old and the new code (it did: the PNGs of commit 2845c4a, before the rebuild, were drawn again
within 1/255 after it). When that model changes, the PNGs in tests/data/sampler_reference/ are
written again with

    python -m tests.sampler_reference --write tests/data/sampler_reference

(last: lcm.png alone, for the student distilled with a decaying learning rate; the others were last drawn for
the shipped model trained on varied captions, preset shapes64-varied), and tests/test_sampler_regression.py
checks that today's code draws them within 1/255 per pixel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldmkit import load_pipeline
from ldmkit.diffusion import guided_denoiser, sample
from ldmkit.images import tensor_to_pil
from ldmkit.pipelines.image_to_image import ImageToImagePipeline

PROMPT = "a red circle above a blue square"
SEED = 0
STEPS = 25

# name -> keyword arguments of the text-to-image pipeline call
PIPELINE_CASES = {
    "ddim": dict(sampler="ddim"),
    "ddim-eta0.5": dict(sampler="ddim", eta=0.5),
    "ddim-leading": dict(sampler="ddim", spacing="leading"),
    "ddpm": dict(sampler="ddpm"),
    "euler": dict(sampler="euler"),
    "dpmpp-2m": dict(sampler="dpmpp-2m"),
    "ddim-binding": dict(sampler="ddim", binding=0.3),
}
KARRAS_CASES = ("euler", "dpmpp-2m")  # through ldmkit.diffusion.sample: the old pipeline had no karras option
IMG2IMG_CASES = ("ddim", "euler", "dpmpp-2m")  # strength 0.6 from the "ddim" image


def render() -> dict[str, np.ndarray]:
    """name -> uint8 H×W×3 array of every reference image (two images side by side per setting)."""
    pipe = load_pipeline("shapes64")
    out: dict[str, list] = {}
    for name, kwargs in PIPELINE_CASES.items():
        out[name] = pipe(PROMPT, steps=STEPS, guidance=4.0, seed=SEED, num_images=2, **kwargs)
    model = pipe.model
    with torch.inference_mode():
        context = pipe.encode([PROMPT] * 2)
        null = pipe.encode_null("")
        for name in KARRAS_CASES:
            denoise = guided_denoiser(pipe.unet_fn(), context, null, 4.0, model.config.diffusion.prediction,
                                      model.schedule)
            z_T = torch.randn((2, model.config.unet.out_channels, 16, 16), generator=torch.Generator().manual_seed(SEED))
            latents = sample(name, denoise, z_T, model.schedule, STEPS, karras=True)
            out[f"{name}-karras"] = [tensor_to_pil(x) for x in pipe.decode(latents)]
    img2img = ImageToImagePipeline(model)
    for name in IMG2IMG_CASES:
        out[f"img2img-{name}"] = img2img(out["ddim"], "a green triangle", strength=0.6, steps=STEPS, seed=SEED,
                                         sampler=name)
    student = load_pipeline("shapes64-lcm")
    out["lcm"] = student(PROMPT, seed=SEED, num_images=2, guidance=4.0)  # the scale the reference was drawn at
    return {name: np.concatenate([np.asarray(i.convert("RGB")) for i in images], axis=1)
            for name, images in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, required=True, help="folder to write NAME.png into")
    args = parser.parse_args()
    args.write.mkdir(parents=True, exist_ok=True)
    for name, array in render().items():
        Image.fromarray(array).save(args.write / f"{name}.png")
        print("wrote", args.write / f"{name}.png")


if __name__ == "__main__":
    main()
