"""DiLA model checkpoints: one safetensors file holding the weights, the model config and the step.

The safetensors metadata (strings only) records:
- ``format``: ``dila-checkpoint/1``;
- ``config``: the `DiLAConfig` as JSON (the plain form `pipeline.config.to_dict` gives);
- ``step``: the optimisation step the weights belong to.

`load_checkpoint` rebuilds the model from the stored config with the typed parser
(so a config that no longer validates is a clear error) and loads the weights
strictly: a missing, unexpected or mis-shaped tensor is an error naming the file.
Files are written to a temporary name and renamed, so a crash never leaves half a
checkpoint under the final name, and with the metadata keys sorted, so the same weights
always give the same bytes (`pipeline.safefile`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from dila_core.model import DiLA, DiLAConfig
from pipeline import safefile
from pipeline.config import build, to_dict

FORMAT = "dila-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not a DiLA checkpoint, or does not match its model."""


def save_checkpoint(path: str | Path, model: DiLA, step: int) -> Path:
    """Write model's weights, config and `step` to `path` (atomically); returns the path."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"save_checkpoint: step = {step!r} is not allowed: expected an integer >= 0")
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(to_dict(model.cfg), sort_keys=True), "step": str(step)}
    return safefile.save(path, tensors, metadata)


def read_metadata(path: str | Path) -> tuple[DiLAConfig, int]:
    """The model config and step stored in a checkpoint, without reading its weights."""
    path = Path(path)
    with _open(path) as f:
        return _parse_metadata(path, f.metadata())


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DiLA, int]:
    """Rebuild the model from the checkpoint's config and load its weights strictly: (model, step)."""
    path = Path(path)
    with _open(path, device) as f:
        cfg, step = _parse_metadata(path, f.metadata())
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    model = DiLA(cfg).to(device)
    load_weights(model, tensors, path)
    return model, step


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], origin: str | Path) -> None:
    """Load `tensors` into `model` strictly; errors name `origin` and every offending key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    problems = [f"{label}: {', '.join(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong)) if keys]
    if problems:
        raise CheckpointError(f"{origin}: weights do not match the model built from its config; "
                              + "; ".join(problems))
    model.load_state_dict(tensors, strict=True)


def _open(path: Path, device: str | torch.device = "cpu"):
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _parse_metadata(path: Path, metadata: dict[str, str] | None) -> tuple[DiLAConfig, int]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a DiLA checkpoint (metadata format = {metadata.get('format')!r}, "
                              f"expected {FORMAT!r})")
    try:
        cfg = build(DiLAConfig, json.loads(metadata["config"]), "config")
        step = int(metadata["step"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: bad checkpoint metadata: {err}") from err
    return cfg, step
