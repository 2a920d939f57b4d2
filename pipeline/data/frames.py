"""Decoded frames of a prepared dataset, one store shard per item: what the extract stage encodes
and what the pixel decoder learns to draw (both re-read the source through its manifest)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data import store
from pipeline.data.encoder import resize_frames
from pipeline.data.sources import (
    DatasetParams,
    Episode,
    EpisodeError,
    EpisodeRef,
    build_source,
)


class ShardFrames(Dataset):
    """Item k: the resized pixels, actions and labels of shard k (decoded on a worker)."""

    def __init__(self, ds: DatasetParams, manifest: dict[str, Any], layout: store.Layout, size: int):
        self.ds, self.layout, self.size = ds, layout, size
        self.episodes = [EpisodeRef(e["key"], e["origin"]) for e in manifest["episodes"]]
        self.ends = np.cumsum([e["frames"] for e in manifest["episodes"]])  # (E,)
        self.source = None  # opened lazily inside each worker, never shared across fork

    def __len__(self) -> int:
        return self.layout.n_shards

    def __getitem__(self, k: int) -> dict[str, Any]:
        self.source = self.source or build_source(self.ds)
        start, stop = self.layout.shard_range(k)
        parts = []
        i = int(np.searchsorted(self.ends, start, side="right"))
        while i < len(self.episodes) and (ep_start := int(self.ends[i - 1]) if i else 0) < stop:
            a, b = max(start, ep_start) - ep_start, min(stop, int(self.ends[i])) - ep_start
            parts.append(self._load(self.episodes[i], a, b))
            i += 1
        frames = torch.from_numpy(np.concatenate([p.frames for p in parts]))  # (n, H, W, 3)
        return {
            "shard": k,
            "pixels": resize_frames(frames, self.size),  # (n, 3, S, S)
            "actions": None if parts[0].actions is None else np.concatenate([p.actions for p in parts]),
            "labels": {n: np.concatenate([p.labels[n] for p in parts]) for n in parts[0].labels},
        }

    def _load(self, ref: EpisodeRef, a: int, b: int) -> Episode:
        try:
            part = self.source.load(ref, a, b)
        except EpisodeError as e:
            raise EpisodeError(e.origin, f"{e.reason} (it read fine during prepare, so the source "
                               "changed since; run `dila prepare` again)") from e
        if len(part.frames) != b - a:
            raise EpisodeError(ref.origin, f"frame-count mismatch: expected kept frames [{a}, {b}), "
                               f"got {len(part.frames)}; the source changed since `dila prepare`")
        return part
