"""The Zarr v3 feature store: the contract between stage one and stage two.

Layout of one store (one dataset):

    tokens          (F, h, w, D) float16   chunks of whole frames (~chunk_mb), shards of shard_frames
    episode_ends    (E,)         int64     exclusive end of each episode in F
    actions         (F, a)       float32   optional; one chunk per shard
    labels/<name>   (F, ...)     any       optional; one chunk per shard
    stats/mean, stats/std (D,)   float32   per-channel statistics of the stored tokens

Writing is done shard by shard: every array's chunks are aligned to shard
boundaries, so a shard is written by exactly one process and never shares a file
with another writer. After a shard's arrays are written, a small record with its
token sums and the size and sha256 of each file it wrote goes to
`.progress/shard-NNNNNN.json` (atomically). A resumed run skips shards with a record
and rewrites any other. `finalize` combines the records in shard order into the stats
(so they do not depend on the number of writers), keeps every shard's file digests
(and those of the files written once: episode_ends, the stats, the arrays' metadata)
in the attributes, marks the store complete and removes `.progress`.

The digests are how damage is found without decoding anything: a shard whose files
are missing, cut short or changed (`find_damage`) is named by `dila verify` and
rewritten by `dila extract`. A repair (`reopen_shards`) lists the damaged shards in
`.progress/repair.json`; every other shard counts as done, and `finalize` checks that
the rewritten files are the very bytes first written (the stats stay valid) instead of
recomputing the stats.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from pipeline.params import StoreParams

FORMAT = "dila-features/1"
PROGRESS = ".progress"
REPAIR = "repair.json"  # in PROGRESS while damaged shards of a complete store are rewritten
SMALL_ARRAYS = ("episode_ends", "stats/mean", "stats/std")  # one chunk each, written by one process


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


def token_stats(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), std (D,)) float32: the per-channel statistics the store was written with."""
    return root["stats/mean"][:].astype(np.float32), root["stats/std"][:].astype(np.float32)


def layout_of(attrs: dict[str, Any]) -> Layout:
    return Layout(**{**attrs["layout"], "grid": tuple(attrs["layout"]["grid"])})


def done_shards(path: Path) -> set[int]:
    """Shards whose arrays were completely written: those with a progress record and, during a
    repair, every shard that is not being rewritten."""
    progress = path / PROGRESS
    if not progress.is_dir():
        return set()
    done = {int(p.stem.split("-")[1]) for p in progress.glob("shard-*.json")}
    repair = _repair(path)
    if repair is not None:
        done |= set(range(repair["n_shards"])) - set(repair["shards"])
    return done


def _repair(path: Path) -> dict[str, Any] | None:
    file = path / PROGRESS / REPAIR
    return json.loads(file.read_text()) if file.is_file() else None


def _record(path: Path, k: int) -> dict[str, Any]:
    return json.loads((path / PROGRESS / f"shard-{k:06d}.json").read_text())


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
    record = {"frames": stop - start, "sum": flat.sum(0).tolist(), "sumsq": np.square(flat).sum(0).tolist(),
              "files": {rel: file_digest(path / rel) for rel in shard_files(root, k)}}
    _atomic_write_json(path / PROGRESS / f"shard-{k:06d}.json", record)


def shard_files(root: zarr.Group, k: int) -> list[str]:
    """Paths (relative to the store) of the files holding shard k: the tokens shard and chunk k of
    actions and of every label (their chunks are one shard long)."""
    return [f"{name}/c/" + "/".join([str(k)] + ["0"] * (node.ndim - 1))
            for name, node in sorted(arrays(root)) if name not in SMALL_ARRAYS]


def arrays(root: zarr.Group) -> list[tuple[str, zarr.Array]]:
    """(path, array) of every array of the store."""
    with warnings.catch_warnings():  # zarr warns about the store's .progress folder
        warnings.simplefilter("ignore")
        return [(name, node) for name, node in root.members(max_depth=None) if isinstance(node, zarr.Array)]


def file_digest(path: Path) -> list | None:
    """[size, sha256] of a file, or None where there is none (zarr writes no chunk that is all fill value)."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        return [path.stat().st_size, hashlib.file_digest(f, "sha256").hexdigest()]


def finalize(path: Path, layout: Layout) -> None:
    """Combine per-shard sums into stats (in shard order), record every file's digest, mark complete,
    drop progress records. After a repair, check the rewritten shards against their digests instead."""
    root = open_store(path, mode="r+")
    missing = sorted(set(range(layout.n_shards)) - done_shards(path))
    if missing:
        raise StoreError(f"{path}: cannot finalize, shards not written: {missing[:10]}")
    attrs = store_attrs(root)
    repair = _repair(path)
    if repair is None:
        records = [_record(path, k) for k in range(layout.n_shards)]
        _write_stats(root, layout, records)
        attrs["shard_files"] = [r["files"] for r in records]
        attrs["files"] = {rel: file_digest(path / rel) for rel in _small_files(path)}
    else:
        _check_rewritten(path, attrs, repair["shards"])
    attrs["complete"] = True
    root.attrs["dila"] = attrs
    shutil.rmtree(path / PROGRESS)


def _write_stats(root: zarr.Group, layout: Layout, records: list[dict[str, Any]]) -> None:
    total = np.zeros(layout.dim)
    total_sq = np.zeros(layout.dim)
    for record in records:
        total += np.asarray(record["sum"])
        total_sq += np.asarray(record["sumsq"])
    count = layout.n_frames * layout.grid[0] * layout.grid[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    root["stats/mean"][:] = mean.astype(np.float32)
    root["stats/std"][:] = std.astype(np.float32)


def _small_files(path: Path) -> list[str]:
    """The files written once, relative to the store: the chunks of episode_ends and the stats, and the
    metadata of every array and group but the root (whose attributes hold the digests)."""
    chunks = [p for name in SMALL_ARRAYS for p in (path / name / "c").rglob("*") if p.is_file()]
    metadata = [p for p in path.rglob("zarr.json") if p.parent != path]
    return sorted(p.relative_to(path).as_posix() for p in chunks + metadata)


def _check_rewritten(path: Path, attrs: dict[str, Any], shards: list[int]) -> None:
    """Rewritten shards must hold the bytes first written: the stats were computed from those."""
    for k in shards:
        if _record(path, k)["files"] != attrs["shard_files"][k]:
            raise StoreError(
                f"{path}: shard {k} was rewritten but its files differ from the first extraction, so the "
                f"encoder is not bit-exact here and the stored stats no longer fit; delete {path} and run "
                f"`dila extract {attrs['dataset']}` to rebuild the whole store")


# -- damage ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Damage:
    """What find_damage found. shards: shard -> what is wrong with its files; other: problems with the
    files written once (episode_ends, the stats, array metadata), which only a rebuild restores."""

    shards: dict[int, list[str]]
    other: list[str]

    def describe(self, layout: Layout) -> list[str]:
        """One line per damaged shard, naming its frames, then the other problems."""
        lines = []
        for k, problems in sorted(self.shards.items()):
            start, stop = layout.shard_range(k)
            lines.append(f"shard {k} (frames [{start}, {stop})): {'; '.join(problems)}")
        return lines + self.other


def _file_problem(path: Path, rel: str, want: list | None, deep: bool) -> str | None:
    file = path / rel
    if want is None:
        return f"{rel} exists, but no file was written there" if file.exists() else None
    if not file.is_file():
        return f"{rel} is missing"
    size = file.stat().st_size
    if size != want[0]:
        return f"{rel} has {size} bytes, {want[0]} were written"
    if deep and file_digest(file)[1] != want[1]:
        return f"{rel} has changed since it was written (sha256)"
    return None


def _written(path: Path, attrs: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The recorded digests of the files of every written shard, and of the files written once (only
    recorded in a complete store)."""
    if attrs.get("complete"):
        if "shard_files" not in attrs:
            raise StoreError(f"{path}: the store records no file digests (an older dila made it); run "
                             f"`dila extract {attrs.get('dataset')}` to rebuild it")
        return dict(enumerate(attrs["shard_files"])), attrs["files"]
    recorded = {int(p.stem.split("-")[1]) for p in (path / PROGRESS).glob("shard-*.json")}
    kept = done_shards(path) - recorded  # under repair: the shards not rewritten, digests in the attributes
    shards = {k: attrs["shard_files"][k] for k in kept}
    shards.update((k, _record(path, k)["files"]) for k in recorded)
    return shards, {}


def find_damage(path: Path, deep: bool = True) -> Damage:
    """Written files that are missing, have another size or (deep) other bytes than were written.
    Only sizes are compared when deep is False (no file is read)."""
    attrs = store_attrs(open_store(path))
    shards, small = _written(path, attrs)
    damaged = {}
    for k, files in sorted(shards.items()):
        problems = [p for rel, want in files.items() if (p := _file_problem(path, rel, want, deep))]
        if problems:
            damaged[k] = problems
    other = [p for rel, want in small.items() if (p := _file_problem(path, rel, want, deep))]
    return Damage(damaged, other)


def require_intact(path: Path) -> None:
    """Raise StoreError naming every damaged shard (by file sizes: no file is read) and the fix."""
    damage = find_damage(path, deep=False)
    if damage.shards or damage.other:
        attrs = store_attrs(open_store(path))
        lines = "\n  ".join(damage.describe(layout_of(attrs)))
        raise StoreError(f"{path}: the feature store is damaged:\n  {lines}\n"
                         f"run `dila extract {attrs['dataset']}` to rewrite what is damaged")


def reopen_shards(path: Path, layout: Layout, shards: set[int]) -> None:
    """Make `shards` unwritten, so that extraction writes them again: their files and progress records
    are deleted, and a complete store becomes one under repair (REPAIR lists what it rewrites)."""
    root = open_store(path, mode="r+")
    attrs = store_attrs(root)
    progress = path / PROGRESS
    progress.mkdir(exist_ok=True)
    repair = _repair(path)
    if attrs["complete"] or repair is not None:  # listed before anything is deleted: a kill stays resumable
        listed = set(repair["shards"]) if repair else set()
        _atomic_write_json(progress / REPAIR, {"n_shards": layout.n_shards, "shards": sorted(listed | shards)})
    for k in sorted(shards):
        for rel in shard_files(root, k):
            (path / rel).unlink(missing_ok=True)
        (progress / f"shard-{k:06d}.json").unlink(missing_ok=True)
    if attrs["complete"]:
        attrs["complete"] = False
        root.attrs["dila"] = attrs
