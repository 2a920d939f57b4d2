"""Tokens drawn as pixels: the trained pixel decoder as a function, and labelled image grids of
rollouts (truth, the rollout under its own z and under another clip's z, the last frame repeated).

The decoder maps normalized tokens (the model's space, `pipeline.data.windows.normalize`) to
frames; rollout and evaluation use it only where it exists and was trained on the same store.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
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


CONTEXT_COLOUR = "tab:orange"  # the true context frames: their frame and column title
TRUTH, OWN, OTHER, REPEAT = "truth", "prediction\n(own z)", "prediction\n(another clip's z)", "repeat last\nframe"


def rollout_grid(rows: list[tuple[str, np.ndarray]], context: int, title: str, scale: float = 2.0,
                 dpi: int = 100) -> Figure:
    """A labelled grid of frames: rows[r] = (label, frames (T_r, S, S, 3) in [0, 1]), one row per
    label (named on the left), one column per time step, numbered on top: t = 1 - context .. 0 for
    the true context frames (framed and titled in orange, "context"), then t = 1, 2, ... for the
    predicted steps. Every frame is drawn at `scale` times its pixel size (nearest neighbour), so a
    64-px frame shows at 128 px and a small object's motion is seen."""
    size = rows[0][1].shape[1]
    cols = max(len(frames) for _, frames in rows)
    cell = size * scale / dpi
    fig = Figure(figsize=(cols * cell + 1.6, len(rows) * cell + 1.0), dpi=dpi, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
    axes = np.asarray(fig.subplots(len(rows), cols, squeeze=False))
    for r, (label, frames) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(frames):
                ax.set_axis_off()
                continue
            ax.imshow(np.clip(frames[c], 0, 1), interpolation="nearest")
            for spine in ax.spines.values():
                spine.set(color=CONTEXT_COLOUR if c < context else "lightgrey", linewidth=3 if c < context else 1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
    for c in range(cols):
        t = c - context + 1
        axes[0, c].set_title(f"t={t}\ncontext" if c < context else f"t={t}", fontsize=9,
                             color=CONTEXT_COLOUR if c < context else "black")
    fig.suptitle(title, fontsize=10)
    return fig


def write_grids(out: Path, decode: Decoder, truth: np.ndarray, predicted: np.ndarray, context: int,
                episodes: np.ndarray, other: np.ndarray | None = None, title: str = "rollout") -> list[Path]:
    """One PNG per clip (`rollout_grid`): its decoded truth (N, T), then the context followed by the
    decoded rollout (N, T - context) under its own z, under another clip's z (`other`, where given)
    and the last context frame repeated; `title` heads each, with the clip's episode."""
    paths = []
    for i, (e_true, e_pred, ep) in enumerate(zip(truth, predicted, episodes)):
        top = decode(e_true)                                                        # (T, S, S, 3)
        given, horizon = top[:context], len(top) - context
        rows = [(TRUTH, top), (OWN, np.concatenate([given, decode(e_pred)]))]
        if other is not None:
            rows.append((OTHER, np.concatenate([given, decode(other[i])])))
        rows.append((REPEAT, np.concatenate([given, np.repeat(given[-1:], horizon, axis=0)])))
        path = out / f"episode_{int(ep):04d}.png"
        rollout_grid(rows, context, f"{title}, held-out episode {int(ep)}: {context} true context frame(s), "
                                    f"then {horizon} predicted steps").savefig(path)
        paths.append(path)
    return paths
