"""Typed configuration: frozen dataclasses with defaults, read from and written to YAML.

A preset (``ldmkit/configs/NAME.yaml``) holds one `Preset`: the data, the autoencoder and its
training, and the diffusion model (UNet, text encoder, schedule) and its training. A trained model
folder stores the parts it needs next to its weights, so a checkpoint folder describes itself.

`ldmkit.config.model` holds what a model folder stores (`ModelConfig` and its parts),
`ldmkit.config.training` what a run needs besides (`Preset`), `ldmkit.config.loading` the reading,
checking and writing; every name is re-exported here.
"""

from ldmkit.config.loading import (
    LATER_FIELDS, PRESET_DIR, from_dict, load_preset, load_yaml, preset_names, save_yaml, to_dict,
)
from ldmkit.config.model import (
    AutoencoderConfig, ConditionConfig, DiffusionConfig, ModelConfig, TextEncoderConfig, UNetConfig,
)
from ldmkit.config.training import (
    AutoencoderTrainConfig, DataConfig, DiffusionTrainConfig, DistillConfig, GroundingConfig, Preset,
)
from ldmkit.errors import ConfigError

__all__ = [
    "AutoencoderConfig", "AutoencoderTrainConfig", "ConditionConfig", "ConfigError", "DataConfig", "DiffusionConfig",
    "DiffusionTrainConfig", "DistillConfig", "GroundingConfig", "LATER_FIELDS", "ModelConfig", "PRESET_DIR", "Preset",
    "TextEncoderConfig", "UNetConfig", "from_dict", "load_preset", "load_yaml", "preset_names", "save_yaml", "to_dict",
]
