"""`dila verify` and `dila info`: check a feature store, and describe it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import store
from pipeline.progress import track

# dila.* attributes every complete store carries.
REQUIRED_ATTRS = ("plan_sha256", "dataset", "source", "encoder", "frame_stride", "episodes", "skipped",
                  "code_version", "layout", "complete")


def verify(path: Path, show_progress: bool = False) -> list[str]:
    """Every problem found in the store at `path` (empty when it is sound)."""
    try:
        root = store.open_store(path)
    except store.StoreError as e:
        return [str(e)]
    attrs = store.store_attrs(root)
    problems = [f"attribute dila.{k} is missing" for k in REQUIRED_ATTRS if k not in attrs]
    if problems:
        return problems
    if not attrs["complete"] or (path / store.PROGRESS).exists():
        done = len(store.done_shards(path))
        layout = store.Layout(**{**attrs["layout"], "grid": tuple(attrs["layout"]["grid"])})
        problems.append(f"incomplete: {done}/{layout.n_shards} shards written (resume with `dila extract`)")
    names = set(_array_names(root))
    problems += [f"array {a} is missing" for a in ("tokens", "episode_ends", "stats/mean", "stats/std") if a not in names]
    if problems:
        return problems
    tokens, ends = root["tokens"], root["episode_ends"][:]
    n, dim = tokens.shape[0], tokens.shape[-1]
    problems += _check_episodes(ends, n, attrs)
    if tokens.dtype != np.float16 or tokens.ndim != 4:
        problems.append(f"tokens must be (F, h, w, D) float16, got {tokens.shape} {tokens.dtype}")
    for name in sorted(names):
        if name == "actions" or name.startswith("labels/"):
            if root[name].shape[0] != n:
                problems.append(f"{name} has {root[name].shape[0]} rows for {n} frames")
    problems += _check_values(root, n, dim, show_progress)
    return problems


def _array_names(root) -> list[str]:
    with warnings.catch_warnings():  # zarr warns about the store's .progress folder
        warnings.simplefilter("ignore")
        return [name for name, node in root.members(max_depth=None) if hasattr(node, "shape")]


def _check_episodes(ends: np.ndarray, n: int, attrs: dict[str, Any]) -> list[str]:
    problems = []
    if len(ends) == 0 or ends[-1] != n:
        problems.append(f"episode_ends must end at the frame count {n}, got {ends[-1:]} ")
    if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        problems.append("episode_ends must be strictly increasing and positive")
    if len(ends) != len(attrs["episodes"]):
        problems.append(f"{len(ends)} episode ends for {len(attrs['episodes'])} listed episodes")
    return problems


def _check_values(root, n: int, dim: int, show: bool) -> list[str]:
    problems = []
    tokens = root["tokens"]
    step = tokens.shards[0] if tokens.shards else tokens.chunks[0]
    starts = range(0, n, step)
    for start in track(starts, "verify: scanning tokens", len(starts), show):
        block = tokens[start : start + step]
        bad = ~np.isfinite(block)
        if bad.any():
            frame = start + int(np.argwhere(bad)[0][0])
            problems.append(f"tokens contain NaN/Inf (first at frame {frame})")
            break
    for stat in ("mean", "std"):
        values = root[f"stats/{stat}"][:]
        if values.shape != (dim,) or not np.all(np.isfinite(values)):
            problems.append(f"stats/{stat} must be {dim} finite values")
    if not np.all(root["stats/std"][:] > 0):
        problems.append("stats/std has zero channels (constant tokens?)")
    return problems


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def info(path: Path) -> dict[str, Any]:
    """A summary of the store: sizes, layout, provenance."""
    root = store.open_store(path)
    attrs = store.store_attrs(root)
    tokens = root["tokens"]
    raw = int(np.prod(tokens.shape)) * 2
    stored = _disk_bytes(path / "tokens")
    n = tokens.shape[0]
    return {
        "path": str(path),
        "dataset": attrs.get("dataset"),
        "complete": attrs.get("complete"),
        "frames": n,
        "episodes": int(root["episode_ends"].shape[0]),
        "skipped episodes": len(attrs.get("skipped", [])),
        "tokens": f"{tuple(tokens.shape)} {tokens.dtype}",
        "chunk / shard frames": f"{tokens.chunks[0]} / {tokens.shards[0] if tokens.shards else '-'}",
        "token bytes per frame (stored / raw float16)": f"{stored / max(n, 1):.0f} / {raw / max(n, 1):.0f} "
        f"(ratio {raw / max(stored, 1):.2f}x)",
        "actions": str(tuple(root["actions"].shape)) if "actions" in root else "none",
        "labels": ", ".join(k for k in _array_names(root) if k.startswith("labels/")) or "none",
        "encoder": attrs.get("encoder", {}).get("model"),
        "weights": attrs.get("encoder", {}).get("weights"),
        "input size": attrs.get("encoder", {}).get("input_size"),
        "frame stride": attrs.get("frame_stride"),
        "source fingerprint": attrs.get("source", {}).get("fingerprint"),
        "code version": attrs.get("code_version"),
        "files on disk": sum(1 for p in path.rglob("*") if p.is_file()),
    }
