"""Feature reuse (DeepCache, `ldmkit.nn.feature_cache`) and the cached text keys and values of
cross-attention (`ldmkit.nn.kv_cache`), on tiny random-weight UNets: ldmkit's own layout and Stable
Diffusion v1's (1×1-conv projections, 8 heads, two ResBlocks per level), and a tiny random SD model
converted from diffusers."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch

from ldmkit.cli import main
from ldmkit.config import DiffusionConfig, UNetConfig
from ldmkit.diffusion import guided_denoiser, make_schedule, sample
from ldmkit.errors import UsageError
from ldmkit.nn.feature_cache import FeatureCache
from ldmkit.nn.kv_cache import TextKVCache, cached_text_kv, cross_attention_layers
from ldmkit.nn.unet import UNet
from ldmkit.pipelines.text_to_image import load_pipeline
from tests.tiny_models import build_tiny_model

CONFIGS = {
    # ldmkit's layout (Linear projections, heads of fixed width), one ResBlock per level
    "ldmkit": UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                         attention_levels=(1, 2), head_dim=16, context_dim=24),
    # Stable Diffusion v1's layout: attention at the first level too, 8 heads, conv projections, 2 blocks
    "sd-v1": UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                        attention_levels=(0, 1), num_heads=8, context_dim=24, linear_projection=False,
                        norm_eps=1e-5),
}


def random_unet(name: str, seed: int = 0) -> UNet:
    """A UNet of ``CONFIGS[name]`` with random weights everywhere (a fresh UNet zeroes proj_out)."""
    torch.manual_seed(seed)
    unet = UNet(CONFIGS[name]).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return unet


def inputs(cfg: UNetConfig, batch: int = 2, size: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, cfg.in_channels, size, size, generator=g), torch.tensor([900, 20] * (batch // 2)),
            torch.randn(batch, 5, cfg.context_dim, generator=g))


def counting(module: torch.nn.Module) -> list[int]:
    """A one-item list counting ``module``'s forward calls."""
    count = [0]
    module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


def ddim(model_fn, cfg: UNetConfig, steps: int = 9, seed: int = 2) -> torch.Tensor:
    """z_0 of a guided DDIM run over ``model_fn`` from a seeded z_T."""
    g = torch.Generator().manual_seed(seed)
    z_T = torch.randn(2, cfg.in_channels, 8, 8, generator=g)
    context, null = torch.randn(2, 5, cfg.context_dim, generator=g), torch.randn(1, 5, cfg.context_dim, generator=g)
    schedule = make_schedule(DiffusionConfig())
    with torch.inference_mode():
        return sample("ddim", guided_denoiser(model_fn, context, null, 4.0), z_T, schedule, num_steps=steps)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of ``a`` against ``b``, over the peak-to-peak range of ``b``."""
    mse = (a - b).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10((b.max() - b.min()).item() ** 2 / mse)


# --------------------------------------------------------------------------------------------------
# the split of the UNet


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_split_is_forward_bit_for_bit(name):
    unet = random_unet(name)
    z, t, c = inputs(unet.cfg)
    with torch.inference_mode():
        plain = unet(z, t, c)
        for k in range(unet.cfg.num_res_blocks + 1):
            eps, deep = unet.forward_split(z, t, c, shallow_blocks=k)
            assert torch.equal(eps, plain), k
            # the shallow branch on the deep features of the same input is the whole UNet again
            again, same = unet.forward_split(z, t, c, deep=deep, shallow_blocks=k)
            assert torch.equal(again, plain) and same is deep, k
        with pytest.raises(ValueError, match="shallow_blocks"):
            unet.forward_split(z, t, c, shallow_blocks=unet.cfg.num_res_blocks + 1)


@pytest.mark.parametrize("name", CONFIGS)
def test_interval_1_is_the_plain_unet(name):
    unet = random_unet(name)
    cache = FeatureCache(unet, 1)
    assert torch.equal(ddim(cache, unet.cfg), ddim(unet, unet.cfg))
    assert cache.full_calls == cache.calls == 9


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("interval", [2, 3])
def test_the_whole_unet_runs_every_nth_step_and_the_result_stays_close(name, interval):
    unet = random_unet(name)
    deep_calls, shallow_calls = counting(unet.middle), counting(unet.conv_in)
    steps = 9
    cache = FeatureCache(unet, interval)
    cached = ddim(cache, unet.cfg, steps)
    assert deep_calls[0] == cache.full_calls == math.ceil(steps / interval)
    assert shallow_calls[0] == cache.calls == steps
    plain = ddim(unet, unet.cfg, steps)
    other_seed = ddim(unet, unet.cfg, steps, seed=3)
    # far closer to the uncached result from the same z_T than another z_T is
    assert (cached - plain).abs().mean() < 0.1 * (other_seed - plain).abs().mean()
    assert psnr(cached, plain) > 25


def test_a_change_of_batch_runs_the_whole_unet():
    """guidance_stop halves the batch for the last steps: the stored features do not fit, so that step
    runs in full (and its features are reused from then on)."""
    unet = random_unet("ldmkit")
    z, t, c = inputs(unet.cfg, batch=4)
    cache = FeatureCache(unet, 3)
    with torch.inference_mode():
        cache(z, t, c)
        cache(z, t, c)
        assert cache.full_calls == 1
        out = cache(z[:2], t[:2], c[:2])
        assert cache.full_calls == 2 and torch.equal(out, unet(z[:2], t[:2], c[:2]))
        cache(z[:2], t[:2], c[:2])
        assert cache.full_calls == 2


# --------------------------------------------------------------------------------------------------
# the text keys and values


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_text_kv_equal_the_recomputed_ones(name):
    unet = random_unet(name)
    z, t, c = inputs(unet.cfg)
    layers = cross_attention_layers(unet)
    assert layers and all(layer.to_k.in_features == unet.cfg.context_dim for layer in layers)
    with torch.inference_mode():
        plain = unet(z, t, c)
        with cached_text_kv(unet) as cache:
            first, second = unet(z, t, c), unet(z, t, c)
            assert cache.misses == len(layers) and cache.hits == len(layers)
            for layer in layers:
                ((context, _, _, k, v),) = cache.entries[layer]
                assert context is c
                assert torch.equal(k, layer.to_k(c)) and torch.equal(v, layer.to_v(c))
            unet(z, t, c.clone())  # another tensor: computed again
            assert cache.misses == 2 * len(layers)
        assert torch.equal(first, plain) and torch.equal(second, plain)
    assert all(layer.kv_cache is None for layer in layers) and not cache.entries


def test_no_caching_where_gradients_are_needed():
    unet = random_unet("ldmkit")
    z, t, c = inputs(unet.cfg)
    with cached_text_kv(unet) as cache, torch.enable_grad():
        unet(z.requires_grad_(True), t, c).sum().backward()
    assert cache.hits == cache.misses == 0


def test_kv_cache_keeps_attention_hooks_working():
    """Prompt-to-Prompt's probs_hook sees the same weights with the cache as without."""
    unet = random_unet("sd-v1")
    z, t, c = inputs(unet.cfg)
    seen = []
    for layer in cross_attention_layers(unet):
        layer.probs_hook = lambda a: seen.append(a) or a
    with torch.inference_mode():
        plain = unet(z, t, c)
        with cached_text_kv(unet):
            cached = unet(z, t, c)
    half = len(seen) // 2
    assert torch.equal(cached, plain) and all(torch.equal(a, b) for a, b in zip(seen[:half], seen[half:]))


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    return load_pipeline(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def test_pipeline_kv_cache_gives_the_same_image(tiny_pipe, monkeypatch):
    import ldmkit.pipelines.base as base

    calls = []

    def recording(unet, cache=None):
        calls.append(unet)
        return cached_text_kv(unet, cache)

    monkeypatch.setattr(base, "cached_text_kv", recording)
    cached = tiny_pipe.generate_tensors("a red circle", steps=4, seed=3, num_images=2)
    assert calls == [tiny_pipe.model.unet]
    monkeypatch.setattr(base, "cached_text_kv", lambda unet: contextlib.nullcontext())
    assert torch.equal(cached, tiny_pipe.generate_tensors("a red circle", steps=4, seed=3, num_images=2))


def test_pipeline_cache_interval(tiny_pipe):
    plain = tiny_pipe.generate_tensors("a red circle", steps=6, seed=1, num_images=2)
    assert torch.equal(plain, tiny_pipe.generate_tensors("a red circle", steps=6, seed=1, num_images=2,
                                                         cache_interval=1))
    deep_calls = counting(tiny_pipe.model.unet.middle)
    reused = tiny_pipe.generate_tensors("a red circle", steps=6, seed=1, num_images=2, cache_interval=3)
    assert deep_calls[0] == 2
    other = tiny_pipe.generate_tensors("a red circle", steps=6, seed=2, num_images=2)
    assert (reused - plain).abs().mean() < 0.2 * (other - plain).abs().mean()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="cache_interval"):
            tiny_pipe("a red circle", steps=2, cache_interval=bad)


def test_pipeline_cache_depth(tiny_pipe):
    """cache_depth k picks the shallow branch: k = 0 recomputes less than the default k = 1 (the first level's
    ResAttnBlock is reused, not run), so its images differ from k = 1's and stay near the plain run's; with reuse
    off (interval 1) the depth changes nothing; beyond the UNet's blocks per level it is one line, before any
    sampling."""
    unet = tiny_pipe.model.unet
    run = dict(steps=6, seed=1, num_images=2)
    plain = tiny_pipe.generate_tensors("a red circle", **run)
    assert torch.equal(plain, tiny_pipe.generate_tensors("a red circle", cache_depth=0, **run))
    first_block = counting(unet.encoder[0].blocks[0])
    k1 = tiny_pipe.generate_tensors("a red circle", cache_interval=3, **run)
    runs_k1 = first_block[0]
    k0 = tiny_pipe.generate_tensors("a red circle", cache_interval=3, cache_depth=0, **run)
    assert runs_k1 == 6 and first_block[0] - runs_k1 == 2  # k = 0: only at the 2 full steps
    assert not torch.equal(k0, k1)
    other = tiny_pipe.generate_tensors("a red circle", steps=6, seed=2, num_images=2)
    assert (k0 - plain).abs().mean() < 0.3 * (other - plain).abs().mean()
    calls = counting(unet.conv_in)
    for bad, allowed in ((2, "0 … 1 \\(this UNet has 1 block per level"), (-1, "0 … 4"), (True, "0 … 4")):
        with pytest.raises(UsageError, match=f"cache_depth = {bad!r}; allowed: an integer {allowed}") as caught:
            tiny_pipe("a red circle", steps=4, cache_interval=2, cache_depth=bad)
        assert "\n" not in str(caught.value)
    assert calls[0] == 0


def test_stable_diffusion_model(tmp_path_factory):
    """A tiny random SD 1-like model from diffusers, converted: interval 1 is the plain run, interval 2
    runs the whole UNet every other step, and the K/V cache changes nothing."""
    pytest.importorskip("diffusers")
    from ldmkit.pipelines.text_to_image import TextToImagePipeline
    from tests.test_sd_parity import build, ldmkit_model

    pipe = TextToImagePipeline(ldmkit_model(build("v1", tmp_path_factory), "diffusers"))
    run = dict(steps=6, seed=0, guidance=7.5, num_images=1)
    plain = pipe.generate_tensors("a photo", **run)
    assert torch.equal(plain, pipe.generate_tensors("a photo", cache_interval=1, **run))
    deep_calls = counting(pipe.model.unet.middle)
    reused = pipe.generate_tensors("a photo", cache_interval=2, **run)
    assert deep_calls[0] == 3
    assert psnr(reused, plain) > 20
    unet, z, t = pipe.model.unet, torch.randn(2, 4, 8, 8), torch.tensor([500, 10])
    c = pipe.model.encode_prompts(["a photo", "a cat"])
    with torch.inference_mode(), cached_text_kv(unet) as cache:
        assert torch.equal(unet(z, t, c), unet(z, t, c)) and cache.hits == len(cross_attention_layers(unet))


# --------------------------------------------------------------------------------------------------
# the command line


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_cli_refuses_a_bad_cache_interval_in_one_line(value, tiny_pipe, tmp_path, capsys):
    model = build_tiny_model(tmp_path / "model")
    out = tmp_path / "g.png"
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "a red circle", "--model", str(model), "--out", str(out), f"--cache-interval={value}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "--cache-interval" in err
    assert not out.exists()


def test_cli_generates_with_feature_reuse(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "model")
    out = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(out), "--steps", "3",
                 "--cache-interval", "2", "--no-progress"]) == 0
    assert out.is_file()


def test_cli_cache_depth(tmp_path, capsys):
    """--cache-depth runs with --cache-interval (alone it does nothing, and generate notes so); one beyond the UNet's
    blocks per level exits 2 in one line, and nothing is written."""
    model = build_tiny_model(tmp_path / "model")
    out = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(out), "--steps", "3",
                 "--cache-interval", "2", "--cache-depth", "0", "--no-progress"]) == 0
    assert out.is_file() and "note" not in capsys.readouterr().err
    alone = tmp_path / "alone.png"  # without reuse the depth does nothing, and generate says so
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(alone), "--steps", "3",
                 "--cache-depth", "0", "--no-progress"]) == 0
    assert "--cache-depth applies with --cache-interval" in capsys.readouterr().err and alone.is_file()
    bad = tmp_path / "bad.png"
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(bad), "--steps", "3",
                 "--cache-interval", "2", "--cache-depth", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "cache_depth = 3" in err and "0 … 1" in err and not bad.exists()


def test_server_settings_carry_the_cache_interval():
    pydantic = pytest.importorskip("pydantic")
    pytest.importorskip("fastapi")
    from ldmkit.serve.app import reproduce_command
    from ldmkit.serve.limits import Limits
    from ldmkit.serve.schemas import GenerateRequest

    with pytest.raises(pydantic.ValidationError, match="cache_interval"):
        GenerateRequest(prompt="a red circle", cache_interval=0)
    request = GenerateRequest(prompt="a red circle", cache_interval=3, seed=1)
    settings = request.resolve(Limits(latent_factor=4, default_size=64, max_size=256, num_timesteps=1000))
    assert settings.cache_interval == 3
    assert "--cache-interval=3" in reproduce_command(settings, "m")
    assert "--cache-interval" not in reproduce_command(settings.model_copy(update={"cache_interval": 1}), "m")
    assert "--cache-depth" not in reproduce_command(settings, "m")  # the default depth
    deeper = GenerateRequest(prompt="a red circle", cache_interval=3, cache_depth=0, seed=1)
    limits = Limits(latent_factor=4, default_size=64, max_size=256, num_timesteps=1000, blocks_per_level=2)
    assert deeper.limit_errors(limits) == []
    assert "--cache-interval=3 --cache-depth=0" in reproduce_command(deeper.resolve(limits), "m")
    too_deep = GenerateRequest(prompt="a red circle", cache_interval=3, cache_depth=3)
    [error] = too_deep.limit_errors(limits)
    assert error["loc"] == ("body", "cache_depth") and "0 … 2 (this UNet has 2 blocks per level" in error["msg"]
    with pytest.raises(pydantic.ValidationError, match="cache_depth"):
        GenerateRequest(prompt="a red circle", cache_depth=-1)


def test_kv_cache_object_holds_a_few_contexts_per_layer():
    unet = random_unet("ldmkit")
    z, t, _ = inputs(unet.cfg)
    cache = TextKVCache(per_layer=2)
    with torch.inference_mode(), cached_text_kv(unet, cache):
        contexts = [torch.randn(2, 5, unet.cfg.context_dim) for _ in range(3)]
        for c in contexts:
            unet(z, t, c)
        assert all(len(entries) == 2 and entries[0][0] is contexts[-1] for entries in cache.entries.values())


def test_feature_reuse_under_bf16_autocast(tiny_pipe):
    """The deep features are kept in the dtype autocast gave them and reused under the same autocast."""
    from ldmkit.pipelines.text_to_image import TextToImagePipeline

    pipe = TextToImagePipeline(tiny_pipe.model, precision="bf16")
    deep_calls = counting(pipe.model.unet.middle)
    plain = pipe.generate_tensors("a red circle", steps=4, seed=1)
    reused = pipe.generate_tensors("a red circle", steps=4, seed=1, cache_interval=2)
    assert deep_calls[0] == 4 + 2 and torch.isfinite(reused).all()
    assert psnr(reused, plain) > 20


def test_an_avx2_cpu_runs_the_unet_channels_last_with_the_same_images(tmp_path_factory, monkeypatch):
    """Without AVX-512 an fp32 pipeline keeps its UNet in channels-last layout (`unet_channels_last`); the images of
    every path (plain, cached text K/V, feature reuse, binding guidance's attention hooks) are those of NCHW up to
    rounding, and interval 1 is still the plain run bit for bit. With AVX-512, or in bf16, the layout stays NCHW."""
    from ldmkit.device import unet_channels_last

    folder = build_tiny_model(tmp_path_factory.mktemp("nhwc") / "model")
    nchw = load_pipeline(folder)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    nhwc = load_pipeline(folder)
    assert nhwc.model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not unet_channels_last(torch.device("cpu"), bf16=True)
    assert not unet_channels_last(torch.device("cuda"), bf16=False)
    for options in ({}, {"cache_interval": 2}, {"binding": 0.5}):
        a = nchw.generate_tensors("a red circle above a blue square", steps=4, seed=5, num_images=2, **options)
        b = nhwc.generate_tensors("a red circle above a blue square", steps=4, seed=5, num_images=2, **options)
        torch.testing.assert_close(b, a, atol=1e-3, rtol=0)
    plain = nhwc.generate_tensors("a red circle", steps=4, seed=1)
    assert torch.equal(plain, nhwc.generate_tensors("a red circle", steps=4, seed=1, cache_interval=1))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not load_pipeline(folder).model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_bf16_unet_of_stable_diffusions_group_widths_runs_channels_last_on_avx512(monkeypatch):
    """In bf16 on an AVX-512 CPU a UNet whose every GroupNorm has ≥ 4 channels per group (Stable Diffusion's widths)
    is laid out channels-last, from its first convolution on though z_t comes in NCHW, with the NCHW UNet's ε̂ up to
    bf16 rounding and its text K/V cache and feature reuse intact; a narrower one (the shipped UNet's 2 per group)
    stays NCHW, as does any UNet in fp32 there."""
    from ldmkit.device import lay_out_unet, store_for_autocast
    from ldmkit.nn.layers import narrowest_group
    from ldmkit.nn.prepack import prepack

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    cpu = torch.device("cpu")
    wide = UNetConfig(in_channels=4, out_channels=4, model_channels=128, channel_mults=(1, 2), num_res_blocks=1,
                      attention_levels=(0, 1), num_heads=4, context_dim=24, linear_projection=False)
    torch.manual_seed(0)
    nchw = UNet(wide).eval()
    with torch.no_grad():  # a trained UNet's output projections are not zero: make ε̂ depend on every block
        for p in nchw.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    assert narrowest_group(nchw) == 4
    assert not lay_out_unet(UNet(CONFIGS["ldmkit"]), cpu, bf16=True)  # 32 channels in 32 groups: 1 per group
    assert not lay_out_unet(UNet(wide), cpu, bf16=False)
    store_for_autocast(nchw)  # as a bf16 pipeline keeps it: weights in bf16, convolutions packed for oneDNN
    prepack(nchw)
    nhwc = copy.deepcopy(nchw)
    assert lay_out_unet(nhwc, cpu, bf16=True)
    z = torch.randn(2, 4, 8, 8)
    t, context = torch.tensor([500, 20]), torch.randn(2, 6, 24)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        seen = []
        hook = nhwc.conv_out.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        out = nhwc(z, t, context)
        hook.remove()
        assert seen[0].is_contiguous(memory_format=torch.channels_last)  # it ran channels-last to the end
        reference = nchw(z, t, context).float()
        torch.testing.assert_close(out.float(), reference, atol=0.05 * reference.abs().max().item(), rtol=0)
        with cached_text_kv(nhwc):
            torch.testing.assert_close(nhwc(z, t, context), out, atol=0, rtol=0)
        assert torch.equal(FeatureCache(nhwc, 1)(z, t, context), out)
        reuse, reuse_nchw = FeatureCache(nhwc, 2), FeatureCache(nchw, 2)
        for step in (500, 480):  # the second call runs the shallow branch on the stored deep features
            t = torch.tensor([step, step])
            got, want = reuse(z, t, context).float(), reuse_nchw(z, t, context).float()
        assert reuse.full_calls == 1 and reuse.calls == 2
        torch.testing.assert_close(got, want, atol=0.05 * want.abs().max().item(), rtol=0)
