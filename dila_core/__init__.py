"""dila_core: the DiLA world model on cached encoder tokens, in pure PyTorch.

No file I/O, no argument parsing, no device picking: models take tensors and frozen
config dataclasses. Start from `preset(name)` and `DiLA(cfg)`;
`world_model` holds the interface every model family implements and their registry.
"""
from dila_core.model import DiLA, DiLAConfig
from dila_core.presets import preset
from dila_core.world_model import FAMILIES, Rollout, build_model, capabilities, family

__all__ = ["DiLA", "DiLAConfig", "FAMILIES", "Rollout", "build_model", "capabilities", "family", "preset"]
