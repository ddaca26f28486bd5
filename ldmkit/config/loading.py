"""Configurations to and from plain dicts and YAML files, checked on the way in: `from_dict` refuses
unknown keys and wrong types with a `ConfigError`; `load_preset` reads ``ldmkit/configs/NAME.yaml``."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Literal

import yaml

from ldmkit.config.training import Preset
from ldmkit.errors import ConfigError


def to_dict(config) -> dict:
    """A plain dict (tuples as lists) that YAML and JSON can hold."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


# The fields of a saved model's config that older ldmkit versions did not write: a saved folder may
# lack these (they take their defaults, which are what those versions did); any other missing key
# means a damaged config.yaml (`from_dict(strict=True)`). A field added to a saved config from now on,
# with a default that reproduces the older behaviour, belongs here too.
LATER_FIELDS = {
    "AutoencoderConfig": {"attention_bias", "asymmetric_downsample", "l2_weight"},
    "TextEncoderConfig": {"kind", "head_dim", "ff_width", "activation", "adapter_layers", "zero_padding",
                          "colour_lexicon"},
    "UNetConfig": {"num_heads", "linear_projection", "norm_eps", "coordinate_channels", "guidance_embedding"},
    "DiffusionConfig": {"zero_terminal_snr", "consistency_steps", "consistency_guidance"},
    "ModelConfig": {"condition"},
}


def from_dict(cls, data: dict | None, where: str = "", strict: bool = False):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise `ConfigError`.

    Missing keys take their defaults (a user's training config), unless ``strict`` (a saved model's
    config, which ldmkit wrote whole): then a missing key other than the `LATER_FIELDS` is an error."""
    if data is None and strict:
        raise ConfigError(f"{where or cls.__name__}: missing (empty)")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {where + '.' if where else ''}{unknown[0]}; allowed: {', '.join(sorted(names))}"
        )
    if strict:
        later = LATER_FIELDS.get(cls.__name__, set())
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.name not in later]
        if missing:
            prefix = where + "." if where else ""
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ConfigError(f"missing key {prefix}{missing[0]}{more}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where + '.' if where else ''}{name}", strict)
    return cls(**kwargs)


def _coerce(hint, value, where: str, strict: bool = False):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where, strict)
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if isinstance(value, bool) and ("on" if value else "off") in allowed:
            value = "on" if value else "off"  # YAML 1.1 reads a bare on / off as a boolean
        if value not in allowed:
            raise ConfigError(f"{where} = {value!r}; allowed: {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float:
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value) if isinstance(value, str) else _not_a_number(value, where)
        except ValueError:
            _not_a_number(value, where)
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _not_a_number(value, where: str):
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def save_yaml(config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def load_yaml(cls, path: str | Path, strict: bool = False):
    """``cls`` from the YAML file ``path``; ``strict``: every key must be there (see `from_dict`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a YAML text file (byte 0x{e.object[e.start]:02x} at {e.start} is not UTF-8)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return from_dict(cls, data, "", strict)


PRESET_DIR = Path(__file__).parents[1] / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """The preset ``ldmkit/configs/NAME.yaml``."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return load_yaml(Preset, path)
