"""A pipeline's UNet compiled by the user (``torch.compile``, docs/performance.md): one graph, the eager images."""

from __future__ import annotations

import shutil

import pytest
import torch

from ldmkit import load_pipeline
from ldmkit.nn.kv_cache import cached_text_kv
from ldmkit.nn.prepack import available
from tests.tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("compile") / "model")


def unet_inputs(pipe):
    unet = pipe.model.unet
    z = torch.randn(2, unet.cfg.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    context = pipe.encode(["a red circle", "a blue square"])
    return z, torch.tensor([500, 20]), context


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_unet_traces_as_one_graph_inside_the_pipelines_caches(folder, precision):
    if precision == "bf16" and not available():
        pytest.skip("packed bf16 convolutions need AVX-512")
    pipe = load_pipeline(folder, precision=precision)
    z, t, context = unet_inputs(pipe)
    torch._dynamo.reset()
    # as the pipelines sample: the text K/V cache on, convolutions packed in a bf16 pipeline on AVX-512
    with torch.inference_mode(), cached_text_kv(pipe.model.unet), torch.autocast("cpu", torch.bfloat16,
                                                                                  enabled=pipe.bf16):
        explained = torch._dynamo.explain(pipe.model.unet)(z, t, context)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="TorchInductor needs a C++ compiler")
def test_a_compiled_unet_gives_the_eager_images(folder):
    pipe = load_pipeline(folder)
    prompt = "a red circle above a blue square"
    eager = pipe.generate_tensors(prompt, steps=3, seed=0, num_images=2)
    unet = pipe.model.unet
    torch._dynamo.reset()
    pipe.model.unet = torch.compile(unet, dynamic=False, options={"freezing": True})
    try:
        compiled = pipe.generate_tensors(prompt, steps=3, seed=0, num_images=2)
    finally:
        pipe.model.unet = unet
        torch._dynamo.reset()
    assert torch.allclose(compiled, eager, atol=1e-4)
