"""Tokens drawn as pixels: the trained pixel decoder as a function, and image grids of rollouts.

The decoder maps normalized tokens (the model's space, `pipeline.data.windows.normalize`) to
frames; rollout and evaluation use it only where it exists and was trained on the same store.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib import image as mpimg
from torch import Tensor

from dila_core.pixel_decoder import PixelDecoder
from pipeline import artifacts
from pipeline.params import Params
from pipeline.training.checkpoint import PIXEL_DECODER, load_with_meta

Decoder = Callable[[np.ndarray], np.ndarray]  # normalized tokens (N, h, w, D) -> frames (N, S, S, 3) in [0, 1]


def decode_tokens(decoder: PixelDecoder, e: Tensor, chunk: int = 256) -> Tensor:
    """Normalized tokens (..., h, w, D) -> frames (..., 3, S, S) in [0, 1], float32, on e's device."""
    device = next(decoder.parameters()).device
    flat = e.reshape(-1, *e.shape[-3:])                             # (N, h, w, D)
    with torch.no_grad():
        out = [decoder(flat[i:i + chunk].to(device, torch.float32)).to(e.device)
               for i in range(0, len(flat), chunk)]
    size = decoder.cfg.size
    frames = torch.cat(out) if out else torch.empty(0, 3, size, size, device=e.device)
    return frames.reshape(*e.shape[:-3], 3, size, size)


def load_pixel_decoder(path: str | Path, device: str | torch.device = "cpu") -> tuple[PixelDecoder, dict]:
    """The decoder at `path` in eval mode, and the meta its training run recorded (store, encoder)."""
    decoder, step, meta = load_with_meta(path, device, family=PIXEL_DECODER)
    return decoder.eval(), {**meta, "config": decoder.cfg, "step": step}


def load_decoder(params: Params, store_plan: str | None, dev: torch.device) -> tuple[Decoder | None, str | None]:
    """The pixel decoder as a function, or None and the reason it cannot be used."""
    path = artifacts.pixel_decoder_weights(params)
    if not path.is_file():
        return None, f"no pixel decoder at {path} (run `dila pixel-decoder` to train one)"
    decoder, meta = load_pixel_decoder(path, dev)
    if meta.get("store_plan_sha256") != store_plan:
        return None, (f"the pixel decoder at {path} was trained on another feature store than "
                      f"{params.train.dataset!r} holds now (train it again)")

    def decode(e: np.ndarray) -> np.ndarray:
        frames = decode_tokens(decoder, torch.from_numpy(np.ascontiguousarray(e, np.float32)))  # (N, 3, S, S)
        return frames.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()

    return decode, None


def grid_image(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Frames rows[r] (T_r, S, S, 3) in [0, 1] laid out in rows (left aligned) with white gaps:
    (R*S + (R-1)*gap, T*S + (T-1)*gap, 3) for T the longest row."""
    size = rows[0].shape[1]
    cols = max(len(r) for r in rows)
    img = np.ones((len(rows) * (size + gap) - gap, cols * (size + gap) - gap, 3), np.float32)
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            img[r * (size + gap):r * (size + gap) + size, c * (size + gap):c * (size + gap) + size] = frame
    return img


def write_grids(out: Path, decode: Decoder, truth: np.ndarray, predicted: np.ndarray, context: int,
                episodes: np.ndarray) -> list[Path]:
    """One PNG per clip: decoded truth (N, T) on top, decoded context + rollout (N, T) below."""
    paths = []
    for e_true, e_pred, ep in zip(truth, predicted, episodes):
        top = decode(e_true)                                                        # (T, S, S, 3)
        bottom = np.concatenate([top[:context], decode(e_pred)])                    # (T, S, S, 3)
        path = out / f"episode_{int(ep):04d}.png"
        mpimg.imsave(path, grid_image([top, bottom]))
        paths.append(path)
    return paths
