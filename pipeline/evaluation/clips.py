"""Held-out clips read as arrays, and models applied to them in batches: what the rollout and
evaluate stages share.

A clip is one `Windows` item; `pick` chooses the windows that start at (or tile) each episode,
`stack` reads them into arrays, `batched` runs a model verb over them BATCH clips at a time.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pipeline.data.store import open_store
from pipeline.data.windows import Windows

BATCH = 8  # clips per forward pass in every evaluation loop


def pick(windows: Windows, tile: bool, limit: int | None = None) -> np.ndarray:
    """Indices into `windows` of the windows that start at each episode's first frame
    (tile=False), or that tile each episode from its first frame, consecutive windows sharing
    one frame (tile=True); from the first `limit` episodes that hold one (all when None)."""
    first, episode = windows.windows[:, 0], windows.windows[:, 1]                  # (N,), (N,)
    offset = first - windows.bounds[episode, 0]
    step = (windows.seq_len - 1) * windows.frame_skip
    keep = offset % step == 0 if tile else offset == 0
    chosen = np.unique(episode[keep])[:limit]
    return np.flatnonzero(keep & np.isin(episode, chosen))


def stack(windows: Windows, idx: np.ndarray) -> dict[str, Any]:
    """Windows idx read and stacked: e (N, T, h, w, D) float32 normalized, frame (N,) first
    frame, episode (N,), and actions (N, T, a) and labels {name: (N, T, ...)} where present."""
    if len(idx) == 0:
        raise ValueError(f"{windows.path}: no held-out window of {windows.seq_len} frames "
                         f"(frame_skip {windows.frame_skip}) to evaluate")
    items = [windows[int(i)] for i in idx]
    out: dict[str, Any] = {
        "e": torch.stack([it["e"] for it in items]).numpy(),
        "frame": np.array([it["frame"] for it in items], np.int64),
        "episode": np.array([it["episode"] for it in items], np.int64),
    }
    if "actions" in items[0]:
        out["actions"] = torch.stack([it["actions"] for it in items]).numpy()
    if "labels" in items[0]:
        out["labels"] = {n: torch.stack([it["labels"][n] for it in items]).numpy() for n in items[0]["labels"]}
    return out


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], *arrays: np.ndarray, dev: torch.device) -> np.ndarray:
    """fn applied to slices of BATCH clips of `arrays` (same first axis) on `dev`; outputs
    concatenated on the first axis, as float32 numpy."""
    out = []
    for i in range(0, len(arrays[0]), BATCH):
        parts = [torch.from_numpy(np.ascontiguousarray(a[i:i + BATCH])).to(dev) for a in arrays]
        out.append(fn(*parts).float().cpu().numpy())
    return np.concatenate(out)


def roll_out(model: torch.nn.Module, e: np.ndarray, context: int, dev: torch.device,
             donors: np.ndarray | None = None) -> np.ndarray:
    """Rollouts of clips e (N, context + horizon, h, w, D): `horizon` frames after the first
    `context` ones, under the actions inferred from the whole clip -> (N, horizon, h, w, D). With
    `donors` (same shape as e), clip i rolls out from its own context under the actions inferred
    from donors[i] instead (another clip's z: how much the rollout depends on z)."""
    horizon = e.shape[1] - context

    def one(clip: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
        z = model.infer_actions(donor)                                             # (B, T-1, d_z)
        return model.rollout(clip[:, :context], z[:, context - 1:], horizon).e

    return batched(one, e, e if donors is None else donors, dev=dev)


def rollout_clips(model: torch.nn.Module, windows: Windows, limit: int, context: int,
                  dev: torch.device) -> dict[str, Any]:
    """The rollout of the windows that start each of the first `limit` episodes: `stack`'s
    arrays, plus frames (N, T) store frame of each step, truth (N, T, h, w, D) the store's own
    float16 tokens, and predicted (N, T - context, h, w, D) normalized rollout (None for a model
    without latent actions). The rollout stage stores these; replicas score them in memory."""
    clips = stack(windows, pick(windows, tile=False, limit=limit))
    clips["frames"] = clips["frame"][:, None] + windows.frame_skip * np.arange(windows.seq_len, dtype=np.int64)
    tokens = open_store(windows.path)["tokens"]
    clips["truth"] = np.stack([tokens.get_orthogonal_selection((f,)) for f in clips["frames"]])
    latent = model.capabilities.latent_actions
    clips["predicted"] = roll_out(model, clips["e"], context, dev) if latent else None
    return clips
