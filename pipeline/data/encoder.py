"""The frozen DINOv2 encoder of stage one.

`load_encoder(params, seed)` returns a `FrozenEncoder` that maps uint8 RGB frames
(N, H, W, 3) to patch tokens (N, h, w, D) with h = w = input_size / 14. CLS and
register tokens are dropped. Pretrained weights come from the Hugging Face hub or
a local directory; when neither is reachable the error names the model and how to
supply it. `weights: random` builds the same architecture with seeded random
weights, and `FrozenEncoder.record` says so, for every artifact to store.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    PreTrainedModel,
)

from pipeline.params import PATCH, EncoderParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Architectures of the published DINOv2 checkpoints, so a random-init encoder of the
# same shape can be built with no hub access: (hidden, layers, heads, swiglu).
_SIZES = {
    "small": (384, 12, 6, False),
    "base": (768, 12, 12, False),
    "large": (1024, 24, 16, False),
    "giant": (1536, 40, 24, True),
}


class EncoderUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (offline, missing directory, bad files)."""


def builtin_config(model: str) -> Dinov2Config | Dinov2WithRegistersConfig:
    """Config of a published DINOv2 checkpoint, known without the hub."""
    name = model.rstrip("/").split("/")[-1]
    registers = name.startswith("dinov2-with-registers-")
    size = name.removeprefix("dinov2-with-registers-").removeprefix("dinov2-")
    if not name.startswith("dinov2-") or size not in _SIZES:
        raise EncoderUnavailable(
            f"no built-in architecture for encoder.model={model!r}: use one of "
            "facebook/dinov2-{small,base,large,giant} or facebook/dinov2-with-registers-{...}, "
            "or a local directory with a config.json"
        )
    hidden, layers, heads, swiglu = _SIZES[size]
    common = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        mlp_ratio=4, patch_size=PATCH, image_size=518, use_swiglu_ffn=swiglu, layerscale_value=1.0,
    )
    if registers:
        return Dinov2WithRegistersConfig(num_register_tokens=4, **common)
    return Dinov2Config(**common)


def _offline_help(params: EncoderParams, cause: Exception) -> str:
    name = params.model.rstrip("/").split("/")[-1]
    return (
        f"cannot load pretrained encoder weights {params.model!r} (revision {params.revision!r}): "
        f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}\n"
        "The weights are neither in the local Hugging Face cache nor reachable on the hub. Supply them:\n"
        f"  - on a machine with internet: `hf download {params.model} --local-dir models/{name}`, copy that\n"
        f"    folder here and run with `-S encoder.model=models/{name}` (or set encoder.model in params.yaml);\n"
        "  - or point HF_HOME at a Hugging Face cache that holds the model;\n"
        "  - or, for a smoke run only, `-S encoder.weights=random` (a seeded random-init encoder of the\n"
        "    same architecture; recorded as such in the store and everything computed from it)."
    )


def _load_pretrained(params: EncoderParams) -> tuple[PreTrainedModel, str]:
    local = Path(params.model)
    if local.exists() and not (local / "config.json").is_file():
        raise EncoderUnavailable(f"encoder.model={params.model!r} is a directory without config.json")
    try:
        model = AutoModel.from_pretrained(
            params.model, revision=params.revision, attn_implementation="sdpa", dtype=torch.float32
        )
    except (OSError, ValueError) as e:
        raise EncoderUnavailable(_offline_help(params, e)) from e
    commit = getattr(model.config, "_commit_hash", None) or params.revision
    return model, commit


def _build_random(params: EncoderParams, seed: int) -> PreTrainedModel:
    local = Path(params.model)
    if (local / "config.json").is_file():
        config = AutoConfig.from_pretrained(local)
    else:
        config = builtin_config(params.model)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModel.from_config(config)


@dataclass(frozen=True)
class EncoderRecord:
    """What produced the tokens; stored in the store's attributes and downstream metrics."""

    model: str
    weights: str  # "pretrained@<commit or revision>" or "random-init (seed N)"
    input_size: int
    final_norm: str
    dim: int
    registers: int


class FrozenEncoder(nn.Module):
    """uint8 frames (N, H, W, 3) -> patch tokens (N, h, w, D), no gradients, eval mode."""

    def __init__(self, backbone: PreTrainedModel, params: EncoderParams, record: EncoderRecord):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        if params.final_norm == "plain":
            ln = self.backbone.layernorm
            self.backbone.layernorm = nn.LayerNorm(ln.normalized_shape, eps=ln.eps, elementwise_affine=False)
        self.params = params
        self.record = record
        self.grid = params.input_size // PATCH
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, 3, S, S) in 0..1 (from `resize_frames`) -> tokens (N, h, w, D) float32."""
        x = (pixels.to(self.mean.device) - self.mean) / self.std
        use_bf16 = self.params.dtype == "bfloat16" or (self.params.dtype == "auto" and x.is_cuda)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            hidden = self.backbone(pixel_values=x).last_hidden_state  # (N, 1 + R + h*w, D)
        patches = hidden[:, 1 + self.record.registers :].float()  # (N, h*w, D)
        return patches.reshape(len(x), self.grid, self.grid, -1)  # (N, h, w, D)

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Convenience: uint8 (N, H, W, 3) -> float32 tokens (N, h, w, D), batched."""
        out = []
        for i in range(0, len(frames), self.params.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.params.batch_size]))
            x = resize_frames(batch, self.params.input_size)
            out.append(self(x).cpu().numpy())
        return np.concatenate(out)


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, size, size) in 0..1, bicubic with antialiasing.

    Runs on the CPU decode workers, before the encoder."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0.0, 1.0)


def load_encoder(params: EncoderParams, seed: int) -> FrozenEncoder:
    """The encoder `params` describe. Raises EncoderUnavailable with instructions when offline."""
    if params.weights == "pretrained":
        backbone, commit = _load_pretrained(params)
        weights = f"pretrained@{commit}"
    else:
        backbone = _build_random(params, seed)
        weights = f"random-init (seed {seed})"
    cfg = backbone.config
    record = EncoderRecord(
        model=params.model,
        weights=weights,
        input_size=params.input_size,
        final_norm=params.final_norm,
        dim=cfg.hidden_size,
        registers=getattr(cfg, "num_register_tokens", 0),
    )
    return FrozenEncoder(backbone, params, record)


def load_recorded(record: dict, defaults: EncoderParams) -> FrozenEncoder:
    """The frozen encoder a store's `encoder` record names (model, weights, input size, final norm),
    rebuilt exactly: the same seed for a random-init one, the same revision for pretrained weights.
    EncoderUnavailable when the record cannot be rebuilt or the weights cannot be loaded."""
    weights = record["weights"]
    random = re.fullmatch(r"random-init \(seed (\d+)\)", weights)
    if random is None and not weights.startswith("pretrained@"):
        raise EncoderUnavailable(f"cannot rebuild an encoder from the record weights={weights!r}")
    params = dataclasses.replace(defaults, model=record["model"], weights="random" if random else "pretrained",
                                 revision=defaults.revision if random else weights.split("@", 1)[1],
                                 input_size=record["input_size"], final_norm=record["final_norm"])
    encoder = load_encoder(params, int(random.group(1)) if random else 0)
    if encoder.record.weights != weights:
        raise EncoderUnavailable(f"loaded encoder weights {encoder.record.weights!r}, the record says {weights!r}")
    return encoder
