"""`dila verify` and `dila info`: check a feature store, and describe it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import store
from pipeline.progress import track

# dila.* attributes every complete store carries.
REQUIRED_ATTRS = ("plan_sha256", "dataset", "source", "encoder", "frame_stride", "episodes", "skipped",
                  "code_version", "layout", "complete")
COMPLETE_ATTRS = ("shard_files", "files")  # written by finalize


def verify(path: Path, show_progress: bool = False) -> list[str]:
    """Every problem found in the store at `path` (empty when it is sound)."""
    try:
        root = store.open_store(path)
    except store.StoreError as e:
        return [str(e)]
    attrs = store.store_attrs(root)
    required = REQUIRED_ATTRS + (COMPLETE_ATTRS if attrs.get("complete") else ())
    problems = [f"attribute dila.{k} is missing" for k in required if k not in attrs]
    if problems:
        return problems
    layout = store.layout_of(attrs)
    if not attrs["complete"] or (path / store.PROGRESS).exists():
        done = len(store.done_shards(path))
        return [f"incomplete: {done}/{layout.n_shards} shards written (resume with `dila extract`)"]
    damage = store.find_damage(path, deep=True)
    fix = f"run `dila extract {attrs['dataset']}`"
    problems += [f"damaged: {line}; {fix} to rewrite it" for line in damage.describe(layout)[:len(damage.shards)]]
    problems += [f"damaged: {line}; {fix} to rebuild the store" for line in damage.other]
    if damage.other:
        return problems  # the episode bookkeeping, stats or metadata cannot be trusted: nothing below can be read
    names = set(_array_names(root))  # every array's metadata is intact (it has a digest)
    tokens, ends = root["tokens"], root["episode_ends"][:]
    n = tokens.shape[0]
    problems += _check_episodes(ends, n, attrs)
    if tokens.dtype != np.float16 or tokens.ndim != 4:
        problems.append(f"tokens must be (F, h, w, D) float16, got {tokens.shape} {tokens.dtype}")
    for name in sorted(names):
        if name == "actions" or name.startswith("labels/"):
            if root[name].shape[0] != n:
                problems.append(f"{name} has {root[name].shape[0]} rows for {n} frames")
    problems += _check_values(root, layout, set(damage.shards), show_progress)
    return problems


def _array_names(root) -> list[str]:
    return [name for name, _ in store.arrays(root)]


def _check_episodes(ends: np.ndarray, n: int, attrs: dict[str, Any]) -> list[str]:
    problems = []
    if len(ends) == 0 or ends[-1] != n:
        problems.append(f"episode_ends must end at the frame count {n}, got {ends[-1:]} ")
    if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        problems.append("episode_ends must be strictly increasing and positive")
    if len(ends) != len(attrs["episodes"]):
        problems.append(f"{len(ends)} episode ends for {len(attrs['episodes'])} listed episodes")
    return problems


def _check_values(root, layout: store.Layout, damaged: set[int], show: bool) -> list[str]:
    """NaN/Inf in the tokens, shard by shard (the damaged ones are named already), and finite stats."""
    problems = []
    tokens = root["tokens"]
    todo = [k for k in range(layout.n_shards) if k not in damaged]
    for k in track(todo, "verify: scanning tokens", len(todo), show):
        start, stop = layout.shard_range(k)
        try:
            bad = ~np.isfinite(tokens[start:stop])
        except Exception as err:  # zarr and its codecs raise several types for unreadable bytes
            problems.append(f"damaged: shard {k} (frames [{start}, {stop})) cannot be read ({err}); "
                            f"run `dila extract {store.store_attrs(root)['dataset']}` to rewrite it")
            continue
        if bad.any():
            problems.append(f"tokens contain NaN/Inf (first at frame {start + int(np.argwhere(bad)[0][0])})")
            break
    dim = layout.dim
    for stat in ("mean", "std"):
        values = root[f"stats/{stat}"][:]
        if values.shape != (dim,) or not np.all(np.isfinite(values)):
            problems.append(f"stats/{stat} must be {dim} finite values")
    if not np.all(root["stats/std"][:] > 0):
        problems.append("stats/std has zero channels (constant tokens?)")
    return problems


def _token_bytes(path: Path, root, attrs: dict[str, Any]) -> str:
    """Stored and raw bytes per frame over the shards written (all of them once the store is complete)."""
    layout = store.layout_of(attrs)
    shards = range(layout.n_shards) if attrs.get("complete") else sorted(store.done_shards(path))
    frames = sum(stop - start for start, stop in map(layout.shard_range, shards))
    if frames == 0:
        return "n/a (no shard written yet)"
    files = [path / rel for k in shards for rel in store.shard_files(root, k) if rel.startswith("tokens/")]
    stored = sum(f.stat().st_size for f in files if f.is_file())
    raw = frames * layout.grid[0] * layout.grid[1] * layout.dim * 2
    text = f"{stored / frames:.0f} / {raw / frames:.0f} (ratio {raw / max(stored, 1):.2f}x)"
    return text if attrs.get("complete") else f"{text} over the {frames} frames written so far"


def info(path: Path) -> dict[str, Any]:
    """A summary of the store: sizes, layout, provenance."""
    root = store.open_store(path)
    attrs = store.store_attrs(root)
    tokens = root["tokens"]
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
        "token bytes per frame (stored / raw float16)": _token_bytes(path, root, attrs),
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
