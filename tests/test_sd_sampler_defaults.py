"""A Stable Diffusion diffusers folder samples with what its own scheduler config says (timestep_spacing
"leading", steps_offset 1, as SD's), as diffusers does: ldmkit's default DDIM, Euler, Euler ancestral and
DPM++(2M) on a tiny random-weight SD folder equal diffusers' StableDiffusionPipeline with the folder's
scheduler config (that scheduler class `from_config`) within 1/255 per pixel, same seed, 10 steps, CFG 7.5."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'ldmkit[sd]')")
pytest.importorskip("transformers", reason="transformers is not installed (pip install 'ldmkit[sd]')")
if importlib.util.find_spec("clip") is None:
    pytest.skip("clip-anytorch (the CLIP vocabulary) is not installed (pip install 'ldmkit[sd]')", allow_module_level=True)

from ldmkit.convert.infer import grid_from_scheduler  # noqa: E402
from ldmkit.errors import UsageError  # noqa: E402
from ldmkit.model import load_model  # noqa: E402
from ldmkit.pipelines.text_to_image import TextToImagePipeline  # noqa: E402

IMAGE = 32
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
              "dpmpp-2m": "DPMSolverMultistepScheduler"}


@pytest.fixture(scope="module", params=["v1", "v2"])
def ref(request, tmp_path_factory):
    from test_sd_parity import build  # the module pytest imported (tests/ is on sys.path): one build per session

    return build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def ours(ref):
    return TextToImagePipeline(load_model(ref["folder"]))


def test_the_folder_says_leading_with_offset_1(ours):
    assert ours.model.scheduler_grid == {"spacing": "leading", "steps_offset": 1}
    assert ours.grid_options("ddim") == {"spacing": "leading", "steps_offset": 1, "karras": False}
    # given options win over the folder's
    assert ours.grid_options("euler", "trailing") == {"spacing": "trailing", "steps_offset": None, "karras": False}


@pytest.mark.parametrize("sampler", SCHEDULERS)
def test_default_sampling_matches_diffusers_pipeline_with_the_folder_scheduler_config(ref, ours, sampler):
    pipe = ref["pipe"]
    config = diffusers.DDIMScheduler.load_config(str(ref["folder"] / "scheduler"))
    pipe.scheduler = getattr(diffusers, SCHEDULERS[sampler]).from_config(config)
    prompt, steps, guidance, seed = "a blue square above a yellow star", 10, 7.5, 3
    expected = pipe(prompt, height=IMAGE, width=IMAGE, num_inference_steps=steps, guidance_scale=guidance,
                    negative_prompt="", generator=torch.Generator().manual_seed(seed), output_type="pt").images
    images = ours.generate_tensors(prompt, steps=steps, guidance=guidance, seed=seed, height=IMAGE, width=IMAGE,
                                   sampler=sampler)
    err = ((images + 1) / 2 - expected).abs().max().item()
    assert err <= 1 / 255, f"{sampler}: max |difference| {err * 255:.2f}/255"


def test_scheduler_configs_read_as_diffusers_reads_them():
    assert grid_from_scheduler({}) == {}
    assert grid_from_scheduler({"_class_name": "PNDMScheduler", "steps_offset": 1}) == {"spacing": None,
                                                                                        "steps_offset": 1}
    assert grid_from_scheduler({"timestep_spacing": "trailing"}) == {"spacing": "trailing", "steps_offset": 0}
    with pytest.raises(ValueError, match="timestep_spacing 'uniform' is not supported"):
        grid_from_scheduler({"timestep_spacing": "uniform"})


def test_a_config_without_spacing_takes_each_diffusers_schedulers_own_default(ours):
    saved = ours.model.scheduler_grid
    try:
        ours.model.scheduler_grid = {"spacing": None, "steps_offset": 1}  # SD 1.5's PNDM config has no spacing
        assert ours.grid_options("ddim")["spacing"] == "leading"  # DDIMScheduler's default
        assert ours.grid_options("euler")["spacing"] == "linspace"  # EulerDiscreteScheduler's default
        with pytest.raises(UsageError, match="steps_offset"):
            ours.grid_options("euler", "trailing", 1)
    finally:
        ours.model.scheduler_grid = saved
