"""What every subcommand shares: the one-line error type, argument types and reading a training config."""

from __future__ import annotations

import argparse

from ldmkit.config import Preset, load_preset, load_yaml, preset_names
from ldmkit.errors import UsageError  # noqa: F401  (the CLI's one-line error; ldmkit.errors has the family)


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


def non_negative_float(text: str) -> float:
    return _parsed(text, float, "a number", lambda v: v >= 0, "≥ 0")


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    return _parsed(text, float, "a number", lambda v: 0 <= v < 1, "in [0, 1)")


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    return _parsed(text, float, "a number", lambda v: 0 <= v <= 1, "in [0, 1]")


def load_training_config(args) -> Preset:
    """The preset ``--preset NAME`` or the config file ``--config FILE`` (exactly one of them)."""
    if bool(args.preset) == bool(args.config):
        raise UsageError(f"give exactly one of --preset NAME ({', '.join(preset_names())}) or --config FILE")
    return load_preset(args.preset) if args.preset else load_yaml(Preset, args.config)
