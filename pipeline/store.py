"""The Zarr v3 feature store: the contract between stage one and stage two.

Layout of one store (one dataset), see DESIGN §3:

    tokens          (F, h, w, D) float16   chunks of whole frames (~chunk_mb), shards of shard_frames
    episode_ends    (E,)         int64     exclusive end of each episode in F
    actions         (F, a)       float32   optional; one chunk per shard
    labels/<name>   (F, ...)     any       optional; one chunk per shard
    stats/mean, stats/std (D,)   float32   per-channel statistics of the stored tokens

Writing is done shard by shard: every array's chunks are aligned to shard
boundaries, so a shard is written by exactly one process and never shares a file
with another writer. After a shard's arrays are written, a small record with its
token sums goes to `.progress/shard-NNNNNN.json` (atomically). A resumed run skips
shards with a record and rewrites any other. `finalize` combines the records in
shard order into the stats (so they do not depend on the number of writers),
marks the store complete and removes `.progress`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from pipeline.params import StoreParams

FORMAT = "dila-features/1"
PROGRESS = ".progress"


class StoreError(RuntimeError):
    """A store is missing, incompatible or damaged. The message names the store."""


@dataclass(frozen=True)
class Layout:
    n_frames: int
    grid: tuple[int, int]
    dim: int
    chunk_frames: int
    shard_frames: int

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_frames / self.shard_frames)

    def shard_range(self, k: int) -> tuple[int, int]:
        start = k * self.shard_frames
        return start, min(start + self.shard_frames, self.n_frames)


def plan_layout(n_frames: int, grid: tuple[int, int], dim: int, params: StoreParams) -> Layout:
    """Chunks of whole frames of about `chunk_mb`; shards a whole number of chunks."""
    if n_frames < 1:
        raise StoreError("nothing to store: the dataset has no readable frames")
    frame_bytes = grid[0] * grid[1] * dim * 2  # float16
    chunk = max(1, math.ceil(params.chunk_mb * 1e6 / frame_bytes))
    shard = math.ceil(params.shard_frames / chunk) * chunk
    return Layout(n_frames, tuple(grid), dim, chunk, shard)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def plan_hash(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def create_store(
    path: Path,
    layout: Layout,
    episode_ends: np.ndarray,
    action_dim: int | None,
    labels: dict[str, tuple[tuple[int, ...], str]],
    params: StoreParams,
    attrs: dict[str, Any],
) -> zarr.Group:
    """Create an empty store (replacing whatever is at `path`) with all arrays and attributes."""
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(path, mode="w", zarr_format=3)
    h, w = layout.grid
    blosc = BloscCodec(cname=params.codec, clevel=params.clevel, shuffle="shuffle")
    root.create_array(
        "tokens", shape=(layout.n_frames, h, w, layout.dim), dtype="float16",
        chunks=(layout.chunk_frames, h, w, layout.dim), shards=(layout.shard_frames, h, w, layout.dim),
        compressors=blosc, fill_value=0,
    )
    ends = root.create_array("episode_ends", shape=episode_ends.shape, dtype="int64", fill_value=0)
    ends[:] = episode_ends
    if action_dim is not None:
        root.create_array(
            "actions", shape=(layout.n_frames, action_dim), dtype="float32",
            chunks=(layout.shard_frames, action_dim), compressors=blosc, fill_value=0,
        )
    for name, (shape, dtype) in labels.items():
        root.create_array(
            f"labels/{name}", shape=(layout.n_frames, *shape), dtype=dtype,
            chunks=(layout.shard_frames, *shape), compressors=blosc, fill_value=0,
        )
    for stat in ("mean", "std"):
        root.create_array(f"stats/{stat}", shape=(layout.dim,), dtype="float32", fill_value=0)
    root.attrs["dila"] = {**attrs, "format": FORMAT, "layout": asdict(layout), "complete": False}
    (path / PROGRESS).mkdir()
    return root


def open_store(path: Path, mode: str = "r") -> zarr.Group:
    if not path.exists():
        raise StoreError(f"{path}: no feature store here (run `dila extract` first)")
    try:
        root = zarr.open_group(path, mode=mode, zarr_format=3)
    except Exception as e:  # zarr raises several types for unreadable metadata
        raise StoreError(f"{path}: not a readable Zarr v3 group: {e}") from e
    if root.attrs.get("dila", {}).get("format") != FORMAT:
        raise StoreError(f"{path}: not a dila feature store (attribute dila.format != {FORMAT!r})")
    return root


def store_attrs(root: zarr.Group) -> dict[str, Any]:
    return dict(root.attrs["dila"])


def done_shards(path: Path) -> set[int]:
    """Shards whose arrays were completely written (they have a progress record)."""
    progress = path / PROGRESS
    if not progress.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in progress.glob("shard-*.json")}


def remove_partials(path: Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    stale = [p for p in path.rglob("*") if p.is_file() and (p.name.endswith(".partial") or p.name.endswith(".tmp"))]
    for p in stale:
        p.unlink()
    return len(stale)


def write_shard(
    path: Path,
    root: zarr.Group,
    layout: Layout,
    k: int,
    tokens: np.ndarray,
    actions: np.ndarray | None,
    labels: dict[str, np.ndarray],
) -> None:
    """Write shard k's arrays, then its progress record (the record is the commit point)."""
    start, stop = layout.shard_range(k)
    if len(tokens) != stop - start:
        raise StoreError(f"{path}: shard {k} expects {stop - start} frames, got {len(tokens)}")
    tokens = tokens.astype(np.float16, copy=False)  # (n, h, w, D)
    root["tokens"][start:stop] = tokens
    if actions is not None:
        root["actions"][start:stop] = actions
    for name, values in labels.items():
        root[f"labels/{name}"][start:stop] = values
    flat = tokens.reshape(-1, tokens.shape[-1]).astype(np.float64)  # (n*h*w, D)
    record = {"frames": stop - start, "sum": flat.sum(0).tolist(), "sumsq": np.square(flat).sum(0).tolist()}
    _atomic_write_json(path / PROGRESS / f"shard-{k:06d}.json", record)


def finalize(path: Path, layout: Layout) -> None:
    """Combine per-shard sums into stats (in shard order), mark complete, drop progress records."""
    root = open_store(path, mode="r+")
    missing = sorted(set(range(layout.n_shards)) - done_shards(path))
    if missing:
        raise StoreError(f"{path}: cannot finalize, shards not written: {missing[:10]}")
    total = np.zeros(layout.dim)
    total_sq = np.zeros(layout.dim)
    for k in range(layout.n_shards):
        record = json.loads((path / PROGRESS / f"shard-{k:06d}.json").read_text())
        total += np.asarray(record["sum"])
        total_sq += np.asarray(record["sumsq"])
    count = layout.n_frames * layout.grid[0] * layout.grid[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    root["stats/mean"][:] = mean.astype(np.float32)
    root["stats/std"][:] = std.astype(np.float32)
    attrs = store_attrs(root)
    attrs["complete"] = True
    root.attrs["dila"] = attrs
    shutil.rmtree(path / PROGRESS)
