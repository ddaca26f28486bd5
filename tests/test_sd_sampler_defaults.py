"""A Stable Diffusion diffusers folder samples with what its own scheduler config says (timestep_spacing
"leading", steps_offset 1, as SD's), as diffusers does: ldmkit's DDIM, PLMS, Euler, Euler ancestral, DPM++(2M)
and UniPC on a tiny random-weight SD folder equal diffusers' StableDiffusionPipeline with the folder's
scheduler config (that scheduler class `from_config`) within 1/255 per pixel, same seed, 10 steps, CFG 7.5;
and with no sampler given, a folder samples with the sampler its scheduler class names (SD 1.5's PNDMScheduler:
PLMS), as diffusers' pipeline does."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings

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
from tests.tiny_models import SD15_SCHEDULER  # noqa: E402

IMAGE = 32
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
              "dpmpp-2m": "DPMSolverMultistepScheduler", "plms": "PNDMScheduler", "unipc": "UniPCMultistepScheduler"}


@pytest.fixture(scope="module", params=["v1", "v2"])
def ref(request, tmp_path_factory):
    from test_sd_parity import build  # the module pytest imported (tests/ is on sys.path): one build per session

    return build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def ours(ref):
    return TextToImagePipeline(load_model(ref["folder"]))


def test_the_folder_says_leading_with_offset_1(ours):
    assert ours.model.scheduler_grid == {"spacing": "leading", "steps_offset": 1, "scheduler": "DDIMScheduler"}
    assert ours.grid_options("ddim") == {"spacing": "leading", "steps_offset": 1, "karras": False}
    # given options win over the folder's
    assert ours.grid_options("euler", "trailing") == {"spacing": "trailing", "steps_offset": None, "karras": False}


@pytest.mark.parametrize("sampler", SCHEDULERS)
def test_default_sampling_matches_diffusers_pipeline_with_the_folder_scheduler_config(ref, ours, sampler):
    pipe = ref["pipe"]
    config = diffusers.DDIMScheduler.load_config(str(ref["folder"] / "scheduler"))
    if sampler == "plms" and config["prediction_type"] == "v_prediction":
        pytest.skip("diffusers' PNDMScheduler combines a v-model's raw outputs and turns the sum into ε at the "
                    "current step; ldmkit's PLMS combines each step's ε (docs/stable_diffusion.md)")
    pipe.scheduler = getattr(diffusers, SCHEDULERS[sampler]).from_config(config, skip_prk_steps=True)
    prompt, steps, guidance, seed = "a blue square above a yellow star", 10, 7.5, 3
    expected = pipe(prompt, height=IMAGE, width=IMAGE, num_inference_steps=steps, guidance_scale=guidance,
                    negative_prompt="", generator=torch.Generator().manual_seed(seed), output_type="pt").images
    images = ours.generate_tensors(prompt, steps=steps, guidance=guidance, seed=seed, height=IMAGE, width=IMAGE,
                                   sampler=sampler)
    err = ((images + 1) / 2 - expected).abs().max().item()
    assert err <= 1 / 255, f"{sampler}: max |difference| {err * 255:.2f}/255"


def with_scheduler(folder, config: dict, name: str):
    """The diffusers folder at ``folder`` with scheduler class ``name`` and config ``config``."""
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "_class_name": name}))
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", name]}))
    return folder


KARRAS = {**{k: v for k, v in SD15_SCHEDULER.items() if k not in ("skip_prk_steps", "set_alpha_to_one")},
          "use_karras_sigmas": True}
DEFAULT_CASES = {"sd15-pndm": ("PNDMScheduler", SD15_SCHEDULER, "plms"),
                 "dpm-karras": ("DPMSolverMultistepScheduler", KARRAS, "dpmpp-2m"),
                 "unipc-karras": ("UniPCMultistepScheduler", KARRAS, "unipc")}


@pytest.mark.parametrize("case", DEFAULT_CASES)
def test_a_folder_samples_by_default_as_diffusers_samples_it(ref, tmp_path, case):
    """SD 1.5's scheduler config (PNDMScheduler), and DPM-Solver++ and UniPC configs with Karras σ: `ldmkit
    generate` with no --sampler draws diffusers' default image of the folder
    (`StableDiffusionPipeline.from_pretrained(folder)(prompt)` at the same steps)."""
    name, config, sampler = DEFAULT_CASES[case]
    folder = tmp_path / case
    shutil.copytree(ref["folder"], folder)
    with_scheduler(folder, config, name)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                             requires_safety_checker=False)
    assert type(pipe.scheduler).__name__ == name
    prompt, steps, guidance, seed = "a red circle on the left", 10, 7.5, 5
    expected = pipe(prompt, height=IMAGE, width=IMAGE, num_inference_steps=steps, guidance_scale=guidance,
                    negative_prompt="", generator=torch.Generator().manual_seed(seed), output_type="pt").images
    ours = TextToImagePipeline(load_model(folder))
    assert ours.sampling_defaults(None, None) == (sampler, 25)
    images = ours.generate_tensors(prompt, steps=steps, guidance=guidance, seed=seed, height=IMAGE, width=IMAGE)
    err = ((images + 1) / 2 - expected).abs().max().item()
    assert err <= 1 / 255, f"max |difference| {err * 255:.2f}/255"


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "unipc"])
def test_karras_on_a_folder_with_a_spacing_spans_the_whole_schedule_as_diffusers(ref, ours, sampler):
    """--karras on SD's folder (leading spacing) is diffusers' use_karras_sigmas=True, A1111's "DPM++ 2M Karras":
    σ from σ_max to σ_min of the whole schedule, whatever the config's spacing. (Euler's is too, but diffusers hands
    its UNet the fractional timestep between two, which ldmkit's integer-timestep UNet rounds.)"""
    pipe = ref["pipe"]
    config = diffusers.DDIMScheduler.load_config(str(ref["folder"] / "scheduler"))
    cls = {"dpmpp-2m": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler"}[sampler]
    pipe.scheduler = getattr(diffusers, cls).from_config(config, use_karras_sigmas=True)
    prompt, steps, guidance, seed = "a blue square above a yellow star", 10, 7.5, 3
    expected = pipe(prompt, height=IMAGE, width=IMAGE, num_inference_steps=steps, guidance_scale=guidance,
                    negative_prompt="", generator=torch.Generator().manual_seed(seed), output_type="pt").images
    images = ours.generate_tensors(prompt, steps=steps, guidance=guidance, seed=seed, height=IMAGE, width=IMAGE,
                                   sampler=sampler, karras=True)
    err = ((images + 1) / 2 - expected).abs().max().item()
    assert err <= 1 / 255, f"{sampler}: max |difference| {err * 255:.2f}/255"


def test_scheduler_settings_ldmkit_does_not_follow_are_warned_of():
    with pytest.warns(UserWarning, match="PNDMScheduler with skip_prk_steps true, not this config's skip_prk_steps "
                                         "false"):
        grid_from_scheduler({"_class_name": "PNDMScheduler", "steps_offset": 1})  # PNDM's own default: PRK steps
    with pytest.warns(UserWarning, match="solver_order 3"):
        grid_from_scheduler({"_class_name": "UniPCMultistepScheduler", "solver_order": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert grid_from_scheduler(SD15_SCHEDULER)["scheduler"] == "PNDMScheduler"
        assert grid_from_scheduler({**KARRAS, "_class_name": "DPMSolverMultistepScheduler"})["karras"] is True


def test_scheduler_configs_read_as_diffusers_reads_them():
    assert grid_from_scheduler({}) == {}
    assert grid_from_scheduler({"_class_name": "PNDMScheduler", "steps_offset": 1, "skip_prk_steps": True}) == {
        "spacing": None, "steps_offset": 1, "scheduler": "PNDMScheduler"}
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
