"""The CLI's error contract (docs/errors.md), held for every kind of bad input.

Each row of `ROWS` is one class of mistake a user can type, run through the real CLI in a subprocess
(``python -m ldmkit.cli``): it must end with exit code 2 and exactly one line on stderr, naming the
thing and what is allowed, with no traceback; the output it names must not be left behind, and an
earlier output at that place must be untouched. The rows run a few at a time (each process imports
torch), once per session. A new command gets its rows here.

Then: a genuine bug is not turned into a one-line "user error"; a finished run given --resume finishes
at once; and the server's guards (Host header, request timeouts, the shipped model's command).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ldmkit.cli import main
from tests.tiny_models import build_tiny_model

PY = [sys.executable, "-m", "ldmkit.cli"]
ENV = {**{k: v for k, v in os.environ.items() if k != "LDMKIT_DEBUG"}, "OMP_NUM_THREADS": "1"}


@dataclass
class Row:
    """``argv`` (with {tiny}, {ae}, {tmp} … filled in) must fail with exit 2 and one stderr line holding
    every word of ``words``; ``absent`` paths must not exist afterwards, ``kept`` paths keep their bytes."""

    name: str
    argv: list
    words: tuple[str, ...]
    absent: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    before: list = field(default_factory=list)  # commands that must succeed first (same subprocess rules)


ROWS = [
    # ---- output that cannot be written: refused before the model loads or samples
    Row("generate --out under a regular file", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/file.txt/x.png", "--steps", "1"], ("file.txt", "is a file"), kept=("{tmp}/file.txt",)),
    Row("generate --out with an unknown suffix", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/x.gif"], (".gif", ".png", ".jpg"), absent=("{tmp}/x.gif",)),
    Row("generate --out into a non-empty folder", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/full", "--steps", "1"], ("not empty", "--overwrite"), kept=("{tmp}/full/0_000.png",)),
    Row("generate --out in a folder that cannot be created", ["generate", "a red circle", "--model", "{tiny}",
        "--out", "/proc/ldmkit-nope/x.png"], ("/proc", "cannot"), absent=("/proc/ldmkit-nope",)),
    Row("attention --out is a folder", ["attention", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/figure.png"], ("is a folder",)),
    Row("img2img --out under a regular file", ["img2img", "{tmp}/in.png", "a blue square", "--model", "{tiny}",
        "--out", "{tmp}/file.txt/y.png"], ("is a file",), kept=("{tmp}/file.txt",)),
    Row("eval --json that cannot be written", ["eval", "generate", "--model", "{tiny}", "--num-images", "2",
        "--json", "{tmp}/file.txt/r.json"], ("--json", "is a file")),
    Row("convert --out onto an existing model folder", ["convert", "{tiny}", "--to", "ldmkit", "--out",
        "{tmp}/other_model"], ("not empty", "--overwrite"), kept=("{tmp}/other_model/config.yaml",)),
    Row("train --out under a regular file", ["train-autoencoder", "--preset", "tiny", "--out",
        "{tmp}/file.txt/run"], ("is a file",), kept=("{tmp}/file.txt",)),
    Row("edit --out where nothing can be written", ["edit", "a red circle", "a blue circle", "--model", "{tiny}",
        "--out", "/proc/ldmkit-edit.png", "--steps", "1"], ("/proc", "cannot")),
    Row("edit --out-dir where nothing can be written", ["edit", "a red circle", "a blue circle", "--model",
        "{tiny}", "--out-dir", "/proc/ldmkit-edit", "--steps", "1"], ("/proc", "cannot")),
    Row("edit --out-dir into a non-empty folder", ["edit", "a red circle", "a blue circle", "--model", "{tiny}",
        "--out-dir", "{tmp}/full", "--steps", "1"], ("not empty", "--overwrite"), kept=("{tmp}/full/0_000.png",)),
    Row("finetune --out holding another run", ["finetune", "--model", "{tiny}", "--images", "{tmp}/full", "--out",
        "{tmp}/full", "--steps", "1"], ("not empty", "--resume"), kept=("{tmp}/full/0_000.png",)),
    # ---- numbers that parse but that no user means
    Row("--guidance inf", ["generate", "a red circle", "--model", "{tiny}", "--out", "{tmp}/g.png",
        "--guidance", "inf"], ("--guidance", "finite"), absent=("{tmp}/g.png",)),
    Row("--eta inf", ["generate", "a red circle", "--model", "{tiny}", "--out", "{tmp}/g.png", "--eta", "inf"],
        ("--eta", "finite")),
    Row("--strength inf", ["img2img", "{tmp}/in.png", "a blue square", "--model", "{tiny}", "--out",
        "{tmp}/s.png", "--strength", "inf"], ("--strength", "(0, 1]"), absent=("{tmp}/s.png",)),
    Row("--seed beyond 2**64", ["generate", "a red circle", "--model", "{tiny}", "--out", "{tmp}/g.png",
        "--seed", str(2**64)], ("--seed", "2**64")),
    Row("--num-images over the batch bound", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--num-images", "100000"], ("--num-images", "1 … 8")),
    Row("edit --seed beyond 2**64", ["edit", "a red circle", "a blue circle", "--model", "{tiny}", "--out",
        "{tmp}/e.png", "--seed", str(2**64)], ("--seed", "2**64")),
    Row("edit --num-images over the batch bound", ["edit", "a red circle", "a blue circle", "--model", "{tiny}",
        "--out", "{tmp}/e.png", "--num-images", "100000"], ("--num-images", "1 … 8")),
    Row("edit --guidance 0, at which neither prompt acts", ["edit", "a red circle", "a blue circle", "--model",
        "{tiny}", "--out", "{tmp}/e.png", "--guidance", "0"], ("--guidance", "s > 0"), absent=("{tmp}/e.png",)),
    Row("edit --blend-threshold 1, an empty mask", ["edit", "a red circle", "a blue circle", "--model", "{tiny}",
        "--out", "{tmp}/e.png", "--blend", "circle", "--blend-threshold", "1"], ("--blend-threshold", "[0, 1)"),
        absent=("{tmp}/e.png",)),
    Row("a LoRA scale that is not a number", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--lora", "{tmp}/file.txt:nan"], ("LoRA", "scale", "finite"), absent=("{tmp}/g.png",)),
    Row("an embedding file that is not one", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--embedding", "{tmp}/bad.pt"], ("bad.pt", "not a readable embedding file"),
        absent=("{tmp}/g.png",)),
    Row("eval autoencoder --image-size below SSIM's window", ["eval", "autoencoder", "--model", "{ae}",
        "--image-size", "4"], ("--image-size", "11 … 1024")),
    Row("eval autoencoder --image-size over the bound", ["eval", "autoencoder", "--model", "{ae}",
        "--image-size", "100000"], ("--image-size", "11 … 1024")),
    Row("data pack --image-size over the bound", ["data", "pack", "shapes", "--out", "{tmp}/pack",
        "--num-samples", "1", "--image-size", "100000"], ("--image-size", "8 … 4096"), absent=("{tmp}/pack",)),
    Row("finetune --batch-size over the bound", ["finetune", "--model", "{tiny}", "--images", "{tmp}/full",
        "--out", "{tmp}/ft", "--batch-size", "100000"], ("--batch-size", "1 … 256"), absent=("{tmp}/ft",)),
    Row("--height over the size bound", ["generate", "a red circle", "--model", "{tiny}", "--out", "{tmp}/g.png",
        "--height", "100000"], ("--height", "at most 128")),
    Row("a --strength with which no step runs", ["img2img", "{tmp}/in.png", "a blue square", "--model", "{tiny}",
        "--out", "{tmp}/s0.png", "--strength", "0.01"], ("strength", "runs none of the 25 steps", "0.04"),
        absent=("{tmp}/s0.png",)),
    Row("a size the model cannot take, named width x height", ["generate", "a red circle", "--model", "{tiny}",
        "--out", "{tmp}/g.png", "--height", "30"], ("image size 32x30", "multiples of 4")),
    Row("an upscale input whose output the model cannot take, named as given", ["upscale", "{tmp}/speck.png",
        "--model", "{sr}", "--out", "{tmp}/u.png"], ("image size 2x2", "8x8", "too small"),
        absent=("{tmp}/u.png",)),
    Row("an input image larger than the model allows", ["img2img", "{tmp}/big.png", "a blue square", "--model",
        "{tiny}", "--out", "{tmp}/g.png"], ("1024×1024", "larger than 128")),
    Row("--steps over the model's timesteps", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--steps", "5000"], ("--steps 5000", "1 … 1000")),
    Row("--cache-interval over the server's bound", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--cache-interval", "25"], ("cache", "25", "1 … 10")),
    Row("--cache-interval not below --steps", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--steps", "5", "--cache-interval", "5"], ("cache_interval = 5 with 5 steps", "1 … 4")),
    Row("--cache-depth beyond the UNet's blocks per level", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--steps", "5", "--cache-interval", "2", "--cache-depth", "2"], ("cache_depth = 2", "0 … 1")),
    Row("--eta above 1", ["generate", "a red circle", "--model", "{tiny}", "--out", "{tmp}/g.png", "--eta", "5"],
        ("eta", "5", "1")),
    Row("eval generate --steps over the model's timesteps", ["eval", "generate", "--model", "{tiny}",
        "--num-images", "2", "--steps", "5000"], ("5000", "1 … 1000")),
    Row("data pack of a folder whose images are all unreadable", ["data", "pack", "{tmp}/junk", "--out",
        "{tmp}/junk_shards"], ("none of the 1 images", "could be read"), absent=("{tmp}/junk_shards",)),
    Row("--eta with a sampler other than ddim", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--sampler", "euler", "--eta", "0.5"], ("eta", "ddim")),
    Row("--steps-offset without leading spacing", ["generate", "a red circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png", "--spacing", "trailing", "--steps-offset", "1"], ("--steps-offset 1", "--spacing leading")),
    # ---- a model folder damaged in a way that still parses
    Row("config.yaml cut off at a key boundary", ["generate", "a red circle", "--model", "{tmp}/cut", "--out",
        "{tmp}/g.png"], ("corrupt model folder", "missing key diffusion")),
    Row("config.yaml with a damaged value", ["generate", "a red circle", "--model", "{tmp}/changed", "--out",
        "{tmp}/g.png"], ("corrupt model folder", "unet.safetensors", "shapes differ")),
    # ---- prompts that are not text
    Row("a prompt that is not UTF-8", ["generate", b"a red \xff circle", "--model", "{tiny}", "--out",
        "{tmp}/g.png"], ("prompt", "utf-8", "0xff")),
    Row("an edit prompt that is not UTF-8", ["edit", b"a red \xff circle", "a blue circle", "--model", "{tiny}",
        "--out", "{tmp}/e.png"], ("SOURCE_PROMPT", "utf-8", "0xff"), absent=("{tmp}/e.png",)),
    # ---- resuming with other settings
    Row("--resume under another preset", ["train-autoencoder", "--preset", "demo", "--out", "{tmp}/ae_run",
        "--resume", "--no-progress"], ("other settings", "autoencoder_train.batch_size 8 → 16"),
        kept=("{tmp}/ae_run/checkpoints/step_0000001.pt",)),
    Row("--resume of an older checkpoint under another preset", ["train-autoencoder", "--preset", "demo",
        "--out", "{tmp}/old_run", "--resume", "--no-progress"], ("other settings", "autoencoder.l2_weight")),
    # ---- messages that name the right thing
    Row("--as-written with a class model", ["generate", "--class", "circle", "--model", "{cls}", "--out",
        "{tmp}/g.png", "--as-written"], ("--as-written", "text models only")),
    Row("a Stable Diffusion inpainting model (UNet inputs 2c + 1)", ["generate", "a red circle", "--model",
        "{tmp}/sd_inpaint", "--out", "{tmp}/g.png"], ("sd_inpaint", "inpainting model", "does not run")),
    Row("an autoencoder folder as --model", ["generate", "a red circle", "--model", "{ae}", "--out",
        "{tmp}/g.png"], ("autoencoder folder", "ldmkit train")),
    Row("a negative batch size", ["train", "--config", "{tmp}/negative.yaml", "--autoencoder", "{ae}", "--out",
        "{tmp}/neg_run"], ("train.batch_size = -4", "at least 1"), absent=("{tmp}/neg_run",)),
    Row("a model size of 0 in a config", ["train-autoencoder", "--config", "{tmp}/zero.yaml", "--out",
        "{tmp}/zero_run"], ("autoencoder.latent_channels = 0", "at least 1"), absent=("{tmp}/zero_run",)),
    Row("a config file that is a folder", ["train-autoencoder", "--config", "{tmp}/full", "--out", "{tmp}/dir_run"],
        ("is a folder",), absent=("{tmp}/dir_run",)),
    Row("an unknown option, in one line", ["generate", "a red circle", "--out", "{tmp}/g.png", "--bogus"],
        ("unrecognized arguments", "--bogus")),
]


def _fill(value, places: dict):
    if isinstance(value, bytes):
        return value
    for key, path in places.items():
        value = value.replace("{" + key + "}", str(path))
    return value


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *argv], capture_output=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict:
    """The tiny model, an autoencoder folder, and the files and folders the rows point at."""
    from ldmkit.autoencoder.folder import save_autoencoder
    from ldmkit.config import load_preset, to_dict
    from ldmkit.model import LatentDiffusion
    from ldmkit.train.checkpoint import _settings, save_checkpoint

    tmp = tmp_path_factory.mktemp("errors")
    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    ae = tmp / "ae"
    save_autoencoder(LatentDiffusion.load(tiny).autoencoder, ae)
    (tmp / "file.txt").write_text("a regular file\n")
    (tmp / "bad.pt").write_bytes(b"not a pickle, nor a zip archive")
    (tmp / "full").mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp / "full" / "0_000.png")
    (tmp / "figure.png").mkdir()
    (tmp / "junk").mkdir()
    (tmp / "junk" / "a.png").write_bytes(b"not a png")
    Image.new("RGB", (32, 32), (0, 0, 200)).save(tmp / "in.png")
    Image.new("RGB", (1024, 1024), (0, 0, 200)).save(tmp / "big.png")
    Image.new("RGB", (2, 2), (0, 0, 200)).save(tmp / "speck.png")
    model = LatentDiffusion.load(tiny)  # with Stable Diffusion's inpainting UNet inputs: latent, masked latent, mask
    c = model.config.autoencoder.latent_channels
    inpaint_unet = dataclasses.replace(model.config.unet, in_channels=2 * c + 1)
    LatentDiffusion(dataclasses.replace(model.config, unet=inpaint_unet), model.tokenizer).save(tmp / "sd_inpaint")
    shutil.copytree(tiny, tmp / "other_model")
    shutil.copytree(tiny, tmp / "cut")
    text = (tmp / "cut" / "config.yaml").read_text()
    (tmp / "cut" / "config.yaml").write_text(text[:text.index("\ndiffusion:") + 1])  # valid YAML, keys missing
    shutil.copytree(tiny, tmp / "changed")
    text = (tmp / "changed" / "config.yaml").read_text()
    (tmp / "changed" / "config.yaml").write_text(text.replace("  model_channels: 32\n", "  model_channels: 48\n"))
    (tmp / "negative.yaml").write_text(yaml.safe_dump({"train": {"batch_size": -4}}))
    (tmp / "zero.yaml").write_text(yaml.safe_dump({"autoencoder": {"latent_channels": 0}}))
    tiny_preset = load_preset("tiny")
    save_checkpoint(tmp / "ae_run", {"kind": "autoencoder", "step": 1, "model": {},
                                     "preset": _settings(tiny_preset, "autoencoder")}, keep=3)
    save_checkpoint(tmp / "old_run", {"kind": "autoencoder", "step": 1, "model": {},
                                      "config": to_dict(tiny_preset.autoencoder)}, keep=3)
    return {"tmp": tmp, "tiny": tiny, "ae": ae, "sr": build_tiny_model(tmp_path_factory.mktemp("sr") / "model", "tiny-sr"),
            "cls": build_tiny_model(tmp_path_factory.mktemp("cls") / "model", "tiny-class")}


@pytest.fixture(scope="module")
def results(places) -> dict:
    """Every row run once (a few processes at a time), with the digests of its kept files before and after."""

    def one(row: Row):
        kept = [Path(_fill(p, places)) for p in row.kept]
        before = {p: _digest(p) for p in kept}
        for cmd in row.before:
            assert _run([_fill(a, places) for a in cmd]).returncode == 0
        result = _run([_fill(a, places) for a in row.argv])
        after = {p: _digest(p) if p.is_file() else None for p in kept}
        return result, before, after

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {row.name: pool.submit(one, row) for row in ROWS}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_is_one_line_and_exit_2(row: Row, places, results):
    result, before, after = results[row.name]
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ldmkit"), lines[0]
    for word in row.words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    assert result.stdout.strip() == b"", result.stdout
    for path in (*row.absent, "{tmp}/g.png"):  # g.png: the --out of many rows, which none may write
        assert not Path(_fill(path, places)).exists(), path
    assert after == before, "an earlier output was changed"


def test_a_warning_is_one_line_naming_the_command(places, tmp_path, capsys):
    long_prompt = " ".join(["a red circle"] * 40)  # longer than the tiny model's prompt length
    assert main(["generate", long_prompt, "--model", str(places["tiny"]), "--out", str(tmp_path / "w.png"),
                 "--steps", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "warning" in line] == [line for line in err if line.startswith(
        "ldmkit generate: warning: a prompt is longer than")] != []


def test_every_command_that_writes_has_a_row():
    """A new command that writes files gets its rows in the table."""
    commands = {r.argv[0] for r in ROWS}
    assert {"generate", "attention", "img2img", "eval", "convert", "train-autoencoder", "train", "edit", "finetune",
            "data"} <= commands


# --------------------------------------------------------------------------------------------------
# bugs keep their traceback


def test_a_bug_is_not_reported_as_a_user_error(places, monkeypatch, capsys):
    """A ValueError from inside ldmkit is a bug: it propagates (exit 1 with a traceback from the
    command line), instead of being printed as a one-line usage error."""
    import ldmkit.cli.generate as generate

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant failed")

    monkeypatch.setattr(generate, "image_output", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["generate", "a red circle", "--model", str(places["tiny"]), "--out", str(places["tmp"] / "b.png")])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback_from_the_command_line(places):
    code = ("import sys, ldmkit.cli.generate as g\n"
            "def broken(*a, **k): raise ValueError('an internal invariant failed')\n"
            "g.image_output = broken\n"
            "from ldmkit.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", code, "generate", "a red circle", "--model", str(places["tiny"]),
                             "--out", str(places["tmp"] / "b.png")], capture_output=True, text=True, env=ENV,
                            timeout=300)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "internal invariant" in result.stderr


def test_user_errors_are_one_family_and_still_value_errors():
    from ldmkit.config import ConfigError
    from ldmkit.data import DataError
    from ldmkit.errors import LdmkitError, TrainingDiverged, UsageError
    from ldmkit.storage import CheckpointError

    for cls in (UsageError, ConfigError, CheckpointError, DataError):
        assert issubclass(cls, LdmkitError) and issubclass(cls, ValueError)
    assert issubclass(TrainingDiverged, LdmkitError) and issubclass(TrainingDiverged, FloatingPointError)
    from ldmkit.text import MissingDependencyError  # an optional package not installed: one line too

    assert issubclass(MissingDependencyError, LdmkitError) and issubclass(MissingDependencyError, ImportError)


def test_saved_configs_load_strictly_but_older_folders_still_load(tmp_path):
    """A saved model's config.yaml must hold every key, except the fields older versions did not write
    (`LATER_FIELDS`): the shipped model loads, a folder without those fields loads, one without others is
    a corrupt model folder. A field added to a saved config needs a LATER_FIELDS entry, or this fails."""
    from ldmkit.config import LATER_FIELDS, ModelConfig, save_yaml
    from ldmkit.pretrained import SHAPES64
    from ldmkit.storage import CheckpointError, load_config

    load_config(ModelConfig, SHAPES64)
    save_yaml(ModelConfig(), tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    sections = {"AutoencoderConfig": "autoencoder", "TextEncoderConfig": "text", "UNetConfig": "unet",
                "DiffusionConfig": "diffusion"}
    for cls, names in LATER_FIELDS.items():
        for name in names:
            (data[sections[cls]] if cls in sections else data).pop(name)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert load_config(ModelConfig, tmp_path) == ModelConfig()
    del data["unet"]["model_channels"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="corrupt model folder .*missing key unet.model_channels"):
        load_config(ModelConfig, tmp_path)


# --------------------------------------------------------------------------------------------------
# running the README's main job again


def test_a_finished_run_given_resume_finishes_at_once(tmp_path):
    """`make demo` twice: each stage given --resume on a finished run ends at once with exit 0."""
    out = tmp_path / "ae"
    argv = ["train-autoencoder", "--preset", "tiny", "--out", str(out), "--steps", "2", "--no-progress", "--resume"]
    assert main(argv) == 0
    first = _digest(out / "autoencoder.safetensors")
    assert main(argv) == 0
    assert _digest(out / "autoencoder.safetensors") == first


def test_make_demo_resumes():
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    demo = makefile[makefile.index("\ndemo:"):].split("\n\n")[0]
    training = [line for line in demo.splitlines() if "ldmkit train" in line]
    assert len(training) == 2 and all("--resume" in line for line in training)


# --------------------------------------------------------------------------------------------------
# the server's guards

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")


def _fake_app(**kwargs):
    from ldmkit.serve import Limits, create_app

    def pipe(*args, **kwargs):
        raise AssertionError("not called")

    return create_app(pipe, limits=Limits(latent_factor=8, default_size=32, max_size=128, num_timesteps=1000),
                      model_name="fake", **kwargs)


def test_requests_for_another_host_name_are_refused():
    """DNS rebinding: a page on evil.example whose name points at 127.0.0.1 reaches the server with
    Host: evil.example; only the bound address, localhost and --allowed-host names are answered."""
    from fastapi.testclient import TestClient

    from ldmkit.serve.guard import allowed_hosts

    app = _fake_app(allowed_hosts=allowed_hosts("127.0.0.1", ["studio.lan"]))
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        assert client.get("/healthz").status_code == 200
        for host in ("localhost:7860", "127.0.0.1", "[::1]:7860", "studio.lan:7860"):
            assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:7860", "localhost.evil.example", ""):
            r = client.get("/healthz", headers={"host": host})
            assert r.status_code == 400 and "--allowed-host" in r.json()["detail"], host
    assert allowed_hosts("127.0.0.1", ["*"]) is None


def _serve(app, header_timeout: float):
    import uvicorn

    from ldmkit.serve.guard import guarded_protocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", http=guarded_protocol(header_timeout)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return server, thread, sock.getsockname()[1]


def _read_until_closed(conn: socket.socket, limit: float) -> tuple[bytes, float]:
    start, data = time.monotonic(), b""
    conn.settimeout(limit)
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def test_half_sent_requests_are_closed_after_a_timeout():
    pytest.importorskip("uvicorn")
    app = _fake_app(body_timeout=0.5)
    server, thread, port = _serve(app, header_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:  # a request head that never ends
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            data, waited = _read_until_closed(conn, 10)
            assert waited < 5
        with socket.create_connection(("127.0.0.1", port)) as conn:  # a connection that sends nothing
            _, waited = _read_until_closed(conn, 10)
            assert waited < 5
        with socket.create_connection(("127.0.0.1", port)) as conn:  # a body that stops half way
            conn.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"prompt\":")
            data, waited = _read_until_closed(conn, 10)
            assert data.startswith(b"HTTP/1.1 408") and waited < 5, data
        with socket.create_connection(("127.0.0.1", port)) as conn:  # a whole request is answered
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data, _ = _read_until_closed(conn, 10)
            assert data.startswith(b"HTTP/1.1 200"), data
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_shipped_model_command_runs_as_shown():
    """The command the page shows for the shipped model parses as `ldmkit generate` with no --model
    (generate's default), not `--model=shapes64 (shipped)`."""
    from ldmkit.cli import build_parser
    from ldmkit.serve.app import SHIPPED, reproduce_command
    from ldmkit.serve.schemas import Settings

    settings = Settings(prompt="a red circle above a blue square", negative_prompt="", steps=25, guidance=4.0,
                        binding=0.3, sampler="ddim", seed=7, num_images=2, width=64, height=64)
    argv = shlex.split(reproduce_command(settings, SHIPPED))
    assert argv[:2] == ["ldmkit", "generate"] and not any(a.startswith("--model") for a in argv)
    args = build_parser().parse_args(argv[1:])
    assert args.model is None and args.prompt == settings.prompt and args.overwrite


@pytest.mark.slow
def test_training_and_finetune_refusals_are_one_line_and_keep_what_was_there(places, tmp_path):
    """A --out holding a finished model (its checkpoints/ deleted), an --lr of 0, a --token with a full
    fine-tune: exit 2, one line, before any work, the folder's files untouched."""
    model = tmp_path / "model"
    shutil.copytree(places["tiny"], model)
    before = {p: _digest(p) for p in model.rglob("*") if p.is_file()}
    rows = [(["train", "--preset", "tiny", "--autoencoder", str(places["ae"]), "--out", str(model)], "not empty"),
            (["train-autoencoder", "--preset", "tiny", "--out", str(model), "--resume"], "no checkpoints"),
            (["finetune", "--model", str(places["tiny"]), "--images", str(places["tmp"] / "full"), "--out",
              str(tmp_path / "ft"), "--lr", "0"], "--lr 0.0 trains nothing"),
            (["finetune", "--model", str(places["tiny"]), "--images", str(places["tmp"] / "full"), "--out",
              str(tmp_path / "ft"), "--method", "full", "--token", "<q>"],
             "--token applies to --method textual-inversion")]
    for argv, words in rows:
        result = _run(argv)
        err = result.stderr.decode("utf-8", "replace").strip()
        assert result.returncode == 2 and "\n" not in err and words in err and err.startswith("ldmkit"), err
    assert {p: _digest(p) for p in model.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "ft").exists()
