"""What every subcommand shares: the one-line error type, argument types and reading a training config."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

from PIL import Image

from ldmkit.bounds import MAX_SEED
from ldmkit.config import ConfigError, Preset, load_preset, load_yaml, preset_names
from ldmkit.data import load_image
from ldmkit.device import PRECISIONS
from ldmkit.diffusion import SAMPLERS
from ldmkit.errors import UsageError  # noqa: F401  (the CLI's one-line error; ldmkit.errors has the family)
from ldmkit.text.tokenizer import ALPHABET, SPECIAL_TOKENS


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors in one line (no usage block above them), like every other error of
    the CLI: ``ldmkit generate: error: argument --steps: …; see ldmkit generate --help``. Exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        """As argparse, and for a command whose optional positional prompt may follow its options
        (``set_defaults(prompt_may_trail=True)``: ``inpaint IN.png --mask M.png PROMPT``) the one word left
        over after them is that prompt (argparse fills every positional at their first run, IN.png)."""
        namespace, extras = super().parse_known_args(args, namespace)
        if (getattr(namespace, "prompt_may_trail", False) and len(extras) == 1 and not extras[0].startswith("-")
                and not namespace.prompt):
            namespace.prompt, extras = extras[0], []
        return namespace, extras


def _parsed(text: str, convert, kind: str, ok, rule: str):
    """``convert(text)`` if it parses and passes ``ok``; otherwise argparse's one-line error."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _parsed(text, int, "a positive integer", lambda v: v >= 1, "at least 1")


def non_negative_int(text: str) -> int:
    return _parsed(text, int, "an integer", lambda v: v >= 0, "≥ 0")


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0 (``inf`` and ``nan`` are refused: no guidance scale or η means them)."""
    return _parsed(text, float, "a number", lambda v: 0 <= v < math.inf, "a finite number ≥ 0")


def bounded_float(high: float, what: str):
    """An argparse type: a number in [0, ``high``] (the server's bound on ``what``)."""

    def parse(text: str) -> float:
        return _parsed(text, float, "a number", lambda v: 0 <= v <= high, f"a finite number 0 … {high:g} ({what})")

    return parse


def seed_int(text: str) -> int:
    """A seed: an integer 0 … 2**64 − 1 (what torch's generators take)."""
    return _parsed(text, int, "an integer seed", lambda v: 0 <= v <= MAX_SEED, f"0 … 2**64 − 1 ({MAX_SEED})")


def bounded_int(low: int, high: int, why: str = ""):
    """An argparse type: an integer in [low, high]; ``why`` says where the upper bound comes from."""

    def parse(text: str) -> int:
        rule = f"{low} … {high}" + (f" ({why})" if why else "")
        return _parsed(text, int, "an integer", lambda v: low <= v <= high, rule)

    return parse


def read_image(path: str, what: str = "image"):
    """The image at ``path`` (upright, RGB); a missing or unreadable file is a one-line UsageError."""
    try:
        return load_image(path)
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UsageError(f"cannot read {what} {path}: {e}") from None


SAMPLER_HELP = ("the model's own by default (ddim; what a diffusers folder's scheduler names; lcm for a consistency "
                "student made by `ldmkit distill`, its only sampler); ddpm, ddim, plms, euler, euler-a (Euler "
                "ancestral), dpmpp-2m or unipc")


def check_sampler(sampler: str | None, eta: float = 0.0, spacing: str | None = None,
                  steps_offset: int | None = None) -> None:
    """The sampler's name and its options, checked before a model loads: η applies to ddim only, and
    --steps-offset to --spacing leading only (the grid options --spacing and --karras apply to every
    sampler). None (the model's own sampler) is checked once the model is known, when it samples."""
    if steps_offset is not None and spacing != "leading":
        raise UsageError(f"--steps-offset {steps_offset} applies to --spacing leading only (diffusers' rule)")
    if sampler is None:
        return
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if eta and sampler != "ddim":
        raise UsageError(f"--eta {eta:g} applies to the ddim sampler only, not {sampler!r}")


TEXT_OPTIONS = ("prompt", "negative_prompt", "class_name", "source_prompt", "target_prompt")  # text, not paths


def utf8_text(value: str) -> str:
    """``value`` as the UTF-8 text it was typed as. Under a locale whose encoding is not UTF-8 (LC_ALL=C without
    Python's UTF-8 mode) ``sys.argv`` holds each non-ASCII byte as a lone surrogate (surrogateescape);
    ``os.fsencode`` gives the bytes back, decoded here as UTF-8. Unchanged when they are not UTF-8."""
    try:
        return os.fsencode(value).decode("utf-8")
    except UnicodeError:
        return value


def recover_text(args: argparse.Namespace) -> None:
    """The text options of ``args`` (`TEXT_OPTIONS`; paths stay as the file system gave them) as `utf8_text`."""
    for name in TEXT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, utf8_text(value))


def check_text(value: str | None, what: str) -> str | None:
    """``value`` as UTF-8 text (`utf8_text`), refused when it is not: bytes the shell passed that do not decode
    as UTF-8 arrive in ``sys.argv`` as lone surrogates (Python's surrogateescape), which no tokenizer can read."""
    if not value:
        return value
    value = utf8_text(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = value[e.start]
        byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"character U+{ord(bad):04X}"
        raise UsageError(f"{what} is not UTF-8 text ({byte} at character {e.start + 1}); give it as UTF-8") from None
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    return _parsed(text, float, "a number", lambda v: 0 <= v < 1, "in [0, 1)")


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    return _parsed(text, float, "a number", lambda v: 0 <= v <= 1, "in [0, 1]")


def load_training_config(args) -> Preset:
    """The preset ``--preset NAME`` or the config file ``--config FILE`` (exactly one of them), with its
    counts and rates checked (`check_training_values`)."""
    if bool(args.preset) == bool(args.config):
        raise UsageError(f"give exactly one of --preset NAME ({', '.join(preset_names())}) or --config FILE")
    preset = load_preset(args.preset) if args.preset else load_yaml(Preset, args.config)
    check_training_values(preset)
    return preset


# Keys of a training config's data and training sections that count something (at least 1), that
# may be 0 but not negative, that are a probability or share (0 … 1), or a rate (> 0).
_AT_LEAST_1 = {"steps", "batch_size", "grad_accum_steps", "log_every", "sample_every", "checkpoint_every",
               "checkpoint_keep", "scale_samples", "sample_steps", "num_samples", "max_objects", "skip",
               "student_steps"}
_NOT_NEGATIVE = {"warmup_steps", "num_workers", "weight_decay", "shuffle_buffer", "sample_guidance", "grad_clip",
                 "min_snr_gamma", "seed", "guidance_min", "huber_c", "student_guidance"}
_SHARES = {"ema_decay", "cond_drop_prob", "two_object_share", "target_decay"}
_RATES = {"lr"}
# The same for the model sections: widths and counts of layers, channels and tokens.
_MODEL_AT_LEAST_1 = {"in_channels", "out_channels", "base_channels", "latent_channels", "codebook_size",
                     "num_res_blocks", "vocab_size", "width", "heads", "model_channels", "transformer_depth",
                     "sr_factor", "num_timesteps"}
MIN_IMAGE_SIZE = 8  # pixels: the smallest images ldmkit trains on (the shapes dataset's floor)


def check_training_values(preset: Preset) -> None:
    """A `ConfigError` naming the first value of the data and training sections that no run means: a
    batch size or step count below 1, a negative count, a share outside 0 … 1, a learning rate ≤ 0,
    any number that is NaN or infinite. (The model sections are checked where they are built.)"""
    for section in ("data", "autoencoder_train", "train", "distill", "autoencoder", "text", "unet", "diffusion",
                    "condition"):
        config = getattr(preset, section, None)
        if config is None:
            continue
        model = section not in ("data", "autoencoder_train", "train", "distill")
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            where = f"{section}.{f.name} = {value}"
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}; must be a finite number")
            if model:
                if f.name in _MODEL_AT_LEAST_1 and value < 1:
                    raise ConfigError(f"{where}; must be at least 1")
                if f.name == "max_length" and value < 2:
                    raise ConfigError(f"{where}; needs at least 2 for the start and end tokens")
                continue
            if section == "data" and f.name == "image_size" and value < MIN_IMAGE_SIZE:
                raise ConfigError(f"{where}; must be at least {MIN_IMAGE_SIZE} pixels")
            if f.name in _AT_LEAST_1 and value < 1:
                raise ConfigError(f"{where}; must be at least 1")
            if f.name in _NOT_NEGATIVE and value < 0:
                raise ConfigError(f"{where}; must be ≥ 0")
            if f.name in _SHARES and not 0 <= value <= 1:
                raise ConfigError(f"{where}; must be between 0 and 1")
            if f.name in _RATES and not value > 0:
                raise ConfigError(f"{where}; must be > 0")
    if preset.distill.guidance_max < preset.distill.guidance_min:
        raise ConfigError(f"distill.guidance_max = {preset.distill.guidance_max} is below distill.guidance_min = "
                          f"{preset.distill.guidance_min}")
    if preset.data.source == "shapes" and preset.data.max_objects > 2:
        raise ConfigError(f"data.max_objects = {preset.data.max_objects}; the shapes dataset draws 1 or 2 objects")
    if preset.text.kind == "transformer" and preset.condition.uses_text:
        floor = len(SPECIAL_TOKENS) + len(ALPHABET)
        if preset.text.vocab_size < floor:
            raise ConfigError(f"text.vocab_size = {preset.text.vocab_size}; needs at least {floor} for the special "
                              "tokens and the alphabet")


def note_reading(command: str, model, prompt: str) -> None:
    """Say on stderr, as `ldmkit generate` does, how the model reads ``prompt`` when that is not as written
    (words it never saw, as the nearest it knows, and a phrasing it never saw in its own:
    `LatentDiffusion.in_known_words`)."""
    read = model.in_known_words([prompt])[0]
    if read != prompt:
        print(f"ldmkit {command}: note: read as {read!r} (in the words and phrasing the model knows; "
              "--as-written reads the prompt as given)", file=sys.stderr)


def add_load_options(p: argparse.ArgumentParser) -> None:
    """--no-ema, --prediction and --precision: how a command loads its model (`Pipeline.from_folder`'s ``ema``,
    ``prediction`` and ``precision``), the same options on every command that samples."""
    p.add_argument("--no-ema", action="store_true", help="use a single file's training weights, not its EMA copy")
    p.add_argument("--prediction", choices=["epsilon", "v"], help="override what the model predicts (SD 2.x: v for 768-v)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), bf16 (UNet, text encoder and decoder under bf16 autocast) or auto (bf16 "
                        "where it runs faster: GPUs and AVX-512 CPUs)")
