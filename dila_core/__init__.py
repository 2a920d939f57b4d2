"""dila_core: the DiLA world model on cached encoder tokens, in pure PyTorch.

No file I/O, no argument parsing, no device picking: models take tensors and frozen
config dataclasses. Start from `preset(name)` and `DiLA(cfg)`.
"""
from dila_core.model import DiLA, DiLAConfig, Rollout
from dila_core.presets import preset

__all__ = ["DiLA", "DiLAConfig", "Rollout", "preset"]
