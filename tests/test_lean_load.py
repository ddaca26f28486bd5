"""Loading Stable Diffusion single files and diffusers folders without a second copy of the weights
(`ldmkit.model.load_model`: modules built with meta parameters, the file's tensors assigned) gives
bit for bit the model the copying loader gives: a randomly initialised model with the file's tensors
copied in (`copying_load` below). Checked on the tiny SD-1-like and SD-2-like files tests/test_sd_parity.py
builds, in fp32, fp16 and bf16, as .safetensors, .ckpt (zip and legacy formats) and diffusers folders.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldmkit.convert import read_checkpoint
from ldmkit.model import load_model
from ldmkit.convert.meta import _original_register_parameter, assign_weights, empty_parameters
from ldmkit.storage import CheckpointError

HAVE_SD = all(importlib.util.find_spec(m) for m in ("diffusers", "transformers", "clip"))
pytestmark = pytest.mark.skipif(not HAVE_SD, reason="diffusers, transformers and clip-anytorch are needed (pip install 'ldmkit[sd]')")


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    from test_sd_parity import build  # the module pytest imported (tests/ is on sys.path): one build per session

    return build("v1", tmp_path_factory)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    from test_sd_parity import build

    return build("v2", tmp_path_factory)


def copying_load(path: Path, ema: bool = True):
    """The reference: read the checkpoint in its own dtypes, build the model with random weights, copy."""
    from ldmkit.model import LatentDiffusion

    ckpt = read_checkpoint(path, ema)
    model = LatentDiffusion(ckpt.config, ckpt.tokenizer)
    missing, unexpected = model.load_state_dict(ckpt.weights, strict=False)
    assert not missing and not unexpected
    return model.eval()


def assert_same_model(lean, ref) -> None:
    """Same state dict (keys, dtypes, strides, values bit for bit), same non-persistent buffers, same
    parameter flags and schedule, nothing left on the meta device."""
    a, b = lean.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype == torch.float32, key
        assert a[key].shape == b[key].shape and a[key].stride() == b[key].stride(), key
        assert torch.equal(a[key], b[key]), key
    buffers_a, buffers_b = dict(lean.named_buffers()), dict(ref.named_buffers())
    assert list(buffers_a) == list(buffers_b)
    for key in buffers_a:
        assert buffers_a[key].dtype == buffers_b[key].dtype and torch.equal(buffers_a[key], buffers_b[key]), key
    params_a, params_b = dict(lean.named_parameters()), dict(ref.named_parameters())
    assert list(params_a) == list(params_b)
    for key, p in params_a.items():
        assert type(p) is torch.nn.Parameter and p.requires_grad == params_b[key].requires_grad, key
        assert not p.is_meta, key
    for name in ("betas", "alphas_cumprod"):
        assert torch.equal(getattr(lean.schedule, name), getattr(ref.schedule, name))
    assert lean.config == ref.config and not lean.training


def half(src: Path, dst: Path, dtype: torch.dtype) -> Path:
    save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}, str(dst))
    return dst


@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_single_file_loads_bit_identical_to_the_copying_loader(v1, v2, tmp_path, dtype, ema):
    for ref in (v1, v2):
        path = ref["original"] if dtype == torch.float32 else half(ref["original"], tmp_path / ref["original"].name, dtype)
        assert_same_model(load_model(path, ema=ema), copying_load(path, ema=ema))


def test_diffusers_folder_loads_bit_identical_to_the_copying_loader(v1, v2, tmp_path):
    import shutil

    for ref in (v1, v2):
        assert_same_model(load_model(ref["folder"]), copying_load(ref["folder"]))
        # an fp16 folder (what diffusers' variant="fp16" downloads hold) becomes fp32 all the same
        folder = tmp_path / f"fp16-{ref['original'].stem}"
        shutil.copytree(ref["folder"], folder)
        for f in folder.glob("*/*.safetensors"):
            half(f, f, torch.float16)
        assert_same_model(load_model(folder), copying_load(folder))


@pytest.mark.parametrize("legacy", [False, True])
def test_ckpt_loads_bit_identical_to_the_copying_loader(v1, v2, tmp_path, legacy):
    """torch.load(weights_only=True), memory-mapped for zip-format files; legacy files load unmapped. The
    EMA and training copies of v1 share storages in the pickle (as torch.save keeps aliasing): each
    parameter still gets memory of its own."""
    for ref in (v1, v2):
        sd = load_file(str(ref["original"]))
        path = tmp_path / f"{ref['original'].stem}.ckpt"
        torch.save({"state_dict": sd, "global_step": 1}, str(path), _use_new_zipfile_serialization=not legacy)
        lean = load_model(path)
        assert_same_model(lean, copying_load(path))
        pointers = [p.data_ptr() for p in lean.parameters()]
        assert len(set(pointers)) == len(pointers)


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process that map ``path`` (from /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == str(path.resolve()):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc/self/maps")
def test_fp32_weights_are_the_files_mapped_pages_and_writes_stay_private(v1, tmp_path):
    """No second copy: every fp32 weight of a .safetensors file is the file's memory mapping (the 1×1
    attention convolutions of the autoencoder included, which are reshaped views). Writing into a
    parameter changes the model, never the file."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(ref_bytes := v1["original"].read_bytes())
    model = load_model(path)
    ranges = _mapped_ranges(path)
    assert ranges
    inside = [any(lo <= p.data_ptr() < hi for lo, hi in ranges) for p in model.parameters()]
    assert all(inside), f"{inside.count(False)} of {len(inside)} parameters are copies"
    param = model.unet.conv_in.weight
    before = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    assert torch.equal(param, before + 1.0)
    del model, param
    assert path.read_bytes() == ref_bytes


def test_fp16_weights_become_fp32_tensors_of_their_own(v1, tmp_path):
    path = half(v1["original"], tmp_path / "half.safetensors", torch.float16)
    model = load_model(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ranges = _mapped_ranges(path) if Path("/proc/self/maps").is_file() else []
    assert not any(lo <= p.data_ptr() < hi for lo, hi in ranges for p in model.parameters())


def test_empty_parameters_builds_meta_parameters_and_real_buffers_only_in_its_thread():
    import threading

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            self.register_buffer("ids", torch.arange(5), persistent=False)
            self.register_buffer("scale", torch.tensor(2.0))

    built: dict[str, torch.nn.Module] = {}
    with empty_parameters():
        net = Net()
        other = threading.Thread(target=lambda: built.setdefault("other", Net()))
        other.start()
        other.join()
    assert net.linear.weight.is_meta and net.linear.bias.is_meta and net.linear.weight.requires_grad
    assert torch.equal(net.ids, torch.arange(5))  # a non-persistent buffer keeps its value
    assert not built["other"].linear.weight.is_meta  # the other thread built as usual
    assert not Net().linear.weight.is_meta  # and so does this one after the block
    assert torch.nn.Module.register_parameter is _original_register_parameter

    weights = {"linear.weight": torch.ones(3, 4, dtype=torch.float16), "linear.bias": torch.zeros(3), "scale": torch.tensor(3.0)}
    bias = weights["linear.bias"]
    assign_weights(net, weights, "test")
    assert not weights  # handed over
    assert net.linear.weight.dtype == torch.float32 and net.linear.bias.data_ptr() == bias.data_ptr()
    assert float(net.scale) == 3.0

    with empty_parameters():
        net = Net()
    with pytest.raises(CheckpointError, match="missing linear.bias; unexpected extra"):
        assign_weights(net, {"linear.weight": torch.ones(3, 4), "scale": torch.tensor(1.0), "extra": torch.ones(1)}, "test")
