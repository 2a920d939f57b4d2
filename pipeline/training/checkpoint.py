"""Model checkpoints: one safetensors file holding the weights, the model's family and config,
the step and (optionally) a JSON record of what made it. Every model the pipeline saves (each
registered world-model family and the pixel decoder) uses this one format.

The safetensors metadata (strings only) records:
- ``format``: ``dila-checkpoint/2``;
- ``family``: a key of `dila_core.world_model.FAMILIES`, or ``pixel_decoder``;
- ``config``: the family's config as JSON (the plain form `pipeline.config.to_dict` gives);
- ``step``: the optimisation step the weights belong to;
- ``meta``: JSON the caller adds (the pixel decoder's store and encoder record), ``{}`` by default.

`load_checkpoint` rebuilds the model from the stored family and config with the typed parser
(so a config that no longer validates is a clear error) and loads the weights strictly: a
missing, unexpected or mis-shaped tensor is an error naming the file. Files are written to a
temporary name and renamed, so a crash never leaves half a checkpoint under the final name,
and with the metadata keys sorted, so the same weights always give the same bytes
(`pipeline.safefile`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from dila_core import world_model
from dila_core.pixel_decoder import PixelDecoder, PixelDecoderConfig
from pipeline import safefile
from pipeline.config import build, to_dict

FORMAT = "dila-checkpoint/2"
PIXEL_DECODER = "pixel_decoder"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not a dila checkpoint, or does not match its model."""


def _family(model_or_cfg: Any) -> str:
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    return PIXEL_DECODER if isinstance(cfg, PixelDecoderConfig) else world_model.family_of(cfg)


def _classes(family: str) -> tuple[type, type]:
    """(config class, model class) of a checkpoint family."""
    if family == PIXEL_DECODER:
        return PixelDecoderConfig, PixelDecoder
    fam = world_model.family(family)
    return fam.config_class(), fam.model_class()


def save_checkpoint(path: str | Path, model: torch.nn.Module, step: int, meta: dict[str, Any] | None = None) -> Path:
    """Write model's weights, family, config, `step` and `meta` to `path` (atomically); returns the path."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"save_checkpoint: step = {step!r} is not allowed: expected an integer >= 0")
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    metadata = {"format": FORMAT, "family": _family(model), "config": json.dumps(to_dict(model.cfg), sort_keys=True),
                "step": str(step), "meta": json.dumps(meta or {}, sort_keys=True)}
    return safefile.save(path, tensors, metadata)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    family: str | None = None) -> tuple[torch.nn.Module, int]:
    """Rebuild the model from the checkpoint's family and config and load its weights strictly:
    (model, step). With `family`, a checkpoint of another family is an error."""
    model, step, _ = load_with_meta(path, device, family)
    return model, step


def load_with_meta(path: str | Path, device: str | torch.device = "cpu",
                   family: str | None = None) -> tuple[torch.nn.Module, int, dict[str, Any]]:
    """`load_checkpoint`, also returning the checkpoint's meta."""
    path = Path(path)
    with _open(path, device) as f:
        metadata = f.metadata() or {}
        if family is not None and metadata.get("format") == FORMAT and metadata.get("family") != family:
            raise CheckpointError(f"{path}: holds a {metadata.get('family')!r} model, expected {family!r}")
        cfg, step, meta = _parse_metadata(path, metadata)
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    model = _classes(metadata["family"])[1](cfg).to(device)
    load_weights(model, tensors, path)
    return model, step, meta


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


def _parse_metadata(path: Path, metadata: dict[str, str] | None) -> tuple[Any, int, dict[str, Any]]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dila checkpoint (metadata format = {metadata.get('format')!r}, "
                              f"expected {FORMAT!r})")
    try:
        config_class, _ = _classes(metadata["family"])
        cfg = build(config_class, json.loads(metadata["config"]), "config")
        step = int(metadata["step"])
        meta = json.loads(metadata["meta"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: bad checkpoint metadata: {err}") from err
    return cfg, step, meta
